"""Core figures of taskfarm on this machine: tiny-task throughput in pool mode and the
one-task round trip (instructions given -> TaskReport in the main program).

    python benchmarks/core.py [--tasks 5000] [--round-trips 300]

Goals (issue: core farm): >= 10,000 tiny tasks/s on 2 workers; round trip p50 <= 1 ms.
"""

from __future__ import annotations

import argparse
import statistics
import time

import taskfarm
from schedulers import MaxThreadsScheduler


class Tiny(taskfarm.Worker):
    """The tiny task: ``return x + 1``."""

    x: int

    def task(self) -> int:
        return self.x + 1


def throughput(n: int, workers: int = 2, isolated: bool = False,
               scheduler: object = None) -> float:
    """Tiny tasks per second, from instructions given to the last report received
    (on ``workers`` workers, or under ``scheduler``)."""
    scheduler = scheduler or MaxThreadsScheduler(workers)
    with taskfarm.Boss(scheduler, workers=[Tiny], isolated=isolated) as boss:
        boss.set_instructions({}, {"x": [0]})  # warm up: start the processes
        boss.make_them_work()
        next(boss.as_completed())
        start = time.perf_counter()
        boss.set_instructions({}, {"x": list(range(1, n + 1))})
        count = sum(1 for _ in boss.as_completed())
        elapsed = time.perf_counter() - start
        report = boss.wait_till_finished()
    assert count == n and len(report.tasks) == n + 1, (count, len(report.tasks))
    assert all(t.ok for t in report.tasks)
    return n / elapsed


def round_trips(n: int) -> list[float]:
    """Seconds from set_instructions() to the TaskReport, one task at a time."""
    times = []
    with taskfarm.Boss(MaxThreadsScheduler(2), workers=[Tiny]) as boss:
        boss.make_them_work()
        for i in range(n + 20):
            start = time.perf_counter()
            boss.set_instructions({}, {"x": [i]})
            report = next(boss.as_completed())
            elapsed = time.perf_counter() - start
            assert report.result == i + 1
            if i >= 20:  # the first ones start the processes
                times.append(elapsed)
    return times


def memory() -> tuple[float, float]:
    """(boss RSS, idle worker USS) in MiB after a small run."""
    import psutil

    with taskfarm.Boss(MaxThreadsScheduler(2), workers=[Tiny]) as boss:
        boss.set_instructions({}, {"x": list(range(100))})
        boss.make_them_work()
        for _ in boss.as_completed():
            pass
        boss_process = psutil.Process(boss.pid)
        rss = boss_process.memory_info().rss / 2**20
        uss = max(w.memory_full_info().uss for w in boss_process.children()) / 2**20
    return rss, uss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--round-trips", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5,
                        help="throughput runs; the median and the best are shown")
    args = parser.parse_args()
    rates = sorted(throughput(args.tasks) for _ in range(args.repeats))
    median = statistics.median(rates)
    print(f"pool mode, {args.tasks} tiny tasks on 2 workers, {args.repeats} runs: "
          f"median {median:,.0f} tasks/s, best {rates[-1]:,.0f}, worst {rates[0]:,.0f} "
          f"(goal >= 10,000: {'met' if median >= 10_000 else 'MISSED'} by the median)")
    isolated = throughput(min(args.tasks, 1000), isolated=True)
    print(f"isolated mode, {min(args.tasks, 1000)} tiny tasks: {isolated:,.0f} tasks/s")
    rss, uss = memory()
    print(f"memory: boss RSS {rss:.1f} MiB, idle worker USS {uss:.1f} MiB")
    times = sorted(round_trips(args.round_trips))
    p50 = statistics.median(times) * 1e3
    p99 = times[int(len(times) * 0.99) - 1] * 1e3
    print(f"one-task round trip over {len(times)}: p50 {p50:.3f} ms, p99 {p99:.3f} ms "
          f"(goal p50 <= 1 ms: {'met' if p50 <= 1 else 'MISSED'})")


if __name__ == "__main__":
    main()
