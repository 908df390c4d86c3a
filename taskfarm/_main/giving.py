"""Giving a prepared call to the boss, in the main program: its frames written in
order, what was given recorded (the ledger, the SharedArrays held for its tasks) before
a report can come back, and a call cut short by a failed write recorded as far as it
got. Called by ``Boss.set_instructions`` with the send lock held and Ctrl-C held back.
"""

from __future__ import annotations

from collections.abc import Callable

from taskfarm._common.messages import Release
from taskfarm._common.wire import Channel, dumps
from taskfarm._main.batch import CHUNK, Batch
from taskfarm._main.events import EventKind, EventStream, TaskEvent
from taskfarm._main.ledger import Ledger
from taskfarm._main.shared_keeper import SharedKeeper


def give(batch: Batch, number: int, control: Channel, ledger: Ledger, keeper: SharedKeeper,
         events: EventStream, commit: Callable[[], None],
         gone: Callable[[], None]) -> None:
    """Send ``batch`` (the ``number``-th call) and record it; on a failed write, record
    the frames that went, note how far the call got, call ``gone`` (which raises if the
    boss is gone) for an OSError, and re-raise."""
    released = keeper.released()   # said with the next message, never by the receiver
    if released:
        control.send_pickled(dumps(Release(released)))
    ledger.add(batch.records)   # before: a report may come back at once
    keeper.hold(number, batch.shared, [tid for tid, _ in batch.records])
    for sent, frame in enumerate(batch.frames):
        try:
            control.send_pickled(frame)
        except BaseException as exc:  # nothing of this frame was written
            unsent = [tid for tid, _ in batch.records[sent * CHUNK:]]
            ledger.forget(unsent)
            keeper.drop(unsent)
            if sent:
                exc.add_note(f"the first {sent * CHUNK} instruction sets of this call "
                             "were given; the others were not")
                commit()
                events.publish([TaskEvent(EventKind.QUEUED, tid, record.name)
                                for tid, record in batch.records[:sent * CHUNK]])
            if isinstance(exc, OSError):  # the boss is gone: say so
                gone()
            raise
    commit()
