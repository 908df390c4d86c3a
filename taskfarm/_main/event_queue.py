"""``Boss.events()``: the task event stream as an iterator, in the main program. Each
call subscribes a queue of its own to the stream, so several consumers (and
``as_completed``) each see all of their items; the queue is dropped when its iterator
ends or is dropped.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator, Sequence

from taskfarm._main.events import EventStream, TaskEvent
from taskfarm._main.inbox import Inbox
from taskfarm._main.ledger import Ledger


class EventQueue:
    """The events one consumer has not read yet (an event sink)."""

    def __init__(self, ledger: Ledger) -> None:
        self.cond = ledger.cond   # notified by each ending and by the boss's goodbye too
        self.items: deque[TaskEvent] = deque()

    def on_events(self, events: Sequence[TaskEvent]) -> None:
        with self.cond:
            self.items.extend(events)
            self.cond.notify_all()


def iterate(stream: EventStream, ledger: Ledger, inbox: Inbox,
            timeout: float | None) -> Iterator[TaskEvent]:
    """Subscribe now; the returned iterator yields every event from then on, in order,
    until every task given so far has ended (and its ENDED event was yielded; at least
    one task must have been given) or the boss has exited. ``timeout`` bounds the wait
    for each next event (TimeoutError); a boss that died raises its BossDiedError."""
    queue = EventQueue(ledger)
    stream.subscribe(queue)
    return _events(stream, queue, ledger, inbox, timeout)


def _events(stream: EventStream, queue: EventQueue, ledger: Ledger, inbox: Inbox,
            timeout: float | None) -> Iterator[TaskEvent]:
    cond, items = queue.cond, queue.items
    try:
        while True:
            # With the stream's lock held, no batch is half delivered: the ledger
            # cannot say "all ended" before this queue has the last ENDED event.
            with stream.lock, cond:
                event = items.popleft() if items else None
                # Over once every task given so far has ended (a task must have been
                # given: a consumer may start before the first), or the boss exited.
                over = event is None and ((ledger.next_tid > 0 and ledger.all_ended())
                                          or inbox.closed)
            if event is not None:
                yield event
                continue
            if over:
                if inbox.died is not None:
                    raise inbox.died
                return
            _wait(queue, ledger, inbox, timeout)
    finally:
        stream.unsubscribe(queue)


def _wait(queue: EventQueue, ledger: Ledger, inbox: Inbox, timeout: float | None) -> None:
    deadline = None if timeout is None else time.monotonic() + timeout
    with queue.cond:
        while not queue.items and not inbox.closed and not (ledger.next_tid > 0
                                                             and ledger.all_ended()):
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(f"no task event within {timeout} s")
            queue.cond.wait(left)
