"""The boss's handle on the zygote processes of isolated mode: start one per Worker
class, ask it for a worker, learn how each of its workers ended. Runs in the boss
process; the zygote's own side is :mod:`taskfarm._worker.zygote`.
"""

from __future__ import annotations

import os
import signal
import socket
import traceback

from taskfarm._common.processes import (
    ExitInfo,
    close_all_but,
    flush_std_streams,
    kill_quietly,
    reap,
)
from taskfarm._worker import zygote as zygote_process


class Zygote:
    """The boss's handle on one zygote process (see :mod:`taskfarm._worker.zygote`):
    it forks the workers of one isolated class and reports how each ended."""

    # Loading the class may take a while (a module that imports a big library); once
    # loaded, a zygote answers in microseconds, and one silent for ANSWER_PATIENCE is
    # taken for broken (stopped, stuck): the boss never waits on it again.
    LOAD_PATIENCE = 30.0
    ANSWER_PATIENCE = 2.0

    def __init__(self, pid: int, sock: socket.socket) -> None:
        self.pid, self.sock = pid, sock
        self.ended: dict[int, ExitInfo] = {}  # worker pid -> how it ended, not yet asked
        self.broken = False   # dead, stopped or stuck: asked nothing more, killed at close

    @classmethod
    def start(cls, class_key: int, class_blob: bytes) -> Zygote | None:
        """Fork a zygote that loads the class; None when the class cannot be loaded
        there or its import started threads."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        flush_std_streams()
        pid = os.fork()
        if pid == 0:
            try:
                ours.close()
                close_all_but(theirs.fileno())
                zygote_process.main(theirs, class_key, class_blob, os.getppid())
            except BaseException:
                traceback.print_exc()
            finally:
                flush_std_streams()
                os._exit(0)
        theirs.close()
        ours.settimeout(cls.LOAD_PATIENCE)
        zygote = cls(pid, ours)
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

    def fork(self, task_r: int, result_w: int) -> int:
        """A new worker on these pipe ends; 0 when the zygote cannot make one (it is
        then broken)."""
        if self.broken:
            return 0
        try:
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
        kind, pid, status = zygote_process.RECORD.unpack(
            _read_exactly(self.sock, zygote_process.RECORD.size))
        if kind == b"x":
            self.ended[pid] = ExitInfo.from_wait_status(status)
        return kind, pid

    def close(self) -> None:
        """EOF on its socket: the zygote exits once its workers have; reap it. A broken
        one is killed first (a stopped zygote would never exit)."""
        self.sock.close()
        if self.broken:
            kill_quietly(self.pid, signal.SIGKILL)
        reap(self.pid)


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError("the zygote is gone")
        data += chunk
    return data
