"""The one-call round trip of taskfarm.Executor by where its processes run, against
ProcessPoolExecutor's, in one run.

    python benchmarks/round_trip_placement.py [--calls 600] [--rounds 2]

A program that waits for each call gets a lease (taskfarm/_main/executor_lease.py):
its calls cross two processes, the main program and the worker holding the lease, as
with ProcessPoolExecutor; the boss only watches. Where the kernel runs them still
counts: waking a process on the other CPU costs more than on one's own, and which
placement a run gets is the kernel's choice, kept while the processes keep waking
each other. This script pins each placement in turn (CPU affinity of the main
program's threads, of the boss, of the workers; Linux, at least 2 CPUs), after 100
calls (the lease is held by then), and prints the p50 of each, then both executors
left to the kernel.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import statistics
import time
from typing import Any

import psutil

import taskfarm

WORKERS = 2


def tiny(x: int) -> int:
    """The call every contender runs: ``x + 1``."""
    return x + 1


def _pin(pids: list[int], cpu: int | None) -> None:
    for pid in pids:
        os.sched_setaffinity(pid, {cpu} if cpu is not None else _ALL)


def _farm(executor: Any) -> tuple[list[int], list[int]]:
    """The executor's boss process, and its worker processes."""
    boss = [p for p in psutil.Process().children()
            if "taskfarm._boss" in " ".join(p.cmdline())]
    assert len(boss) == 1, boss
    return [boss[0].pid], [p.pid for p in boss[0].children()]


def p50(make: Any, calls: int, placement: tuple[int, int, int] | None) -> float:
    """p50 of submit-then-result, in microseconds, with the main program's threads,
    the boss and the workers on the CPUs ``placement`` names (None: left alone)."""
    with make() as executor:
        list(executor.map(tiny, range(4 * WORKERS)))
        threads = [t.id for t in psutil.Process().threads()]   # the executor's too
        if placement is not None:
            boss, workers = _farm(executor)
            for pids, cpu in zip((threads, boss, workers), placement, strict=True):
                _pin(pids, cpu)
        try:
            for i in range(100):
                executor.submit(tiny, i).result()
            times = []
            for i in range(calls):
                start = time.perf_counter()
                executor.submit(tiny, i).result()
                times.append(time.perf_counter() - start)
        finally:
            _pin([os.getpid()], None)   # the main thread (the executor's threads end)
    return statistics.median(times) * 1e6


_ALL = set(range(os.cpu_count() or 1))

PLACEMENTS = {
    "main | boss + worker": (0, 1, 1),
    "main + worker | boss": (0, 1, 0),
    "main + boss | worker": (0, 0, 1),
    "all on one CPU": (0, 0, 0),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("needs at least 2 CPUs")
    figures: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for name, placement in PLACEMENTS.items():
            figures.setdefault(f"taskfarm, {name}", []).append(
                p50(lambda: taskfarm.Executor(WORKERS), args.calls, placement))
        figures.setdefault("taskfarm, left to the kernel", []).append(
            p50(lambda: taskfarm.Executor(WORKERS), args.calls, None))
        figures.setdefault("ProcessPoolExecutor, left to the kernel", []).append(
            p50(lambda: concurrent.futures.ProcessPoolExecutor(WORKERS), args.calls, None))
    print(f"one-call round trip p50 (us), {args.rounds} rounds, {WORKERS} workers:")
    for name, values in figures.items():
        shown = " / ".join(f"{v:6.0f}" for v in values)
        print(f"  {name:42s} {shown}")


if __name__ == "__main__":
    main()
