"""Tiny-task throughput on a Dask cluster: taskfarm's Dask backend against plain
``client.submit`` of the same function, side by side on the same 2-worker
``LocalCluster`` (worker processes, one thread each).

    python benchmarks/dask_backend.py [--tasks 5000] [--rounds 3]

Plain Dask pays its per-task overhead (a scheduler round trip and a result fetch per
task); the backend sends the tasks the boss queues behind a running one (prefetch) as
one Dask task per batch, so tiny tasks cost one round trip per batch. Goal (issue:
Dask backend): taskfarm on Dask >= 2x plain ``client.submit``. Prints each round's
figures, the best of each, and the ratio.
"""

from __future__ import annotations

import argparse
import time

from core import Tiny

import taskfarm
from schedulers import MaxThreadsScheduler

WORKERS = 2
GOAL = 2.0


def tiny(x: int) -> int:
    """The same work as ``Tiny.task``: ``return x + 1``."""
    return x + 1


def plain_dask(client: object, n: int) -> float:
    """Tasks per second of ``client.submit(tiny, i)`` for n tasks, as they complete."""
    from distributed import as_completed

    submit = client.submit  # type: ignore[attr-defined]
    submit(tiny, 0, pure=False).result()   # warm up
    start = time.perf_counter()
    futures = [submit(tiny, i, pure=False) for i in range(n)]
    total = sum(f.result() for f in as_completed(futures))
    elapsed = time.perf_counter() - start
    assert total == sum(range(1, n + 1))
    return n / elapsed


def taskfarm_on_dask(cluster: object, n: int) -> float:
    """Tasks per second of a farm on the same cluster, from instructions given to the
    last report received (its workers' processes started by a first task)."""
    backend = taskfarm.DaskBackend(cluster=cluster)
    with taskfarm.Boss(MaxThreadsScheduler(WORKERS), workers=[Tiny], backend=backend) as boss:
        boss.set_instructions({}, {"x": list(range(WORKERS))})   # warm up
        boss.make_them_work()
        list(boss.as_completed())
        start = time.perf_counter()
        boss.set_instructions({}, {"x": list(range(1, n + 1))})
        count = sum(1 for _ in boss.as_completed())
        elapsed = time.perf_counter() - start
        report = boss.wait_till_finished()
    assert count == n and all(t.ok for t in report.tasks)
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from distributed import Client, LocalCluster

    plain: list[float] = []
    farm: list[float] = []
    with LocalCluster(n_workers=WORKERS, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        for round_ in range(1, args.rounds + 1):
            plain.append(plain_dask(client, args.tasks))
            farm.append(taskfarm_on_dask(cluster, args.tasks))
            print(f"round {round_}: plain client.submit {plain[-1]:8,.0f} tasks/s   "
                  f"taskfarm on Dask {farm[-1]:8,.0f} tasks/s", flush=True)
    ratio = max(farm) / max(plain)
    print(f"\n{args.tasks} tiny tasks on a {WORKERS}-worker LocalCluster (processes), best "
          f"of {args.rounds}:")
    print(f"  plain client.submit   {max(plain):8,.0f} tasks/s")
    print(f"  taskfarm on Dask      {max(farm):8,.0f} tasks/s")
    print(f"  ratio                 {ratio:8.1f}x   (goal >= {GOAL:g}x: "
          f"{'met' if ratio >= GOAL else 'NOT met'})")


if __name__ == "__main__":
    main()
