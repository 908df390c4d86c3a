"""What the task event stream costs tiny tasks: throughput with nobody reading events
(the default), with ``Boss.events()`` read in a thread (STARTED notices on), and with
every task emitting one value; alternating runs, medians.

    python benchmarks/events.py [--tasks 20000] [--rounds 5]

Goal (issue: task events): the stream costs no more than 5% of tiny-task throughput
when nobody consumes it. The default mode sends nothing more per task than before the
stream existed (no STARTED notice unless asked, no EMITTED notice unless emitted); to
compare with an earlier version, run ``benchmarks/core.py`` in a checkout of each.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import taskfarm
from schedulers import MaxThreadsScheduler


class Plain(taskfarm.Worker):
    """The tiny task: ``return x + 1``."""

    plain_x: int

    def task(self) -> int:
        return self.plain_x + 1


class Emitting(taskfarm.Worker):
    """The tiny task, emitting one value first."""

    emitting_x: int

    def task(self) -> int:
        self.emit(self.emitting_x)
        return self.emitting_x + 1


def throughput(mode: str, n: int) -> float:
    """Tiny tasks per second on 2 workers, from instructions given to the last report."""
    cls = Emitting if mode == "emitting" else Plain
    key = "emitting_x" if mode == "emitting" else "plain_x"
    with taskfarm.Boss(MaxThreadsScheduler(2), workers=[cls]) as boss:
        reader = None
        if mode in ("consumed", "emitting"):
            events = boss.events()
            counted = [0]

            def read() -> None:
                for _ in events:
                    counted[0] += 1

            reader = threading.Thread(target=read, daemon=True)
        boss.set_instructions({}, {key: [0]})   # warm up: start the processes
        boss.make_them_work()
        next(boss.as_completed())
        if reader is not None:
            reader.start()
        start = time.perf_counter()
        boss.set_instructions({}, {key: list(range(1, n + 1))})
        count = sum(1 for _ in boss.as_completed())
        elapsed = time.perf_counter() - start
        boss.end()
        if reader is not None:
            reader.join(30)
    assert count == n
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    modes = ("nobody reads", "consumed", "emitting")
    figures: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(args.rounds):
        for mode in modes:
            figures[mode].append(throughput(mode.split()[0] if mode != "nobody reads"
                                            else "none", args.tasks))
    base = statistics.median(figures["nobody reads"])
    print(f"{args.tasks} tiny tasks on 2 workers, median of {args.rounds} alternating runs")
    for mode in modes:
        median = statistics.median(figures[mode])
        print(f"  {mode:<14} {median:>9,.0f} tasks/s   {median / base:5.2f}x")


if __name__ == "__main__":
    main()
