"""``PoliteScheduler``: for shared machines such as HPC login nodes. It grows the farm
only while the machine's CPU use and available memory leave room for its other users,
re-measuring on a timer it asks the boss for (never a busy loop), and runs its workers
at a lower priority.

Policy: at each measurement (at most every ``recheck`` seconds), with ``busy`` the
fraction of all CPUs in use and ``spare = floor((max_load - busy) * cpus)``, the farm
may run ``running_now + spare`` tasks (at most ``max_threads``; fewer than running now
means: launch nothing until enough end). When available memory is under
``min_available`` (a fraction of the total), it may not grow at all. Between
measurements it only fills up to that number, so a task that ends is replaced at once
but the farm grows only when a new measurement says there is room.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping, Sequence

from .base import Instructions, Launch, RunReport
from .threads import Limited, _thread_count

__all__ = ["PoliteScheduler", "system_load"]

# A CPU-use reading over less time than this is noise: sample this long instead.
_MIN_SAMPLE = 0.1


def system_load() -> tuple[float, float]:
    """(fraction of all CPUs busy since the previous call, fraction of memory
    available), read with psutil. The first call of a process, or one too soon after
    the previous, samples CPU use for 0.1 s (the load average would lag by a minute)."""
    import psutil

    last = getattr(system_load, "_last", None)
    if last is None or time.monotonic() - last < _MIN_SAMPLE:
        busy = psutil.cpu_percent(interval=_MIN_SAMPLE) / 100
    else:
        busy = psutil.cpu_percent(interval=None) / 100  # since the previous call
    system_load._last = time.monotonic()  # type: ignore[attr-defined]
    memory = psutil.virtual_memory()
    return min(busy, 1.0), memory.available / memory.total


class PoliteScheduler(Limited):
    """Launch only while the machine has room for others (see the module docstring).

    Args:
        max_threads: never more tasks at once than this (0: the CPUs this process
            may use).
        max_load: the fraction of all CPUs that may be busy (others' work included)
            before the farm stops growing.
        min_available: the fraction of memory that must stay available for the farm
            to grow.
        recheck: seconds between measurements while work is pending.
        nice: niceness of the worker processes (default 10: others come first).
        probe: a picklable callable returning ``(busy, available)`` fractions;
            default :func:`system_load`.
    """

    def __init__(self, max_threads: int = 0, max_load: float = 0.75,
                 min_available: float = 0.2, recheck: float = 5.0, nice: int | None = 10,
                 binded: bool = False,
                 probe: Callable[[], tuple[float, float]] | None = None) -> None:
        super().__init__(binded, nice)
        for name, value in (("max_load", max_load), ("min_available", min_available)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not 0 < value <= 1:
                raise ValueError(f"{name} must be a fraction in (0, 1], got {value!r}")
        if isinstance(recheck, bool) or not isinstance(recheck, (int, float)) \
                or not recheck > 0 or not math.isfinite(recheck):
            raise ValueError(f"recheck must be a positive, finite number of seconds, "
                             f"got {recheck!r}")
        self.max_threads = _thread_count(max_threads)
        self.max_load = float(max_load)
        self.min_available = float(min_available)
        self.recheck = float(recheck)
        self.probe = probe or system_load
        self._allowed = 0
        self._measured_at: float | None = None

    def launchable(self, pending_instructions: Sequence[Instructions],
                   workers: Mapping[str, Instructions], report: RunReport | None) -> Launch:
        now = time.monotonic()
        if self._measured_at is None or now - self._measured_at >= self.recheck:
            self._measure(len(workers))
            self._measured_at = now
        return self._take(pending_instructions, workers, self._allowed - len(workers))

    def _measure(self, running: int) -> None:
        busy, available = self.probe()
        spare = math.floor((self.max_load - busy) * (os.cpu_count() or 1) + 1e-9)
        if available < self.min_available:
            spare = min(spare, 0)
        self._allowed = max(0, min(self.max_threads, running + spare))

    def recheck_after(self) -> float | None:
        if self._measured_at is None:
            return 0.0
        return max(0.0, self.recheck - (time.monotonic() - self._measured_at))
