"""The machinery under :class:`taskfarm.Executor`: the calls waiting to be sent, and
the sink that turns the boss's events into future states; the feeder thread that
sends calls to the boss is :mod:`taskfarm._main.executor_feeder`. Runs in the main
program.

Three actors share one :class:`Calls` (a lock, the queue, the futures sent):

- ``submit`` (any thread) appends a call to the queue and wakes the feeder if it
  sleeps: a few microseconds, no pickling, no system call. A lone call, submitted
  while nothing else is in flight, is given from the submitting thread instead (see
  :meth:`Calls.add`): to the boss, or, in a run of lone calls, straight to a worker
  process that holds a lease (:mod:`taskfarm._main.executor_lease`).
- The feeder thread (:class:`~taskfarm._main.executor_feeder.Feeder`) takes whatever
  has accumulated, pickles it and gives it to the Boss in one message per function:
  one message per batch rather than one per ``submit`` is what makes tiny calls
  cheap. It also asks the boss to cancel, and at the end lets the boss finish and
  waits for every process to exit.
- The sink (:meth:`Calls.on_events`), called in whichever thread reads the boss's
  messages, marks a future running when a worker starts its call (STARTED) and
  settles it when the call ends (ENDED); it never blocks and never raises. It takes
  the place of the Boss handle's ledger in its event stream: nothing of a call is
  kept once its future is settled.

Nothing here holds the Executor object: dropping it (a ``weakref.finalize``) shuts the
executor down without waiting, and submitted work still finishes.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

from taskfarm._common.lease import LEASED
from taskfarm._main.events import EventKind, TaskEvent
from taskfarm._main.executor_future import CallFuture
from taskfarm._main.executor_lease import Lease, Leases, came_back, lease_ended
from taskfarm._main.executor_outcome import (
    ExecutorBrokenError,
    expressed,
    finish,
    initializer_failure,
    notify_cancelled,
    set_running,
    settle,
    settled,
)
from taskfarm._main.interrupts import sigint_held
from taskfarm._main.ledger import Ledger
from taskfarm._main.report import TaskReport

_LOG = logging.getLogger("taskfarm")
_ENDED, _QUEUED, _STARTED = EventKind.ENDED, EventKind.QUEUED, EventKind.STARTED

# How many of the latest express results the boss is told of with a give (see
# Calls._ended).
ENDED_KEPT = 64


# A submit() or map() not sent yet: the function, each call's ``(args, kwargs)`` (a map
# chunk: its list of argument tuples, and None), their futures and task names.
Submitted = tuple[Callable[..., Any], Sequence[tuple[Any, dict[str, Any] | None]],
                  tuple[Future[Any], ...], list[str]]


class Calls:
    """The state the executor, the feeder and the sink share (see the module
    docstring). Every field is read and written under :attr:`lock`."""

    def __init__(self, ledger: Ledger, fail_fast: bool, leasing: bool = False) -> None:
        self.lock = threading.Lock()
        self.wake = threading.Condition(self.lock)
        self.queue: list[Submitted] = []           # submitted, not sent
        self.sent: dict[str, Future[Any]] = {}     # given, not started (by task name)
        self.names: dict[Future[Any], str] = {}    # the same, by future
        self.started: dict[str, Future[Any]] = {}  # started, not ended
        self.cancels: list[str] = []               # cancelled after they were sent
        self.closing = False                       # shutdown(): no more submits
        self.broken: ExecutorBrokenError | None = None
        self.feeder_waiting = False
        # A submitting thread is giving its call itself (see add()): its ident, else 0.
        self.sending = 0
        # Gives a batch to the boss, and a lone call as a lease says (mode, see
        # Leases.mode): the feeder's, set once it runs.
        self.give: Callable[[list[Submitted]], None] | None = None
        self.give_alone: Callable[[Submitted, str], None] | None = None
        self.drain_express: Callable[[], None] | None = None   # reads the express pipe
        self.leases = Leases(leasing)                # see taskfarm/_main/executor_lease.py
        # Calls given to a lease that ended before reading them: (name, blobs of the
        # function and arguments), for the feeder to give to the boss (still running).
        self.regive: list[tuple[str, bytes, bytes]] = []
        self._next = 0                             # the number of the next call's name
        # Tasks whose results came straight from their workers since the last give:
        # the boss hears of the latest with the next one (AddTasks.ended). Only those
        # of workers still busy for the boss matter: a few, never a whole long map's.
        self._ended: collections.deque[int] = collections.deque(maxlen=ENDED_KEPT)
        # Set in a thread while it runs the sink (future callbacks included): a call
        # submitted there waits for the feeder, since giving it from there would wait
        # for the event stream that thread holds.
        self._sinking = threading.local()
        self._ledger = ledger
        self._fail_fast = fail_fast

    # ---- submitting (any thread) --------------------------------------------------------

    def add(self, fn: Callable[..., Any], calls: Sequence[tuple[Any, dict[str, Any] | None]],
            refuse: Callable[[], None]) -> list[Future[Any]]:
        """Queue calls of ``fn`` and return their futures; ``refuse`` raises, under the
        lock, if the executor takes no more.

        A lone call submitted while nothing else is in flight (no call queued, given
        and not ended, nor being given) is given to the boss from this thread, at
        once: the round trip of a single call is one thread hand-over (the feeder's
        wake-up) shorter. Under load calls queue up and the feeder sends them in
        batches, which is what keeps tiny calls cheap. Not from a thread running the
        sink (a done-callback): see ``_sinking``."""
        futures: list[Future[Any]] = [CallFuture(self)] if len(calls) == 1 else \
            [CallFuture(self) for _ in calls]
        direct = False
        try:
            # A Ctrl-C is held back until `sending`, once set, is sure to be reset.
            with sigint_held, self.lock:
                refuse()
                direct, mode, submitted = self._queue(fn, calls, futures)
            if direct:
                self._give_here(submitted, mode)
        finally:
            if direct:
                self._given_here()
        return futures

    def _queue(self, fn: Callable[..., Any], calls: Sequence[tuple[Any, dict[str, Any] | None]],
               futures: list[Future[Any]]) -> tuple[bool, str, Submitted]:
        """Under the lock: number the calls and queue them, or mark them given here
        (``sending``) as a lease says (see add())."""
        first = self._next
        self._next = first + len(futures)
        names = [f"call-{first}"] if len(futures) == 1 else \
            [f"call-{number}" for number in range(first, self._next)]
        submitted: Submitted = (fn, calls, tuple(futures), names)  # map pops its list
        direct = len(futures) == 1 and self.feeder_waiting and self.give is not None \
            and not (self.queue or self.sending or self.sent or self.started
                     or self.cancels or self.closing) \
            and not getattr(self._sinking, "active", False)
        mode = ""
        if direct:
            self.sending = threading.get_ident()
            if calls[0][1] is not None:   # a call, not a map's chunk
                mode = self.leases.mode()
            else:
                self.leases.revoke()
        else:
            self.leases.revoke()   # its worker is wanted back
            self.queue.append(submitted)
            if self.feeder_waiting:
                self.wake.notify()
        return direct, mode, submitted

    def _give_here(self, submitted: Submitted, mode: str) -> None:
        """Give one submitted call to the boss from the submitting thread (see add()),
        then let the feeder have what came meanwhile."""
        try:
            assert self.give is not None and self.give_alone is not None
            if mode:
                self.give_alone(submitted, mode)
            else:
                self.give([submitted])
        except Exception:  # a bug: fail what is out rather than leave it hanging
            _LOG.exception("taskfarm.Executor could not give a call to its boss")
            self.break_executor(ExecutorBrokenError("the executor could not give a call "
                                                    "to its boss"))
        except BaseException:   # a Ctrl-C: the call may not have reached the boss
            self._forget_unsent(submitted[3][0])
            raise

    def _forget_unsent(self, name: str) -> None:
        """A Ctrl-C stopped call ``name`` on its way from the submitting thread: if it
        never reached the boss, forget it (its future was never handed out), and the
        lease it was to open, if any."""
        if name in self._ledger.names:   # recorded as it reached the boss (giving.py)
            return
        with sigint_held, self.lock:
            if (future := self.sent.pop(name, None)) is not None:
                del self.names[future]
            self.leases.drop(name)

    def _given_here(self) -> None:
        """The call given here is given (or failed): the feeder may go on."""
        with sigint_held, self.lock:
            self.sending = 0
            if self.feeder_waiting and (self.queue or self.cancels or self.closing
                                        or self.broken is not None):
                self.wake.notify()

    def take_ended(self) -> tuple[int, ...]:
        """The tasks whose results came straight from their workers since the last
        call (see ``_ended``)."""
        with self.lock:
            ended = tuple(self._ended)
            self._ended.clear()
        return ended

    def on_cancelled(self, future: Future[Any]) -> None:
        """A future was cancelled (:meth:`CallFuture.cancel`): notify ``wait()``, and
        ask the boss to cancel its task if it was sent. Harmless if called again."""
        notify_cancelled(future)  # the waiters of wait() learn it here
        with self.lock:
            name = self.names.pop(future, None)
            if name is not None:
                del self.sent[name]
                # The first call of a lease: its task is to be cancelled, so no later
                # call may be written to it.
                lease = self.leases.live.get(name)
                if lease is not None and lease is self.leases.current:
                    self.leases.revoke()
        if name is not None:
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
            futures = [f for _, _, queued, _ in self.queue for f in queued]
            futures += self.sent.values()
        for future in futures:
            future.cancel()

    # ---- the sink (the thread that reads the boss's messages) -----------------------------

    def on_events(self, events: Sequence[TaskEvent]) -> None:
        """STARTED: the future runs; ENDED: it is settled. Never raises."""
        if events[0].kind is _QUEUED:  # the Boss handle's own, for calls just given
            return
        outer = getattr(self._sinking, "active", False)   # (a sink may call a sink)
        self._sinking.active = True
        try:
            self._on_events(events)
        except Exception:  # a bug here must not kill the receiver thread
            _LOG.exception("taskfarm.Executor could not handle the boss's events")
        finally:
            self._sinking.active = outer

    def _on_events(self, events: Sequence[TaskEvent]) -> None:
        starting: list[tuple[str, Future[Any]]] = []
        ending: list[tuple[Future[Any], bool, TaskReport]] = []
        ended: list[int] = []
        leases: list[tuple[Lease, TaskReport]] = []
        with self.lock:
            sent, started, names, live = self.sent, self.started, self.names, self.leases.live
            for event in events:
                kind = event.kind
                if kind is _ENDED:
                    ended.append(event.tid)
                    if live and (lease := live.get(event.name)) is not None:
                        leases.append((lease, event.report))  # type: ignore[arg-type]
                        continue
                    future, running = self.take(event.name)
                    if future is not None:
                        ending.append((future, running, event.report))  # type: ignore[arg-type]
                elif kind is _STARTED and (future := sent.pop(event.name, None)) is not None:
                    del names[future]
                    started[event.name] = future
                    starting.append((event.name, future))
        for name, future in starting:
            if not set_running(future):  # cancelled as it started: stop it
                with self.lock:
                    self.started.pop(name, None)
                self._ask_cancel(name)
        for future, running, report in ending:
            self.end_call(future, running, report)
        for lease, report in leases:
            lease_ended(self, lease, report)
        if ended:
            self._forget(ended)

    def on_express(self, tid: int, blob: bytes) -> None:
        """A worker wrote the result of this task's call straight to the main program
        (:mod:`taskfarm._common.express`): settle its future and forget the task. The
        boss records the ending and sends nothing of it; an ending it sends all the
        same (the worker died just after writing) finds nothing here. Never raises."""
        outer = getattr(self._sinking, "active", False)   # (lease_ended drains it)
        self._sinking.active = True
        try:
            if tid >= LEASED:
                came_back(self, f"call-{tid - LEASED}", blob)
                return
            record = self._ledger.records.get(tid)
            if record is None:
                return
            lease = self.leases.live.get(record.name)
            if lease is not None:   # a lease's task ended (see executor_lease.py)
                with self.lock:
                    self._ended.append(tid)
                lease_ended(self, lease, blob)
                self._forget([tid])
                return
            with self.lock:
                self._ended.append(tid)
                future, running = self.take(record.name)
            if future is not None:
                self.settle(future, running, *expressed(blob, record.name))
            self._forget([tid])
        except Exception:  # a bug here must not kill the reading thread
            _LOG.exception("taskfarm.Executor could not handle a call's result")
        finally:
            self._sinking.active = outer

    # ---- leases (see taskfarm/_main/executor_lease.py) -----------------------------------

    def take(self, name: str) -> tuple[Future[Any] | None, bool]:
        """Under the lock: the future of call ``name``, no longer sent nor started, and
        whether it was running; None if it is neither."""
        future = self.started.pop(name, None)
        if future is not None:
            return future, True
        if (future := self.sent.pop(name, None)) is not None:
            del self.names[future]
        return future, False

    def settle(self, future: Future[Any], running: bool, result: Any,
               exception: BaseException | None) -> None:
        """Give the future of a call that ended its result or exception, as read here
        (``running``: marked so already)."""
        if (running or set_running(future)) and settled(future, result, exception) \
                and exception is not None:
            self.failed(exception)

    def end_call(self, future: Future[Any], running: bool, report: TaskReport) -> None:
        """Settle the future of a call whose task ended as ``report`` says
        (``running``: marked so already)."""
        broken = initializer_failure(report)
        if broken is not None:
            self.break_executor(broken)
            settle(future, exception=broken)
            return
        exception = finish(future, running, report)
        if exception is not None:
            self.failed(exception)

    def failed(self, exception: BaseException) -> None:
        """A call failed: under on_error="raise", the executor breaks."""
        if self._fail_fast:
            error = ExecutorBrokenError(
                f"a call failed ({type(exception).__name__}: {exception}) and the executor "
                "was made with on_error='raise': it runs no more calls")
            error.__cause__ = exception
            self.break_executor(error)

    def _forget(self, tids: list[int]) -> None:
        """Have the Boss handle forget the tasks that ended: nothing of a call is kept
        once its future is settled. This sink takes the place of the handle's ledger
        in its event stream (see :class:`taskfarm.Executor`): nothing reads reports,
        statuses or the first failure of an executor's farm, and dropping each record
        here costs a fraction of keeping reports to hand out and forget."""
        ledger = self._ledger
        with ledger.cond:
            records, names = ledger.records, ledger.names
            for tid in tids:
                record = records.pop(tid, None)
                if record is not None:
                    del names[record.name]

    def break_executor(self, error: ExecutorBrokenError) -> None:
        """The executor is broken: every pending future fails with ``error``, later
        submits raise it, and the feeder stops the farm."""
        with self.lock:
            if self.broken is not None:
                return
            self.broken = error
            self.leases.revoke()
            victims = [f for _, _, queued, _ in self.queue for f in queued]
            victims += [*self.sent.values(), *self.started.values()]
            self.queue.clear()
            self.sent.clear()
            self.names.clear()
            self.started.clear()
            self.wake.notify()
        for future in victims:
            settle(future, exception=error)
