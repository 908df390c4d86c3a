"""The local backend, in the boss process: tasks run in worker processes on this
machine. Starts a worker process, gives it tasks, reads its messages, retires it,
stops it. Knows pipes, pidfds and signals; knows nothing of schedulers or error
policy (see :mod:`taskfarm._boss.backend` for the interface the loop drives).

Each worker process has two pipes of its own (tasks in, messages out) and a pidfd,
which becomes readable the instant the process ends: that is its sentinel. Pipes per
process, rather than one shared queue, mean a worker killed in the middle of a write
can corrupt nothing but its own pipe, and no lock can be left held by a dead process.

Start methods: 'fork' (default) forks from the boss, which is small and
single-threaded, so forking is safe and takes well under a millisecond; 'spawn'
starts a fresh interpreter (``python -m taskfarm._worker``) for code that must not
inherit anything; 'main' has every worker (pool and isolated) forked by a copy of the
main program taken when the Boss was made, so that tasks see the state the main
program had set up (see :mod:`taskfarm._main.main_copy`). Otherwise isolated tasks of
a class come from that class's zygote (:mod:`taskfarm._boss.zygote`) when it can make
them.
"""

from __future__ import annotations

import itertools
import os
import resource
import signal
from collections import deque
from collections.abc import Callable, Iterator

from taskfarm._boss.backend import BackendEvents, Doom, NoCapacity, Watcher
from taskfarm._boss.deadlines import Deadlines
from taskfarm._boss.starting import fork_worker, spawn_worker
from taskfarm._boss.tasks import Task
from taskfarm._boss.zygote import Zygote, Zygotes
from taskfarm._common import worker_class  # noqa: F401 - preloaded: forked workers need not import it
from taskfarm._common.messages import (
    Notice,
    Outcome,
    Release,
    RunTask,
    Skip,
    Skipped,
    WorkerClassSpec,
)
from taskfarm._common.processes import (
    START_METHODS,
    TAKE_BACK_SIGNAL,
    ExitInfo,
    begin_termination,
    end_descendants,
    kill_quietly,
    reap,
    still_running,
    terminate,
)
from taskfarm._common.wire import Channel, unexpected

# Descriptors the boss keeps for itself (standard streams, its pipes to the main
# program, the main program's pidfd, zygote sockets, a spawn in progress); each worker
# costs it three more (two pipe ends and a pidfd).
RESERVED_FDS = 32
FDS_PER_WORKER = 3


def _nofile() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]

# How long the end of a farm waits for its worker processes' teardown_process hooks
# (seconds; the environment variable, read by the boss, changes it).
TEARDOWN_WAIT = 30.0
TEARDOWN_WAIT_VARIABLE = "TASKFARM_TEARDOWN_WAIT"


def teardown_wait() -> float:
    """TEARDOWN_WAIT, or the boss's ``TASKFARM_TEARDOWN_WAIT`` when it is a number."""
    try:
        return max(0.0, float(os.environ[TEARDOWN_WAIT_VARIABLE]))
    except (KeyError, ValueError):
        return TEARDOWN_WAIT


class WorkerProcess:
    """The boss's handle on one worker process (a :class:`~taskfarm._boss.backend.Slot`)."""

    __slots__ = ("classes", "commons", "doom", "isolated", "nudge", "number", "outgoing", "pid",
                 "pidfd", "ran", "result_conn", "task_conn", "tasks", "zygote")

    def __init__(self, pid: int, pidfd: int, task_conn: Channel, result_conn: Channel,
                 isolated: bool, number: int = 0) -> None:
        self.pid = pid
        self.number = number
        self.ran = 0
        self.pidfd = pidfd
        self.task_conn: Channel | None = task_conn
        self.result_conn: Channel | None = result_conn
        self.isolated = isolated
        self.classes: set[int] = set()
        self.commons: set[int] = set()
        self.tasks: deque[Task] = deque()
        self.outgoing: list[RunTask | Skip | Release] = []  # written in one go by flush()
        self.doom: Doom | None = None
        self.nudge = False                 # a Skip is in outgoing: signal it once written
        self.zygote: Zygote | None = None   # its parent, when not the boss (isolated mode)

    def __repr__(self) -> str:
        return f"<WorkerProcess pid={self.pid} tasks={[t.tid for t in self.tasks]}>"


