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

It never holds work silently: when tasks are pending, none of its tasks runs and the
machine allows none (see :attr:`PoliteScheduler.holding`), it logs why once, warns once
if that lasts ``warn_after`` seconds, and logs when it resumes. It never blocks the
boss's event loop either: the CPU use is read as the difference of two counter
readings, and until a first interval is long enough to mean something the probe
raises :class:`NotMeasuredYet` and the scheduler asks to be called again by then.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence

from .base import Instructions, Launch, RunReport
from .threads import Limited, _thread_count

__all__ = ["NotMeasuredYet", "PoliteScheduler", "system_load"]

# A CPU-use reading over less time than this is noise: the first reading waits this long
# (without sleeping), and a reading asked for sooner repeats the previous one.
_MIN_SAMPLE = 0.1

_LOG = logging.getLogger("taskfarm.schedulers")


class NotMeasuredYet(Exception):
    """Raised by a load probe that has no usable reading yet (its first CPU-use
    interval has just begun): ask again after ``retry_after`` seconds. A probe raises
    it rather than sleep, since it runs in the boss's event loop."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"no CPU-use reading yet: ask again in {retry_after:.3g} s")
        self.retry_after = retry_after


class _CpuUse:
    """This process's CPU-use sampler: psutil's system-wide counters, read without
    waiting, averaged over the time since the previous reading."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.at: float | None = None    # when the current interval began
        self.busy: float | None = None  # the last reading, a fraction of all CPUs

    def read(self) -> float:
        import psutil

        now = self.clock()
        if self.at is None:  # first call of the process: start the interval
            psutil.cpu_percent(interval=None)
            self.at = now
            raise NotMeasuredYet(_MIN_SAMPLE)
        if now - self.at >= _MIN_SAMPLE:
            self.busy = min(psutil.cpu_percent(interval=None) / 100, 1.0)
            self.at = now
        elif self.busy is None:
            raise NotMeasuredYet(_MIN_SAMPLE - (now - self.at))
        return self.busy


_CPU = _CpuUse()


def system_load() -> tuple[float, float]:
    """(fraction of all CPUs busy since the previous reading, fraction of memory
    available), read with psutil, never waiting (the load average would lag by a
    minute; sampling for 0.1 s would stall the boss). The first call of a process
    raises :class:`NotMeasuredYet`; one within 0.1 s of the previous reading repeats
    its CPU use (a shorter interval is noise)."""
    import psutil

    busy = _CPU.read()
    memory = psutil.virtual_memory()
    return busy, memory.available / memory.total


