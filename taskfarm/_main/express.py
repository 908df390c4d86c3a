"""The main program's end of an executor farm's express pipe (see
:mod:`taskfarm._common.express`): reads the results worker processes wrote straight
to it and hands each to the executor. Runs in the main program, in whichever thread
reads the boss's messages (the Inbox's receiver, or a thread reading for itself).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from taskfarm._common import express


class ExpressReader:
    """Reads the express pipe (non-blocking) and calls ``on_result(tid, blob)`` for
    every frame, in the order written. ``ended`` once the pipe reached its end (every
    worker process and the boss gone): not worth polling any more. The descriptor is
    closed only by :meth:`close`, by the thread that owns it, so that no other thread
    can poll a number the system has given to something else."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self.fd = fd
        self.ended = False
        self.frames = 0     # read so far (how many results came this way)
        # Set by the executor before its first call; frames are dropped until then
        # (none can come: no call was given).
        self.on_result: Callable[[int, bytes], None] | None = None
        # One reader at a time; reentrant: a done-callback may wait for the farm and read.
        self._lock = threading.RLock()
        self._partial = b""

    def drain(self) -> None:
        """Read and hand over every frame there now; never blocks."""
        with self._lock:
            while not self.ended:
                try:
                    data = os.read(self.fd, 65536)
                except BlockingIOError:
                    return
                except OSError:
                    data = b""
                if not data:
                    self.ended = True
                    return
                found, self._partial = express.frames(self._partial + data)
                self.frames += len(found)
                on_result = self.on_result
                if on_result is not None:
                    for tid, blob in found:
                        on_result(tid, blob)

    def close(self) -> None:
        """Close the descriptor (once no thread reads or polls it any more)."""
        with self._lock:
            if self.fd >= 0:
                self.ended = True
                os.close(self.fd)
                self.fd = -1