class LocalBackend:
    """Worker processes on this machine; idle pool processes wait in ``_idle``."""

    def __init__(self, start_method: str, watcher: Watcher, events: BackendEvents,
                 deadlines: Deadlines, main_copy: int | None = None,
                 express: int | None = None) -> None:
        if start_method not in START_METHODS:
            raise ValueError(f"start_method must be one of {START_METHODS}, not {start_method!r}")
        self.start_method = start_method
        self._watcher, self._events, self._deadlines = watcher, events, deadlines
        self.procs: dict[int, WorkerProcess] = {}   # pid -> process
        self._by_fd: dict[int, WorkerProcess] = {}  # its result pipe and pidfd -> process
        self._idle: list[WorkerProcess] = []
        self._unsent: list[WorkerProcess] = []      # processes with something to write
        # Isolated mode's zygotes, and start_method "main"'s copy of the main program.
        self._zygotes = Zygotes(main_copy if start_method == "main" else None)
        # The pipe for results written straight to the main program (an executor's
        # farm: _common/express.py), given to the processes this backend starts itself.
        self._express = express
        soft = _nofile()
        self.max_procs = (max(1, (soft - RESERVED_FDS) // FDS_PER_WORKER)
                          if soft != resource.RLIM_INFINITY else 1 << 20)

    # ---- the Backend interface ----------------------------------------------------------

    def acquire(self, spec: WorkerClassSpec, isolated: bool) -> WorkerProcess:
        if not isolated and self._idle:
            return self._idle.pop()
        proc = self._spawn(isolated, spec)
        assert proc.result_conn is not None
        for fd, handler in ((proc.result_conn.fileno(), self._readable),
                            (proc.pidfd, self._ended)):
            self._watcher.watch(fd, handler)
            self._by_fd[fd] = proc
        return proc

    def give(self, slot: WorkerProcess, msg: RunTask) -> None:
        self._queue(slot, msg)
        slot.classes.add(msg.class_key)
        slot.commons.add(msg.batch_id)
        slot.commons.difference_update(msg.forget)

    def flush(self) -> None:
        for proc in self._unsent:
            self._write(proc)
            if proc.nudge:  # answer the Skips now, even in the middle of a long task
                proc.nudge = False
                kill_quietly(proc.pid, TAKE_BACK_SIGNAL)
        self._unsent.clear()

    def take_back(self, slot: WorkerProcess, tid: int) -> None:
        self._queue(slot, Skip(tid))  # after the task it names, in the same write
        slot.nudge = True             # and a signal once written (see flush)

    def drain(self, slot: WorkerProcess) -> None:
        conn = slot.result_conn
        msgs: list[Outcome | Skipped | Notice] = []
        try:
            while conn is not None and conn.poll():
                msgs.append(self._checked(conn.recv()))
        except (EOFError, OSError):
            pass
        if msgs:
            self._events.on_messages(slot, msgs)

    def idle(self, slot: WorkerProcess) -> None:
        if slot.isolated:
            self._retire(slot)
        elif slot.task_conn is not None and slot.doom is None and slot not in self._idle:
            self._idle.append(slot)

    def release(self, names: tuple[str, ...]) -> None:
        for proc in self.procs.values():
            if not proc.isolated and proc.task_conn is not None:
                self._queue(proc, Release(names))
        self.flush()

    def retire(self, slot: WorkerProcess) -> None:
        self._retire(slot)

    def stop(self, slot: WorkerProcess) -> None:
        if slot in self._idle:
            self._idle.remove(slot)

        def later(delay: float, kill: Callable[[], None]) -> None:
            self._deadlines.after(delay, lambda: kill() if slot.pid in self.procs else None)

        begin_termination(slot.pid, slot.pidfd, later)

    def slots(self) -> Iterator[WorkerProcess]:
        return iter(list(self.procs.values()))

    def shutdown(self, linger: bool) -> None:
        busy = [p for p in self.procs.values() if p.tasks]
        for proc in list(self.procs.values()):
            self._retire(proc)
        if not linger and busy:
            terminate([(p.pid, p.pidfd) for p in busy],  # a zygote reaps its own
                      reapers={p.pid: p.zygote.exit_info for p in busy if p.zygote})
            for proc in busy:
                self._discard(proc)
        elif linger:
            for proc in busy:  # a result that nobody reads must not block its writer
                if proc.result_conn is not None:
                    proc.result_conn.close()
                    proc.result_conn = None
        # teardown_process hooks have a bounded time: a process still there is stopped
        # (not one left to finish its task: STOP_LISTENING).
        late = still_running({p.pidfd: p for p in self.procs.values()
                              if not (linger and p in busy)}, teardown_wait())
        if late:   # a zygote reaps its own
            terminate([(p.pid, p.pidfd) for p in late],
                      reapers={p.pid: p.zygote.exit_info for p in late if p.zygote})
            for proc in late:
                self._discard(proc)
        for proc in list(self.procs.values()):
            self._reap(proc)
        self._zygotes.close()

    # ---- events -------------------------------------------------------------------------

    def _readable(self, fd: int) -> None:
        proc = self._owner(fd)
        conn = proc.result_conn
        assert conn is not None
        msgs: list[Outcome | Skipped | Notice] = []
        try:
            # Several messages may come in one read; poll() cannot see those buffered.
            msgs.append(self._checked(conn.recv()))
            while conn.buffered:
                msgs.append(self._checked(conn.recv()))
        except (EOFError, OSError):   # EOF: the pidfd will tell how it ended
            self._watcher.unwatch(fd)
        if msgs:
            self._events.on_messages(proc, msgs)

    def _ended(self, fd: int) -> None:
        proc = self._owner(fd)
        self.drain(proc)
        self._events.on_exit(proc, self._reap(proc))

    def _owner(self, fd: int) -> WorkerProcess:
        return self._by_fd[fd]

    @staticmethod
    def _checked(msg: object) -> Outcome | Skipped | Notice:
        if not isinstance(msg, (Outcome, Skipped, Notice)):
            raise unexpected(msg, "the boss (from a worker)")
        return msg

    # ---- mechanics ----------------------------------------------------------------------

    def _queue(self, proc: WorkerProcess, msg: RunTask | Skip | Release) -> None:
        if not proc.outgoing:
            self._unsent.append(proc)
        proc.outgoing.append(msg)

    def _write(self, proc: WorkerProcess) -> None:
        """Write what was given to a process. One already gone is left to its
        sentinel, which says how it ended."""
        msgs, proc.outgoing = proc.outgoing, []
        if msgs and proc.task_conn is not None:
            try:
                proc.task_conn.send_many(msgs)
            except OSError:
                pass

    def _retire(self, proc: WorkerProcess) -> None:
        """Ask a process to exit once idle: it sees EOF on its task pipe."""
        if proc in self._idle:
            self._idle.remove(proc)
        self._write(proc)
        if proc.task_conn is not None:
            proc.task_conn.close()
            proc.task_conn = None

    def _reap(self, proc: WorkerProcess) -> ExitInfo:
        """A process that ended (or is ending): collect its status, close its
        descriptors, forget it."""
        info: ExitInfo | None
        if proc.zygote is not None:  # the zygote ends its group before it reaps it
            info = proc.zygote.exit_info(proc.pid)
        else:
            end_descendants(proc.pid)
            info = reap(proc.pid)
        self._discard(proc)
        return info or ExitInfo(None, None)

    def _discard(self, proc: WorkerProcess) -> None:
        if self.procs.pop(proc.pid, None) is None:
            return
        if proc in self._idle:
            self._idle.remove(proc)
        for fd in [fd for fd, owner in self._by_fd.items() if owner is proc]:
            self._watcher.unwatch(fd)
            del self._by_fd[fd]
        for conn in (proc.task_conn, proc.result_conn):
            if conn is not None:
                conn.close()
        proc.task_conn = proc.result_conn = None
        os.close(proc.pidfd)

    def _spawn(self, isolated: bool, spec: WorkerClassSpec) -> WorkerProcess:
        """Start one worker process, waiting for its first task. An isolated one comes
        from its class's zygote when it can. NoCapacity when the descriptor budget is
        spent or the system refuses (EMFILE, EAGAIN, ENOMEM): nothing is left behind."""
        if len(self.procs) >= self.max_procs:
            raise NoCapacity(f"{len(self.procs)} worker processes use the boss's descriptor "
                             f"budget (RLIMIT_NOFILE {_nofile()}); raise it to run more")
        opened: list[int] = []
        try:
            task_r, task_w = os.pipe()
            opened += (task_r, task_w)
            result_r, result_w = os.pipe()
            opened += (result_r, result_w)
            zygote, pid = None, 0
            if self.start_method == "main" or (isolated and self.start_method == "fork"):
                zygote, pid = self._zygotes.fork(spec, task_r, result_w)
                if not pid and zygote is not None:
                    # The zygote failed while it held these pipes: a worker it forked
                    # before dying may hold them too. Fresh ones, so that no stray
                    # process can read this worker's tasks; the old ones reach EOF.
                    for fd in opened:
                        os.close(fd)
                    opened.clear()
                    task_r, task_w = os.pipe()
                    opened += (task_r, task_w)
                    result_r, result_w = os.pipe()
                    opened += (result_r, result_w)
                    zygote = None
            if not pid:
                start = fork_worker if self.start_method == "fork" else spawn_worker
                pid = start(task_r, result_w, self._express)
        except OSError as exc:
            for fd in opened:
                os.close(fd)
            raise NoCapacity(f"cannot start a worker process: {exc}") from exc
        os.close(task_r)
        os.close(result_w)
        try:
            pidfd = os.pidfd_open(pid)
        except OSError as exc:  # no descriptor left for its sentinel: undo the start
            kill_quietly(pid, signal.SIGKILL)
            (zygote.exit_info if zygote is not None else reap)(pid)
            os.close(task_w)
            os.close(result_r)
            why = ("it died as it started" if isinstance(exc, ProcessLookupError)
                   else f"cannot watch it: {exc}")
            raise NoCapacity(f"a new worker process could not be used: {why}") from exc
        used = {p.number for p in self.procs.values() if p.task_conn is not None}  # not retiring
        number = next(n for n in itertools.count() if n not in used)
        proc = WorkerProcess(pid, pidfd, Channel(task_w), Channel(result_r), isolated, number)
        if zygote is not None:
            proc.zygote = zygote
            if zygote.class_key is not None:
                proc.classes.add(spec.key)  # loaded by the zygote: no need to send it
        self.procs[pid] = proc
        return proc
