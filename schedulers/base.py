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

Two optional hooks:

* ``check_instructions(instructions)`` runs in the main program on every instruction
  set as it is given; raising ``ValueError`` (an ``InstructionError`` is one) there
  makes a set that could never run (more memory than the whole budget, an unknown
  resource) an error at the call that gave it.
* ``recheck_after()`` is asked after each ``launchable`` call that left work pending:
  a number of seconds makes the boss call ``launchable`` again by then even if
  nothing else happens (a load-aware scheduler waiting for the machine to calm down);
  ``None`` (the default) waits for the next event.

Schedulers combine with ``&``: ``MaxThreadsScheduler(8) & MaxMemoryScheduler()``
launches what every one of them allows (see :class:`AllOf`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol

__all__ = ["AllOf", "BaseScheduler", "Instructions", "Launch", "RunReport"]

Instructions = dict[str, Any]
# (launchable now, not yet launchable); the second may be lazy, never read by the boss.
Launch = tuple[Sequence[Instructions], Iterable[Instructions]]


class RunReport(Protocol):
    """What ``launchable`` learns of the tasks that ended (bounded, whatever the run's
    length): ``counts`` per terminal state, and per Worker class name (``by_worker``)
    how many ended (``count``), their largest peak RSS in bytes (``peak_rss``) and
    their total run time in seconds (``seconds``)."""

    counts: Mapping[str, int]
    by_worker: Mapping[str, Mapping[str, float]]


class BaseScheduler:
    """Base class of schedulers: override :meth:`launchable`.

    ``prefetch``: True when the rule only counts the tasks running at once (never
    their resources nor their order of completion). The boss may then queue tasks
    behind the one each busy worker process runs (one, or more when tasks are tiny),
    asking ``launchable`` for each with that process's current task left out of
    ``workers``: the worker starts the next the moment the current one ends, without
    waiting for the boss. Concurrency is unchanged (a process runs one task at a
    time). Leave it False for any rule about resources.
    """

    prefetch: bool = False

    def check_instructions(self, instructions: Mapping[str, Any]) -> None:
        """Raise ValueError when ``instructions`` could never be launched. Runs in the
        main program when the instructions are given; the default accepts all."""

    def recheck_after(self) -> float | None:
        """Seconds after which the boss should ask again while work is pending, or
        None to wait for the next event."""
        return None

    def __and__(self, other: BaseScheduler) -> AllOf:
        return AllOf(self, other)

    def launchable(self, pending_instructions: Sequence[Instructions],
                   workers: Mapping[str, Instructions], report: RunReport | None) -> Launch:
        """Which pending instruction sets may start now (see the module docstring)."""
        raise NotImplementedError(f"{type(self).__name__} must implement launchable()")

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


class AllOf(BaseScheduler):
    """Launch what every one of several schedulers allows: each filters what the one
    before it chose, in the order given (``a & b & c``). Tickets are those set last.
    It allows prefetch only if they all do; it rechecks at the earliest time any of
    them asks for."""

    def __init__(self, *schedulers: BaseScheduler) -> None:
        flat: list[BaseScheduler] = []
        for scheduler in schedulers:
            if not callable(getattr(scheduler, "launchable", None)):
                raise TypeError(f"{scheduler!r} is not a scheduler (no launchable())")
            flat.extend(scheduler.schedulers if isinstance(scheduler, AllOf) else [scheduler])
        if not flat:
            raise ValueError("AllOf needs at least one scheduler")
        self.schedulers: tuple[BaseScheduler, ...] = tuple(flat)
        self.prefetch = all(getattr(s, "prefetch", False) for s in flat)

    def launchable(self, pending_instructions: Sequence[Instructions],
                   workers: Mapping[str, Instructions], report: RunReport | None) -> Launch:
        chosen: Sequence[Instructions] = pending_instructions
        for scheduler in self.schedulers:
            chosen, _ = scheduler.launchable(chosen, workers, report)
            if not chosen:
                return [], pending_instructions
        chosen = list(chosen)
        picked = {id(c) for c in chosen}
        return chosen, _NotChosen(pending_instructions, picked)

    @property
    def holding(self) -> str | None:
        """Why one of them holds pending work, if one says (see PoliteScheduler)."""
        return next((h for s in self.schedulers if (h := getattr(s, "holding", None))), None)

    def check_instructions(self, instructions: Mapping[str, Any]) -> None:
        for scheduler in self.schedulers:
            check = getattr(scheduler, "check_instructions", None)
            if check is not None:
                check(instructions)

    def recheck_after(self) -> float | None:
        delays = [d for s in self.schedulers
                  if (d := getattr(s, "recheck_after", lambda: None)()) is not None]
        return min(delays, default=None)

    def __repr__(self) -> str:
        return " & ".join(map(repr, self.schedulers))


class _NotChosen:
    """The pending sets an AllOf did not choose, computed only if someone looks."""

    def __init__(self, pending: Sequence[Instructions], picked: set[int]) -> None:
        self._pending, self._picked = pending, picked

    def __iter__(self) -> Iterator[Instructions]:
        return (i for i in self._pending if id(i) not in self._picked)

    def __len__(self) -> int:
        return len(self._pending) - len(self._picked)