def _say(level: int, message: str) -> None:
    """Log ``message`` on ``taskfarm.schedulers``. When no handler is configured
    anywhere (the case where logging falls back to ``logging.lastResort``, which shows
    warnings only), write it to stderr at every level instead."""
    if _LOG.hasHandlers():
        _LOG.log(level, message)
    elif not _LOG.disabled and _LOG.manager.disable < level:  # logging.disable()
        print(f"{logging.getLevelName(level)}:{_LOG.name}:{message}", file=sys.stderr,
              flush=True)


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
        probe: a picklable callable returning ``(busy, available)`` fractions, which
            must not block; it may raise :class:`NotMeasuredYet` when it has no
            reading yet. Default :func:`system_load`.
        clock: a picklable callable giving monotonic seconds (default
            ``time.monotonic``), for the timer and the hold's duration.

    Holding: when tasks are pending, none of the farm's is running and the last
    measurement allows none, it *holds*: :attr:`holding` tells why, and it logs on
    the ``taskfarm.schedulers`` logger one INFO line when the hold begins (with the
    measured CPU use and available memory against ``max_load`` and ``min_available``,
    and when it looks again), one WARNING once the hold has lasted ``warn_after``
    seconds, and one INFO line when it resumes; nothing on each re-check. A farm that
    runs tasks but does not grow is working at its polite size, not holding (else
    every normal run would warn). The lines must reach a user who configured no
    logging, and the boss is a process of its own, so if no handler is configured
    anywhere they are written to stderr at every level; once the program configures
    logging (or gives ``taskfarm`` a ``NullHandler``), its configuration decides.
    """

    # Seconds a hold may last before the scheduler warns (once per hold).
    warn_after: float = 30.0

    def __init__(self, max_threads: int = 0, max_load: float = 0.75,
                 min_available: float = 0.2, recheck: float = 5.0, nice: int | None = 10,
                 binded: bool = False,
                 probe: Callable[[], tuple[float, float]] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
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
        self._clock = clock
        self._allowed = 0
        self._measured_at: float | None = None
        self._retry_at: float | None = None     # the probe had no reading: ask by then
        self._reading: tuple[float, float] | None = None  # the last (busy, available)
        self._load_spare = 0                    # CPUs the last reading left free
        self._holding: str | None = None
        self._hold_since: float | None = None
        self._warned = False

    @property
    def holding(self) -> str | None:
        """Why the farm runs nothing although tasks are pending (the measured CPU use
        and available memory against ``max_load`` and ``min_available``), or None
        when it is not held back by the machine."""
        return self._holding

    def launchable(self, pending_instructions: Sequence[Instructions],
                   workers: Mapping[str, Instructions], report: RunReport | None) -> Launch:
        now = self._clock()
        if self._measured_at is None or now - self._measured_at >= self.recheck:
            self._measure(len(workers), now)
        chosen, rest = self._take(pending_instructions, workers, self._allowed - len(workers))
        if chosen:
            self._resume(now)
        elif not workers and self._reading is not None:
            self._hold(len(pending_instructions), now)
        return chosen, rest

    def _measure(self, running: int, now: float) -> None:
        try:
            busy, available = self.probe()
        except NotMeasuredYet as exc:  # keep the last budget (none at first), ask soon
            self._retry_at = now + min(max(0.0, exc.retry_after), self.recheck)
            return
        self._reading, self._measured_at, self._retry_at = (busy, available), now, None
        self._load_spare = math.floor((self.max_load - busy) * (os.cpu_count() or 1) + 1e-9)
        spare = self._load_spare if available >= self.min_available else min(self._load_spare, 0)
        self._allowed = max(0, min(self.max_threads, running + spare))

    def _reason(self) -> str:
        """The last reading against the thresholds, saying which one holds."""
        assert self._reading is not None
        busy, available = self._reading
        if self._load_spare <= 0:
            cpu = (f"CPU use {busy:.0%} of {os.cpu_count() or 1} CPUs leaves none free "
                   f"under max_load {self.max_load:.0%}")
        else:
            cpu = f"CPU use {busy:.0%} (max_load {self.max_load:.0%})"
        relation = "<" if available < self.min_available else ">="
        return (f"{cpu}; available memory {available:.0%} {relation} "
                f"min_available {self.min_available:.0%}")

    def _hold(self, pending: int, now: float) -> None:
        """Nothing launched, nothing running, tasks pending: the machine holds them.
        Log when the hold begins and once when it has lasted ``warn_after``."""
        self._holding = self._reason()
        if self._hold_since is None:
            self._hold_since, self._warned = now, False
            _say(logging.INFO, f"PoliteScheduler holds {pending} pending tasks: "
                 f"{self._holding}; next look in {self._next_measure(now):.3g} s")
        elif not self._warned and now - self._hold_since >= self.warn_after:
            self._warned = True
            _say(logging.WARNING, f"PoliteScheduler has launched nothing for "
                 f"{now - self._hold_since:.0f} s although {pending} tasks are pending: "
                 f"{self._holding}; next look in {self._next_measure(now):.3g} s "
                 f"(raise max_load or lower min_available to run anyway)")

    def _resume(self, now: float) -> None:
        if self._hold_since is not None:
            _say(logging.INFO, f"PoliteScheduler resumed after {now - self._hold_since:.3g} s: "
                 f"{self._reason()}")
        self._holding, self._hold_since, self._warned = None, None, False

    def _next_measure(self, now: float) -> float:
        if self._retry_at is not None:
            return max(0.0, self._retry_at - now)
        if self._measured_at is None:
            return 0.0
        return max(0.0, self.recheck - (now - self._measured_at))

    def recheck_after(self) -> float | None:
        """The next measurement, or sooner the moment a hold becomes worth a warning
        (so that a long ``recheck`` does not delay it)."""
        now = self._clock()
        delay = self._next_measure(now)
        if self._hold_since is not None and not self._warned:
            delay = min(delay, max(0.0, self._hold_since + self.warn_after - now))
        return delay
