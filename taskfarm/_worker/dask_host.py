"""The Dask side of the Dask backend: each Dask worker hosts one taskfarm worker
process. Runs in Dask worker processes (the plugin and the functions the boss sends
there), except :func:`refuse_shared_array`, which runs in the hosted process.

::

    boss process                     Dask worker (this module)         hosted process
   ┌──────────────┐  Dask task:    ┌───────────────────────────┐ task ┌──────────────┐
   │ DaskSlots    │  run_batch ──> │ TaskfarmHost (a plugin)   │ pipe │ serve():     │
   │ (a Client)   │ <── outcomes   │  writes the batch, reads  │ ───> │ Worker.task  │
   │              │  client.run:   │  every outcome, reaps and │ <─── │ one outcome  │
   │              │  signal ─────> │  restarts a process that  │result│ per task     │
   └──────────────┘                │  died                     │ pipe └──────────────┘
                                   └───────────────────────────┘ pidfd (sentinel)

*The plugin* (:class:`TaskfarmHost`, registered by the boss under a name of its own)
starts the hosted process when the Dask worker sets it up: a fresh interpreter
(``python -m taskfarm._worker``, as the local 'spawn' start method), with two pipes
and a pidfd, as :mod:`taskfarm._boss.local` does for a local worker. The hosted
process dies with the Dask worker (parent-death signal; it is always started from the
worker's event-loop thread, which lives as long as the worker).

*A batch* (:func:`run_batch`, one Dask task) is the RunTask messages the boss gave one
slot since its last batch, pickled by the boss: the host writes them in one frame and
reads messages until it has one outcome per task, or until the process dies (then it
reaps it, says how it ended, and starts a new one). The outcomes and the notices the
tasks made (``emit()``, log records) travel back together as the Dask task's result:
a task's notices reach the boss with its outcome, not as they are made.

*Stopping* (:func:`signal_hosted`, through ``client.run``, which runs on the worker's
event loop even while a batch occupies its thread): the boss's termination policy,
SIGTERM then SIGKILL, sent to the hosted process and its process group. The Dask
worker itself is never stopped.
"""

from __future__ import annotations

import concurrent.futures
import fcntl
import os
import select
import signal
import sys
import threading
import uuid
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

from distributed import WorkerPlugin, get_worker

from taskfarm._common.errors import InstructionError
from taskfarm._common.messages import Notice, Outcome, Skipped
from taskfarm._common.processes import (
    TERMINATE_GRACE,
    THREAD_VARIABLES,
    ExitInfo,
    end_descendants,
    reap,
    signal_family,
)
from taskfarm._common.waiting import readable
from taskfarm._common.wire import Channel, Message, dumps

_T = TypeVar("_T")
# A hosted process gets this long to end on its own when the Dask worker closes.
CLOSE_WAIT = 5.0
# How long a worker thread waits for the event loop to start a hosted process.
SPAWN_WAIT = 60.0
# Descriptors the hosted process finds its pipes on.
_TASK_FD, _RESULT_FD = 3, 4
# (pid, token): a hosted process, as the boss knows it; the token tells a process from
# the one that replaced it.
Identity = tuple[int, str]
# (exit code, signal name) of a hosted process that ended.
Ending = tuple[int | None, str | None]


class Hosted:
    """One hosted process: its pipes, its pidfd, and a token of its own."""

    __slots__ = ("pid", "pidfd", "reaped", "results", "tasks", "token")

    def __init__(self, pid: int, pidfd: int, tasks: Channel, results: Channel) -> None:
        self.pid, self.pidfd = pid, pidfd
        self.tasks, self.results = tasks, results
        self.token = uuid.uuid4().hex
        self.reaped = False


