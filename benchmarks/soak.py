"""Soak: a long-lived service fed a steady stream of tasks. Prints the boss's RSS and
open descriptors, and the main program's RSS, at every interval; they must stay flat.
Not part of CI (it runs for minutes).

    python benchmarks/soak.py [--minutes 10] [--interval 60] [--rate 500]
"""

from __future__ import annotations

import argparse
import os
import time

import psutil

import taskfarm
from schedulers import MaxThreadsScheduler


class Step(taskfarm.Worker):
    """A small piece of work, like one stride of a streaming service."""

    x: int

    def task(self) -> int:
        return sum(range(self.x % 1000))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--interval", type=float, default=60, help="seconds between lines")
    parser.add_argument("--rate", type=int, default=500, help="tasks given per second")
    args = parser.parse_args()
    boss = taskfarm.run_as_server(scheduler=MaxThreadsScheduler(2), worker=Step,
                                  workers=[Step], keep_reports=False)
    boss_process, me = psutil.Process(boss.pid), psutil.Process()
    start = next_line = time.monotonic()
    end = start + args.minutes * 60
    given = consumed = 0
    print("minute  tasks_done  boss_rss_MiB  boss_fds  main_rss_MiB")
    with boss:
        while time.monotonic() < end:
            names = boss.set_instructions({}, {"x": list(range(given, given + args.rate // 10))})
            given += len(names)
            consumed += sum(1 for _ in boss.as_completed(timeout=60))
            time.sleep(0.1)  # a stride: the service waits for new data
            if time.monotonic() >= next_line:
                print(f"{(time.monotonic() - start) / 60:6.1f}  {consumed:10d}  "
                      f"{boss_process.memory_info().rss / 2**20:12.1f}  "
                      f"{len(os.listdir(f'/proc/{boss.pid}/fd')):8d}  "
                      f"{me.memory_info().rss / 2**20:12.1f}", flush=True)
                next_line += args.interval
        boss.wait_till_finished(timeout=60)


if __name__ == "__main__":
    main()
