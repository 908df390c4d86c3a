"""The boss process: the event loop between the main program and the workers. Runs
in the boss subprocess only (``python -m taskfarm.boss_process``).

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
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import sys
import time
import traceback
from collections.abc import Iterator, Mapping
from typing import Any

from . import protocol
from .boss_dependencies import Dependencies
from .boss_pool import Pool, WorkerProcess
from .boss_tasks import Task, TaskBook, TaskState
from .processes import THREAD_VARIABLES, ExitInfo, oom_kills
from .protocol import (
    SETTING_KEYS,
    AddTasks,
    Channel,
    Configure,
    Control,
    Goodbye,
    Outcome,
    Outcomes,
    RunTask,
    Signal,
    Snapshot,
    WorkerClassSpec,
)

_READ = select.POLLIN | select.POLLHUP | select.POLLERR


class _ParentGone(Exception):
    """The main program is gone: stop everything, say nothing."""


class _Without(Mapping[str, Any]):
    """A read-only view of a mapping without one key: the running tasks as they will
    be once a given one has ended, for a prefetching scheduler. O(1) to make."""

    __slots__ = ("_key", "_mapping")

    def __init__(self, mapping: Mapping[str, Any], key: str) -> None:
        self._mapping, self._key = mapping, key

    def __getitem__(self, key: str) -> Any:
        if key == self._key:
            raise KeyError(key)
        return self._mapping[key]

    def __iter__(self) -> Iterator[str]:
        return (k for k in self._mapping if k != self._key)

    def __len__(self) -> int:
        return len(self._mapping) - (self._key in self._mapping)

    def values(self) -> Any:  # the Mapping default goes through __getitem__ per key
        return [v for k, v in self._mapping.items() if k != self._key]


class BossLoop:
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
        self.oom_count = oom_kills()   # to tell an OOM kill from another SIGKILL
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
        self.unfed: set[WorkerProcess] = set()   # busy pool processes with nothing queued
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
            timeout = None  # block until an event, or until the scheduler's re-check
            if self.recheck_at is not None:
                timeout = max(0.0, (self.recheck_at - time.monotonic()) * 1000)
            for fd, _ in self.poller.poll(timeout):
                handler = self.handlers.get(fd)
                if handler is not None:
                    handler(fd)
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
        for spec in msg.classes:
            self.classes[spec.key] = spec
        entry = self.commons.get(msg.batch_id)
        if entry is None:
            entry = self.commons[msg.batch_id] = [msg.common_blob, 0]
        entry[1] += len(msg.tasks)
        for spec in msg.tasks:
            task = Task(spec.tid, spec.class_key, msg.batch_id, spec.view,
                        self.classes[spec.class_key].qualname)
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

    # ---- launching --------------------------------------------------------------------

    def _launch(self) -> None:
        book = self.book
        self.recheck_at = None
        if self.halted or self.stopping or not book.pending:
            return
        chosen, _ = self.scheduler.launchable(book.pending, book.running_view, book.stats)
        for item in chosen:
            task = book.lookup(item)
            if task is not None:
                self._start(task, None)
        if self.prefetch:
            self._prefetch()
        if book.pending and self.recheck_after is not None:
            delay = self.recheck_after()
            if delay is not None:
                self.recheck_at = time.monotonic() + max(0.0, delay)

    def _prefetch(self) -> None:
        """Give each busy pool process its next task now, so that it starts the moment
        the current one ends (only with a scheduler that allows it, see
        BaseScheduler.prefetch). The scheduler is asked as if the process's current
        task had ended."""
        book = self.book
        while self.unfed and book.pending:
            proc = self.unfed.pop()
            if len(proc.tasks) != 1 or proc.task_conn is None:
                continue
            current = proc.tasks[0]
            others = _Without(book.running_view, current.name)
            chosen, _ = self.scheduler.launchable(book.pending, others, book.stats)
            task = book.lookup(chosen[0]) if chosen else None
            if task is not None:
                self._start(task, proc)

    def _start(self, task: Task, behind: WorkerProcess | None) -> None:
        """Hand ``task`` to an idle (or new) process, or queue it ``behind`` the task a
        busy process runs."""
        spec = self.classes[task.class_key]
        if behind is None:
            proc = self.pool.take_idle(spec.isolated or self.config.isolated)
            if proc.pidfd not in self.fd_owner:  # a new process: watch pipe and sentinel
                for fd, handler in ((proc.result_conn.fileno(), self._on_result),
                                    (proc.pidfd, self._on_exit)):
                    self._watch(fd, handler)
                    self.fd_owner[fd] = proc
        else:
            proc = behind
        self.book.launch(task, behind is not None, time.time())
        proc.tasks.append(task)
        task.worker = proc
        if behind is None and not proc.isolated:
            self.unfed.add(proc)
        batch = task.batch_id
        forget = tuple(b for b in proc.commons if b not in self.commons)
        instructions = dict(task.instructions)
        settings = {key[9:]: instructions.pop(key) for key in SETTING_KEYS
                    if key in instructions} or None
        msg = RunTask(task.tid, task.class_key, batch, instructions,
                      None if task.class_key in proc.classes else spec.blob,
                      None if batch in proc.commons else self.commons[batch][0],
                      forget, settings, spec.threads)
        # On failure the process is gone: its pidfd fires and the task ends 'killed'.
        self.pool.dispatch(proc, msg)
        if self.config.verbose:
            how = "queued" if behind is not None else "launched"
            print(f"[taskfarm boss] {how} {task.name} on pid {proc.pid}", file=sys.stderr)

    def _take_back_queued(self) -> None:
        """HALT, STOP: ask every process to drop the task queued behind its current one
        (if it has not started, it comes back as pending)."""
        for proc in self.pool.procs.values():
            for task in list(proc.tasks)[1:]:
                if task.tid not in self.skipping and proc.task_conn is not None:
                    self.skipping.add(task.tid)
                    self.pool.skip(proc, task.tid)
        self.unfed.clear()

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
        elif proc.task_conn is not None:
            if not proc.tasks:
                self.pool.idle.append(proc)
            elif len(proc.tasks) == 1:
                self.unfed.add(proc)

    def _on_exit(self, fd: int) -> None:
        proc = self.fd_owner[fd]
        while (late := self.pool.drain(proc)) is not None:
            self._task_outcome(proc, late)
        self._unwatch_process(proc)
        self.unfed.discard(proc)
        info = self.pool.forget(proc)
        if proc.tasks:
            # Its current task died with it; a task queued behind never started.
            current = proc.tasks.popleft()
            self._requeue_all(proc)
            if current.state is TaskState.QUEUED:
                self.book.begin(current, time.time())
            self._finish(current, Outcome(
                current.tid, "killed", None, None, "taskfarm.errors.WorkerKilledError",
                f"worker process {proc.pid} {info.describe()} without reporting"
                f"{self._likely_cause(info)}", None,
                proc.pid, current.instructions.get("scheduler_ticket"), current.started,
                time.time(), None, info.exitcode, info.signal_name))

    def _likely_cause(self, info: ExitInfo) -> str:
        """Name the out-of-memory killer when it is the likely cause of a SIGKILL: the
        kernel's count of its kills rose since the boss last looked."""
        if info.signal_name != "SIGKILL":
            return ""
        count = oom_kills()
        rose = count is not None and self.oom_count is not None and count > self.oom_count
        self.oom_count = count
        return (" (likely the out-of-memory killer: the kernel's oom_kill count rose; "
                "give the task more memory or declare more)") if rose else ""

    def _requeue_all(self, proc: WorkerProcess) -> None:
        while proc.tasks:
            task = proc.tasks.pop()
            self.skipping.discard(task.tid)
            self.book.requeue(task)

    def _task_outcome(self, proc: WorkerProcess, outcome: Outcome) -> None:
        if not proc.tasks or proc.tasks[0].tid != outcome.tid:
            return  # a worker answers its tasks in order; anything else is ignored
        task = proc.tasks.popleft()
        # The task queued behind started as this outcome was sent; say so before
        # _finish, which may drain that task's own outcome (fail-fast).
        if proc.tasks and proc.tasks[0].tid not in self.skipping:
            self.book.begin(proc.tasks[0], time.time())
        self.skipping.discard(task.tid)
        if outcome.status == "skipped":
            self.book.requeue(task)
        else:
            if task.state is TaskState.QUEUED:  # asked back too late: it had started
                self.book.begin(task, outcome.started or time.time())
            self._finish(task, outcome)

    def _finish(self, task: Task, outcome: Outcome) -> None:
        task.worker = None
        spec = self.classes[task.class_key]
        duration = (outcome.ended - outcome.started) if outcome.started else None
        self.book.finish(task, TaskState(outcome.status), spec.qualname, duration,
                         outcome.peak_rss)
        self._release_common(task)
        if outcome.result_blob is not None and len(outcome.result_blob) >= protocol.OUT_OF_BAND_MIN:
            outcome = outcome._replace(result_blob=protocol.blob(outcome.result_blob))
        self.outbox.append(outcome)
        if self.fail_fast and outcome.status in ("failed", "killed", "timeout") \
                and self.result is None:
            self._exit("failed", f"task {task.name!r} ended {outcome.status}")
            self._cancel_running(f"fail-fast: task {task.name!r} ended {outcome.status}")
        if self.result is None:  # the run goes on: tasks waiting for this one move on
            self._ended(task, outcome.status)

    def _release_common(self, task: Task) -> None:
        entry = self.commons[task.batch_id]
        entry[1] -= 1
        if entry[1] == 0:
            del self.commons[task.batch_id]

    def _ended(self, task: Task, status: str) -> None:
        """Tasks waiting for ``task`` become pending, or are cancelled in turn."""
        ready, cancel = self.deps.ended(task.name, status)
        for waiting in ready:
            self.book.add(waiting)
        for waiting, reason in cancel:
            self._cancel_unstarted(waiting, reason)

    def _cancel_unstarted(self, task: Task, reason: str) -> None:
        """A task that never started ends 'cancelled' (a prerequisite did not end done)."""
        task.move(TaskState.CANCELLED)
        self.book.stats.record(self.classes[task.class_key].qualname, "cancelled", None, None)
        self._release_common(task)
        self.outbox.append(Outcome(task.tid, "cancelled", None, None, None,
                                   f"not run: {reason}", None, None, None, None, time.time(),
                                   None))
        self._ended(task, "cancelled")

    def _cancel_running(self, reason: str) -> None:
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

    def _leave_to_workers(self) -> None:
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

    def _drain_all(self) -> None:
        """Handle every outcome already written by a busy process, without blocking."""
        for proc in list(self.pool.procs.values()):
            while proc.tasks and (late := self.pool.drain(proc)) is not None:
                self._task_outcome(proc, late)

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


def limit_native_threads(scheduler: Any) -> None:
    """Give each worker its share of the CPUs for native thread pools: with N workers
    on C CPUs, C // N threads each (at least 1), through the environment the workers
    inherit, so pools are sized right when a task first loads them. A variable the
    user set is left alone; a Worker class's ``threads`` overrides it per task."""
    from schedulers.cpus import available_cpus

    cpus = available_cpus()
    slots = getattr(scheduler, "max_threads", None) or cpus
    share = max(1, cpus // max(1, slots))
    for name in THREAD_VARIABLES:
        os.environ.setdefault(name, str(share))


def main(argv: list[str]) -> int:
    """Entry point: ``python -m taskfarm.boss_process CONTROL_FD REPORT_FD PARENT_PID``."""
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
    limit_native_threads(loop.scheduler)
    linger = False
    try:
        goodbye = loop.run()
        linger = goodbye.reason.startswith("STOP_LISTENING")
        loop._send(goodbye)
    except _ParentGone:
        pass
    except BaseException:
        text = traceback.format_exc()
        try:
            loop._send(Goodbye("failed", f"the boss crashed:\n{text}", ()))
        except BaseException:
            print(text, file=sys.stderr)
    finally:
        loop.shutdown(linger)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