class TaskfarmHost(WorkerPlugin):
    """The plugin: one hosted process per Dask worker (see the module docstring).

    Args:
        name: the plugin's name, one per farm.
        environ: variables the hosted process gets (None: removed), as the boss sets
            them for local workers (log level, seed, captured output).
        path: the boss's ``sys.path``, appended to the hosted process's own.
    """

    def __init__(self, name: str, environ: dict[str, str | None], path: list[str]) -> None:
        self.name, self.environ, self.path = name, environ, path

    # ---- the plugin (on the worker's event loop) ------------------------------------------

    def setup(self, worker: Any) -> None:
        self.worker = worker
        self.loop_thread = threading.get_ident()
        self.batch_lock = threading.Lock()    # one batch (or restart) at a time
        self.signal_lock = threading.Lock()   # a signal never reaches a reaped pid
        self.closed = False
        self.linger = False   # closing lets a running batch finish
        env = dict(os.environ)
        for key, value in self.environ.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        # Native thread pools: the Dask worker's share of its machine.
        threads = str(max(1, int(getattr(worker, "nthreads", 1) or 1)))
        env.update(dict.fromkeys(THREAD_VARIABLES, threads))
        path = [*sys.path, *(p for p in self.path if p not in sys.path)]
        env["PYTHONPATH"] = os.pathsep.join(p for p in path if p)
        self.env = env
        self.proc: Hosted | None = self._spawn()

    def teardown(self, worker: Any) -> None:
        self.close(self.linger)

    def close(self, linger: bool) -> None:
        """The farm or the worker ends: no new process. An idle hosted process is told
        to exit (EOF on its task pipe) and gets ``CLOSE_WAIT`` to do so; a busy one is
        stopped (SIGTERM, SIGKILL), or with ``linger`` left to finish its batch, and
        the batch's thread ends it."""
        self.closed = True
        self.linger = linger
        proc = self.proc
        if proc is None or proc.reaped:
            return
        if self.batch_lock.acquire(blocking=False):
            try:   # idle: end it here
                proc.tasks.close()
                if not readable((proc.pidfd,), CLOSE_WAIT):
                    self._terminate(proc)
                self._reap(proc)
                self.proc = None
            finally:
                self.batch_lock.release()
        elif not linger:
            self.signal(proc.token, signal.SIGTERM)
            self.worker.loop.call_later(TERMINATE_GRACE, self.signal, proc.token,
                                        signal.SIGKILL)

    def signal(self, token: str, sig: int) -> bool:
        """Signal the hosted process ``token`` names and its process group, unless it
        is gone (or replaced); True if it was signalled."""
        with self.signal_lock:
            proc = self.proc
            if proc is None or proc.token != token or proc.reaped:
                return False
            signal_family(proc.pid, sig, proc.pidfd)  # not reaped: the group is its own
            return True

    # ---- what the boss's Dask tasks call (in a worker thread) ----------------------------

    def identity(self) -> Identity | None:
        proc = self.proc
        return (proc.pid, proc.token) if proc is not None and not self.closed else None

    def run(self, token: str, frame: bytes, count: int
            ) -> tuple[bytes, Ending | None, Identity | None]:
        """Run one batch: ``frame`` holds ``count`` RunTasks. Returns the messages the
        process sent (pickled as a frame), how it ended if it died (then a new one is
        started), and the identity of the process now hosted. A batch for a process
        that is no longer the one hosted runs nothing and ends as "replaced"."""
        with self.batch_lock:
            proc = self.proc
            if proc is None or proc.token != token:
                return b"", None, self.identity()
            msgs: list[Message] = []
            try:
                proc.tasks.send_pickled(frame)
            except OSError:
                pass    # it died: its pidfd says how
            else:
                msgs = self._read(proc, count)
            ending = None
            if sum(isinstance(m, Outcome) for m in msgs) < count:
                ending = self._replace(proc, graceful=False)   # it died
            elif self.closed:   # the farm ended meanwhile (linger): it exits now
                self._replace(proc, graceful=True)
            return dumps(*msgs), ending, self.identity()

    def replace(self, token: str, graceful: bool) -> tuple[Ending | None, Identity | None]:
        """End the process ``token`` names and start a new one: ``graceful`` (a retired
        slot) closes its task pipe and waits for it to exit; otherwise (a stopped slot)
        it is terminated unless it has ended already. Returns how it ended."""
        with self.batch_lock:
            proc = self.proc
            if proc is None or proc.token != token:
                return None, self.identity()
            return self._replace(proc, graceful), self.identity()

    # ---- mechanics ----------------------------------------------------------------------

    def _read(self, proc: Hosted, count: int) -> list[Message]:
        """Messages from the process until ``count`` outcomes came, or it ended."""
        conn = proc.results
        poller = select.poll()
        poller.register(conn.fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        poller.register(proc.pidfd, select.POLLIN)
        msgs: list[Message] = []
        outcomes = 0
        while outcomes < count:
            # The pidfd alone: it ended (a process its task started may hold the pipe).
            if not conn.buffered and conn.fd not in {fd for fd, _ in poller.poll()}:
                break
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                break
            if isinstance(msg, (Outcome, Notice, Skipped)):
                msgs.append(msg)
                outcomes += isinstance(msg, Outcome)
        return msgs

    def _replace(self, proc: Hosted, graceful: bool) -> Ending:
        """End ``proc`` (``graceful``: once it has run what it was given; otherwise now,
        unless it has ended already), then host a new process unless closing."""
        proc.tasks.close()
        if not graceful and not readable((proc.pidfd,), 0):
            self._terminate(proc)
        info = self._reap(proc)
        self.proc = None if self.closed else self._on_loop(self._spawn)
        return info.exitcode, info.signal_name

    def _terminate(self, proc: Hosted) -> None:
        """SIGTERM, ``TERMINATE_GRACE`` to end, then SIGKILL (the one policy)."""
        self.signal(proc.token, signal.SIGTERM)
        if not readable((proc.pidfd,), TERMINATE_GRACE):
            self.signal(proc.token, signal.SIGKILL)

    def _reap(self, proc: Hosted) -> ExitInfo:
        """Wait for the process to end, end what its tasks left running, collect its
        status and close its descriptors."""
        end_descendants(proc.pid)
        with self.signal_lock:
            info = reap(proc.pid) or ExitInfo(None, None)
            proc.reaped = True
            os.close(proc.pidfd)
        proc.tasks.close()
        proc.results.close()
        return info

    def _spawn(self) -> Hosted:
        """Start a hosted process (on the event-loop thread: see the module docstring),
        waiting for its first task."""
        fds: list[int] = []
        try:
            task_r, task_w = os.pipe()
            fds += (task_r, task_w)
            result_r, result_w = os.pipe()
            fds += (result_r, result_w)
            # Copies above the targets, so that neither dup2 below is a no-op that
            # would leave a descriptor closed-on-exec.
            low = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, _RESULT_FD + 1)
                   for fd in (task_r, result_w)]
            fds += low
            argv = [sys.executable, "-m", "taskfarm._worker", str(_TASK_FD), str(_RESULT_FD),
                    str(os.getpid())]
            pid = os.posix_spawn(sys.executable, argv, self.env, file_actions=[
                (os.POSIX_SPAWN_DUP2, low[0], _TASK_FD),
                (os.POSIX_SPAWN_DUP2, low[1], _RESULT_FD)])
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        for fd in (task_r, result_w, *low):
            os.close(fd)
        return Hosted(pid, os.pidfd_open(pid), Channel(task_w), Channel(result_r))

    def _on_loop(self, fn: Callable[[], _T]) -> _T:
        """Call ``fn`` on the worker's event-loop thread and wait for it."""
        if threading.get_ident() == self.loop_thread:
            return fn()
        done: concurrent.futures.Future[_T] = concurrent.futures.Future()

        def call() -> None:
            try:
                done.set_result(fn())
            except BaseException as exc:
                done.set_exception(exc)

        self.worker.loop.add_callback(call)
        return done.result(SPAWN_WAIT)   # bounded: a closing worker's loop may not run it


