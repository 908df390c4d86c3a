"""Dependencies between tasks, in the boss process: a task given with
``after=["calib_run1", ...]`` stays out of the pending queue (schedulers never see it)
until every prerequisite is done; when one ends in any other state, the task ends
'cancelled' with the reason, and so do the tasks that wait for it.

The main program has already checked the names (each one given, no cycle) and
resolved prerequisites whose reports it has. The case left is a prerequisite that ended
while its report was on its way to the main program. Messages arrive in order, so a
prerequisite the boss no longer holds has ended; the boss remembers only the last
``RECENT_FAILURES`` endings that were not 'done' (any other ended done). A healthy run
keeps nothing per task, and memory stays bounded for a service that runs for weeks.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from taskfarm._boss.tasks import Task

RECENT_FAILURES = 1 << 16


class Dependencies:
    """Which tasks wait for which; knows nothing of processes or schedulers."""

    def __init__(self) -> None:
        self.live: dict[str, Task] = {}               # name -> task not ended yet
        self.blocked: dict[int, Task] = {}            # tid -> task waiting for others
        self._waiting: dict[int, int] = {}            # tid -> prerequisites not done yet
        self._dependents: dict[str, list[Task]] = {}  # prerequisite name -> waiting tasks
        self._failed: OrderedDict[str, str] = OrderedDict()  # name -> ending not 'done'

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
            status = self._failed.get(name)
            if status is not None:  # not live and not failed: it ended done
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
        if status != "done":
            self._failed[name] = status
            if len(self._failed) > RECENT_FAILURES:
                self._failed.popitem(last=False)
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

    def withdraw(self, task: Task) -> None:
        """A waiting task is cancelled on its own: it waits no more (its ending, which
        the caller records, releases the tasks that wait for it)."""
        del self.blocked[task.tid]
        self._waiting.pop(task.tid, None)

    def _forget_waits(self, task: Task) -> None:
        for waiting in self._dependents.values():
            if task in waiting:
                waiting.remove(task)


def _reason(name: str, status: str) -> str:
    return f"its prerequisite {name!r} ended {status}"
