"""The boss process: the event loop between the main program and the workers. Runs
in the boss subprocess only (``python -m taskfarm._boss.loop``).

::

      main program                    boss process                    worker processes
    ┌──────────────┐  control pipe  ┌────────────────┐  task pipe   ┌──────────────┐
    │ Boss handle  │ ─────────────> │   BossLoop     │ ───────────> │ serve()      │
    │ (main_handle)│                │  TaskBook      │              │ Worker.task  │
    │ receiver     │ <───────────── │  Pool          │ <─────────── │              │
    │ thread       │  report pipe   │  Scheduler     │ result pipe  └──────────────┘
    └──────────────┘                └────────────────┘   + pidfd (sentinel)

*Main program.* Checks and matches instruction sets, sends them and control signals
down the control pipe; a receiver thread turns the outcomes streaming up the report
pipe into TaskReports.

*Boss.* Blocks in one ``poll()`` over the control pipe, the main program's pidfd, and
every worker's result pipe and pidfd: no fixed polling interval, so a finished task
or a dead worker is handled the moment it happens. After each wake-up it asks the
scheduler what to launch, gives tasks to idle workers, and flushes the outcomes made
so far to the main program in one message.

*Workers.* Run task after task (pool mode) or one task each (isolated mode), and send
one outcome per task. A worker that dies without one is seen through its pidfd; its
task ends 'killed' with the signal or exit code named, and its slot is refilled.

The boss dies with the main program: its control pipe reaches EOF and the main
program's pidfd becomes readable, whichever comes first; it then stops every worker.

``BossLoop`` holds the state; its launching half lives in :mod:`.boss_launch` and how
tasks end in :mod:`.boss_endings`.
"""

from __future__ import annotations

import heapq
import itertools
import math
import os
import pickle
import select
import signal
import sys
import time
import traceback
from typing import Any

from taskfarm._boss.dependencies import Dependencies
from taskfarm._boss.endings import Endings
from taskfarm._boss.launcher import Launching, default_native_threads
from taskfarm._boss.local import Pool, WorkerProcess
from taskfarm._boss.tasks import Task, TaskBook, TaskState
from taskfarm._common.messages import (
    AddTasks,
    Channel,
    Configure,
    Control,
    Goodbye,
    Outcome,
    Outcomes,
    Signal,
    Snapshot,
    WorkerClassSpec,
)
from taskfarm._common.processes import TERMINATE_GRACE, kill_quietly, oom_kills, unlink_shared

_READ = select.POLLIN | select.POLLHUP | select.POLLERR


class _ParentGone(Exception):
    """The main program is gone: stop everything, say nothing."""


