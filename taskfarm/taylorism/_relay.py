"""The one taskfarm Worker of the layer: it runs a taylorism task for taskfarm.

Every instruction set a taylorism Boss is given becomes one task of
:class:`TaylorismTask`: its ``name``, ``memory`` and ``expected_time`` (what
schedulers read), and ``taylorism_call``, the pickled Worker class and footprint
attributes (:mod:`taskfarm.taylorism._matching`). taskfarm schedules it, times it out,
stops it and reports it as any task; the task itself either asks the main program's
copy for a process to run the call in (``taylorism_zygote``, see
:mod:`taskfarm.taylorism._zygote`) or runs it in this worker process.

Either way the result is an *outcome* (:mod:`taskfarm.taylorism._outcome`), returned
as bytes when the task succeeded and raised inside a :class:`TaylorismTaskError`
when it failed, so that this process never unpickles the user's objects and taskfarm's
fail-fast, retries and reports work unchanged. A task process that dies without an
outcome makes this process die the same way, so taskfarm reports the task ``killed``
with the real signal or exit code (and the out-of-memory killer, if it was that).
"""

from __future__ import annotations

import os
import signal
import socket
import struct
from typing import Any, ClassVar, NoReturn

from taskfarm import Worker
from taskfarm.taylorism._outcome import failure_summary, flush_std_streams, is_failure, run_call
from taskfarm.taylorism._zygote import (
    CALL,
    EXIT,
    OUTCOME,
    REQUEST,
    pack_request,
    read_frame,
    write_frame,
)

__all__ = ["TaylorismTask", "TaylorismTaskError"]


class TaylorismTaskError(Exception):
    """A taylorism task raised. It carries the task's outcome (bytes) to the main
    program, which rebuilds the task's own exception from it; its text is the
    exception's ``Type: message``."""

    def __init__(self, summary: str, outcome: bytes) -> None:
        super().__init__(summary, outcome)
        self.summary, self.outcome = summary, outcome

    def __str__(self) -> str:
        return self.summary


class TaylorismTask(Worker):
    """Runs one taylorism task (see the module docstring). Given every instruction
    set of a taylorism Boss (``worker=TaylorismTask``); the required
    ``taylorism_call`` keeps it out of the matching of any other instruction set."""

    taylorism_call: bytes
    taylorism_zygote: str | None = None
    taylorism_shared: tuple[Any, ...] = ()   # SharedArrays: taskfarm keeps them alive
    # Simple footprint attributes ride along as ``fp_<name>`` for taylorism-style
    # schedulers (see taskfarm.taylorism._native); the task itself ignores them.
    accept_undeclared: ClassVar[bool] = True

    def task(self) -> bytes:
        if self.taylorism_zygote is None:
            outcome = run_call(self.taylorism_call, self.scheduler_ticket,
                               (_StopTypes.get(),))
        else:
            outcome = _run_in_copy(self.taylorism_zygote, self.taylorism_call,
                                   self.scheduler_ticket)
        if is_failure(outcome):
            raise TaylorismTaskError(failure_summary(outcome), outcome)
        return outcome


class _StopTypes:
    """taskfarm's StopRequested (raised in a task being stopped), found once."""

    found: ClassVar[type[BaseException] | None] = None

    @classmethod
    def get(cls) -> type[BaseException]:
        if cls.found is None:
            try:
                from taskfarm._worker.run import StopRequested
            except ImportError:  # pragma: no cover - only if taskfarm moves it
                cls.found = KeyboardInterrupt
            else:
                cls.found = StopRequested
        return cls.found


def _run_in_copy(address: str, call: bytes, ticket: int | None) -> bytes:
    """Have the zygote at ``address`` fork a task process for ``call``; its outcome."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(address)
    except OSError as exc:
        sock.close()
        raise RuntimeError(f"the copy of the main program that runs this Boss's tasks is "
                           f"gone ({exc}): was the Boss closed, or its program ended?"
                           ) from None
    request = pack_request(ticket, os.getpriority(os.PRIO_PROCESS, 0),
                           os.sched_getaffinity(0))
    # No ``finally: close``: a relay being stopped keeps the socket open until it dies,
    # so that its task process does not take the close for the relay's death.
    try:
        write_frame(sock, REQUEST, request)
        write_frame(sock, CALL, call)
        frame = read_frame(sock)
    except Exception:
        sock.close()
        raise
    sock.close()
    if frame is None:
        raise RuntimeError("the copy of the main program that runs this Boss's tasks "
                           "ended while the task ran: was its program killed?")
    kind, payload = frame
    if kind == OUTCOME:
        return payload
    if kind == EXIT:
        (code,) = struct.unpack("!q", payload)
        _end_like(code)
    raise RuntimeError(f"unexpected frame {kind!r} from the task process")


def _end_like(code: int) -> NoReturn:
    """The task process ended without an outcome (``code``: its exit code, or minus
    the signal that ended it): end this process the same way."""
    flush_std_streams()
    if code < 0:
        sig = signal.Signals(-code)
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig})
        os.kill(os.getpid(), sig)
        os._exit(128 - code)
    os._exit(code)
