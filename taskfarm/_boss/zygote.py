"""The boss's handle on the zygote processes of isolated mode: start one per Worker
class, ask it for a worker, learn how each of its workers ended; and on the main
program's copy, which forks every worker under ``start_method="main"``. Runs in the boss
process; the zygote's own side is :mod:`taskfarm._worker.zygote`.
"""

from __future__ import annotations

import os
import pickle
import signal
from typing import TYPE_CHECKING

from taskfarm._common.logs import LEVEL_VARIABLE
from taskfarm._common.messages import WorkerClassSpec
from taskfarm._common.processes import (
    CAPTURE_VARIABLE,
    SEED_VARIABLE,
    THREAD_VARIABLES,
    ExitInfo,
    close_all_but,
    end_forked_child,
    flush_std_streams,
    kill_quietly,
    reap,
)

if TYPE_CHECKING:
    import socket

# socket and the zygote's own module (taskfarm._worker.zygote) are imported where
# used: a farm without isolated tasks or start_method "main" never needs them, and
# the boss starts faster without them.

# How many times a class's zygote is replaced after failing before the boss gives up
# on zygotes for that class.
ZYGOTE_RESTARTS = 3
# What the boss sets in its environment for its workers: given to the main program's
# copy, which forks them under start_method "main".
WORKER_VARIABLES = (LEVEL_VARIABLE, SEED_VARIABLE, CAPTURE_VARIABLE, *THREAD_VARIABLES)


class CopyGone(RuntimeError):
    """start_method "main": the main program's copy cannot fork workers any more (it
    was killed, or is stuck). The farm cannot go on: the boss fails with this."""


class Zygote:
    """The boss's handle on one zygote process (see :mod:`taskfarm._worker.zygote`):
    it forks the workers of one isolated class and reports how each ended."""

    # Loading the class may take a while (a module that imports a big library); once
    # loaded, a zygote answers in microseconds, and one silent for ANSWER_PATIENCE is
    # taken for broken (stopped, stuck): the boss never waits on it again.
    LOAD_PATIENCE = 30.0
    ANSWER_PATIENCE = 2.0

    def __init__(self, pid: int, sock: socket.socket, class_key: int | None = None) -> None:
        self.pid, self.sock = pid, sock
        self.class_key = class_key   # the class it loaded (None: the main program's copy)
        self.ended: dict[int, ExitInfo] = {}  # worker pid -> how it ended, not yet asked
        self.broken = False   # dead, stopped or stuck: asked nothing more, killed at close

    @classmethod
    def start(cls, class_key: int, class_blob: bytes) -> Zygote | None:
        """Fork a zygote that loads the class; None when the class cannot be loaded
        there or its import started threads."""
        import socket

        from taskfarm._worker import zygote as zygote_process

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        flush_std_streams()
        pid = os.fork()
        if pid == 0:
            def run() -> None:
                ours.close()
                close_all_but(theirs.fileno())
                zygote_process.main(theirs, class_key, class_blob, os.getppid())

            end_forked_child(run)
        theirs.close()
        ours.settimeout(cls.LOAD_PATIENCE)
        zygote = cls(pid, ours, class_key)
        try:
            ready = _read_exactly(ours, 2) == b"ok"
        except (OSError, EOFError):
            ready = False
        if not ready:
            zygote.broken = True
            zygote.close()
            return None
        ours.settimeout(cls.ANSWER_PATIENCE)
        return zygote

    @classmethod
    def main_copy(cls, fd: int, environment: dict[str, str | None]) -> Zygote:
        """The handle on the copy of the main program (``start_method="main"``) whose
        socket the boss inherited as ``fd``: learn its pid, give it the environment
        of the boss's workers. A copy that does not answer is broken."""
        import socket

        from taskfarm._worker import zygote as zygote_process

        sock = socket.socket(fileno=fd)
        sock.settimeout(cls.ANSWER_PATIENCE)
        zygote = cls(0, sock)
        try:
            _, zygote.pid = zygote._record()
            body = pickle.dumps(environment)
            sock.sendall(zygote_process.ENVIRONMENT.pack(len(body)) + body)
        except (OSError, EOFError):
            zygote.broken = True
        return zygote

    def fork(self, task_r: int, result_w: int) -> int:
        """A new worker on these pipe ends; 0 when the zygote cannot make one (it is
        then broken)."""
        if self.broken:
            return 0
        try:
            import socket

            socket.send_fds(self.sock, [b"f"], [task_r, result_w])
            while True:
                kind, pid = self._record()
                if kind == b"p":
                    if not pid:
                        self.broken = True
                    return pid
        except (OSError, EOFError):
            self.broken = True
            return 0

    def exit_info(self, pid: int) -> ExitInfo:
        """How one of its workers ended (waiting for the zygote to say, if needed);
        unknown if the zygote is broken."""
        try:
            while pid not in self.ended and not self.broken:
                self._record()
        except (OSError, EOFError):
            self.broken = True
        return self.ended.pop(pid, None) or ExitInfo(None, None)

    def _record(self) -> tuple[bytes, int]:
        from taskfarm._worker.zygote import RECORD

        kind, pid, status = RECORD.unpack(_read_exactly(self.sock, RECORD.size))
        if kind == b"x":
            self.ended[pid] = ExitInfo.from_wait_status(status)
        return kind, pid

    def close(self) -> None:
        """EOF on its socket: the zygote exits once its workers have; reap it. A broken
        one is killed first (a stopped zygote would never exit)."""
        self.sock.close()
        if self.broken and self.pid:
            kill_quietly(self.pid, signal.SIGKILL)
        if self.pid:
            reap(self.pid)   # (the main program's copy is not the boss's child: a no-op)


