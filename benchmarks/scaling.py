"""Scheduling cost must grow with the work done, not with the work queued: tiny-task
throughput with 100,000 tasks queued at once against 5,000, for MaxThreadsScheduler and
MaxMemoryScheduler (2 tasks at a time each).

    python benchmarks/scaling.py [--large 100000] [--small 5000]

Goal (schedulers issue): the large run within 25% of the small run's throughput.
"""

from __future__ import annotations

import argparse
import time

import taskfarm
from schedulers import MaxMemoryScheduler, MaxThreadsScheduler


class Tiny(taskfarm.Worker):
    """The tiny task: ``return x + 1``."""

    x: int

    def task(self) -> int:
        return self.x + 1


def throughput(n: int, scheduler: object) -> float:
    """Tasks per second from giving n instruction sets to the last report received."""
    with taskfarm.Boss(scheduler, workers=[Tiny]) as boss:
        boss.set_instructions({}, {"x": [0]})
        boss.make_them_work()
        next(boss.as_completed())
        start = time.perf_counter()
        boss.set_instructions({}, {"x": list(range(1, n + 1))})
        count = sum(1 for _ in boss.as_completed())
        elapsed = time.perf_counter() - start
    assert count == n
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=5_000)
    args = parser.parse_args()
    schedulers = {
        "MaxThreadsScheduler(2)": lambda: MaxThreadsScheduler(2),
        "MaxMemoryScheduler(4096 MiB, 2048 per task)":
            lambda: MaxMemoryScheduler(max_memory=4096, memory_per_task=2048, learn=False),
    }
    for label, make in schedulers.items():
        small = throughput(args.small, make())
        large = throughput(args.large, make())
        ratio = large / small
        print(f"{label}: {args.small:,} tasks {small:,.0f}/s, {args.large:,} tasks "
              f"{large:,.0f}/s, ratio {ratio:.2f} "
              f"(goal >= 0.75: {'met' if ratio >= 0.75 else 'MISSED'})")


if __name__ == "__main__":
    main()
