"""How tasks end, in the boss process: an outcome recorded (or retried), a task
cancelled before it started, and the tasks waiting for it released or cancelled in
turn. Every outcome bound for the main program goes through :meth:`Endings.finish`
or :meth:`Endings.cancel_unstarted` into the outbox, which the loop flushes; one
whose result the worker wrote to the main program itself (``expressed``, see
:mod:`taskfarm._common.express`) is recorded and not sent.
"""

from __future__ import annotations

import logging
import pickle
import time
from collections.abc import Callable

from taskfarm._boss.batches import Batches
from taskfarm._boss.dependencies import Dependencies
from taskfarm._boss.error_policy import ErrorPolicy
from taskfarm._boss.lifecycle import Lifecycle
from taskfarm._boss.started import StartedNotices
from taskfarm._boss.tasks import Task, TaskBook, TaskState
from taskfarm._common.messages import Outcome
from taskfarm._common.status import TaskStatus
from taskfarm._common.wire import OUT_OF_BAND_MIN, blob

_LOG = logging.getLogger("taskfarm.boss")


class Endings:
    """Records endings; owns the outbox of outcomes for the main program."""

    def __init__(self, book: TaskBook, batches: Batches, deps: Dependencies,
                 policy: ErrorPolicy, lifecycle: Lifecycle,
                 fail_fast: Callable[[str], None], started: StartedNotices) -> None:
        self.book, self.batches, self.deps = book, batches, deps
        self.policy, self.lifecycle = policy, lifecycle
        self._fail_fast = fail_fast   # called with why, when an ending stops the run
        self.outbox: list[Outcome] = []
        self.notices = started.notices  # flushed with the outbox, handled before it
        self.started = started        # a STARTED notice held is dropped as its task ends

    def finish(self, task: Task, outcome: Outcome) -> None:
        """A running (or queued) task ended so: retry it, or record its ending."""
        if self.lifecycle.open and self.policy.retries(task, outcome):
            self.policy.prepare_retry(task, outcome)
            self.book.requeue(task)
            _LOG.info("task %r ended %s (%s); trying again (attempt %d)", task.name,
                      outcome.status, outcome.error_text or "", len(task.attempts) + 1)
            return
        if task.attempts:
            outcome = outcome._replace(attempts=tuple(task.attempts))
        task.worker = None
        self.started.ended(task.tid)
        duration = (outcome.ended - outcome.started) if outcome.started else None
        self.book.finish(task, TaskState(outcome.status),
                         self.batches.classes[task.class_key].qualname, duration,
                         outcome.peak_rss)
        self.batches.release(task.batch_id)
        if not outcome.expressed:  # else the main program has its result (express.py)
            self.outbox.append(_travelling(outcome))
        if not self.lifecycle.open:
            return
        if self.policy.stops_run(outcome.status):
            self._fail_fast(f"task {task.name!r} ended {outcome.status}")
        else:  # the run goes on: tasks waiting for this one move on
            self._release_dependents(task, outcome.status)

    def cancel_unstarted(self, task: Task, reason: str) -> None:
        """A task that never started ends 'cancelled' (a prerequisite did not end
        done)."""
        task.move(TaskState.CANCELLED)
        self.started.ended(task.tid)   # one held from an attempt before (a retry's)
        self.book.stats.record(self.batches.classes[task.class_key].qualname,
                               TaskStatus.CANCELLED, None, None)
        self.batches.release(task.batch_id)
        self.outbox.append(Outcome.by_boss(task.tid, TaskStatus.CANCELLED,
                                           f"not run: {reason}", ended=time.time()))
        self._release_dependents(task, TaskStatus.CANCELLED)

    def _release_dependents(self, task: Task, status: str) -> None:
        """Tasks waiting for ``task`` become pending, or are cancelled in turn."""
        ready, cancel = self.deps.ended(task.name, status)
        for waiting in ready:
            self.book.add(waiting)
        for waiting, reason in cancel:
            self.cancel_unstarted(waiting, reason)


def _travelling(outcome: Outcome) -> Outcome:
    """The outcome as it travels to the main program: large results out of band."""
    if outcome.result_blob is not None and len(outcome.result_blob) >= OUT_OF_BAND_MIN:
        # The PickleBuffer stands in for the bytes only while the outcome travels
        # (see wire.blob): the main program reads the bytes back. Widening the field
        # would make every reader narrow it, this path included, per outcome.
        outcome = outcome._replace(
            result_blob=blob(outcome.result_blob))  # type: ignore[arg-type]
    if outcome.result_buffers:  # forwarded as they came: out of band, no copy
        outcome = outcome._replace(result_buffers=tuple(
            pickle.PickleBuffer(b) for b in outcome.result_buffers))
    return outcome
