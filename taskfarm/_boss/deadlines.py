"""Deadlines, in the boss process: what must happen at a given time (a task's timeout,
the SIGKILL that follows a SIGTERM's grace period, a scheduler's re-check), kept in a
heap so the loop's only timeout is the nearest one. The clock is injectable, so the
logic is tested in milliseconds without waiting.
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from collections.abc import Callable

Clock = Callable[[], float]

# The longest single wait handed to poll(): its timeout is a C int of milliseconds
# (about 24.8 days at most), so a later deadline is reached in several waits.
MAX_WAIT_MS = 86_400_000.0


class Deadlines:
    """Actions due at given times on a monotonic clock.

    An action that no longer applies when it comes due (the task it would time out has
    ended) checks that itself and does nothing: removing entries from the middle of a
    heap would cost more than skipping them.
    """

    __slots__ = ("_heap", "_order", "clock", "recheck_at")

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self.clock = clock
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()   # ties run in the order they were set
        # When the scheduler wants to be asked again (one at a time: each launch
        # replaces it), or None.
        self.recheck_at: float | None = None

    def after(self, delay: float, action: Callable[[], None]) -> None:
        """Run ``action`` once ``delay`` seconds have passed."""
        heapq.heappush(self._heap, (self.clock() + delay, next(self._order), action))

    def recheck(self, delay: float | None) -> None:
        """Wake the loop after ``delay`` seconds (None: no re-check wanted)."""
        self.recheck_at = None if delay is None else self.clock() + max(0.0, delay)

    def wait_ms(self) -> float | None:
        """Milliseconds until the nearest deadline, for ``poll()`` (None: none)."""
        wake = min(self._heap[0][0] if self._heap else math.inf,
                   self.recheck_at if self.recheck_at is not None else math.inf)
        if wake == math.inf:
            return None
        return min(MAX_WAIT_MS, max(0.0, (wake - self.clock()) * 1000))

    def run_due(self) -> int:
        """Run every action whose time has come, in time order; how many ran."""
        now = self.clock()
        heap = self._heap
        ran = 0
        while heap and heap[0][0] <= now:
            _, _, action = heapq.heappop(heap)
            action()
            ran += 1
        return ran

    def __len__(self) -> int:
        return len(self._heap)
