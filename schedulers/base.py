"""The scheduler contract. A scheduler is policy only: it runs inside the boss process
and decides which pending instruction sets may start now; it never touches a process.

The boss calls ``launchable(pending_instructions, workers, report)`` after every event
(an instruction batch, a task ending, RESUME) while tasks are pending and it is not
halted:

* ``pending_instructions``: the pending instruction sets in the order given, as a
  read-only sequence of dicts (``name``, ``memory``, ``expected_time``, the task's own
  values and simple common values). ``pending[:k]`` costs O(k) and ``len()`` O(1);
  iterating over all of it costs O(pending), so a scheduler that must stay fast with
  100,000 queued tasks looks at a prefix.
* ``workers``: the running tasks, a mapping of task name to the same kind of dict
  (with its ``scheduler_ticket``).
* ``report``: bounded statistics of the tasks that ended (``counts`` per terminal
  state; ``by_worker[class name]`` with ``count``, ``peak_rss``, ``seconds``).

It returns ``(launchable, not_yet_launchable)``: the boss starts every set in
``launchable`` (the dicts it was given) now, and keeps the rest pending;
``not_yet_launchable`` is informational and may be a lazy ``pending[k:]``. A scheduler
may set ``instructions["scheduler_ticket"] = n`` on the sets it launches: a slot
number that the worker sees and that binding schedulers use.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["BaseScheduler", "Launch"]

Instructions = dict[str, Any]
Launch = tuple[Sequence[Instructions], Sequence[Instructions]]


class BaseScheduler:
    """Base class of schedulers: override :meth:`launchable`.

    ``prefetch``: True when the rule only counts the tasks running at once (never
    their resources nor their order of completion). The boss may then hand each busy
    worker process its next task ahead of time, asking ``launchable`` with that
    process's current task left out of ``workers``: the worker starts it the moment
    the current one ends, without waiting for the boss. Concurrency is unchanged (a
    process runs one task at a time). Leave it False for any rule about resources.
    """

    prefetch: bool = False

    def launchable(self, pending_instructions: Sequence[Instructions],
                   workers: Mapping[str, Instructions], report: Any) -> Launch:
        """Which pending instruction sets may start now (see the module docstring)."""
        raise NotImplementedError(f"{type(self).__name__} must implement launchable()")

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"