def _host(name: str, worker: Any = None) -> TaskfarmHost:
    host = (worker or get_worker()).plugins.get(name)
    if not isinstance(host, TaskfarmHost):
        raise RuntimeError(f"this Dask worker has no taskfarm host {name!r} (the farm's "
                           "plugin was not set up here)")
    return host


# ---- functions the boss sends to Dask workers ------------------------------------------

def identify(name: str, dask_worker: Any = None) -> Identity | None:
    """The hosted process of this worker (a Dask task, or ``client.run``)."""
    return _host(name, dask_worker).identity()


def run_batch(name: str, token: str, frame: bytes, count: int
              ) -> tuple[bytes, Ending | None, Identity | None]:
    """Run one batch of tasks in this worker's hosted process (a Dask task)."""
    return _host(name).run(token, frame, count)


def replace(name: str, token: str, graceful: bool
            ) -> tuple[Ending | None, Identity | None]:
    """End this worker's hosted process and start another (a Dask task)."""
    return _host(name).replace(token, graceful)


def signal_hosted(name: str, token: str, sig: int, dask_worker: Any = None) -> bool:
    """Signal this worker's hosted process (``client.run``: on the event loop)."""
    return _host(name, dask_worker).signal(token, sig)


def close_host(name: str, linger: bool, dask_worker: Any = None) -> None:
    """The farm ends: end this worker's hosted process (``client.run``)."""
    host = dask_worker.plugins.get(name) if dask_worker is not None else None
    if isinstance(host, TaskfarmHost):
        host.close(linger)


def refuse_shared_array(what: str) -> NoReturn:
    """Stands, in a task's instructions, for a SharedArray the boss would not send to
    a Dask worker: unpickled in the hosted process, it fails the task."""
    raise InstructionError(
        f"{what} holds a taskfarm.SharedArray, which the Dask backend refuses: shared "
        "memory is zero copy only within one machine. Pass the numpy array itself (it "
        "is copied to each task), or run this farm without backend=")
