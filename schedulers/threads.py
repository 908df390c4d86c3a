"""``MaxThreadsScheduler``: at most N tasks at once, each given a ticket 0..N-1."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .base import BaseScheduler, Instructions, Launch
from .cpus import available_cpus

__all__ = ["MaxThreadsScheduler"]


class MaxThreadsScheduler(BaseScheduler):
    """Launch at most ``max_threads`` tasks at once, in the order given.

    ``max_threads=0`` means one per CPU this process may use (affinity mask and cgroup
    quota, see :func:`schedulers.cpus.available_cpus`). Each launched task gets the
    lowest free ``scheduler_ticket`` in ``0..max_threads-1``. It only counts tasks, so
    it allows prefetching (see :class:`BaseScheduler`).
    """

    prefetch = True

    def __init__(self, max_threads: int = 0) -> None:
        if isinstance(max_threads, bool) or not isinstance(max_threads, int):
            raise TypeError(f"max_threads must be an int, not {type(max_threads).__name__}")
        if max_threads < 0:
            raise ValueError(f"max_threads must be >= 0 (0: one per available CPU), "
                             f"got {max_threads}")
        self.max_threads = max_threads or available_cpus()

    def launchable(self, pending_instructions: Sequence[Instructions],
                   workers: Mapping[str, Instructions], report: Any) -> Launch:
        room = self.max_threads - len(workers)
        if room <= 0:
            return [], pending_instructions
        chosen = pending_instructions[:room]
        if chosen:
            taken = {w.get("scheduler_ticket") for w in workers.values()}
            free = (t for t in range(self.max_threads) if t not in taken)
            for instructions, ticket in zip(chosen, free, strict=False):
                instructions["scheduler_ticket"] = ticket
        return chosen, pending_instructions[room:]
