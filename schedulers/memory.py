"""Memory-aware schedulers: ``MaxMemoryScheduler`` keeps the sum of the running tasks'
memory under a budget; ``LongerFirstScheduler`` adds a thread limit and launches the
longest tasks (by ``expected_time``) first.

A task's memory is its declared ``memory`` (MiB); when it declares none, the largest
peak memory measured so far for its Worker class (``learn=True``), else
``memory_per_task``. So a campaign whose task sizes nobody wrote down still does not
overcommit once the first tasks of each class have ended.

Both look at most ``window`` pending sets per decision (and stop at once when the
budget is full), so their cost does not grow with the number of tasks queued.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from taskfarm._common.system import memory_budget_mib

from .base import Instructions, Launch, RunReport
from .threads import Limited, _thread_count

__all__ = ["LongerFirstScheduler", "MaxMemoryScheduler"]

_MIB = 2**20


class MaxMemoryScheduler(Limited):
    """Launch while the running tasks' memory stays under ``max_memory`` MiB.

    Args:
        max_memory: the budget in MiB; default ``memory_max_fraction`` of the machine's
            memory, or of the cgroup limit when that is lower.
        memory_per_task: MiB assumed for a task that declares none and whose Worker
            class has no measured peak yet.
        memory_max_fraction: the fraction used for the default budget.
        learn: use measured peaks (see the module docstring).
        window: how many pending sets to look at per decision (backfilling smaller
            tasks past one that does not fit).
    """

    def __init__(self, max_memory: float | None = None, memory_per_task: float = 2048,
                 memory_max_fraction: float = 0.75, learn: bool = True, window: int = 256,
                 binded: bool = False, nice: int | None = None) -> None:
        super().__init__(binded, nice)
        if not 0 < memory_max_fraction <= 1:
            raise ValueError(f"memory_max_fraction must be in (0, 1], got {memory_max_fraction}")
        if max_memory is None:
            max_memory = memory_budget_mib(memory_max_fraction)
        _positive("max_memory", max_memory)
        _positive("memory_per_task", memory_per_task)
        if memory_per_task > max_memory:
            raise ValueError(f"memory_per_task ({memory_per_task} MiB) is more than the "
                             f"whole budget ({max_memory:.0f} MiB)")
        if not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be a positive int, got {window!r}")
        self.max_memory = float(max_memory)
        self.memory_per_task = float(memory_per_task)
        self.learn = learn
        self.window = window
        self._smallest: float | None = None  # the smallest need seen: below it, nothing fits

    def memory_of(self, instructions: Instructions, report: RunReport | None) -> float:
        """MiB this task is counted for (see the module docstring)."""
        declared = instructions.get("memory") or 0
        if declared > 0:
            return float(declared)
        if self.learn and report is not None:
            stats = report.by_worker.get(getattr(instructions, "worker", ""))
            if stats and stats.get("peak_rss"):
                return float(stats["peak_rss"]) / _MIB
        return self.memory_per_task

    def check_instructions(self, instructions: Mapping[str, Any]) -> None:
        declared = instructions.get("memory") or 0
        if declared > self.max_memory:
            raise ValueError(f"it declares {declared:.0f} MiB of memory, more than the whole "
                             f"budget of {self.max_memory:.0f} MiB")

    def launchable(self, pending_instructions: Sequence[Instructions],
                   workers: Mapping[str, Instructions], report: RunReport | None) -> Launch:
        used = sum(self.memory_of(w, report) for w in workers.values())
        chosen = self._fill(itertools.islice(pending_instructions, self.window), used, report)
        if chosen:
            self._give_tickets(chosen, workers)
        return chosen, []

    def _fill(self, candidates: Iterable[Instructions], used: float, report: RunReport | None,
              room: int | None = None) -> list[Instructions]:
        """The candidates that fit, in order, at most ``room`` of them. A scan stops as
        soon as less is free than the smallest need any earlier scan saw: with a full
        budget a decision costs O(1), not O(window)."""
        chosen: list[Instructions] = []
        free = self.max_memory - used
        bound = self._smallest  # from earlier scans only: this one may still backfill
        smallest = bound
        for instructions in candidates:
            if room is not None and len(chosen) >= room:
                break
            if bound is not None and free < bound:
                break
            need = self.memory_of(instructions, report)
            smallest = need if smallest is None else min(smallest, need)
            if need <= free:
                chosen.append(instructions)
                free -= need
        self._smallest = smallest
        return chosen


class LongerFirstScheduler(MaxMemoryScheduler):
    """Threads and memory limits together, launching the tasks with the longest
    ``expected_time`` first (among the first ``window`` pending sets; ties keep the
    order given), so that long tasks do not end a run alone."""

    def __init__(self, max_threads: int = 0, max_memory: float | None = None,
                 memory_per_task: float = 2048, memory_max_fraction: float = 0.75,
                 learn: bool = True, window: int = 4096, binded: bool = False,
                 nice: int | None = None) -> None:
        super().__init__(max_memory, memory_per_task, memory_max_fraction, learn, window,
                         binded, nice)
        self.max_threads = _thread_count(max_threads)

    def launchable(self, pending_instructions: Sequence[Instructions],
                   workers: Mapping[str, Instructions], report: RunReport | None) -> Launch:
        room = self.max_threads - len(workers)
        if room <= 0:
            return [], pending_instructions
        used = sum(self.memory_of(w, report) for w in workers.values())
        if used >= self.max_memory:
            return [], pending_instructions
        candidates = sorted(pending_instructions[:self.window],
                            key=lambda i: -(i.get("expected_time") or 0))
        chosen = self._fill(candidates, used, report, room)
        if chosen:
            self._give_tickets(chosen, workers)
        return chosen, []


def _positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 \
            or not math.isfinite(value):
        raise ValueError(f"{name} must be a positive, finite number of MiB, got {value!r}")
