"""Ctrl-C held back while the main program is in the middle of a message. Runs in the
main program.

A KeyboardInterrupt raised between two writes of a frame would leave half of it in
the control pipe: the boss would wait for the rest and the farm would hang, running
tasks included. One raised between reading a message and keeping it would lose it.
So while the main thread writes or reads a whole message, a Ctrl-C is only noted,
and the program's own SIGINT handler is called right after: the Ctrl-C then finds
every message either sent (or kept) whole, or not at all.

How: the first Boss made in the main thread puts :func:`_on_sigint` in front of the
SIGINT handler it finds (Python's ``default_int_handler``, or the program's own), and
:data:`sigint_held` only counts, so that holding costs no system call on the hot path
(swapping handlers per message cost about 11 µs). Blocking the signal would not do:
the process's other threads (the receiver) would take it, and Python would still run
the handler in the main thread at once. A program that installs another SIGINT handler
after making its Boss replaces ours: its Ctrl-C is then not held back.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any

_MAIN = threading.main_thread().ident
_previous: Any = None              # the handler ours stands in front of
_held = 0                          # depth of sigint_held in the main thread
_noted: list[FrameType | None] = []   # a Ctrl-C that came while held


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    if _held:
        _noted.append(frame)
    else:
        _previous(signum, frame)


def install() -> None:
    """Stand in front of the current SIGINT handler (once; main thread only; not when
    SIGINT is ignored or left to the system)."""
    global _previous
    if threading.get_ident() != _MAIN:
        return
    current = signal.getsignal(signal.SIGINT)
    if current is _on_sigint or not callable(current):
        return
    _previous = current
    signal.signal(signal.SIGINT, _on_sigint)


class _Held:
    """``with sigint_held:`` — in the main thread, a Ctrl-C during the block is
    delivered when it ends (elsewhere nothing to hold: Python runs signal handlers in
    the main thread only)."""

    __slots__ = ()

    def __enter__(self) -> None:
        global _held
        if threading.get_ident() == _MAIN:
            _held += 1

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        global _held
        if threading.get_ident() != _MAIN:
            return
        _held -= 1
        if not _held and _noted:
            frame = _noted[0]
            _noted.clear()
            if signal.getsignal(signal.SIGINT) is _on_sigint:
                _previous(signal.SIGINT, frame)   # KeyboardInterrupt, usually


sigint_held = _Held()
