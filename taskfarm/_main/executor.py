"""``taskfarm.Executor``: a ``concurrent.futures`` executor on top of a farm. Runs in
the main program.

A program written for ``ProcessPoolExecutor`` switches by changing one line; its calls
then run in a taskfarm farm, with what the farm adds: a worker process that dies fails
only the call it was running, calls can have a timeout and retries, no process
outlives the program, and exceptions arrive with the worker's frames.

::

   main program                                    boss process        workers
  ┌────────────────────────────────────────────┐  ┌──────────────┐   ┌─────────┐
  │ submit()/map() ─> Calls.queue              │  │              │   │         │
  │                      │ (wake)              │  │  schedules,  │──>│ fn(*a)  │
  │ feeder thread: pickle a batch, ─────────────────> queues on  │   │ per     │
  │   one AddTasks message per function        │  │  workers     │<──│ call    │
  │                                            │  │              │   │         │
  │ receiver thread ─> EventStream ─> Calls.on_events <────────────  STARTED,  │
  │   STARTED: future running                  │  │  ENDED       │   └─────────┘
  │   ENDED:   future result / exception       │  └──────────────┘
  └────────────────────────────────────────────┘

``submit`` only queues the call; the feeder thread (:mod:`taskfarm._main.executor_feeder`)
pickles whatever has accumulated and gives it to the boss as one batch (a lone call,
submitted while nothing else is in flight, is given at once from the submitting
thread: one thread hand-over less); the boss schedules the calls on its workers, and
the receiver thread of the Boss handle settles each future as the boss reports its
call's start and end. A program that waits for each call before it submits the next
gets a lease (:mod:`taskfarm._main.executor_lease`): one worker process runs its
calls, written to it straight from the submitting thread, without the boss. How a
call travels and runs
in a worker is in :mod:`taskfarm._main.executor_worker`; how a task's ending becomes a
result or an exception in :mod:`taskfarm._main.executor_outcome`.

Start methods: ``"spawn"`` starts fresh interpreters; ``"fork"`` forks each worker from
the small boss process, never from the main program, so it is already what
multiprocessing's ``"forkserver"`` gives (a clean, small, single-threaded parent):
both ``"fork"`` and ``"forkserver"`` contexts map to it.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from concurrent.futures import Future
from typing import Any, Literal, ParamSpec, TypeVar

from schedulers import BaseScheduler, MaxThreadsScheduler
from taskfarm._common.system import available_cpus
from taskfarm._main.executor_farm import Calls
from taskfarm._main.executor_feeder import Feeder
from taskfarm._main.executor_outcome import ExecutorBrokenError
from taskfarm._main.executor_worker import ChunkFailure, call_worker_class
from taskfarm._main.handle import Boss

__all__ = ["Executor"]

_P = ParamSpec("_P")
_T = TypeVar("_T")

# multiprocessing start methods, as the farm's ("forkserver": see the module docstring).
_START_METHODS = {"fork": "fork", "forkserver": "fork", "spawn": "spawn"}

# map(chunksize > 1) gives up to MAX_GROUP chunks to the boss as one task, while that
# leaves at least GROUP_TASKS tasks per worker (so the last tasks cannot hold the end
# back by more than about 1/GROUP_TASKS): the boss's turn per task, not the chunk, is
# what bounds tiny calls. Each chunk still raises where it would alone (ChunkFailure);
# a worker process that dies fails the chunks of its task together. Only for
# executors without timeout, retries, max_tasks_per_child, isolated or on_error=
# "raise", which apply per task.
MAX_GROUP = 8
GROUP_TASKS = 32

# Seconds the boss holds the notice that a call started, dropped if the call ends
# meanwhile: most tiny calls then cost one message to the main program, not two
# (see taskfarm/_boss/started.py); a longer call's future runs that much later.
STARTED_HOLD = 0.002

# Live executors' machinery, for the interpreter's exit (see _at_exit).
_LIVE: weakref.WeakSet[_Machinery] = weakref.WeakSet()
_exiting = False


class Executor(futures.Executor):
    """Runs calls in a taskfarm farm: a ``concurrent.futures.Executor`` that takes the
    place of ``ProcessPoolExecutor`` by changing one line.

    Args:
        max_workers: at most this many calls run at once (default: one per CPU this
            process may use); ``<= 0`` raises ValueError.
        mp_context: a multiprocessing context (or its name): ``"spawn"`` starts fresh
            interpreters, ``"fork"`` and ``"forkserver"`` fork workers from the boss
            process (see the module docstring). Default: the farm's default start
            method (``TASKFARM_START_METHOD``, else fork).
        initializer, initargs: ``initializer(*initargs)`` runs once in each worker
            process before its first call; if it fails, pending futures raise
            :class:`concurrent.futures.BrokenExecutor` (a ``BrokenProcessPool``), and
            so does every later submit.
        max_tasks_per_child: a worker process is replaced after this many calls
            (under every start method).
        scheduler: a taskfarm scheduler (combined with ``max_workers`` if both are
            given).
        timeout: seconds a call may run; past it, it is stopped and its future raises
            :class:`taskfarm.TaskCancelledError`.
        retries: extra attempts for a call that fails, dies or times out.
        on_error: ``"continue"`` (each failure is its own future's) or ``"raise"``:
            the first call that fails breaks the executor, as an initializer failure
            does.
        isolated: every call in a fresh process.
        start_method: ``"fork"`` or ``"spawn"``, as ``mp_context``.
        name: a name for the farm, in messages.
    """

    def __init__(self, max_workers: int | None = None, mp_context: Any = None,
                 initializer: Callable[..., object] | None = None,
                 initargs: tuple[Any, ...] = (), *, max_tasks_per_child: int | None = None,
                 scheduler: BaseScheduler | None = None, timeout: float | None = None,
                 retries: int = 0, on_error: Literal["continue", "raise"] = "continue",
                 isolated: bool = False, start_method: str | None = None,
                 name: str | None = None) -> None:
        if max_workers is not None:
            if isinstance(max_workers, bool) or not isinstance(max_workers, int):
                raise TypeError(f"max_workers must be an int, not {max_workers!r}")
            if max_workers <= 0:
                raise ValueError("max_workers must be greater than 0")
            limit = MaxThreadsScheduler(max_workers)
            scheduler = limit if scheduler is None else scheduler & limit
        if max_tasks_per_child is not None and (
                isinstance(max_tasks_per_child, bool) or not isinstance(max_tasks_per_child, int)
                or max_tasks_per_child < 1):
            raise ValueError("max_tasks_per_child must be >= 1")
        if on_error not in ("continue", "raise"):
            raise ValueError(f"on_error must be 'continue' or 'raise', not {on_error!r}")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        method = _start_method(mp_context, start_method)
        worker = call_worker_class(initializer, initargs)
        boss = _Farm(scheduler, name=name or None, on_error="continue", isolated=isolated,
                     start_method=method, timeout=timeout, retries=retries,
                     keep_reports=False, max_tasks_per_child=max_tasks_per_child)
        try:
            grouping = not (timeout or retries or isolated or max_tasks_per_child
                            or on_error == "raise")
            # A lease holds a worker process for lone calls: only where each call is a
            # task of its own to the boss in nothing but its worker, and where workers
            # write express results (not those of the main program's copy, which the
            # boss does not start itself): see executor_lease.py.
            calls = Calls(boss._ledger, fail_fast=on_error == "raise",
                          leasing=grouping and not boss._rules.by_reference)
            express = boss._inbox.express
            assert express is not None
            express.on_result = calls.on_express
            calls.drain_express = express.drain
            # In place of the handle's ledger: the calls keep what the farm must know
            # of each call, and forget it as its future is settled (Calls._forget).
            boss._events.unsubscribe(boss._ledger)
            boss._events.subscribe(calls)
            # Futures run when their call starts, not before; a call that ends within
            # STARTED_HOLD is said to have started by its ending (no notice of its own).
            boss._watch_started(STARTED_HOLD)
            boss.make_them_work()
            self._machinery = _Machinery(Feeder(boss, worker, calls))
        except BaseException:
            boss.close()
            raise
        self.name = boss.name
        self._grouping = grouping
        self._workers = max_workers or available_cpus()
        # Dropping the executor shuts it down without waiting: nothing submitted is lost.
        weakref.finalize(self, self._machinery.close, False).atexit = False

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args,
               **kwargs: _P.kwargs) -> Future[_T]:
        """Run ``fn(*args, **kwargs)`` in a worker process; return its future at once.

        Never raises for ``fn`` or its arguments: one that cannot be pickled (or
        unpickled in the worker) fails the future. Raises RuntimeError after
        :meth:`shutdown`, and :class:`concurrent.futures.BrokenExecutor` once the
        executor is broken.
        """
        return self._machinery.calls.add(fn, ((args, kwargs),), self._machinery.refuse)[0]

    def map(self, fn: Callable[..., _T], *iterables: Iterable[Any],
            timeout: float | None = None, chunksize: int = 1) -> Iterator[_T]:
        """``fn`` over the iterables, as the built-in ``map``: every call is submitted
        now, results are yielded in order, each exception is raised at its position,
        and ``TimeoutError`` once ``timeout`` seconds (from this call) have passed.

        ``chunksize`` calls make a chunk: an exception in a chunk is raised at the
        chunk's first position, after every result before it. A long map gives the
        boss up to ``MAX_GROUP`` chunks as one task (see there): far fewer turns of
        the boss for tiny calls, and a worker process that dies fails its task's
        chunks together. Results already yielded are not kept.
        """
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        end = None if timeout is None else time.monotonic() + timeout
        calls: list[tuple[Any, dict[str, Any] | None]]
        star = len(iterables) != 1
        # Over one iterable a chunk is its items, not 1-tuples of them: less to build
        # and pickle here, and the worker maps fn over them.
        values = list(zip(*iterables) if star else iterables[0])  # noqa: B905 - the shortest
        chunks = -(-len(values) // chunksize)
        group = min(MAX_GROUP, chunks // (GROUP_TASKS * self._workers)) \
            if self._grouping and chunksize > 1 else 1
        if group > 1:  # several chunks per task: see MAX_GROUP
            step = group * chunksize
            calls = [((values[i:i + step], chunksize, star), None)
                     for i in range(0, len(values), step)]
        elif chunksize == 1:
            calls = [(args, {}) for args in values] if star else \
                [((value,), {}) for value in values]
        else:
            calls = [(values[i:i + chunksize], None) if star else
                     ((values[i:i + chunksize],), None)
                     for i in range(0, len(values), chunksize)]
        del values
        machinery = self._machinery
        submitted = machinery.calls.add(fn, calls, machinery.refuse)
        del calls
        return _results(submitted, end, chunked=chunksize > 1)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No more calls. ``cancel_futures``: cancel every call that has not started.
        ``wait``: return once every call has ended and every process of the farm has
        exited; else at once (the calls still finish, and the farm ends after them).
        May be called more than once."""
        self._machinery.close(cancel_futures)
        if wait:
            self._machinery.join()

    def __repr__(self) -> str:
        return f"<taskfarm.Executor {self.name}>"


class _Farm(Boss):
    """An executor's farm: its workers write the results of calls that end done straight
    to the main program, not through the boss (see :mod:`taskfarm._common.express`)."""

    _express = True


class _Machinery:
    """What an executor runs on, without the executor itself: what its finalizer and
    the interpreter's exit hook act on."""

    def __init__(self, feeder: Feeder) -> None:
        self.feeder = feeder
        self.calls = feeder.calls
        self.name = feeder.boss.name
        feeder.thread.start()
        _LIVE.add(self)

    def refuse(self) -> None:
        """Raise if no call may be submitted now (called under the calls' lock)."""
        calls = self.calls
        if calls.broken is not None:
            error = ExecutorBrokenError(str(calls.broken))
            error.__cause__ = calls.broken.__cause__
            raise error
        if _exiting:
            raise RuntimeError("cannot schedule new futures after interpreter shutdown")
        if calls.closing:
            raise RuntimeError("cannot schedule new futures after shutdown")

    def close(self, cancel_futures: bool) -> None:
        with self.calls.lock:
            self.calls.closing = True
            self.calls.leases.revoke()
            self.calls.wake.notify()
        if cancel_futures:
            self.calls.cancel_pending()

    def join(self) -> None:
        if threading.current_thread() is not self.feeder.thread:
            self.feeder.thread.join()


def _results(submitted: list[Future[Any]], end: float | None,
             chunked: bool) -> Iterator[Any]:
    """The results of map, in order (CPython's own iterator, chunks flattened; the
    chunks of a task of several yield their results up to the one that raised)."""
    submitted.reverse()  # popped from the end: nothing yielded stays referenced here
    try:
        while submitted:
            left = None if end is None else end - time.monotonic()
            if not chunked:
                yield _result_or_cancel(submitted.pop(), left)
                continue
            future = submitted.pop()
            chunk = _result_or_cancel(future, left)
            error = getattr(future, "then_raise", None)
            del future
            if type(chunk) is ChunkFailure:
                error, chunk = chunk.exception(), chunk.results
            chunk.reverse()
            while chunk:
                yield chunk.pop()
            if error is not None:
                raise error
    finally:
        for future in submitted:
            future.cancel()


def _result_or_cancel(future: Future[Any], timeout: float | None) -> Any:
    try:
        return future.result(timeout)
    finally:
        future.cancel()
        del future  # the exception held by the future refers to this frame


def _start_method(mp_context: Any, start_method: str | None) -> str | None:
    """The farm's start method for a multiprocessing context (or its name)."""
    if mp_context is None:
        return start_method
    name = mp_context if isinstance(mp_context, str) else mp_context.get_start_method()
    method = _START_METHODS.get(name)
    if method is None:
        raise ValueError(f"mp_context {name!r}: taskfarm starts workers with 'fork' "
                         "(also for 'forkserver') or 'spawn'")
    if start_method is not None and start_method != method:
        raise ValueError(f"mp_context {name!r} and start_method={start_method!r} disagree")
    return method


def _at_exit() -> None:
    """At the interpreter's exit, as ProcessPoolExecutor does: no more submits, and
    what was submitted finishes before the program ends (quietly). A dropped Boss,
    by contrast, stops its farm."""
    global _exiting
    _exiting = True
    machineries = list(_LIVE)
    for machinery in machineries:
        machinery.close(False)
    for machinery in machineries:
        machinery.join()


# Before the interpreter joins its threads and runs atexit hooks (the Boss handles'
# finalizers among them, which would stop the farms): CPython's executors do the same.
_register = getattr(threading, "_register_atexit", None)
if _register is not None:
    _register(_at_exit)
else:  # pragma: no cover - every CPython since 3.9 has it
    import atexit

    atexit.register(_at_exit)