class BossLoop(Launching, Endings):
    """The boss's state and its event loop; see the module docstring."""

    def __init__(self, control: Channel, reports: Channel, parent_fd: int,
                 config: Configure) -> None:
        self.control = control
        self.reports = reports
        self.parent_fd = parent_fd
        self.config = config
        self.scheduler = pickle.loads(config.scheduler_blob)
        self.fail_fast = config.on_error == "raise"
        self.book = TaskBook()
        self.deps = Dependencies()
        self.shared: set[str] = set()   # SharedArray segments, removed if the parent dies
        self.oom_count = oom_kills()   # to tell an OOM kill from another SIGKILL
        # (when, order, kind, task id or pid, attempt): task timeouts and SIGKILL times.
        self.deadlines: list[tuple[float, int, str, int, int]] = []
        self.order = itertools.count()
        self.pool = Pool(config.start_method)
        self.classes: dict[int, WorkerClassSpec] = {}
        self.commons: dict[int, list[Any]] = {}      # batch -> [blob, tasks not ended]
        self.halted = True
        self.ending = False       # END: exit once everything has ended
        self.stopping = False     # STOP: launch nothing more, exit once running ones end
        self.result: tuple[str, str] | None = None   # (report status, reason) once decided
        self.outbox: list[Outcome] = []
        self.poller = select.poll()
        self.handlers: dict[int, Any] = {}
        self.fd_owner: dict[int, WorkerProcess] = {}   # result fd / pidfd -> its process
        self.prefetch = bool(getattr(self.scheduler, "prefetch", False))
        self.recheck_after = getattr(self.scheduler, "recheck_after", None)
        self.recheck_at: float | None = None     # when the scheduler wants to be asked again
        self.unfed: set[WorkerProcess] = set()   # busy pool processes to queue tasks in
        self.given: list[WorkerProcess] = []     # processes with tasks to write (_launch)
        self.depth = 1                           # tasks to queue behind a running one
        self.mean_duration = math.inf            # recent pace of tasks (_learn_duration)
        self.skipping: set[int] = set()          # queued tasks asked back with a Skip
        self._watch(control.fileno(), self._on_control)
        self._watch(parent_fd, self._on_parent_gone)

    # ---- the loop ---------------------------------------------------------------------

    def run(self) -> Goodbye:
        """Serve until told to exit; returns the goodbye to send."""
        if self.control.buffered:  # messages that came in with Configure
            self._on_control(self.control.fd)
        while True:
            if self.result is None:
                self._launch()
                self._check_done()
            self._flush()
            if self.result is not None:
                break
            # Block until an event, the nearest task deadline or the scheduler's re-check.
            wake = min(self.recheck_at or math.inf, self.deadlines[0][0] if self.deadlines
                       else math.inf)
            timeout = None if wake == math.inf else max(0.0, (wake - time.monotonic()) * 1000)
            for fd, _ in self.poller.poll(timeout):
                handler = self.handlers.get(fd)
                if handler is not None:
                    handler(fd)
            if self.deadlines and self.deadlines[0][0] <= time.monotonic():
                self._expire()
        status, reason = self.result
        pending = (*(t.tid for t in self.book.pending.tasks()), *self.deps.blocked)
        return Goodbye(status, reason, pending)

    def _watch(self, fd: int, handler: Any) -> None:
        self.poller.register(fd, _READ)
        self.handlers[fd] = handler

    def _unwatch(self, fd: int) -> None:
        if self.handlers.pop(fd, None) is not None:
            self.poller.unregister(fd)

    def _check_done(self) -> None:
        book = self.book
        if book.running:
            return
        if self.stopping:
            self._exit("stopped", "STOP: running tasks finished, nothing more launched")
        elif self.ending and not book.pending and not self.deps.blocked:
            self._exit("finished", "every instruction set ran")

    def _exit(self, status: str, reason: str) -> None:
        if self.result is None:
            self.result = (status, reason)

    # ---- main program -----------------------------------------------------------------

    def _on_control(self, fd: int) -> None:
        # Several messages may come in one read: handle every one already buffered,
        # since poll() cannot see them.
        while True:
            try:
                msg = self.control.recv()
            except (EOFError, OSError):
                raise _ParentGone from None
            if isinstance(msg, AddTasks):
                self._add_tasks(msg)
            elif isinstance(msg, Control):
                self._on_signal(msg)
            if not self.control.buffered or self.result is not None:
                return

    def _on_parent_gone(self, fd: int) -> None:
        raise _ParentGone

    def _add_tasks(self, msg: AddTasks) -> None:
        self.shared.update(msg.shared)
        for spec in msg.classes:
            self.classes[spec.key] = spec
        entry = self.commons.get(msg.batch_id)
        if entry is None:
            entry = self.commons[msg.batch_id] = [msg.common_blob, 0]
        entry[1] += len(msg.tasks)
        for spec in msg.tasks:
            task = Task(spec.tid, spec.class_key, msg.batch_id, spec.view,
                        self.classes[spec.class_key].qualname)
            task.payload = spec.payload
            reason = spec.cancelled or self.deps.add(task, spec.after)
            if reason is None:
                self.book.add(task)
            elif reason:
                self._cancel_unstarted(task, reason)
            # "": it waits for its prerequisites in self.deps

    def _on_signal(self, msg: Control) -> None:
        sig = msg.signal
        if sig is Signal.HALT:
            self.halted = True
            self._take_back_queued()
        elif sig is Signal.RESUME:
            self.halted = False
        elif sig is Signal.SEND_REPORT:
            self._flush()
            running = tuple((t.tid, t.worker.pid if t.worker else None,
                             t.instructions.get("scheduler_ticket"), t.started or 0.0)
                            for t in self.book.running.values()
                            if t.state is TaskState.RUNNING)
            self._send(Snapshot(msg.seq, "halted" if self.halted else "running", running))
        elif sig is Signal.END:
            self.ending = True
        elif sig is Signal.STOP:
            self.stopping = True
            self._take_back_queued()
        elif sig is Signal.STOP_LISTENING:
            self._leave_to_workers()
            self._exit("stopped", "STOP_LISTENING: running tasks were left to finish alone")
        elif sig is Signal.STOP_RIGHTNOW:
            self._exit("stopped", "STOP_RIGHTNOW: running tasks were terminated")
            self._cancel_running("STOP_RIGHTNOW")

    # ---- workers ----------------------------------------------------------------------

    def _on_result(self, fd: int) -> None:
        proc = self.fd_owner[fd]
        while True:
            outcome = self.pool.receive(proc)
            if outcome is None:           # EOF: the pidfd will tell how it ended
                self._unwatch(fd)
                return
            self._task_outcome(proc, outcome)
            # Two outcomes (a task and the one queued behind it) can come in one read;
            # poll() cannot see the second in our buffer.
            if proc.result_conn is None or not proc.result_conn.buffered:
                break
        if proc.isolated:
            self.pool.release(proc)
        elif proc.task_conn is not None and proc.doomed_by is None:
            if not proc.tasks:
                self.pool.idle.append(proc)
            elif len(proc.tasks) - 1 <= self.depth // 2:  # refill in batches
                self.unfed.add(proc)

    def _on_exit(self, fd: int) -> None:
        proc = self.fd_owner[fd]
        while (late := self.pool.drain(proc)) is not None:
            self._task_outcome(proc, late)
        self._unwatch_process(proc)
        self.unfed.discard(proc)
        info = self.pool.forget(proc)
        if not proc.tasks:
            return
        # Its current task died with it; a task queued behind never started.
        current = proc.tasks.popleft()
        self._requeue_all(proc)
        if proc.doomed_by is not None and proc.doomed_by != current.tid:
            self.book.requeue(current)  # hit by the signal meant for the task before it
            return
        if current.state is TaskState.QUEUED:
            self.book.begin(current, time.time())
        if proc.doomed_by == current.tid:
            ran = time.time() - (current.started or time.time())
            self._finish(current, Outcome(
                current.tid, "timeout", None, None, None,
                f"ran past its timeout of {current.instructions['timeout']:g} s: stopped after "
                f"{ran:.1f} s ({info.describe()})", None, proc.pid,
                current.instructions.get("scheduler_ticket"), current.started, time.time(),
                None, info.exitcode, info.signal_name))
            return
        self._finish(current, Outcome(
            current.tid, "killed", None, None, "taskfarm._common.errors.WorkerKilledError",
            f"worker process {proc.pid} {info.describe()} without reporting"
            f"{self._likely_cause(info)}", None,
            proc.pid, current.instructions.get("scheduler_ticket"), current.started,
            time.time(), None, info.exitcode, info.signal_name))

    # ---- deadlines --------------------------------------------------------------------

    def _began(self, task: Task) -> None:
        """A task started running: its timeout, if it has one, starts now."""
        timeout = task.instructions.get("timeout")
        if timeout:
            heapq.heappush(self.deadlines, (time.monotonic() + timeout, next(self.order),
                                            "timeout", task.tid, len(task.attempts)))

    def _expire(self) -> None:
        """Act on every deadline that has passed: time tasks out, then kill what did
        not stop within the grace period."""
        now = time.monotonic()
        while self.deadlines and self.deadlines[0][0] <= now:
            _, _, kind, ref, attempt = heapq.heappop(self.deadlines)
            if kind == "timeout":
                task = self.book.running.get(ref)
                if task is not None and task.state is TaskState.RUNNING \
                        and len(task.attempts) == attempt and task.worker is not None \
                        and task.worker.doomed_by is None:
                    self._time_out(task)
            else:
                proc = self.pool.procs.get(ref)
                if proc is not None and proc.doomed_by is not None:
                    kill_quietly(proc.pid, signal.SIGKILL)

    def _time_out(self, task: Task) -> None:
        """SIGTERM now (a task may catch it to clean up), SIGKILL after the grace
        period; the process's death ends the task 'timeout'."""
        proc = task.worker
        proc.doomed_by = task.tid
        self.unfed.discard(proc)
        kill_quietly(proc.pid, signal.SIGTERM)
        heapq.heappush(self.deadlines, (time.monotonic() + TERMINATE_GRACE, next(self.order),
                                        "kill", proc.pid, 0))

    def _unwatch_process(self, proc: WorkerProcess) -> None:
        for fd in proc.watched:
            self._unwatch(fd)
            self.fd_owner.pop(fd, None)

    # ---- main program, outbound -------------------------------------------------------

    def _flush(self) -> None:
        if self.outbox:
            outbox, self.outbox = self.outbox, []
            self._send(Outcomes(tuple(outbox)))

    def _send(self, msg: Any) -> None:
        try:
            self.reports.send(msg)
        except OSError:
            raise _ParentGone from None

    # ---- ending -----------------------------------------------------------------------

    def shutdown(self, linger: bool) -> None:
        """Release every worker. With ``linger`` (STOP_LISTENING), running tasks are
        left to finish: their pipes are closed and the boss waits for their processes;
        otherwise running processes are terminated."""
        busy = [p for p in self.pool.procs.values() if p.tasks]
        for proc in list(self.pool.procs.values()):
            self.pool.release(proc)
        if not linger and busy:
            self.pool.stop(busy)
        elif linger:
            for proc in busy:  # a result the nobody reads must not block its writer
                if proc.result_conn is not None:
                    proc.result_conn.close()
                    proc.result_conn = None
        for proc in list(self.pool.procs.values()):
            self.pool.forget(proc)  # reap: blocks until each released process has exited
        self.pool.close_zygotes()


