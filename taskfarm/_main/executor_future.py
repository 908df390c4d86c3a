"""The futures :class:`taskfarm.Executor` hands out. Runs in the main program.

A :class:`CallFuture` is a genuine ``concurrent.futures.Future`` (``wait`` and
``as_completed`` take it) that tells its executor's
:class:`~taskfarm._main.executor_farm.Calls` when it is cancelled, and whose condition
costs the garbage collector less than the standard one.
"""

from __future__ import annotations

import collections
import threading
from concurrent.futures import Future
from concurrent.futures._base import PENDING
from typing import TYPE_CHECKING, Any

# Future.__init__ makes a threading.Condition, which CallFuture replaces at once (a
# third of the cost of a future): CallFuture sets the fields itself when they are
# these, the same from Python 3.11 to 3.13; else it calls Future.__init__.
_OWN_INIT = set(vars(Future())) == {"_condition", "_state", "_result", "_exception",
                                    "_waiters", "_done_callbacks"}

if TYPE_CHECKING:
    from taskfarm._main.executor_farm import Calls


class _FutureCondition(threading.Condition):
    """A future's condition: ``threading.Condition`` over an RLock, whose lock methods
    are the class's own rather than five bound methods made per instance. Thousands
    of futures are in flight at once; each bound method is one more object for the
    garbage collector to allocate and walk again and again while they wait."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._waiters: collections.deque[Any] = collections.deque()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        self._lock.release()

    def _release_save(self) -> Any:
        return self._lock._release_save()  # type: ignore[attr-defined]

    def _acquire_restore(self, state: Any) -> None:
        self._lock._acquire_restore(state)  # type: ignore[attr-defined]

    def _is_owned(self) -> bool:
        return bool(self._lock._is_owned())  # type: ignore[attr-defined]


class CallFuture(Future[Any]):
    """The future of one call (or one ``map`` chunk): a genuine
    ``concurrent.futures.Future`` that tells its executor when it is cancelled, so that
    a call not started yet is dropped or cancelled at the boss. (A done-callback on
    every future would say as much, at the cost of a lock and a list per call.)"""

    # Raised by Executor.map after this future's results: the error of a map chunk
    # that could not be pickled, behind the chunks of its task that could.
    then_raise: BaseException | None = None

    def __init__(self, calls: Calls) -> None:
        if _OWN_INIT:   # Future.__init__'s fields, without the Condition it would make
            self._condition = _FutureCondition()
            self._state = PENDING
            self._result = None
            self._exception: BaseException | None = None
            self._waiters: list[Any] = []
            self._done_callbacks: list[Any] = []
        else:  # pragma: no cover - a Python whose Future has other fields
            super().__init__()
            self._condition = _FutureCondition()
        self._calls = calls

    def cancel(self) -> bool:
        if not super().cancel():
            return False
        self._calls.on_cancelled(self)
        return True
