"""What a future of :class:`taskfarm.Executor` holds once its task ended: the call's
result, or the exception to raise. Runs in the main program, in whichever thread reads
the boss's messages (see :mod:`taskfarm._main.executor_farm`).

The exceptions the executor raises itself, by how a caller of ``concurrent.futures``
already reacts to them::

    concurrent.futures.BrokenExecutor
    └── BrokenProcessPool
        ├── WorkerDiedError (also taskfarm.WorkerKilledError)
        │       the process running this call died (signal or exit code named);
        │       only this future fails, the executor goes on
        └── ExecutorBrokenError (also taskfarm.TaskfarmError)
                the initializer failed, or the farm itself died: every pending
                future fails, and so does any later submit
    taskfarm.TaskCancelledError             the call ran past the executor's timeout
    taskfarm.RemoteTaskError                its result could not be unpickled here, or
                                            its exception could not travel

A call's own exception arrives with its type, arguments and the worker's frames; its
``__cause__`` is the worker's formatted traceback (as with ``ProcessPoolExecutor``,
whose ``_RemoteTraceback`` it is), unless it had a cause of its own.
"""

from __future__ import annotations

import pickle
from concurrent.futures import Future, InvalidStateError
from concurrent.futures._base import CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED, RUNNING
from concurrent.futures.process import BrokenProcessPool, _RemoteTraceback
from typing import Any

from taskfarm._common.errors import (
    RemoteTaskError,
    TaskCancelledError,
    TaskfarmError,
    WorkerKilledError,
)
from taskfarm._common.status import TaskStatus
from taskfarm._main.executor_worker import InitializerError, unpack
from taskfarm._main.report import TaskReport

_DONE = TaskStatus.DONE
_CANCELLED = frozenset({CANCELLED, CANCELLED_AND_NOTIFIED})
_NOT_PENDING = frozenset({CANCELLED_AND_NOTIFIED, FINISHED, RUNNING})


class WorkerDiedError(WorkerKilledError, BrokenProcessPool):
    """The worker process running a call died without reporting (a signal, a
    segfault, ``os._exit``): ``exitcode``, ``signal_name`` and ``pid`` say how.
    Unlike ``ProcessPoolExecutor``, only this call's future fails; the executor
    replaces the process and goes on."""


class ExecutorBrokenError(TaskfarmError, BrokenProcessPool):
    """The executor cannot run calls any more: its initializer failed in a worker
    process (the initializer's exception is the ``__cause__``), or its boss process
    died. Pending futures fail with it, and so does every later ``submit``."""


def start(future: Future[Any]) -> bool:
    """Mark a future running (a worker started its call); False if it was cancelled
    first (its call's outcome is then dropped)."""
    if future.running():
        return True
    return set_running(future)


def settle(future: Future[Any], *, result: Any = None,
           exception: BaseException | None = None) -> None:
    """Give a future its result or exception, unless it was cancelled (then nothing)."""
    if not start(future):
        return
    try:
        if exception is None:
            future.set_result(result)
        else:
            future.set_exception(exception)
    except InvalidStateError:  # settled by another path (the executor broke)
        pass


def cancelled(future: Future[Any]) -> bool:
    """``future.cancelled()`` without taking the future's lock (one attribute read,
    atomic under the GIL), on the hot path of every call: the answer may be stale the
    moment it is read, locked or not, which is why a future is registered (where its
    ``cancel()`` finds it: ``CallFuture``) before it is checked."""
    return future._state in _CANCELLED


def set_running(future: Future[Any]) -> bool:
    """Mark a future running, from the sink (its call started, or ended with no STARTED
    notice before): False if it was cancelled first (or already failed, the executor
    broken). ``set_running_or_notify_cancel`` logs CRITICAL for a future in any other
    state than pending or cancelled: those are answered here, under the future's own
    (reentrant) lock, without asking it."""
    with future._condition:
        if future._state in _NOT_PENDING:
            return False
        return future.set_running_or_notify_cancel()


