"""Worker process mechanics in the boss process: start a worker process, give it a
task, read its outcome, retire it, stop them all. Knows pipes, pidfds and signals;
knows nothing of schedulers or error policy.

Each worker process has two pipes of its own (tasks in, outcomes out) and a pidfd,
which becomes readable the instant the process ends: that is its sentinel. Pipes per
process, rather than one shared queue, mean a worker killed in the middle of a write
can corrupt nothing but its own pipe, and no lock can be left held by a dead process.

Start methods: 'fork' (default) forks from the boss, which is small and
single-threaded, so forking is safe and takes well under a millisecond; 'spawn'
starts a fresh interpreter (``python -m taskfarm._common.worker_class_process``) for code that must
not inherit anything.
"""

from __future__ import annotations

import os
import sys
from collections import deque
from typing import Any

from taskfarm._boss.zygote import Zygote
from taskfarm._common.messages import Channel, Outcome, RunTask, Skip
from taskfarm._common.processes import ExitInfo, flush_std_streams, reap, terminate
from taskfarm._worker import serve as worker_process

START_METHODS = ("fork", "spawn")


class WorkerProcess:
    """The boss's handle on one worker process."""

    __slots__ = ("classes", "commons", "doomed_by", "isolated", "outgoing", "pid", "pidfd",
                 "result_conn", "task_conn", "tasks", "watched", "zygote")

    def __init__(self, pid: int, pidfd: int, task_conn: Channel, result_conn: Channel,
                 isolated: bool) -> None:
        self.pid = pid
        self.pidfd = pidfd
        self.task_conn: Channel | None = task_conn
        self.result_conn: Channel | None = result_conn
        self.isolated = isolated
        self.classes: set[int] = set()     # Worker classes this process holds
        self.commons: set[int] = set()     # common-instruction batches it holds
        # The Task it runs first, then those queued behind it (prefetch), in order.
        self.tasks: deque[Any] = deque()
        self.outgoing: list[RunTask] = []  # tasks given, written in one go by send()
        self.watched = (result_conn.fileno(), pidfd)   # what the boss polls for it
        self.doomed_by: int | None = None  # the task whose timeout is stopping this process
        self.zygote: Zygote | None = None   # its parent, when not the boss (isolated mode)

    def __repr__(self) -> str:
        return f"<WorkerProcess pid={self.pid} tasks={[t.tid for t in self.tasks]}>"


