"""How long a Boss holds the SharedArrays it was given, in the main program: each
array is held while a task that received it has not ended, then let go, so a service
that shares a new array every stride keeps /dev/shm flat. Once nothing holds an array
(the caller dropped it too) its segment is removed; the boss process and its workers
are told to forget it (workers unmap it) with the next message the main program sends.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from taskfarm._common.shared_array import SharedArray
from taskfarm._main.events import EventKind, TaskEvent


class SharedKeeper:
    """Holds arrays for the tasks that received them (an event sink)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.arrays: dict[str, SharedArray] = {}   # held: name -> array
        self._holders: dict[str, int] = {}         # name -> holds (one per batch)
        self._batches: dict[int, tuple[list[str], set[int]]] = {}  # batch -> names, tids
        self._batch_of: dict[int, int] = {}         # tid -> its batch, while held
        self._released: list[str] = []             # let go, not yet told to the boss

    def hold(self, batch_id: int, arrays: Sequence[SharedArray], tids: Sequence[int]) -> None:
        """The tasks ``tids`` of one call received ``arrays``: hold them until those
        tasks have ended."""
        if not arrays or not tids:
            return
        with self._lock:
            names = [array.name for array in arrays]
            for array in arrays:
                self.arrays[array.name] = array
                self._holders[array.name] = self._holders.get(array.name, 0) + 1
            self._batches[batch_id] = (names, set(tids))
            for tid in tids:
                self._batch_of[tid] = batch_id

    def drop(self, tids: Sequence[int]) -> None:
        """Tasks held for that were never given after all (their call failed)."""
        with self._lock:
            for tid in tids:
                self._ended(tid)

    def on_events(self, events: Sequence[TaskEvent]) -> None:
        if not self._batch_of:
            return
        with self._lock:
            for event in events:
                if event.kind is EventKind.ENDED:
                    self._ended(event.tid)

    def _ended(self, tid: int) -> None:
        batch_id = self._batch_of.pop(tid, None)
        if batch_id is None:
            return
        names, waiting = self._batches[batch_id]
        waiting.discard(tid)
        if not waiting:
            del self._batches[batch_id]
            self._let_go(names)

    def _let_go(self, names: list[str]) -> None:
        for name in names:
            self._holders[name] -= 1
            if not self._holders[name]:
                del self._holders[name]
                del self.arrays[name]   # removed now if the caller dropped it too
                self._released.append(name)

    def released(self) -> tuple[str, ...]:
        """The arrays let go since the last call (for the boss to forget)."""
        with self._lock:
            names, self._released = tuple(self._released), []
        return names
