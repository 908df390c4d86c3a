"""The zygote process of isolated mode: forked from the boss once per Worker class, it
imports the class (and whatever its module imports) once, then forks a fresh worker
process for each isolated task. Runs in zygote processes only.

Without it each isolated process would import the class's module anew: for a module
that imports numpy or a model library that is tens of milliseconds per task, far more
than the fork. A worker forked from the zygote starts with the class loaded and
nothing else done: ``setup_process`` still runs in every isolated process, and nothing
a task changes reaches the zygote or the next task.

The zygote is the parent of the workers it forks: it reaps each one the moment it
ends (through its pidfd) and tells the boss how it ended; the boss watches, signals
and stops them through pidfds and pids as it does its own children. Workers die with
the zygote and the zygote dies with the boss (parent-death signals), so nothing
outlives the boss.

Protocol on the zygote's Unix socket: the zygote first sends ``b"ok"``, or ``b"no"``
when the class cannot be loaded here or its import started threads (forking a
threaded process is unsafe): the boss then forks such workers itself. A request is
one message with two descriptors attached (the worker's task-pipe read end and
result-pipe write end). The zygote sends fixed-size records: ``p`` with the new
worker's pid (0 if the fork failed), and ``x`` with a worker's pid and wait status
when it has ended. EOF on the socket ends the zygote, once its workers have ended.

The same loop serves ``start_method="main"`` (:func:`main_copy`): there the zygote is a
copy of the main program, forked when the Boss was made, and it forks every worker
of the farm (pool and isolated) with no class preloaded: workers get their classes
from the boss like any worker, and see the main program's state as it was then. It
first tells the boss its pid, then reads the environment the boss gives its workers.
At EOF, the boss is gone: workers still running are killed with it.
"""

from __future__ import annotations

import gc
import os
import pickle
import select
import signal
import socket
import struct
import sys
import threading
from typing import TYPE_CHECKING

from taskfarm._common.processes import (
    TAKE_BACK_SIGNAL,
    close_all_but,
    die_with_parent,
    end_descendants,
    end_forked_child,
    kill_quietly,
)
from taskfarm._worker.serve import run_worker

if TYPE_CHECKING:
    from taskfarm._common.worker_class import Worker

RECORD = struct.Struct("!cqq")   # kind (b"p" forked, b"x" exited), pid, wait status


def _load(class_blob: bytes) -> type[Worker] | None:
    """The Worker class, or None when it must not be used here."""
    try:
        cls: type[Worker] = pickle.loads(class_blob)
    except BaseException:
        return None
    if threading.active_count() > 1 or len(os.listdir("/proc/self/task")) > 1:
        return None  # importing it started threads: forking from here is not safe
    return cls


def serve(sock: socket.socket, class_key: int, class_blob: bytes) -> None:
    """Fork workers of one class on request and report their endings, until the boss
    closes the socket and every worker has ended."""
    cls = _load(class_blob)
    sock.sendall(b"ok" if cls is not None else b"no")
    if cls is not None:
        _serve(sock, {class_key: cls}, kill_at_eof=False)


def _serve(sock: socket.socket, preloaded: dict[int, type[Worker]], kill_at_eof: bool) -> None:
    """Fork workers on request and report their endings until EOF on the socket, then
    until the workers have ended (killed first, if ``kill_at_eof``)."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    children: dict[int, int] = {}   # pidfd -> pid
    listening = True
    while listening or children:
        for fd, _ in poller.poll():
            if fd in children:
                pid = children.pop(fd)
                poller.unregister(fd)
                os.close(fd)
                end_descendants(pid)   # what its task left running ends with it
                _, status = os.waitpid(pid, 0)
                _tell(sock, b"x", pid, status)
                continue
            try:
                _, fds, _, _ = socket.recv_fds(sock, 16, 2)
            except OSError:
                fds = []
            if len(fds) != 2:  # EOF: the boss is done; wait for the workers still running
                for extra in fds:
                    os.close(extra)
                poller.unregister(sock)
                listening = False
                if kill_at_eof:
                    for pid in children.values():
                        kill_quietly(pid, signal.SIGKILL)
                continue
            pid = _fork_worker(fds[0], fds[1], preloaded)
            if pid:
                pidfd = os.pidfd_open(pid)
                children[pidfd] = pid
                poller.register(pidfd, select.POLLIN)
            _tell(sock, b"p", pid, 0)


def _tell(sock: socket.socket, kind: bytes, pid: int, status: int) -> None:
    try:
        sock.sendall(RECORD.pack(kind, pid, status))
    except OSError:
        pass  # the boss is gone: its death signal ends us


def _fork_worker(task_r: int, result_w: int, preloaded: dict[int, type[Worker]]) -> int:
    """Fork a worker on these pipe ends; its pid, or 0 if the fork failed."""
    try:
        parent = os.getpid()
        try:
            pid = os.fork()
        except OSError:
            return 0
        if pid == 0:
            run_worker(task_r, result_w, parent, preloaded)
        return pid
    finally:
        os.close(task_r)
        os.close(result_w)


def main(sock: socket.socket, class_key: int, class_blob: bytes, boss_pid: int) -> None:
    """Entry point in the freshly forked zygote (see :mod:`taskfarm._boss.local`)."""
    die_with_parent()
    if os.getppid() != boss_pid:
        return
    serve(sock, class_key, class_blob)


def main_copy(sock: socket.socket) -> None:
    """Entry point in the copy of the main program (``start_method="main"``), forked
    by :func:`taskfarm._main.main_copy.start_copy`; never returns."""
    end_forked_child(lambda: _be_the_copy(sock))


def _be_the_copy(sock: socket.socket) -> None:
    """The copy of the main program: reset what is the main program's own, then fork
    the boss's workers until the boss is done."""
    close_all_but(sock.fileno())
    # The main program's signal handlers are its own (one may clean up its files):
    # none runs here or in the workers, which start as the boss's would.
    for number in signal.valid_signals():
        if callable(signal.getsignal(number)):
            signal.signal(number, signal.SIG_DFL)
    # As in the boss: Ctrl-C is the main program's to handle, and workers inherit
    # the take-back signal blocked (they let it in once they handle it).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {TAKE_BACK_SIGNAL})
    # Tasks print to the process's standard streams, as under the other start
    # methods (where captured output and the worker's messages are read), not to
    # what the main program put in their place (a notebook's, a test runner's).
    sys.stdout = sys.__stdout__ or sys.stdout
    sys.stderr = sys.__stderr__ or sys.stderr
    gc.freeze()   # what the copy holds stays shared with the workers it forks
    sock.sendall(RECORD.pack(b"p", os.getpid(), 0))
    environment = _read_environment(sock)
    if environment is not None:
        for name, value in environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        _serve(sock, {}, kill_at_eof=True)


ENVIRONMENT = struct.Struct("!Q")   # length of the pickled environment that follows


def _read_environment(sock: socket.socket) -> dict[str, str | None] | None:
    """The environment variables the boss sets for its workers; None at EOF."""
    head = _read_exactly(sock, ENVIRONMENT.size)
    if head is None:
        return None
    body = _read_exactly(sock, ENVIRONMENT.unpack(head)[0])
    return None if body is None else dict(pickle.loads(body))


def _read_exactly(sock: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data
