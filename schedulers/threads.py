"""Schedulers that count tasks: ``MaxThreadsScheduler`` (at most N at once) and
``LaxistScheduler`` (no limit). Also the helpers every limit scheduler shares:
tickets, CPU binding and niceness."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from taskfarm._common.system import available_cpus, packed_cpus

from .base import BaseScheduler, Instructions, Launch, RunReport

__all__ = ["LaxistScheduler", "MaxThreadsScheduler"]


class Limited(BaseScheduler):
    """Options shared by limit schedulers.

    ``binded``: pin each worker process to one CPU chosen by its task's ticket, in
    socket-packed order over the CPUs this process may use (the task report shows it).
    ``nice``: run the workers at this niceness or higher (lower priority).
    """

    def __init__(self, binded: bool = False, nice: int | None = None) -> None:
        if nice is not None and not (isinstance(nice, int) and 0 <= nice <= 19):
            raise ValueError(f"nice must be an int from 0 to 19, got {nice!r}")
        self.binded = bool(binded)
        self.nice = nice
        self._cpus = packed_cpus() if binded else []

    def _take(self, pending: Sequence[Instructions], workers: Mapping[str, Instructions],
              room: int) -> Launch:
        """The first ``room`` pending sets, with their tickets."""
        if room <= 0:
            return [], pending
        chosen = pending[:room]
        if chosen:
            self._give_tickets(chosen, workers)
        return chosen, pending[room:]

    def _give_tickets(self, chosen: Iterable[Instructions],
                      workers: Mapping[str, Instructions]) -> None:
        """Lowest free ticket to each chosen set; CPU and niceness if asked for."""
        taken = {w.get("scheduler_ticket") for w in workers.values()}
        ticket = 0
        for instructions in chosen:
            while ticket in taken:
                ticket += 1
            instructions["scheduler_ticket"] = ticket
            taken.add(ticket)
            if self.binded:
                instructions["taskfarm_cpu"] = self._cpus[ticket % len(self._cpus)]
            if self.nice is not None:
                instructions["taskfarm_nice"] = self.nice


class MaxThreadsScheduler(Limited):
    """Launch at most ``max_threads`` tasks at once, in the order given.

    ``max_threads=0`` means one per CPU this process may use (affinity mask and cgroup
    quota, see :func:`taskfarm._common.system.available_cpus`). Each launched task gets the
    lowest free ``scheduler_ticket`` in ``0..max_threads-1``. It only counts tasks, so
    it allows prefetching (see :class:`BaseScheduler`).
    """

    prefetch = True

    def __init__(self, max_threads: int = 0, binded: bool = False,
                 nice: int | None = None) -> None:
        super().__init__(binded, nice)
        self.max_threads = _thread_count(max_threads)

    def launchable(self, pending_instructions: Sequence[Instructions],
                   workers: Mapping[str, Instructions], report: RunReport | None) -> Launch:
        return self._take(pending_instructions, workers, self.max_threads - len(workers))


class LaxistScheduler(BaseScheduler):
    """No limit: everything pending is launchable now (one process per task running).
    Combine it with a limit (``LaxistScheduler() & ...``) or use it for a few heavy
    tasks; with thousands of pending tasks it starts thousands of processes."""

    def launchable(self, pending_instructions: Sequence[Instructions],
                   workers: Mapping[str, Instructions], report: RunReport | None) -> Launch:
        return list(pending_instructions), []


def _thread_count(max_threads: int) -> int:
    if isinstance(max_threads, bool) or not isinstance(max_threads, int):
        raise TypeError(f"max_threads must be an int, not {type(max_threads).__name__}")
    if max_threads < 0:
        raise ValueError(f"max_threads must be >= 0 (0: one per available CPU), "
                         f"got {max_threads}")
    return max_threads or available_cpus()
