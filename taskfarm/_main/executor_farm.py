"""The machinery under :class:`taskfarm.Executor`: the calls waiting to be sent, the
feeder thread that sends them to the boss in batches, and the sink that turns the
boss's events into future states. Runs in the main program.

Three actors share one :class:`Calls` (a lock, the queue, the futures sent):

- ``submit`` (any thread) appends a call to the queue and wakes the feeder if it
  sleeps: a few microseconds, no pickling, no system call.
- The feeder thread (:class:`Feeder`) takes whatever has accumulated, pickles it and
  gives it to the Boss in one ``set_instructions`` per function: one call per batch
  rather than one per ``submit`` is what makes tiny calls cheap. It also asks the boss
  to cancel, and at the end lets the boss finish and waits for every process to exit.
  It is the only thread that calls the Boss handle.
- The sink (:meth:`Calls.on_events`), called in whichever thread reads the boss's
  messages, marks a future running when a worker starts its call (STARTED) and
  settles it when the call ends (ENDED); it never blocks and never raises.

Nothing here holds the Executor object: dropping it (a ``weakref.finalize``) shuts the
executor down without waiting, and submitted work still finishes.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from typing import Any, NamedTuple

from taskfarm._main.events import EventKind, TaskEvent
from taskfarm._main.executor_outcome import (
    ExecutorBrokenError,
    initializer_failure,
    outcome,
    settle,
    start,
)
from taskfarm._main.executor_worker import CallWorker, dumps_call, dumps_function
from taskfarm._main.handle import Boss
from taskfarm._main.ledger import Ledger
from taskfarm._main.report import TaskReport

# While calls are out, how often the feeder checks that the boss is still there
# (seconds): a boss that died says nothing to the event stream.
LIVENESS_CHECK = 1.0

_LOG = logging.getLogger("taskfarm")
_ENDED, _STARTED = EventKind.ENDED, EventKind.STARTED


class Call(NamedTuple):
    """A call submitted and not sent yet. ``kwargs`` is None for a map chunk, whose
    ``args`` is the list of argument tuples."""

    name: str
    fn: Callable[..., Any]
    args: Any
    kwargs: dict[str, Any] | None
    future: Future[Any]


class Calls:
    """The state the executor, the feeder and the sink share (see the module
    docstring). Every field is read and written under :attr:`lock`."""

    def __init__(self, ledger: Ledger, fail_fast: bool) -> None:
        self.lock = threading.Lock()
        self.wake = threading.Condition(self.lock)
        self.queue: list[Call] = []                # submitted, not sent
        self.sent: dict[str, Future[Any]] = {}     # given, not started (by task name)
        self.started: dict[str, Future[Any]] = {}  # started, not ended
        self.cancels: list[str] = []               # cancelled after they were sent
        self.closing = False                       # shutdown(): no more submits
        self.broken: ExecutorBrokenError | None = None
        self.feeder_waiting = False
        self._names = itertools.count()
        self._ledger = ledger
        self._fail_fast = fail_fast

    # ---- submitting (any thread) --------------------------------------------------------

    def add(self, fn: Callable[..., Any], calls: Sequence[tuple[Any, dict[str, Any] | None]],
            refuse: Callable[[], None]) -> list[Future[Any]]:
        """Queue calls of ``fn`` and return their futures; ``refuse`` raises, under the
        lock, if the executor takes no more. (Sending a lone call from the submitting
        thread instead of waking the feeder was measured: no faster.)"""
        futures: list[Future[Any]] = [Future() for _ in calls]
        with self.lock:
            refuse()
            names = [f"call-{next(self._names)}" for _ in calls]
            self.queue.extend(Call(name, fn, args, kwargs, future) for name, (args, kwargs),
                              future in zip(names, calls, futures, strict=True))
            if self.feeder_waiting:
                self.wake.notify()
        for name, future in zip(names, futures, strict=True):
            future.add_done_callback(functools.partial(self._on_done, name))
        return futures

    def _on_done(self, name: str, future: Future[Any]) -> None:
        """A future is done: if it was cancelled, notify ``wait()`` and ask the boss to
        cancel its task (when it was sent)."""
        if not future.cancelled():
            return
        try:
            future.set_running_or_notify_cancel()  # the waiters of wait() learn it here
        except RuntimeError:
            pass
        with self.lock:
            given = self.sent.pop(name, None) is not None
        if given:
            self._ask_cancel(name)

    def _ask_cancel(self, name: str) -> None:
        """Have the feeder ask the boss to cancel this task."""
        with self.lock:
            self.cancels.append(name)
            if self.feeder_waiting:
                self.wake.notify()

    def out(self) -> bool:
        """Calls were given to the boss and have not ended (call under the lock)."""
        return bool(self.sent or self.started)

    def cancel_pending(self) -> None:
        """Cancel every future whose call has not started (shutdown(cancel_futures))."""
        with self.lock:
            futures = [call.future for call in self.queue] + list(self.sent.values())
        for future in futures:
            future.cancel()

    # ---- the sink (the thread that reads the boss's messages) -----------------------------

    def on_events(self, events: Sequence[TaskEvent]) -> None:
        """STARTED: the future runs; ENDED: it is settled. Never raises."""
        try:
            self._on_events(events)
        except Exception:  # a bug here must not kill the receiver thread
            _LOG.exception("taskfarm.Executor could not handle the boss's events")

    def _on_events(self, events: Sequence[TaskEvent]) -> None:
        starting: list[tuple[str, Future[Any]]] = []
        ending: list[tuple[Future[Any], bool, TaskReport]] = []
        with self.lock:
            sent, started = self.sent, self.started
            for event in events:
                kind = event.kind
                if kind is _ENDED:
                    future = started.pop(event.name, None)
                    if future is not None:
                        ending.append((future, True, event.report))  # type: ignore[arg-type]
                    elif (future := sent.pop(event.name, None)) is not None:
                        ending.append((future, False, event.report))  # type: ignore[arg-type]
                elif kind is _STARTED and (future := sent.pop(event.name, None)) is not None:
                    started[event.name] = future
                    starting.append((event.name, future))
        for name, future in starting:
            if not start(future):  # cancelled as it started: stop it
                with self.lock:
                    self.started.pop(name, None)
                self._ask_cancel(name)
        for future, running, report in ending:
            self._end(future, running, report)
        if ending:
            self._forget(self._ledger)

    def _end(self, future: Future[Any], running: bool, report: TaskReport) -> None:
        """Settle the future of a call that ended (``running``: marked so already)."""
        broken = initializer_failure(report)
        if broken is not None:
            self.break_executor(broken)
            settle(future, exception=broken)
            return
        result, exception = outcome(report)
        if not running and not start(future):
            return  # cancelled before it started
        try:
            if exception is None:
                future.set_result(result)
                return
            future.set_exception(exception)
        except InvalidStateError:  # cancelled as it started (see _on_events)
            return
        if self._fail_fast:
            error = ExecutorBrokenError(
                f"a call failed ({type(exception).__name__}: {exception}) and the executor "
                "was made with on_error='raise': it runs no more calls")
            error.__cause__ = exception
            self.break_executor(error)

    @staticmethod
    def _forget(ledger: Ledger) -> None:
        """Let the Boss handle forget the tasks that ended: the executor keeps nothing
        per call once its future is settled (the handle, made with keep_reports=False,
        forgets a task once its report is handed out)."""
        with ledger.cond:
            while ledger.next_report() is not None:
                pass

    def break_executor(self, error: ExecutorBrokenError) -> None:
        """The executor is broken: every pending future fails with ``error``, later
        submits raise it, and the feeder stops the farm."""
        with self.lock:
            if self.broken is not None:
                return
            self.broken = error
            victims = [call.future for call in self.queue] + list(self.sent.values()) + \
                list(self.started.values())
            self.queue.clear()
            self.sent.clear()
            self.started.clear()
            self.wake.notify()
        for future in victims:
            settle(future, exception=error)


class Feeder:
    """The feeder thread of one executor (see the module docstring)."""

    def __init__(self, boss: Boss, worker: type[CallWorker], calls: Calls) -> None:
        self.boss, self.worker, self.calls = boss, worker, calls
        self.thread = threading.Thread(target=self._run, name="taskfarm-executor",
                                       daemon=True)

    def _run(self) -> None:
        calls = self.calls
        try:
            while True:
                with calls.lock:
                    while not (calls.queue or calls.cancels or calls.closing
                               or calls.broken):
                        calls.feeder_waiting = True
                        calls.wake.wait(LIVENESS_CHECK if calls.out() else None)
                        calls.feeder_waiting = False
                        if calls.out() and not calls.queue and self.boss.finished:
                            break
                    batch, calls.queue = calls.queue, []
                    cancels, calls.cancels = calls.cancels, []
                    done = calls.broken is not None or (calls.closing and not batch)
                if self.boss.finished and calls.broken is None:
                    calls.break_executor(ExecutorBrokenError(
                        f"the boss process of the executor ({self.boss.name}) has died; "
                        "its worker processes were stopped with it"))
                    done = True
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

    def _send(self, batch: list[Call]) -> None:
        """Pickle a batch and give it to the boss, one set_instructions per function.
        A call that cannot be pickled fails on its own future."""
        groups: dict[int, tuple[bytes, list[tuple[str, bytes, Future[Any]]]]] = {}
        failed: dict[int, BaseException] = {}
        for call in batch:
            if call.future.cancelled():
                continue
            key = id(call.fn)
            try:
                if key in failed:
                    raise failed[key]
                if key not in groups:
                    groups[key] = (_pickled("the function", dumps_function, call.fn), [])
                blob = _pickled("the arguments", dumps_call, call.args, call.kwargs)
            except BaseException as exc:
                if key not in groups:
                    failed[key] = exc
                settle(call.future, exception=exc)
                continue
            groups[key][1].append((call.name, blob, call.future))
        for fn_blob, group in groups.values():
            with self.calls.lock:  # a future cancelled now is cancelled at the boss
                group = [item for item in group if not item[2].cancelled()]
                self.calls.sent.update((name, future) for name, _, future in group)
            if not group:
                continue
            try:
                self.boss.set_instructions({"fn": fn_blob},
                                           {"name": [name for name, _, _ in group],
                                            "args": [blob for _, blob, _ in group]},
                                           worker=self.worker)
            except Exception as exc:
                error = ExecutorBrokenError(f"the executor could not give calls to its boss "
                                            f"({type(exc).__name__}: {exc})")
                error.__cause__ = exc
                self.calls.break_executor(error)
                return

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
            left = bool(calls.out() or calls.queue)
        if left:  # the boss died, or a call could not be given
            calls.break_executor(ExecutorBrokenError(
                f"the boss of the executor ({boss.name}) ended before this call did"))


def _pickled(what: str, dumps: Callable[..., bytes], *args: Any) -> bytes:
    try:
        return dumps(*args)
    except BaseException as exc:
        exc.add_note(f"(while pickling {what} of the call to send it to a worker process)")
        raise