def main(argv: list[str]) -> int:
    """Entry point: ``python -m taskfarm._boss.loop CONTROL_FD REPORT_FD PARENT_PID``."""
    control_fd, report_fd, parent_pid = (int(a) for a in argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main program decides on Ctrl-C
    control = Channel(control_fd)
    reports = Channel(report_fd)
    try:
        parent_fd = os.pidfd_open(parent_pid)
    except ProcessLookupError:
        return 0
    if os.getppid() != parent_pid:
        return 0
    try:
        config = control.recv()
    except (EOFError, OSError):
        return 0
    sys.path[:] = config.sys_path
    loop = BossLoop(control, reports, parent_fd, config)
    default_native_threads(loop.scheduler)
    linger = parent_gone = False
    try:
        goodbye = loop.run()
        linger = goodbye.reason.startswith("STOP_LISTENING")
        loop._send(goodbye)
    except _ParentGone:
        parent_gone = True
    except BaseException:
        text = traceback.format_exc()
        try:
            loop._send(Goodbye("failed", f"the boss crashed:\n{text}", ()))
        except BaseException:
            print(text, file=sys.stderr)
    finally:
        loop.shutdown(linger)
        if parent_gone:  # nobody else is left to remove them
            unlink_shared(loop.shared)
    return 0