def notify_cancelled(future: Future[Any]) -> None:
    """Tell ``wait()`` and ``as_completed()`` that a cancelled future is done, once
    (the second time would log CRITICAL): from :meth:`CallFuture.cancel`, which may
    be called again on a future already cancelled."""
    with future._condition:
        if future._state == CANCELLED:
            future.set_running_or_notify_cancel()


def finish(future: Future[Any], running: bool, report: TaskReport) -> BaseException | None:
    """Settle the future of a call whose task ended as ``report`` says (``running``:
    marked so already); the exception it now raises, if any. Nothing for a future
    cancelled before its call started."""
    if report.status is _DONE:  # the common case, first
        try:
            result = unpack(report.result)
        except BaseException:  # outcome() says why, below
            pass
        else:
            if running or set_running(future):
                try:
                    future.set_result(result)
                except InvalidStateError:  # cancelled as it started
                    pass
            return None
    result, exception = outcome(report)
    if not running and not set_running(future):
        return None
    return exception if settled(future, result, exception) else None


def settled(future: Future[Any], result: Any, exception: BaseException | None) -> bool:
    """Give a running future its result or exception; False if it was cancelled as it
    started (the sink stops its call)."""
    try:
        if exception is None:
            future.set_result(result)
        else:
            future.set_exception(exception)
    except InvalidStateError:
        return False
    return True


def expressed(blob: bytes, name: str) -> tuple[Any, BaseException | None]:
    """(result, None) or (None, exception) for a call whose worker wrote its pickled
    result straight to the main program (:mod:`taskfarm._common.express`)."""
    try:
        packed = pickle.loads(blob)
    except BaseException as exc:  # SystemExit from a hostile __reduce__ included
        return None, _unpickling_error(exc, name)
    return unpacked(packed, name)


def unpacked(packed: Any, name: str) -> tuple[Any, BaseException | None]:
    """(result, None) or (None, exception) for a result the worker packed
    (:func:`taskfarm._main.executor_worker.pack`): a call of a lease."""
    try:
        return unpack(packed), None
    except BaseException as exc:  # SystemExit from a hostile __reduce__ included
        return None, _unpickling_error(exc, name)


def _unpickling_error(exc: BaseException, name: str) -> RemoteTaskError:
    error = RemoteTaskError(f"the result of the call could not be unpickled in the main "
                            f"program: {type(exc).__name__}: {exc}", name)
    error.__cause__ = exc
    return error


def outcome(report: TaskReport) -> tuple[Any, BaseException | None]:
    """(result, None) or (None, exception) for the call whose task ended as
    ``report`` says (see the module docstring)."""
    status = report.status
    if status is TaskStatus.DONE:
        try:
            return unpack(report.result), None
        except BaseException as exc:  # SystemExit from a hostile __reduce__ included
            return None, _unpickling_error(exc, report.name)
    if status is TaskStatus.FAILED:
        raised = report.exception
        if raised is None:  # pragma: no cover - a failed report always carries one
            raised = RemoteTaskError(f"the call failed: {report.reason}", report.name)
        if raised.__cause__ is None and report.traceback:
            raised.__cause__ = remote_traceback(report.traceback)
        return None, raised
    if status is TaskStatus.KILLED:
        return None, WorkerDiedError(
            f"{report.reason}; only this call failed, the executor goes on", report.name,
            report.exitcode, report.signal_name, report.pid)
    return None, TaskCancelledError(f"the call ended {status}: {report.reason}",
                                    report.name)


def initializer_failure(report: TaskReport) -> ExecutorBrokenError | None:
    """The error that breaks the executor when ``report`` says its initializer failed,
    else None."""
    exc = report.exception
    if report.status is not TaskStatus.FAILED or not isinstance(exc, InitializerError):
        return None
    error = ExecutorBrokenError(f"{exc} in worker process {report.pid}: the executor is "
                                "broken, and runs no more calls")
    if report.traceback:
        exc.__cause__ = remote_traceback(report.traceback)
    error.__cause__ = exc
    return error


def remote_traceback(text: str) -> BaseException:
    """The worker's formatted traceback as an exception, ProcessPoolExecutor's own
    type (code that reads ``exc.__cause__.tb`` keeps working)."""
    return _RemoteTraceback(text)  # type: ignore[arg-type]  # typeshed has it wrong
