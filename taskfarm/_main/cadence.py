"""Keeping pace with real time, for services: :class:`Cadence` yields the windows of a
fixed stride as they complete, and skips ahead when the service falls too far behind;
:class:`Accumulator` gathers what arrives into mini-batches, released once enough has
accumulated or the oldest item has waited long enough. Runs in the main program.

Both take their clock as an argument, so that their timing is tested in milliseconds::

    cadence = taskfarm.Cadence(stride=5.0, delay=1.0, max_lag=3)
    for window in cadence:                 # blocks until each window is complete
        batch = gather(window.start, window.end)
        boss.set_instructions({}, {"batch": [batch]})
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

_LOG = logging.getLogger("taskfarm.cadence")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Window:
    """One stride of time, ``[start, end)``; ``index`` is ``start / stride``, and
    ``skipped`` the number of windows skipped just before this one (the service was
    more than ``max_lag`` strides behind)."""

    index: int
    start: float
    end: float
    skipped: int = 0


class Cadence:
    """The windows of ``stride`` seconds aligned on multiples of ``stride``, each
    yielded once ``end + delay`` has passed (``delay``: how long data take to arrive).

    Args:
        stride: the window length, in seconds (> 0).
        delay: how long after a window's end its data are complete (>= 0).
        max_lag: when the next window to yield is more than this many strides behind
            the latest complete one, skip to that latest one; the window says how
            many were skipped, and a WARNING is logged on ``taskfarm.cadence``. None:
            never skip.
        start: the time of the first window (it is the window containing it); None:
            the window in progress now.
        clock: the current time in seconds (default ``time.time``).
        sleep: waits for so many seconds; default: an interruptible wait, so that
            :meth:`close` from another thread ends the iteration at once.
    """

    def __init__(self, stride: float, delay: float = 0.0, max_lag: int | None = None,
                 start: float | None = None, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], object] | None = None) -> None:
        if not (isinstance(stride, (int, float)) and math.isfinite(stride) and stride > 0):
            raise ValueError(f"stride must be a positive number of seconds, not {stride!r}")
        if not (isinstance(delay, (int, float)) and math.isfinite(delay) and delay >= 0):
            raise ValueError(f"delay must be a number of seconds >= 0, not {delay!r}")
        if max_lag is not None and (isinstance(max_lag, bool) or not isinstance(max_lag, int)
                                    or max_lag < 0):
            raise ValueError(f"max_lag must be an integer >= 0 or None, not {max_lag!r}")
        self.stride, self.delay, self.max_lag = float(stride), float(delay), max_lag
        self._clock = clock
        self._closed = threading.Event()
        self._sleep = sleep if sleep is not None else self._closed.wait
        first = clock() if start is None else start
        self._next = math.floor(first / self.stride)   # index of the next window to yield
        self.skipped = 0      # windows skipped so far, in all

    def close(self) -> None:
        """End the iteration (also from another thread, while it waits)."""
        self._closed.set()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def __iter__(self) -> Iterator[Window]:
        return self

    def __next__(self) -> Window:
        """The next window, once complete (waiting for it as needed)."""
        while not self._closed.is_set():
            window = self.ready()
            if window is not None:
                return window
            self._sleep(max(0.0, self.due_at() - self._clock()))
        raise StopIteration

    def due_at(self) -> float:
        """When the next window will be complete (its end plus the delay)."""
        return (self._next + 1) * self.stride + self.delay

    def lag(self) -> int:
        """How many complete windows wait to be yielded now."""
        latest = self._latest_complete()
        return max(0, latest - self._next + 1)

    def ready(self) -> Window | None:
        """The next window if it is complete now, else None: never waits (for a loop
        that also does other things)."""
        latest = self._latest_complete()
        if latest < self._next:
            return None
        skipped = 0
        if self.max_lag is not None and latest - self._next > self.max_lag:
            skipped = latest - self._next
            _LOG.warning("%d complete windows of %g s waited (more than max_lag=%d): "
                         "skipped %d, on to the window starting at %.3f", skipped + 1,
                         self.stride, self.max_lag, skipped, latest * self.stride)
            self._next = latest
            self.skipped += skipped
        index = self._next
        self._next += 1
        return Window(index, index * self.stride, (index + 1) * self.stride, skipped)

    def _latest_complete(self) -> int:
        """The index of the latest window complete now."""
        return math.floor((self._clock() - self.delay) / self.stride) - 1


class Accumulator(Generic[T]):
    """Mini-batches: items added as they arrive come out together once there are
    ``threshold`` of them, or once the oldest has waited ``max_wait`` seconds (then
    whatever there is), so that a job starts only on enough new data, but never waits
    forever.

    Args:
        threshold: how many items make a batch (>= 1).
        max_wait: the longest an item waits for the batch to fill, in seconds (None:
            until it fills).
        max_items: the most a batch holds (None: all that accumulated).
        clock: the current time in seconds (default ``time.monotonic``).
    """

    def __init__(self, threshold: int, max_wait: float | None = None,
                 max_items: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
            raise ValueError(f"threshold must be an integer >= 1, not {threshold!r}")
        if max_wait is not None and not (isinstance(max_wait, (int, float))
                                         and max_wait >= 0):
            raise ValueError(f"max_wait must be a number of seconds >= 0 or None, not "
                             f"{max_wait!r}")
        if max_items is not None and (isinstance(max_items, bool)
                                      or not isinstance(max_items, int)
                                      or max_items < threshold):
            raise ValueError(f"max_items must be an integer >= threshold ({threshold}) or "
                             f"None, not {max_items!r}")
        self.threshold, self.max_wait, self.max_items = threshold, max_wait, max_items
        self._clock = clock
        self._items: list[tuple[float, T]] = []

    def __len__(self) -> int:
        return len(self._items)

    def add(self, *items: T) -> None:
        """Items that arrived now."""
        now = self._clock()
        self._items.extend((now, item) for item in items)

    def take(self) -> list[T] | None:
        """A batch if one is due now (enough items, or the oldest waited long
        enough), else None. A batch holds at most ``max_items``; the rest wait on."""
        if not self._items:
            return None
        full = len(self._items) >= self.threshold
        waited = (self.max_wait is not None
                  and self._clock() - self._items[0][0] >= self.max_wait)
        if not (full or waited):
            return None
        count = len(self._items) if self.max_items is None else self.max_items
        batch, self._items = self._items[:count], self._items[count:]
        return [item for _, item in batch]

    def due_in(self) -> float | None:
        """Seconds until the oldest item has waited ``max_wait`` (0 if a batch is due
        now), None when nothing waits or there is no ``max_wait``."""
        if not self._items:
            return None
        if len(self._items) >= self.threshold:
            return 0.0
        if self.max_wait is None:
            return None
        return max(0.0, self._items[0][0] + self.max_wait - self._clock())
