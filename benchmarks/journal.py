"""What the journal costs and how fast it reads back.

    python benchmarks/journal.py [--tasks 20000] [--rounds 5] [--journal-tasks 100000]

(a) Tiny-task throughput (``return x + 1``, 2 workers) without and with ``journal=``,
alternating runs, medians and their ratio. Goal: with the journal at least 0.80 of
the throughput without it.

(b) ``taskfarm report`` on a journal of 100,000 tasks made by a real farm run of
100,000 tiny tasks (one in a hundred fails, so the failures are read too): the
summary read in-process (``read_summary``, median of 5) and the whole command
(``python -m taskfarm report JOURNAL``, interpreter start-up included, median of 5).
Goal: under 1 s. The HTML page of the same journal (5,000 bars) is timed once, for
information.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import taskfarm
from schedulers import MaxThreadsScheduler
from taskfarm._report.summary import format_summary, read_summary


class Tiny(taskfarm.Worker):
    """The tiny task: ``return x + 1``; fails when ``fail_every`` divides x."""

    journal_bench_x: int
    fail_every: int = 0

    def task(self) -> int:
        if self.fail_every and self.journal_bench_x % self.fail_every == 0:
            raise ValueError(f"{self.journal_bench_x} is a multiple of {self.fail_every}")
        return self.journal_bench_x + 1


def throughput(n: int, journal: Path | None) -> float:
    """Tiny tasks per second on 2 workers, from instructions given to the last report."""
    with taskfarm.Boss(MaxThreadsScheduler(2), workers=[Tiny], journal=journal) as boss:
        boss.set_instructions({"name": "warm_[journal_bench_x]"}, {"journal_bench_x": [0]})
        boss.make_them_work()
        next(boss.as_completed())   # the worker processes are up
        start = time.perf_counter()
        boss.set_instructions({"name": "t_[journal_bench_x]"},
                              {"journal_bench_x": list(range(1, n + 1))})
        count = sum(1 for _ in boss.as_completed())
        elapsed = time.perf_counter() - start
        boss.end()
    assert count == n
    return n / elapsed


def make_journal(path: Path, n: int) -> float:
    """Run ``n`` tiny tasks (one in 100 failing) with ``journal=path``; seconds taken."""
    start = time.perf_counter()
    report = taskfarm.batch_main({"name": "t_[journal_bench_x]", "fail_every": 100},
                                 {"journal_bench_x": list(range(n))}, worker=Tiny,
                                 scheduler=MaxThreadsScheduler(2), journal=path,
                                 on_error="continue", print_report=None, progress=False)
    assert len(report.tasks) == n
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--journal-tasks", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        figures: dict[str, list[float]] = {"without": [], "with": []}
        for round_ in range(args.rounds):
            figures["without"].append(throughput(args.tasks, None))
            figures["with"].append(throughput(args.tasks, tmp / f"r{round_}.db"))
        without, with_ = (statistics.median(figures[k]) for k in ("without", "with"))
        print(f"(a) {args.tasks:,} tiny tasks on 2 workers, median of {args.rounds} "
              "alternating runs")
        print(f"    without journal  {without:>9,.0f} tasks/s")
        print(f"    with journal     {with_:>9,.0f} tasks/s   ratio {with_ / without:.2f} "
              "(goal >= 0.80)")

        journal = tmp / "big.db"
        made = make_journal(journal, args.journal_tasks)
        size = sum(p.stat().st_size for p in tmp.glob("big.db*")) / 2**20
        reads = []
        for _ in range(5):
            start = time.perf_counter()
            summary = read_summary(journal)
            format_summary(summary)
            reads.append(time.perf_counter() - start)
        commands = []
        for _ in range(5):
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "taskfarm", "report", str(journal)],
                                  capture_output=True, text=True, timeout=120)
            commands.append(time.perf_counter() - start)
            assert done.returncode == 0, done.stderr
        start = time.perf_counter()
        page = subprocess.run([sys.executable, "-m", "taskfarm", "report", str(journal),
                               "--html", str(tmp / "big.html")],
                              capture_output=True, text=True, timeout=600)
        html_seconds = time.perf_counter() - start
        print(f"(b) a journal of {summary.total:,} tasks ({summary.failures_total:,} failed)"
              f" made by a real farm run in {made:.1f} s, {size:.1f} MiB")
        print(f"    read_summary + format, in-process  median {statistics.median(reads):.3f}"
              f" s (best {min(reads):.3f})   goal < 1 s")
        print(f"    python -m taskfarm report JOURNAL   median {statistics.median(commands):.3f}"
              f" s (best {min(commands):.3f})   goal < 1 s")
        if page.returncode == 0:
            mib = (tmp / "big.html").stat().st_size / 2**20
            print(f"    ... --html FILE (5,000 bars)         {html_seconds:.2f} s, "
                  f"{mib:.1f} MiB page")
        else:
            print(f"    ... --html FILE failed: {page.stderr.strip()}")


if __name__ == "__main__":
    main()
