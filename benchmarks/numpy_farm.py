"""numpy work on the farm: CPU-bound scaling from 1 worker to all CPUs, and a 400 MB
SharedArray given to 2 workers.

    python benchmarks/numpy_farm.py [--tasks 16] [--mib 400]

Goals (performance issue): scaling efficiency on all cores >= 95%; a 400 MB array
reaches 2 workers in < 50 ms, each worker's memory growing by < 5% of its size.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import psutil

import taskfarm
from schedulers import MaxThreadsScheduler, available_cpus


class Crunch(taskfarm.Worker):
    """CPU-bound numpy work of a fixed size, on one BLAS thread whatever the number of
    workers (so that 1 worker and N workers do the same work per task)."""

    seed: int
    threads = 1

    def task(self) -> float:
        a = np.random.default_rng(self.seed).random((300, 300))
        for _ in range(150):
            a = a @ a
            a /= np.abs(a).max()
        return float(a.sum())


class Look(taskfarm.Worker):
    """Reports when it first saw the shared array, and its own memory growth."""

    data: object
    item: int

    def task(self) -> tuple[float, float, int]:
        seen = time.time()
        before = psutil.Process().memory_full_info().uss
        checksum = float(self.data[::4096].sum())  # touch one value per page
        return seen, checksum, psutil.Process().memory_full_info().uss - before


def run_crunch(workers: int, tasks: int) -> float:
    start = time.perf_counter()
    report = taskfarm.batch_main({}, {"seed": list(range(tasks))}, worker=Crunch,
                                 scheduler=MaxThreadsScheduler(workers), print_report=None)
    assert all(t.ok for t in report.tasks)
    return time.perf_counter() - start


def crunch(seed: int) -> float:
    """The same work as a plain function for the peers, on one BLAS thread as in
    taskfarm (Crunch.threads), so that both do the same work per task."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        return Crunch(seed=seed).task()


def scaling(tasks: int) -> tuple[float, float, float]:
    """(seconds on 1 worker, seconds on every CPU, efficiency)."""
    cpus = available_cpus()
    one = run_crunch(1, tasks)
    every = run_crunch(cpus, tasks)
    return one, every, one / every / cpus


def shared_array_reach(mib: int) -> tuple[float, float, int]:
    """A ``mib`` MB SharedArray given to 2 running workers: (seconds until both
    have it, largest worker memory growth in bytes, array size in bytes)."""
    array = taskfarm.SharedArray(np.ones(mib * 2**20 // 8))
    with taskfarm.Boss(MaxThreadsScheduler(2), workers=[Look]) as boss:
        boss.set_instructions({"data": array}, {"item": [0]})  # start the two workers
        boss.make_them_work()
        boss.set_instructions({"data": array}, {"item": [1]})
        list(boss.as_completed(timeout=60))
        fresh = taskfarm.SharedArray(array.array)  # made (one copy) before the clock starts
        given = time.time()
        boss.set_instructions({"data": fresh}, {"item": [2, 3]})
        results = [r.result for r in boss.as_completed(timeout=60)]
    reach = max(seen for seen, _, _ in results) - given
    return reach, max(g for _, _, g in results), array.nbytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=16)
    parser.add_argument("--mib", type=int, default=400)
    args = parser.parse_args()
    cpus = available_cpus()
    one, every, efficiency = scaling(args.tasks)
    print(f"CPU-bound numpy, {args.tasks} tasks: 1 worker {one:.2f} s, {cpus} workers "
          f"{every:.2f} s, scaling efficiency {efficiency:.0%} "
          f"(goal >= 95%: {'met' if efficiency >= 0.95 else 'MISSED'})")
    reach, growth, size = shared_array_reach(args.mib)
    print(f"{args.mib} MB SharedArray to 2 running workers: reached both in {reach * 1e3:.1f} ms "
          f"(goal < 50 ms: {'met' if reach < 0.05 else 'MISSED'}); worker memory grew by "
          f"{growth / 2**20:.1f} MiB, {growth / size:.1%} of the array "
          f"(goal < 5%: {'met' if growth < 0.05 * size else 'MISSED'})")


if __name__ == "__main__":
    main()
