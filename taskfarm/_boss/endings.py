"""How tasks end, in the boss process: an outcome recorded, a task cancelled before or
while it ran, queued tasks put back, dependents released or cancelled in turn, and a
SIGKILL blamed on the out-of-memory killer when that is the likely cause. A part of
:class:`taskfarm._boss.loop.BossLoop`, which holds the state these methods share.
"""

from __future__ import annotations

import pickle
import time
from typing import TYPE_CHECKING

from taskfarm._boss.local import WorkerProcess
from taskfarm._boss.tasks import Task, TaskState
from taskfarm._common import messages as protocol
from taskfarm._common.messages import Outcome
from taskfarm._common.processes import ExitInfo, oom_kills
from taskfarm._common.status import RETRYABLE

if TYPE_CHECKING:
    from taskfarm._boss.loop import BossLoop


class Endings:
    """The ending half of the boss loop (see the module docstring)."""

    def _likely_cause(self: BossLoop, info: ExitInfo) -> str:
        """Name the out-of-memory killer when it is the likely cause of a SIGKILL: the
        kernel's count of its kills rose since the boss last looked."""
        if info.signal_name != "SIGKILL":
            return ""
        count = oom_kills()
        rose = count is not None and self.oom_count is not None and count > self.oom_count
        self.oom_count = count
        return (" (likely the out-of-memory killer: the kernel's oom_kill count rose; "
                "give the task more memory or declare more)") if rose else ""

    def _requeue_all(self: BossLoop, proc: WorkerProcess) -> None:
        while proc.tasks:
            task = proc.tasks.pop()
            self.skipping.discard(task.tid)
            self.book.requeue(task)

    def _task_outcome(self: BossLoop, proc: WorkerProcess, outcome: Outcome) -> None:
        if not proc.tasks or proc.tasks[0].tid != outcome.tid:
            return  # a worker answers its tasks in order; anything else is ignored
        task = proc.tasks.popleft()
        # The task queued behind started as this outcome was sent; say so before
        # _finish, which may drain that task's own outcome (fail-fast).
        if proc.tasks and proc.tasks[0].tid not in self.skipping:
            self.book.begin(proc.tasks[0], time.time())
            self._began(proc.tasks[0])
        self.skipping.discard(task.tid)
        if outcome.status == "skipped":
            self.book.requeue(task)
        else:
            if outcome.started is not None:
                self._learn_duration(outcome.ended - outcome.started)
            if task.state is TaskState.QUEUED:  # asked back too late: it had started
                self.book.begin(task, outcome.started or time.time())
            self._finish(task, outcome)

    def _finish(self: BossLoop, task: Task, outcome: Outcome) -> None:
        instructions = task.instructions
        if self.result is None and len(task.attempts) < instructions.get("retries", 0) \
                and outcome.status in instructions.get("retry_on", RETRYABLE):
            self._retry(task, outcome)
            return
        if task.attempts:
            outcome = outcome._replace(attempts=tuple(task.attempts))
        task.worker = None
        spec = self.classes[task.class_key]
        duration = (outcome.ended - outcome.started) if outcome.started else None
        self.book.finish(task, TaskState(outcome.status), spec.qualname, duration,
                         outcome.peak_rss)
        self._release_common(task)
        if outcome.result_blob is not None and len(outcome.result_blob) >= protocol.OUT_OF_BAND_MIN:
            outcome = outcome._replace(result_blob=protocol.blob(outcome.result_blob))
        if outcome.result_buffers:  # forwarded as they came: out of band, no copy
            outcome = outcome._replace(result_buffers=tuple(
                pickle.PickleBuffer(b) for b in outcome.result_buffers))
        self.outbox.append(outcome)
        if self.fail_fast and outcome.status in ("failed", "killed", "timeout") \
                and self.result is None:
            self._exit("failed", f"task {task.name!r} ended {outcome.status}")
            self._cancel_running(f"fail-fast: task {task.name!r} ended {outcome.status}")
        if self.result is None:  # the run goes on: tasks waiting for this one move on
            self._ended(task, outcome.status)

    def _retry(self: BossLoop, task: Task, outcome: Outcome) -> None:
        """Another attempt: back to the front of the pending queue, with more memory
        declared if ``retry_memory`` asks for it."""
        why = (f"{outcome.error_type}: {outcome.error_text}" if outcome.status == "failed"
               else outcome.error_text or "")
        task.attempts.append((outcome.status, why))
        factor = task.instructions.get("retry_memory", 1.0)
        if factor != 1.0 and task.instructions.get("memory"):
            task.instructions["memory"] *= factor
        task.worker = None
        self.book.requeue(task)

    def _release_common(self: BossLoop, task: Task) -> None:
        entry = self.commons[task.batch_id]
        entry[1] -= 1
        if entry[1] == 0:
            del self.commons[task.batch_id]

    def _ended(self: BossLoop, task: Task, status: str) -> None:
        """Tasks waiting for ``task`` become pending, or are cancelled in turn."""
        ready, cancel = self.deps.ended(task.name, status)
        for waiting in ready:
            self.book.add(waiting)
        for waiting, reason in cancel:
            self._cancel_unstarted(waiting, reason)

    def _cancel_unstarted(self: BossLoop, task: Task, reason: str) -> None:
        """A task that never started ends 'cancelled' (a prerequisite did not end done)."""
        task.move(TaskState.CANCELLED)
        self.book.stats.record(self.classes[task.class_key].qualname, "cancelled", None, None)
        self._release_common(task)
        self.outbox.append(Outcome(task.tid, "cancelled", None, None, None,
                                   f"not run: {reason}", None, None, None, None, time.time(),
                                   None))
        self._ended(task, "cancelled")

    def _cancel_running(self: BossLoop, reason: str) -> None:
        """Terminate the processes of running tasks; each of their tasks ends
        'cancelled' unless its outcome arrived meanwhile, in which case that stands."""
        procs = [p for p in self.pool.procs.values() if p.tasks]
        if not procs:
            return
        self.pool.stop(procs)  # terminates and reaps; descriptors stay open to drain
        for proc in procs:
            while (late := self.pool.drain(proc)) is not None:
                self._task_outcome(proc, late)
        for proc in procs:
            self._unwatch_process(proc)
            self.unfed.discard(proc)
            self.pool.discard(proc)
            if not proc.tasks:
                continue
            task = proc.tasks.popleft()
            self._requeue_all(proc)  # queued behind it: never started, back to pending
            self.skipping.discard(task.tid)
            self._finish(task, Outcome(task.tid, "cancelled", None, None, None, reason,
                                       None, proc.pid, task.instructions.get("scheduler_ticket"),
                                       task.started, time.time(), None))

    def _leave_to_workers(self: BossLoop) -> None:
        """STOP_LISTENING: running tasks are left to their processes. Queued tasks are
        asked back; one whose predecessor has still not reported after the Skip was
        written can no longer start (the worker reads the Skip before it), so it is
        reported pending. Only one whose predecessor ended meanwhile is left to its
        worker with the running ones."""
        self._drain_all()
        self._take_back_queued()
        self._drain_all()
        for proc in self.pool.procs.values():
            while len(proc.tasks) > 1:
                task = proc.tasks.pop()
                self.skipping.discard(task.tid)
                self.book.requeue(task)

    def _drain_all(self: BossLoop) -> None:
        """Handle every outcome already written by a busy process, without blocking."""
        for proc in list(self.pool.procs.values()):
            while proc.tasks and (late := self.pool.drain(proc)) is not None:
                self._task_outcome(proc, late)
