"""Stopping slots as a whole, in the boss process: every busy slot stopped when the run
is cancelled (STOP_RIGHTNOW, fail-fast, a scheduler error), running tasks left to
their processes on STOP_LISTENING, and the tasks queued behind a task put back when
its process ends. Single tasks are :mod:`taskfarm._boss.cancels`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from taskfarm._boss.backend import Backend, Doom, Slot
from taskfarm._boss.cancels import Cancels
from taskfarm._boss.launcher import Launcher
from taskfarm._boss.prefetch import Prefetch
from taskfarm._boss.tasks import Task, TaskBook
from taskfarm._common.status import TaskStatus


class Stopping:
    """What the loop does to every slot at once."""

    def __init__(self, backend: Backend[Any], book: TaskBook, prefetch: Prefetch,
                 launcher: Launcher, cancels: Cancels,
                 stop_slot: Callable[[Slot, Doom], None]) -> None:
        self.backend, self.book, self.prefetch = backend, book, prefetch
        self.launcher, self.cancels = launcher, cancels
        self._stop_slot = stop_slot

    def put_back(self, task: Task) -> None:
        """A task queued in a slot that will never start it: pending again, or
        cancelled if it was asked back to be."""
        self.prefetch.skipping.discard(task.tid)
        if not self.cancels.skipped(task):
            self.book.requeue(task)

    def requeue_queued(self, slot: Slot) -> None:
        """The slot's process is gone: the tasks queued behind its task never started."""
        while slot.tasks:
            self.put_back(slot.tasks.pop())

    def stop_busy_slots(self, why: str) -> None:
        """While cancelling: outcomes already written stand; every other running task
        ends 'cancelled' (``why``) when its process is gone."""
        self.drain_busy()
        for slot in self.backend.slots():
            if slot.tasks and slot.doom is None:
                self._stop_slot(slot, Doom(slot.tasks[0].tid, TaskStatus.CANCELLED, why))

    def leave_to_workers(self) -> None:
        """STOP_LISTENING: running tasks are left to their processes; queued ones are
        asked back, and one whose predecessor has not reported by then is reported
        pending (the worker reads the Skip before it could start it)."""
        self.drain_busy()
        self.launcher.take_back_queued()
        self.drain_busy()
        for slot in self.backend.slots():
            while len(slot.tasks) > 1:
                self.put_back(slot.tasks.pop())

    def drain_busy(self) -> None:
        """Read what busy slots have already written."""
        for slot in self.backend.slots():
            if slot.tasks:
                self.backend.drain(slot)
