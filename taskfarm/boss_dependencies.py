"""Dependencies between tasks, in the boss process: a task given with
``after=["calib_run1", ...]`` stays out of the pending queue (schedulers never see it)
until every prerequisite is done; when one ends in any other state, the task ends
'cancelled' with the reason, and so do the tasks that wait for it.

The main program has already checked the names (each one given, no cycle) and
resolved prerequisites whose reports it has. The boss remembers the endings of the
last ``RECENT_ENDINGS`` tasks for the only case left: a prerequisite that ended while
its report was on its way to the main program. Memory stays bounded for a service
that runs for weeks.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from .boss_tasks import Task

RECENT_ENDINGS = 1 << 16


class Dependencies:
    """Which tasks wait for which; knows nothing of processes or schedulers."""

    def __init__(self) -> None:
        self.live: dict[str, Task] = {}               # name -> task not ended yet
        self.blocked: dict[int, Task] = {}            # tid -> task waiting for others
        self._waiting: dict[int, int] = {}            # tid -> prerequisites not done yet
        self._dependents: dict[str, list[Task]] = {}  # prerequisite name -> waiting tasks
        self._recent: OrderedDict[str, str] = OrderedDict()  # name -> terminal status

    def add(self, task: Task, after: Iterable[str]) -> str | None:
        """Register a new task. Returns None when it may go to the pending queue now,
        "" when it waits, or the reason it must be cancelled."""
        self.live[task.name] = task
        count = 0
        for name in after:
            if name in self.live:
                self._dependents.setdefault(name, []).append(task)
                count += 1
                continue
            status = self._recent.get(name)
            if status != "done":
                del self.live[task.name]
                self._forget_waits(task)
                return _reason(name, status)
        if count == 0:
            return None
        self._waiting[task.tid] = count
        self.blocked[task.tid] = task
        return ""

    def ended(self, name: str, status: str) -> tuple[list[Task], list[tuple[Task, str]]]:
        """A task ended. Returns (tasks now free to be pending, tasks to cancel with
        their reason); the caller reports the cancelled ones ended in turn, which
        cascades to the tasks waiting for them."""
        self.live.pop(name, None)
        self._recent[name] = status
        if len(self._recent) > RECENT_ENDINGS:
            self._recent.popitem(last=False)
        ready: list[Task] = []
        cancel: list[tuple[Task, str]] = []
        for task in self._dependents.pop(name, ()):
            if task.tid not in self.blocked:
                continue  # already cancelled through another prerequisite
            if status == "done":
                self._waiting[task.tid] -= 1
                if self._waiting[task.tid] == 0:
                    del self._waiting[task.tid], self.blocked[task.tid]
                    ready.append(task)
            else:
                del self._waiting[task.tid], self.blocked[task.tid]
                self.live.pop(task.name, None)
                cancel.append((task, _reason(name, status)))
        return ready, cancel

    def _forget_waits(self, task: Task) -> None:
        for waiting in self._dependents.values():
            if task in waiting:
                waiting.remove(task)


def _reason(name: str, status: str | None) -> str:
    if status is None:
        return f"its prerequisite {name!r} ended long ago and its outcome is unknown here"
    return f"its prerequisite {name!r} ended {status}"
