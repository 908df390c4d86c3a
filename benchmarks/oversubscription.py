"""Native thread pools and oversubscription: numpy matrix products on as many workers
as CPUs, with taskfarm's default (each worker's BLAS pool sized to its share of the
CPUs) against pools sized to the whole machine (N workers x N threads).

    python benchmarks/oversubscription.py [--tasks 40] [--size 600]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import taskfarm
from schedulers import MaxThreadsScheduler, available_cpus


class MatMul(taskfarm.Worker):
    """A product of two random matrices, a few times over."""

    seed: int
    size: int = 600

    def task(self) -> float:
        rng = np.random.default_rng(self.seed)
        a = rng.random((self.size, self.size))
        for _ in range(4):
            a = a @ a
            a /= np.abs(a).max()
        return float(a.sum())


class OversubscribedMatMul(MatMul):
    """The same with a BLAS pool as large as the machine in every worker."""

    threads = available_cpus()


def run(worker: type[taskfarm.Worker], tasks: int, size: int) -> float:
    cpus = available_cpus()
    start = time.perf_counter()
    report = taskfarm.batch_main({"size": size}, {"seed": list(range(tasks))}, worker=worker,
                                 scheduler=MaxThreadsScheduler(cpus), print_report=None)
    assert all(t.ok for t in report.tasks)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--size", type=int, default=600)
    args = parser.parse_args()
    cpus = available_cpus()
    shared = run(MatMul, args.tasks, args.size)
    over = run(OversubscribedMatMul, args.tasks, args.size)
    print(f"{args.tasks} numpy tasks on {cpus} workers: default share (1 BLAS thread "
          f"each) {shared:.2f} s; {cpus} threads each ({cpus * cpus} in all) "
          f"{over:.2f} s; oversubscription costs {over / shared:.2f}x")


if __name__ == "__main__":
    main()
