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
"""

from __future__ import annotations

import os
import pickle
import select
import socket
import struct
import threading
from typing import TYPE_CHECKING

from taskfarm._common.processes import die_with_parent, end_descendants
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
    """Fork workers on request and report their endings, until the boss closes the
    socket and every worker has ended."""
    cls = _load(class_blob)
    sock.sendall(b"ok" if cls is not None else b"no")
    if cls is None:
        return
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
                continue
            pid = _fork_worker(fds[0], fds[1], class_key, cls)
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


def _fork_worker(task_r: int, result_w: int, class_key: int, cls: type[Worker]) -> int:
    """Fork a worker on these pipe ends; its pid, or 0 if the fork failed."""
    try:
        parent = os.getpid()
        try:
            pid = os.fork()
        except OSError:
            return 0
        if pid == 0:
            run_worker(task_r, result_w, parent, {class_key: cls})
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