class Pool:
    """The boss's worker processes: the idle ones wait for work in ``idle``."""

    def __init__(self, start_method: str = "fork") -> None:
        if start_method not in START_METHODS:
            raise ValueError(f"start_method must be one of {START_METHODS}, not {start_method!r}")
        self.start_method = start_method
        self.procs: dict[int, WorkerProcess] = {}   # pid -> process
        self.idle: list[WorkerProcess] = []
        # Isolated mode: class key -> its zygote, or None where the boss forks itself.
        self.zygotes: dict[int, Zygote | None] = {}
        self.broken: list[Zygote] = []  # zygotes that failed: closed at the end

    def spawn(self, isolated: bool, class_key: int | None = None,
              class_blob: bytes | None = None) -> WorkerProcess:
        """Start one worker process, waiting for its first task. An isolated one of a
        known class comes from that class's zygote when it can."""
        task_r, task_w = os.pipe()
        result_r, result_w = os.pipe()
        zygote = None
        try:
            pid = 0
            if isolated and class_blob is not None and self.start_method == "fork":
                zygote, pid = self._from_zygote(class_key, class_blob, task_r, result_w)
            if not pid:
                pid = (_fork if self.start_method == "fork" else _spawn)(task_r, result_w)
        finally:
            os.close(task_r)
            os.close(result_w)
        proc = WorkerProcess(pid, os.pidfd_open(pid), Channel(task_w), Channel(result_r),
                             isolated)
        if pid and zygote is not None:
            proc.zygote = zygote
            proc.classes.add(class_key)  # loaded by the zygote: no need to send it
        self.procs[pid] = proc
        return proc

    def take_idle(self, isolated: bool, class_key: int | None = None,
                  class_blob: bytes | None = None) -> WorkerProcess:
        """An idle pool process, or a new one (always new for an isolated task)."""
        if not isolated and self.idle:
            return self.idle.pop()
        return self.spawn(isolated, class_key, class_blob)

    def _from_zygote(self, class_key: int, class_blob: bytes, task_r: int,
                     result_w: int) -> tuple[Zygote | None, int]:
        """A worker forked by the class's zygote (started on first use), and that
        zygote; pid 0 when the class has no usable zygote: the boss forks itself."""
        zygote = self.zygotes.get(class_key, ...)
        if zygote is ...:
            zygote = self.zygotes[class_key] = Zygote.start(class_key, class_blob)
        if zygote is None:
            return None, 0
        pid = zygote.fork(task_r, result_w)
        if not pid:  # the zygote is gone or failed: fork from here from now on
            self.zygotes[class_key] = None
            self.broken.append(zygote)
        return zygote, pid

    def close_zygotes(self) -> None:
        """End every zygote (at the boss's exit, once its workers are reaped)."""
        for zygote in [*self.zygotes.values(), *self.broken]:
            if zygote is not None:
                zygote.close()
        self.zygotes.clear()
        self.broken.clear()

    def dispatch(self, proc: WorkerProcess, msg: RunTask) -> None:
        """Give a task to a process; it is written with the others given since, by
        :meth:`send`, in one write."""
        proc.outgoing.append(msg)
        proc.classes.add(msg.class_key)
        proc.commons.add(msg.batch_id)
        proc.commons.difference_update(msg.forget)

    def send(self, proc: WorkerProcess) -> None:
        """Write the tasks given to a process since the last call. A process already
        gone is left to its sentinel, which says how it ended."""
        msgs, proc.outgoing = proc.outgoing, []
        if msgs and proc.task_conn is not None:
            try:
                proc.task_conn.send_many(msgs)
            except OSError:
                pass

    def skip(self, proc: WorkerProcess, tid: int) -> None:
        """Ask a process not to start a task queued in its pipe, if it has not yet."""
        self.send(proc)  # a Skip must follow the task it names
        try:
            proc.task_conn.send(Skip(tid))
        except OSError:
            pass

    def receive(self, proc: WorkerProcess) -> Outcome | None:
        """One outcome from a process whose result pipe is readable; None at EOF."""
        try:
            return proc.result_conn.recv()
        except (EOFError, OSError):
            return None

    def drain(self, proc: WorkerProcess) -> Outcome | None:
        """An outcome the process wrote before it ended, if any."""
        conn = proc.result_conn
        try:
            if conn is not None and conn.poll():
                return conn.recv()
        except (EOFError, OSError):
            pass
        return None

    def release(self, proc: WorkerProcess) -> None:
        """Ask a process to exit once it is idle: it sees EOF on its task pipe."""
        if proc in self.idle:
            self.idle.remove(proc)
        self.send(proc)
        if proc.task_conn is not None:
            proc.task_conn.close()
            proc.task_conn = None

    def forget(self, proc: WorkerProcess) -> ExitInfo:
        """A process whose sentinel fired: reap it and close its descriptors."""
        info = proc.zygote.exit_info(proc.pid) if proc.zygote else reap(proc.pid)
        self.discard(proc)
        return info or ExitInfo(None, None)

    def discard(self, proc: WorkerProcess) -> None:
        """Close the descriptors of a process already reaped and drop it."""
        self.procs.pop(proc.pid, None)
        if proc in self.idle:
            self.idle.remove(proc)
        for conn in (proc.task_conn, proc.result_conn):
            if conn is not None:
                conn.close()
        proc.task_conn = proc.result_conn = None
        os.close(proc.pidfd)

    def stop(self, procs: list[WorkerProcess]) -> dict[int, ExitInfo]:
        """Terminate the given processes (SIGTERM, grace, SIGKILL) and reap them."""
        return terminate([(p.pid, p.pidfd) for p in procs],  # a zygote reaps its own
                         reapers={p.pid: p.zygote.exit_info for p in procs if p.zygote})


def _fork(task_r: int, result_w: int) -> int:
    flush_std_streams()
    pid = os.fork()
    if pid:
        return pid
    worker_process.run_worker(task_r, result_w)
    return 0  # not reached


def _spawn(task_r: int, result_w: int) -> int:
    os.set_inheritable(task_r, True)
    os.set_inheritable(result_w, True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    argv = [sys.executable, "-m", "taskfarm._worker", str(task_r), str(result_w),
            str(os.getpid())]
    return os.posix_spawn(sys.executable, argv, env)
