"""What a batch of the Dask backend carries, in the boss process: the tasks given to a
slot, pickled by the boss and written by the Dask worker to its hosted process, and
the messages that come back. Helpers of :mod:`taskfarm._boss.dask_backend`.

A SharedArray does not cross machines (zero copy only within one), so instructions
that hold one are replaced, before they leave, by a refusal that fails the task in
the hosted process with an InstructionError: never silently copied, never ignored.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

from taskfarm._common.messages import Notice, Outcome, RunTask, Skipped
from taskfarm._common.wire import decode, unexpected
from taskfarm._worker import dask_host

# How a SharedArray shows in a pickled payload or common instructions: its module.
SHARED_MARK = b"taskfarm._common.shared_array"


class _Refusal:
    """Pickles as a call to ``dask_host.refuse_shared_array``: what a hosted process
    unpickles instead of instructions holding a SharedArray."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __reduce__(self) -> tuple[Callable[[str], Any], tuple[str]]:
        return dask_host.refuse_shared_array, (self.what,)


def without_shared(msg: RunTask) -> RunTask:
    """The task, its payload or common instructions replaced by a refusal where they
    hold a SharedArray (see the module docstring)."""
    payload, common = msg.payload, msg.common_blob
    if payload is not None and SHARED_MARK in payload:
        payload = pickle.dumps(_Refusal("this task's instructions"))
    if common is not None and SHARED_MARK in common:
        common = pickle.dumps(_Refusal("the common instructions"))
    if payload is msg.payload and common is msg.common_blob:
        return msg
    return msg._replace(payload=payload, common_blob=common)


def take_out(outgoing: list[RunTask], index: int, classes: set[int],
             commons: set[int]) -> None:
    """Remove a task not sent yet. The class and common blobs it carried (sent once
    per process) go to the next task that needs them, or are forgotten as sent
    (``classes``, ``commons``), so that a later task carries them."""
    msg = outgoing.pop(index)
    if msg.class_blob is not None:
        heir = next((i for i, m in enumerate(outgoing) if m.class_key == msg.class_key),
                    None)
        if heir is None:
            classes.discard(msg.class_key)
        else:
            outgoing[heir] = outgoing[heir]._replace(class_blob=msg.class_blob)
    if msg.common_blob is not None:
        heir = next((i for i, m in enumerate(outgoing) if m.batch_id == msg.batch_id), None)
        if heir is None:
            commons.discard(msg.batch_id)
        else:
            outgoing[heir] = outgoing[heir]._replace(common_blob=msg.common_blob)


def received(frame: bytes) -> list[Outcome | Skipped | Notice]:
    """The messages of a batch that came back (a frame pickled by the Dask worker)."""
    msgs: list[Outcome | Skipped | Notice] = []
    for item in pickle.loads(frame) if frame else ():
        msg = decode(item)
        if not isinstance(msg, (Outcome, Skipped, Notice)):
            raise unexpected(msg, "the boss (from a Dask-hosted worker)")
        msgs.append(msg)
    return msgs
