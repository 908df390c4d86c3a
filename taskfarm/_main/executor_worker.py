"""How a call given to :class:`taskfarm.Executor` travels and runs. The pickling half
runs in the main program (the executor's feeder thread), the running half in worker
processes, which import this module (and nothing else of the main program's side) to
rebuild each executor's Worker class.

A call is two instruction values, both bytes, so that the farm forwards them without
looking inside: ``fn``, the pickled function, given once per batch as a common
instruction, and ``args``, the pickled ``(args, kwargs)`` of one call, or the list of
argument tuples of a ``map`` chunk (over one iterable: ``(items,)``, the list of its
items). A function defined in ``__main__`` (or a lambda)
travels by value (cloudpickle); everything else by reference (plain pickle, ten times
faster). A worker process keeps the last functions it unpickled, keyed by their
pickled bytes, so a ``map`` over a lambda unpickles the lambda once per process.

The worker pickles each result itself, inside the task: an error while pickling it
(``PicklingError``, ``SystemExit``) is the call's own exception, with its type, as
with ``ProcessPoolExecutor``. Large buffers (numpy arrays) stay out of band.

Each executor has its own subclass of :class:`CallWorker`, made by
:func:`call_worker_class`: its ``setup_process`` runs once per worker process, before
the first call there, and sets the main program's ``sys.path`` and multiprocessing
authkey (so that Manager proxies given as arguments connect) before it runs the
executor's initializer.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import pickle
import sys
from collections.abc import Callable
from typing import Any, ClassVar

from taskfarm._common import by_value
from taskfarm._common.worker_class import Worker

# Functions unpickled in this worker process, by their pickled bytes (same bytes, same
# function): a map over a lambda unpickles it once. Only plain functions are kept, so
# that a bound method or a partial never keeps its object alive here.
_FUNCTIONS: dict[bytes, Callable[..., Any]] = {}
_MAX_FUNCTIONS = 64

_CLASS_NUMBERS = itertools.count(1)


class InitializerError(Exception):
    """Raised in a worker process whose initializer failed: the main program breaks
    the executor when it sees it. Its message names the initializer's exception, and
    the task's traceback holds the initializer's frames."""


class CallWorker(Worker):
    """Runs one call (or one chunk of calls) given to an Executor. Never matched by
    instructions (each executor names its own subclass), so subclasses are not
    registered for matching."""

    fn: bytes
    args: bytes

    # Set on each executor's subclass (call_worker_class).
    _sys_path: ClassVar[tuple[str, ...]] = ()
    _authkey: ClassVar[bytes | None] = None
    _setup: ClassVar[bytes | None] = None   # pickled (initializer, initargs)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Not Worker.__init_subclass__: that would register the class, and every Boss
        # matching instructions without worker= would see it as a candidate.
        cls._taskfarm_attributes = None

    @classmethod
    def setup_process(cls) -> None:
        """The main program's sys.path and authkey, then the initializer; a failing
        initializer raises :class:`InitializerError` (logged as CPython does)."""
        if cls._sys_path:
            sys.path[:] = cls._sys_path
        if cls._authkey is not None:
            multiprocessing.current_process().authkey = cls._authkey
        if cls._setup is None:
            return
        try:
            initializer, initargs = pickle.loads(cls._setup)
            initializer(*initargs)
        except BaseException as exc:
            logging.getLogger("concurrent.futures").critical("Exception in initializer:",
                                                             exc_info=True)
            raise InitializerError(f"the executor's initializer raised "
                                   f"{type(exc).__name__}: {exc}") from exc

    def task(self) -> Any:
        fn = _function(self.fn)
        call = _arguments(self.args)
        if type(call) is list:  # a chunk of map: one result per argument tuple
            return pack([fn(*args) for args in call])
        if len(call) == 1:  # a chunk of map over one iterable: one result per item
            return pack(list(map(fn, call[0])))
        if len(call) == 3:  # several chunks of map: see run_chunks
            return run_chunks(fn, *call)
        args, kwargs = call
        del call
        return pack(fn(*args, **kwargs))


def run_call(fn_blob: bytes, args_blob: bytes) -> Any:
    """One call from its pickled function and ``(args, kwargs)``, its result packed: a
    call a lease runs (:mod:`taskfarm._worker.lease`)."""
    fn = _function(fn_blob)
    args, kwargs = _arguments(args_blob)
    return pack(fn(*args, **kwargs))


def _arguments(blob: bytes) -> Any:
    try:
        return pickle.loads(blob)
    except BaseException as exc:
        exc.add_note("(while unpickling the arguments of the call in the worker process)")
        raise


class ChunkFailure:
    """What a task of several ``map`` chunks returns when one of them raised: the
    results of the chunks before it, in order, and that chunk's exception as it
    travels (:func:`taskfarm._worker.run.describe`). The main program yields the
    results, then raises the exception, rebuilt with the worker's frames: exactly
    where a task per chunk would have raised it."""

    def __init__(self, results: list[Any], error: tuple[str, str, str, bytes | None]
                 ) -> None:
        self.results = results
        self.error_type, self.error_text, self.traceback, self.error_blob = error

    def exception(self) -> BaseException:
        from taskfarm._main.executor_outcome import remote_traceback
        from taskfarm._main.inbox import rebuild_exception

        exc = rebuild_exception(self.error_blob, self.error_type, self.error_text,
                                self.traceback, "a map chunk")
        if exc.__cause__ is None and self.traceback:
            exc.__cause__ = remote_traceback(self.traceback)
        return exc


def run_chunks(fn: Callable[..., Any], items: list[Any], size: int, star: bool) -> Any:
    """Several chunks of ``size`` items of one ``map``, in one task (see
    ``Executor.map``): each item an argument tuple (``star``) or one argument. Runs
    them in order and returns their results as one list; when a chunk raises (or its
    results cannot be pickled), a :class:`ChunkFailure` with the chunks before it,
    and the chunks after it do not run."""
    from taskfarm._worker.run import StopRequested, describe

    results: list[Any] = []
    for start in range(0, len(items), size):
        chunk = items[start:start + size]
        try:
            results.extend([fn(*args) for args in chunk] if star else map(fn, chunk))
        except (StopRequested, KeyboardInterrupt):
            raise   # the task is being stopped: not a chunk's own failure
        except BaseException as exc:
            del results[start:]
            return pack(ChunkFailure(results, describe(exc)))
    try:
        return pack(results)
    except BaseException:   # a result that cannot be pickled: which chunk's?
        found = first_unpicklable(results, size, pack)
        if found is None:
            raise
        start, error = found
        return pack(ChunkFailure(results[:start], describe(error)))


def first_unpicklable(values: list[Any], size: int, dumps: Callable[[list[Any]], Any]
                      ) -> tuple[int, BaseException] | None:
    """Where the first chunk of ``size`` values that ``dumps`` cannot pickle starts,
    and its error (None if each chunk alone can be pickled): the search behind a map
    task whose arguments (main program) or results (worker) cannot all travel."""
    for start in range(0, len(values), size):
        try:
            dumps(values[start:start + size])
        except BaseException as exc:
            return start, exc
    return None


def call_worker_class(initializer: Callable[..., object] | None,
                      initargs: tuple[Any, ...]) -> type[CallWorker]:
    """A CallWorker subclass of one executor: the main program's sys.path and authkey
    and the executor's initializer travel with it. Raises TypeError when the
    initializer or its arguments cannot be pickled."""
    setup = None
    if initializer is not None:
        try:
            setup = by_value.dumps((initializer, tuple(initargs)), protocol=5)
        except Exception as exc:
            raise TypeError(f"the initializer and initargs cannot be pickled to send them "
                            f"to worker processes ({type(exc).__name__}: {exc}); a "
                            "multiprocessing.Queue or Lock cannot travel to a process "
                            "that already runs: use a multiprocessing.Manager() one") from exc
    number = next(_CLASS_NUMBERS)
    # Named so that it cannot be found by reference: cloudpickle sends it by value,
    # with its settings.
    namespace = {"__module__": __name__, "__qualname__": f"ExecutorCall.{number}",
                 "_sys_path": tuple(sys.path),
                 "_authkey": bytes(multiprocessing.current_process().authkey),
                 "_setup": setup}
    made: type[CallWorker] = type(f"ExecutorCall{number}", (CallWorker,), namespace)
    return made


def _function(blob: bytes) -> Callable[..., Any]:
    fn = _FUNCTIONS.get(blob)
    if fn is None:
        try:
            fn = pickle.loads(blob)
        except BaseException as exc:
            exc.add_note("(while unpickling the function of the call in the worker process)")
            raise
        if type(fn).__name__ in ("function", "builtin_function_or_method"):
            if len(_FUNCTIONS) >= _MAX_FUNCTIONS:
                del _FUNCTIONS[next(iter(_FUNCTIONS))]
            _FUNCTIONS[blob] = fn
    return fn


def pack(value: Any) -> Any:
    """A result, pickled here in the worker (see the module docstring): its bytes, or
    (bytes, out-of-band buffers)."""
    buffers: list[pickle.PickleBuffer] = []
    blob = by_value.dumps_user(value, buffers)
    return (blob, buffers) if buffers else blob


def unpack(packed: Any) -> Any:
    """The result :func:`pack` made, in the main program."""
    if type(packed) is bytes:
        return pickle.loads(packed)
    blob, buffers = packed
    return pickle.loads(blob, buffers=buffers)


def dumps_function(fn: Callable[..., Any]) -> bytes:
    """A function pickled by reference when a worker can import it, else by value."""
    try:
        blob = pickle.dumps(fn, protocol=5)
    except Exception:
        return _by_value(fn)
    return _by_value(fn) if _MAIN in blob else blob


def dumps_call(args: tuple[Any, ...] | list[tuple[Any, ...]],
               kwargs: dict[str, Any] | None) -> bytes:
    """The arguments of one call (``kwargs`` a dict), or of a map chunk (``kwargs``
    None): a list of argument tuples, or a 1-tuple holding the list of items of a map
    over one iterable."""
    value = args if kwargs is None else (args, kwargs)
    try:
        blob = pickle.dumps(value, protocol=5)
    except Exception:
        return _by_value(value)
    return _by_value(value) if _MAIN in blob else blob


# A plain pickle that names __main__ refers to the main program's own module, which a
# worker does not have: such values go by value. (A string argument that happens to
# contain the word takes the slower path too, with the same result.)
_MAIN = b"__main__"


def _by_value(value: Any) -> bytes:
    blob: bytes = by_value.dumps(value, protocol=5)
    return blob
