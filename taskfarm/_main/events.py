"""The stream of task events in the main program: one ordered stream that every
consumer of what happens to tasks reads, instead of each reaching into the receiver
thread. Runs in the main program.

Events: ``QUEUED`` (instruction sets given, published by the Boss handle once they
are sent), ``STARTED`` (a worker started the task: its pid and slot; sent by the boss
only once someone asked for them, see ``Boss._watch_started``), ``EMITTED`` (a value
the task gave to ``emit()``) and ``ENDED`` (its TaskReport), the last three published
by the thread that reads the boss's messages, in the order the boss sent them: for
each task, its events come in the order they happened.

Consumers subscribe as sinks. *Durable* sinks are called first, in the receiver
thread, before any other sink sees the events: that is where a journal records each
terminal state, so that nothing reaches the caller (``as_completed``, the final
report) before it is stored. Then the :class:`~taskfarm._main.ledger.Ledger` (which
``as_completed`` and the reports read), then observers (progress, logging).
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

from taskfarm._main.report import TaskReport


class EventKind(enum.Enum):
    """What happened to a task."""

    QUEUED = "queued"      # given to the boss
    STARTED = "started"    # a worker started it
    EMITTED = "emitted"    # it sent an intermediate value
    ENDED = "ended"        # it reached its terminal state (``report``)


class TaskEvent(NamedTuple):
    """One event of one task, in the order the main program learnt it. (A NamedTuple:
    one is made per task and kind, on the hot path of every task.)"""

    kind: EventKind
    tid: int
    name: str
    report: TaskReport | None = None   # ENDED: how it ended
    value: Any = None                  # EMITTED: the value
    pid: int | None = None             # STARTED: the worker process that runs it
    slot: int | None = None            # STARTED: that process's slot number (from 0)
    time: float | None = None          # STARTED: when it started (time.time())


class EventSink(Protocol):
    """A consumer of task events; called with each batch, in order, never
    concurrently with itself."""

    def on_events(self, events: Sequence[TaskEvent]) -> None: ...


class EventStream:
    """Fans each batch of events out to its sinks: durable ones first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()   # batches reach every sink in one order
        self._durable: list[EventSink] = []
        self._sinks: list[EventSink] = []

    def subscribe(self, sink: EventSink, durable: bool = False) -> None:
        """Add a sink; a durable one sees every batch before any other sink."""
        with self._lock:
            (self._durable if durable else self._sinks).append(sink)

    def unsubscribe(self, sink: EventSink) -> None:
        """Remove a sink (no effect if it is not subscribed)."""
        with self._lock:
            for sinks in (self._durable, self._sinks):
                if sink in sinks:
                    sinks.remove(sink)

    @property
    def lock(self) -> threading.Lock:
        """Held while a batch reaches the sinks: whoever holds it sees every sink in
        the same state (a batch delivered to all of them, or to none)."""
        return self._lock

    def publish(self, events: Sequence[TaskEvent]) -> None:
        """Hand a batch to every sink, durable ones first."""
        if not events:
            return
        with self._lock:
            for sink in self._durable:
                sink.on_events(events)
            for sink in self._sinks:
                sink.on_events(events)
