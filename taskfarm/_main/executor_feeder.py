"""The feeder thread of :class:`taskfarm.Executor`: it gives the calls submitted to the
boss, in batches, asks the boss to cancel calls whose futures were cancelled, and at
the end lets the boss finish and waits for every process to exit. Runs in the main
program; what it shares with ``submit`` and the sink is a
:class:`~taskfarm._main.executor_farm.Calls` (see :mod:`taskfarm._main.executor_farm`).

A batch is pickled here (the function once per batch, kept from batch to batch when it
cannot have changed: :mod:`taskfarm._main.executor_functions`; the arguments of each
call) and given to the Boss handle by its fast path for executor calls
(:func:`taskfarm._main.batch.prepare_calls`), after a first batch through
``set_instructions`` has made the executor's Worker class known to the boss. The same
code gives a lone call from the thread that submits it (``Calls.add``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import pickle
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from taskfarm._main.batch import call_policies, prepare_calls
from taskfarm._main.executor_farm import Calls, Submitted
from taskfarm._main.executor_functions import FunctionBlobs
from taskfarm._main.executor_future import CallFuture
from taskfarm._main.executor_outcome import ExecutorBrokenError, cancelled, set_running, settle
from taskfarm._main.executor_worker import (
    CallWorker,
    dumps_call,
    dumps_function,
    first_unpicklable,
)
from taskfarm._main.handle import Boss
from taskfarm._main.interrupts import sigint_held
from taskfarm._worker.lease import serve_lease

# While calls are out, how often the feeder checks that the boss is still there
# (seconds): a boss that died says nothing to the event stream. Also how often an
# idle feeder wakes: a call given from a submitting thread is out while it sleeps.
LIVENESS_CHECK = 1.0

_LOG = logging.getLogger("taskfarm")
# The function of a lease's task (taskfarm/_main/executor_lease.py), by reference.
_LEASE = dumps_function(serve_lease)


class Feeder:
    """The feeder thread of one executor (see the module docstring)."""

    def __init__(self, boss: Boss, worker: type[CallWorker], calls: Calls) -> None:
        self.boss, self.worker, self.calls = boss, worker, calls
        self._policies: dict[str, Any] | None = None   # what prepare_calls adds to each
        self._functions = FunctionBlobs()
        self.thread = threading.Thread(target=self._run, name="taskfarm-executor",
                                       daemon=True)

    def _run(self) -> None:
        calls = self.calls
        calls.give, calls.give_alone = self._send, self._give_alone
        try:
            while True:
                with calls.lock:
                    # While a submitting thread gives its call (Calls.add), wait: what
                    # was submitted after it is given after it.
                    # Closing, it waits for the leases' tasks to end: a call one of them
                    # never read is to be given to the boss (regive).
                    while calls.sending or not (
                            calls.queue or calls.cancels or calls.broken or calls.regive
                            or (calls.closing and not calls.leases.live)):
                        calls.feeder_waiting = True
                        if not calls.wake.wait(LIVENESS_CHECK) and _sending_stale(calls):
                            calls.sending = 0
                        calls.feeder_waiting = False
                        if (calls.out() or calls.leases.live) and not calls.queue \
                                and self.boss.finished:
                            break
                    batch, calls.queue = calls.queue, []
                    cancels, calls.cancels = calls.cancels, []
                    regive, calls.regive = calls.regive, []
                    done = calls.broken is not None or (calls.closing and not batch
                                                        and not regive and not calls.leases.live)
                if self.boss.finished and calls.broken is None:
                    calls.break_executor(ExecutorBrokenError(
                        f"the boss process of the executor ({self.boss.name}) has died; "
                        "its worker processes were stopped with it"))
                    done = True
                for name, fn_blob, args_blob in regive:   # in `started` all along
                    self._give(fn_blob, [name], [args_blob])
                if batch:
                    self._send(batch)
                del batch
                if cancels:
                    self._cancel(cancels)
                if done:
                    break
        except BaseException:  # a bug: fail what is out rather than leave it hanging
            _LOG.exception("taskfarm.Executor: the feeder thread failed")
            calls.break_executor(ExecutorBrokenError("the executor's feeder thread failed"))
        finally:
            self._finish()

    def _send(self, batch: list[Submitted]) -> None:
        """Pickle a batch and give it to the boss, one give per function. A call that
        cannot be pickled fails on its own future. Called by the feeder thread, or by
        a submitting thread (Calls.add), never by both at once."""
        calls = self.calls
        with calls.lock:
            # Recorded as given before they are: a future cancelled from now on is
            # cancelled at the boss (by the feeder, after this give).
            for _, _, futures, names in batch:
                calls.sent.update(zip(names, futures, strict=True))
                calls.names.update(zip(futures, names, strict=True))
        groups: dict[int, tuple[Callable[..., Any], list[tuple[str, Any, Future[Any]]]]] = {}
        dropped = []  # cancelled before that: its cancel() found nothing to cancel
        for fn, arg_list, futures, names in batch:
            entry = groups.get(id(fn))
            if entry is None:
                entry = groups[id(fn)] = (fn, [])
            for name, call, future in zip(names, arg_list, futures, strict=True):
                if cancelled(future):
                    dropped.append(name)
                else:
                    entry[1].append((name, call, future))
        if dropped:
            with calls.lock:
                for name in dropped:
                    if (gone := calls.sent.pop(name, None)) is not None:
                        del calls.names[gone]
        for fn, group in groups.values():
            try:
                fn_blob = _pickled("the function", self._functions.dumps, fn)
            except BaseException as exc:
                self._fail([(name, future) for name, _, future in group], exc)
                continue
            given: list[str] = []
            blobs: list[bytes] = []
            for name, (args, kwargs), future in group:
                try:
                    blobs.append(_pickled("the arguments", dumps_call, args, kwargs))
                except BaseException as exc:
                    # Several chunks of a map are (items, size, star), a tuple; one
                    # chunk is a list of argument tuples, or a 1-tuple of items.
                    several = kwargs is None and type(args) is tuple and len(args) == 3
                    blob = _first_chunks(args, future, exc) \
                        if several and isinstance(future, CallFuture) else None
                    if blob is None:
                        self._fail([(name, future)], exc)
                        continue
                    blobs.append(blob)
                given.append(name)
            del group
            if given and not self._give(fn_blob, given, blobs):
                return

    def _give_alone(self, submitted: Submitted, mode: str) -> None:
        """Give a lone call as ``mode`` says (:meth:`Leases.mode
        <taskfarm._main.executor_lease.Leases.mode>`): written to the current lease, or
        as the first call of a new lease; to the boss as usual if the lease cannot take
        it. From the submitting thread, as :meth:`_send`."""
        fn, ((args, kwargs),), (future,), (name,) = submitted
        try:
            fn_blob = _pickled("the function", self._functions.dumps, fn)
            args_blob = _pickled("the arguments", dumps_call, args, kwargs)
        except BaseException as exc:
            self._fail([(name, future)], exc)
            return
        number = int(name.rpartition("-")[2])
        calls = self.calls
        # Ctrl-C held back: a call written to a lease is registered with it. (One that
        # comes after a lease opened, before its task reached the boss: see
        # Calls._forget_unsent.)
        with sigint_held, calls.lock:
            lease = calls.leases.current
            if calls.closing or calls.broken is not None:
                pass
            elif mode == "open":
                path = calls.leases.open(name)
                if path is not None:  # the lease's task: serve_lease(path, number, ...)
                    args_blob = pickle.dumps(((path, number, fn_blob, args_blob), {}),
                                             protocol=5)
                    fn_blob = _LEASE
            elif lease is not None and lease.outstanding is None \
                    and lease.write(number, fn_blob, args_blob):
                lease.outstanding = name
                calls.started[name] = future
                set_running(future)   # under the lock: its result waits for it
                return
            else:  # the boss takes it, and may want the lease's worker for it
                calls.leases.revoke()
        self._give_one(name, future, fn_blob, args_blob)

    def _give_one(self, name: str, future: Future[Any], fn_blob: bytes, args_blob: bytes
                  ) -> None:
        with self.calls.lock:
            self.calls.sent[name] = future
            self.calls.names[future] = name
        self._give(fn_blob, [name], [args_blob])

    def _give(self, fn_blob: bytes, names: list[str], blobs: list[bytes]) -> bool:
        """Give calls of one function to the boss; False if it could not be done (the
        executor is broken then)."""
        boss = self.boss
        try:
            if self.worker in boss._class_keys:  # given once already: the fast path
                if self._policies is None:
                    self._policies = call_policies(self.worker, boss._rules)
                boss._give(functools.partial(prepare_calls, self.worker, self._policies,
                                             fn_blob, names, blobs, boss._rules,
                                             self.calls.take_ended()))
            else:
                boss.set_instructions({"fn": fn_blob}, {"name": names, "args": blobs},
                                      worker=self.worker)
        except Exception as exc:
            error = ExecutorBrokenError(f"the executor could not give calls to its boss "
                                        f"({type(exc).__name__}: {exc})")
            error.__cause__ = exc
            self.calls.break_executor(error)
            return False
        return True

    def _fail(self, failed: list[tuple[str, Future[Any]]], exc: BaseException) -> None:
        """Calls that could not be pickled: never given, each future fails. A Ctrl-C
        that came while a submitting thread pickled its call is raised there too."""
        with self.calls.lock:
            for name, future in failed:
                if self.calls.sent.pop(name, None) is not None:
                    del self.calls.names[future]
        for _, future in failed:
            settle(future, exception=exc)
        if isinstance(exc, KeyboardInterrupt) and threading.current_thread() is not self.thread:
            raise exc

    def _cancel(self, names: list[str]) -> None:
        """Ask the boss to cancel these tasks. A task that ended meanwhile may be
        forgotten by the handle already (KeyError): the others are asked one by one."""
        try:
            self.boss.cancel(*names)
        except KeyError:
            for name in names:
                with contextlib.suppress(Exception):
                    self.boss.cancel(name)
        except Exception:  # the boss is gone: its futures are failed as it goes
            pass

    def _finish(self) -> None:
        """Let the boss finish every call given (or stop it, if the executor broke),
        wait until every process has exited, and fail whatever never ended."""
        calls, boss = self.calls, self.boss
        try:
            if calls.broken is not None:
                boss.close()
            else:
                boss.wait_till_finished()
        except Exception:
            pass
        finally:
            boss.close()
        with calls.lock:
            calls.leases.close()
            left = bool(calls.out() or calls.queue)
        if left:  # the boss died, or a call could not be given
            calls.break_executor(ExecutorBrokenError(
                f"the boss of the executor ({boss.name}) ended before this call did"))


def _first_chunks(args: tuple[Any, ...], future: CallFuture, exc: BaseException
                  ) -> bytes | None:
    """Several chunks of a ``map`` (see ``Executor.map``) whose items cannot all be
    pickled: the chunks before the first one that cannot, pickled to be the task, and
    the future told to raise that chunk's error after their results
    (``CallFuture.then_raise``), as a task per chunk would have; None when it is the
    first chunk (the future fails as it is)."""
    if isinstance(exc, KeyboardInterrupt):  # not the items' doing
        return None
    items, size, star = args
    found = first_unpicklable(items, size, lambda chunk: _pickled(
        "the arguments", dumps_call, (chunk, size, star), None))
    if found is None or found[0] == 0:  # the future fails as it is
        return None
    start, future.then_raise = found
    return _pickled("the arguments", dumps_call, (items[:start], size, star), None)


def _sending_stale(calls: Calls) -> bool:
    """Under the lock: ``calls.sending`` is set, but its thread is out of
    :meth:`Calls.add` (a Ctrl-C came as add()'s ``finally`` began, where Python cannot
    hold it back): the feeder may go on. Checked after a LIVENESS_CHECK of waiting."""
    if not calls.sending:
        return False
    frame = sys._current_frames().get(calls.sending)
    while frame is not None:
        if frame.f_code is Calls.add.__code__:
            return False
        frame = frame.f_back
    return True


def _pickled(what: str, dumps: Callable[..., bytes], *args: Any) -> bytes:
    try:
        return dumps(*args)
    except BaseException as exc:
        exc.add_note(f"(while pickling {what} of the call to send it to a worker process)")
        raise

