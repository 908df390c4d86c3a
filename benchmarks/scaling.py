"""Scheduling cost must grow with the work done, not with the work queued: tiny-task
throughput with 100,000 tasks queued at once against 5,000, for MaxThreadsScheduler and
MaxMemoryScheduler (2 tasks at a time each).

    python benchmarks/scaling.py [--large 100000] [--small 5000]

Goal (schedulers issue): the large run within 25% of the small run's throughput.
"""

from __future__ import annotations

import argparse

from core import throughput

from schedulers import MaxMemoryScheduler, MaxThreadsScheduler


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
        small = throughput(args.small, scheduler=make())
        large = throughput(args.large, scheduler=make())
        ratio = large / small
        print(f"{label}: {args.small:,} tasks {small:,.0f}/s, {args.large:,} tasks "
              f"{large:,.0f}/s, ratio {ratio:.2f} "
              f"(goal >= 0.75: {'met' if ratio >= 0.75 else 'MISSED'})")


if __name__ == "__main__":
    main()
