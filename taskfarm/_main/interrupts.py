"""Ctrl-C held back while the main program is in the middle of a message. Runs in the
main program.

A KeyboardInterrupt raised between two writes of a frame would leave half of it in
the control pipe: the boss would wait for the rest and the farm would hang, running
tasks included. One raised between reading a message and keeping it would lose it.
So while the main thread writes or reads a whole message, SIGINT's handler is
replaced by one that only notes it, and the original handler is called right after:
the Ctrl-C then finds every message either sent (or kept) whole, or not at all.

Blocking the signal would not do: the process's other threads (the receiver) would
take it, and Python would still run the handler in the main thread at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType


@contextlib.contextmanager
def sigint_held() -> Iterator[None]:
    """Hold SIGINT back while the block runs in the main thread (elsewhere there is
    nothing to hold: Python runs signal handlers in the main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[FrameType | None] = []

    def note(signum: int, frame: FrameType | None) -> None:
        caught.append(frame)

    previous = signal.signal(signal.SIGINT, note)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            if callable(previous):
                previous(signal.SIGINT, caught[0])     # KeyboardInterrupt, usually
            elif previous == signal.SIG_DFL:
                os.kill(os.getpid(), signal.SIGINT)    # as it would have been