class Zygotes:
    """The zygotes of one boss: isolated mode's, one per Worker class (started on first
    use), and start_method "main"'s copy of the main program (``main_copy``: the
    descriptor of its socket), which forks every worker."""

    def __init__(self, main_copy: int | None) -> None:
        self._by_class: dict[int, Zygote | None] = {}  # None: the boss forks that class
        self._broken: list[Zygote] = []       # zygotes that failed: closed at the end
        self._failures: dict[int, int] = {}   # class key -> zygotes that failed
        self._copy_fd = main_copy
        self._copy: Zygote | None = None

    def fork(self, spec: WorkerClassSpec, task_r: int, result_w: int) -> tuple[Zygote | None, int]:
        """A worker on these pipe ends, and the zygote that forked it; pid 0 when the
        class has no usable zygote (None), or when the zygote asked failed (returned,
        so that its pipes are not reused): the boss forks. A class's zygote that fails
        is replaced for the next task, up to ``ZYGOTE_RESTARTS`` times; after that the
        boss forks that class's workers itself. The main program's copy cannot be
        replaced: CopyGone when it fails."""
        if self._copy_fd is not None:
            copy = self._main_copy(self._copy_fd)
            pid = copy.fork(task_r, result_w)
            if not pid:
                raise CopyGone("start_method='main': the copy of the main program that "
                               "forks the worker processes is gone or stuck; no worker "
                               "can start")
            return copy, pid
        if spec.key not in self._by_class:
            self._by_class[spec.key] = Zygote.start(spec.key, spec.blob)
        zygote = self._by_class[spec.key]
        if zygote is None:
            return None, 0
        pid = zygote.fork(task_r, result_w)
        if pid:
            return zygote, pid
        self._broken.append(zygote)
        failures = self._failures[spec.key] = self._failures.get(spec.key, 0) + 1
        if failures <= ZYGOTE_RESTARTS:
            del self._by_class[spec.key]       # a new one for the next task
        else:
            self._by_class[spec.key] = None    # the boss forks this class from now on
        return zygote, 0   # it was asked, and failed

    def _main_copy(self, fd: int) -> Zygote:
        """The handle on the main program's copy, made at the first worker: by then the
        boss has set the environment its workers get, which the copy is given."""
        if self._copy is None:
            self._copy = Zygote.main_copy(fd, {name: os.environ.get(name)
                                               for name in WORKER_VARIABLES})
        return self._copy

    def close(self) -> None:
        """Close every zygote (each exits once its workers have)."""
        for zygote in [*self._by_class.values(), *self._broken, self._copy]:
            if zygote is not None:
                zygote.close()
        if self._copy is None and self._copy_fd is not None:
            os.close(self._copy_fd)   # EOF: a copy that forked nothing exits too
        self._by_class.clear()
        self._broken.clear()
        self._copy_fd = self._copy = None


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError("the zygote is gone")
        data += chunk
    return data
