"""taskfarm side by side with the local peers, on the same workloads, in one run.

    python benchmarks/peers.py [--tasks 5000]      (or: tox -e bench)

Peers: concurrent.futures.ProcessPoolExecutor, multiprocessing.Pool, and, when
installed (the ``bench`` extra), loky, pebble and Dask (LocalCluster, processes). A
peer that is not installed is skipped with a note. Prints each figure and the ratio
taskfarm / peer.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import statistics
import time
from collections.abc import Callable

from core import Tiny, throughput

import taskfarm
from schedulers import MaxThreadsScheduler

WORKERS = 2


def tiny(x: int) -> int:
    """The tiny task of the peers: ``return x + 1``."""
    return x + 1


def _rate(n: int, run: Callable[[int], int]) -> float:
    start = time.perf_counter()
    count = run(n)
    elapsed = time.perf_counter() - start
    assert count == n, (count, n)
    return n / elapsed


def mp_pool(n: int, maxtasksperchild: int | None = None) -> float:
    with multiprocessing.get_context("fork").Pool(WORKERS,
                                                  maxtasksperchild=maxtasksperchild) as pool:
        pool.map(tiny, range(WORKERS))  # warm up
        return _rate(n, lambda k: sum(1 for _ in pool.imap_unordered(tiny, range(k))))


def ppe(n: int) -> float:
    with concurrent.futures.ProcessPoolExecutor(WORKERS) as pool:
        list(pool.map(tiny, range(WORKERS)))
        return _rate(n, lambda k: sum(1 for f in concurrent.futures.as_completed(
            [pool.submit(tiny, i) for i in range(k)]) if f.result() is not None))


def loky_pool(n: int) -> float:
    import loky

    pool = loky.get_reusable_executor(max_workers=WORKERS)
    list(pool.map(tiny, range(WORKERS)))
    try:
        return _rate(n, lambda k: sum(1 for f in concurrent.futures.as_completed(
            [pool.submit(tiny, i) for i in range(k)]) if f.result() is not None))
    finally:
        pool.shutdown(wait=True, kill_workers=True)


def pebble_pool(n: int) -> float:
    import pebble

    with pebble.ProcessPool(max_workers=WORKERS) as pool:
        pool.schedule(tiny, args=(0,)).result()
        return _rate(n, lambda k: sum(1 for f in concurrent.futures.as_completed(
            [pool.schedule(tiny, args=(i,)) for i in range(k)]) if f.result() is not None))


def dask_pool(n: int) -> float:
    from dask.distributed import Client, LocalCluster, as_completed

    with LocalCluster(n_workers=WORKERS, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        client.submit(tiny, 0).result()
        return _rate(n, lambda k: sum(1 for _ in as_completed(
            client.map(tiny, range(k), pure=False))))


def round_trip_taskfarm(n: int) -> list[float]:
    times = []
    with taskfarm.Boss(MaxThreadsScheduler(WORKERS), workers=[Tiny]) as boss:
        boss.make_them_work()
        for i in range(n + 20):
            start = time.perf_counter()
            boss.set_instructions({}, {"x": [i]})
            next(boss.as_completed())
            if i >= 20:
                times.append(time.perf_counter() - start)
    return times


def round_trip_ppe(n: int) -> list[float]:
    times = []
    with concurrent.futures.ProcessPoolExecutor(WORKERS) as pool:
        for i in range(n + 20):
            start = time.perf_counter()
            pool.submit(tiny, i).result()
            if i >= 20:
                times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--round-trips", type=int, default=300)
    args = parser.parse_args()
    n = args.tasks
    ours = throughput(n, WORKERS)
    print(f"tiny-task throughput, {n} tasks on {WORKERS} workers (tasks/s):")
    print(f"  {'taskfarm (pool mode)':40s} {ours:10,.0f}")
    peers: dict[str, Callable[[int], float]] = {
        "multiprocessing.Pool.imap_unordered": mp_pool,
        "ProcessPoolExecutor.submit": ppe,
        "loky": loky_pool,
        "pebble": pebble_pool,
        "Dask LocalCluster (processes)": dask_pool,
    }
    for label, measure in peers.items():
        try:
            theirs = measure(n)
        except ImportError as exc:
            print(f"  {label:40s} {'skipped':>10s}  ({exc.name} not installed)")
            continue
        print(f"  {label:40s} {theirs:10,.0f}  taskfarm/peer {ours / theirs:5.2f}")
    isolated = throughput(min(n, 1000), WORKERS, isolated=True)
    per_child = mp_pool(min(n, 1000), maxtasksperchild=1)
    print(f"isolated mode (a process per task), {min(n, 1000)} tasks: taskfarm {isolated:,.0f}/s, "
          f"multiprocessing.Pool(maxtasksperchild=1) {per_child:,.0f}/s, "
          f"ratio {isolated / per_child:.2f}")
    ours_rt = statistics.median(round_trip_taskfarm(args.round_trips)) * 1e3
    ppe_rt = statistics.median(round_trip_ppe(args.round_trips)) * 1e3
    print(f"one-task round trip p50: taskfarm {ours_rt:.3f} ms, ProcessPoolExecutor "
          f"{ppe_rt:.3f} ms, ratio {ours_rt / ppe_rt:.2f}")


if __name__ == "__main__":
    main()
