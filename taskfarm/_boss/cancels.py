"""Cancelling single tasks (``Boss.cancel``), in the boss process: a task not started
ends 'cancelled' at once; one queued behind another in a worker is asked back, and
ends 'cancelled' when the worker answers that it did not start it; a running one is
stopped as for a timeout (StopRequested in the task, its ``on_stop``, then the signal
sequence) and ends 'cancelled' once its process is gone. A task that has ended, or
that started before the worker could hear the request, keeps the ending it has.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from taskfarm._boss.backend import Backend, Doom, Slot
from taskfarm._boss.dependencies import Dependencies
from taskfarm._boss.endings import Endings
from taskfarm._boss.prefetch import Prefetch
from taskfarm._boss.tasks import Task, TaskBook, TaskState
from taskfarm._common.messages import Outcome
from taskfarm._common.status import TaskStatus

WHY = "cancelled by Boss.cancel()"


class Cancels:
    """Carries out cancel requests; remembers the queued tasks asked back for one."""

    def __init__(self, book: TaskBook, deps: Dependencies, endings: Endings,
                 prefetch: Prefetch, backend: Backend[Any],
                 stop_slot: Callable[[Slot, Doom], None]) -> None:
        self.book, self.deps, self.endings = book, deps, endings
        self.prefetch, self.backend = prefetch, backend
        self._stop_slot = stop_slot
        self.asked_back: set[int] = set()   # queued tasks taken back to be cancelled

    def cancel(self, tids: Iterable[int]) -> None:
        """Cancel each task still alive among ``tids``; the others are left alone."""
        for tid in tids:
            task = self.book.pending_by_tid.get(tid)
            if task is not None:
                self.endings.cancel_unstarted(task, WHY)
                self.book.withdraw(task)
                continue
            task = self.deps.blocked.get(tid)
            if task is not None:
                self.deps.withdraw(task)
                self.endings.cancel_unstarted(task, WHY)
                continue
            task = self.book.running.get(tid)
            slot = task.worker if task is not None else None
            if task is None or slot is None:
                continue   # ended already (or never known here): nothing to do
            if task.state is TaskState.QUEUED:
                self.asked_back.add(tid)
                if tid not in self.prefetch.skipping:
                    self.prefetch.skipping.add(tid)
                    self.backend.take_back(slot, tid)
                    self.backend.flush()
            elif slot.doom is None and slot.tasks and slot.tasks[0] is task:
                self._stop_slot(slot, Doom(tid, TaskStatus.CANCELLED, WHY))

    def skipped(self, task: Task) -> bool:
        """A queued task came back unstarted: True if it was asked back to be
        cancelled (it is now ended), False if it goes back to pending."""
        if task.tid not in self.asked_back:
            return False
        self.asked_back.discard(task.tid)
        self.endings.finish(task, Outcome.by_boss(task.tid, TaskStatus.CANCELLED,
                                                  f"not run: {WHY}", ended=time.time()))
        return True
