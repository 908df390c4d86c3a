"""One taylorism task, run where it runs, and its outcome as bytes.

A *call* is the pickled ``(Worker class, resolved footprint attributes)`` the main
program made for one instruction set (:mod:`taskfarm.taylorism._matching`). The
task's process (a copy of the main program, or a taskfarm worker process) runs it
with :func:`run_call`, which builds the Worker, runs its scheduler hooks and
``_task()``, and returns an *outcome*::

    b"D" + pickle(report value)                               the task returned
    b"F" + len(summary) + summary + pickle(failure tuple)     the task raised

The first byte and the summary are readable without unpickling anything, so
taskfarm's side of a task (:mod:`taskfarm.taylorism._relay`) never holds the user's
objects: the bytes travel as they are, and only the main program decodes them
(:func:`decode_failure`, :func:`decode_done`), with the worker's traceback attached
to the original exception (tblib) or, when that cannot travel, as text.
"""

from __future__ import annotations

import pickle
import struct
import traceback
from dataclasses import dataclass
from typing import Any

__all__ = ["Failure", "decode_done", "decode_failure", "failure_summary", "is_failure",
           "run_call"]

_DONE, _FAILED = b"D", b"F"
_LEN = struct.Struct("!I")


@dataclass(frozen=True, slots=True)
class Failure:
    """A task's exception as the main program rebuilds it: ``exception`` (with its
    remote traceback when it could travel) and ``traceback`` (the formatted lines,
    as taylorism reports them)."""

    exception: BaseException
    traceback: list[str]


def run_call(call: bytes, ticket: int | None,
             passthrough: tuple[type[BaseException], ...] = ()) -> bytes:
    """Run one call in this process and return its outcome; never raises, except the
    ``passthrough`` exceptions (the process is being stopped)."""
    try:
        cls, attrs = pickle.loads(call)
        attrs = dict(attrs, scheduler_ticket=ticket)
        worker = cls(attrs, checked=True)
        for callback in worker.scheduler_hooks or ():
            callback(worker)
        worker._work_and_communicate_prehook()
        value = worker._task()
    except passthrough:
        raise
    except BaseException as exc:  # a failure is the task's report, whatever it is
        return _failure(exc, _hint(exc))
    try:
        return _DONE + pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        error = TypeError(f"the report of the task could not be pickled to travel to the "
                          f"main program: {type(exc).__name__}: {exc}")
        return _failure(error, None)


def _hint(exc: BaseException) -> str | None:
    """A hint when the call itself could not be rebuilt here."""
    if isinstance(exc, AttributeError) and "Can't get attribute" in str(exc):
        return ("the Worker class (or a value of its instructions) does not exist in this "
                "copy of the main program: with fork_from_main=True (the default) tasks "
                "run in a copy of the main program taken when the Boss was made, so "
                "define the class before making the Boss")
    return None


def _failure(exc: BaseException, hint: str | None) -> bytes:
    lines = traceback.format_exception(exc)
    if hint:
        lines.append(f"\n{hint}\n")
    summary = f"{type(exc).__name__}: {exc}"[:2000].encode("utf-8", "replace")
    tb_dict = None
    try:
        from tblib import Traceback

        if exc.__traceback__ is not None:
            tb_dict = Traceback(exc.__traceback__).to_dict()
    except Exception:
        pass
    try:
        body = pickle.dumps((exc, tb_dict, lines), pickle.HIGHEST_PROTOCOL)
    except Exception:  # an exception that cannot travel: its text does
        body = pickle.dumps((None, None, lines), pickle.HIGHEST_PROTOCOL)
    return _FAILED + _LEN.pack(len(summary)) + summary + body


def is_failure(outcome: bytes) -> bool:
    """True when the outcome is a failure (read without unpickling)."""
    return outcome[:1] == _FAILED


def failure_summary(outcome: bytes) -> str:
    """``Type: message`` of a failure outcome (read without unpickling)."""
    (size,) = _LEN.unpack_from(outcome, 1)
    return bytes(outcome[1 + _LEN.size:1 + _LEN.size + size]).decode("utf-8", "replace")


def decode_done(outcome: bytes) -> Any:
    """The report value of a done outcome (unpickled here, in the main program)."""
    return pickle.loads(outcome[1:])


def decode_failure(outcome: bytes, task_name: str) -> Failure:
    """The task's exception, rebuilt with its traceback; a ``RemoteTaskError`` stands
    in for one whose type cannot be rebuilt here."""
    (size,) = _LEN.unpack_from(outcome, 1)
    start = 1 + _LEN.size + size
    summary = failure_summary(outcome)
    try:
        exc, tb_dict, lines = pickle.loads(outcome[start:])
    except Exception as error:
        exc, tb_dict, lines = None, None, [f"{summary}\n(not rebuilt: {error})\n"]
    if exc is None:
        from taskfarm import RemoteTaskError

        return Failure(RemoteTaskError(f"task {task_name!r} raised {summary}", task_name,
                                       "".join(lines), summary.split(":", 1)[0]), lines)
    if tb_dict is not None:
        try:
            from tblib import Traceback

            exc = exc.with_traceback(Traceback.from_dict(tb_dict).as_traceback())
        except Exception:
            pass
    return Failure(exc, lines)
