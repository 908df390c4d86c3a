"""taskfarm side by side with the local peers, on the same workloads, in one run.

    python benchmarks/peers.py [--tasks 5000] [--mib 400]      (or: tox -e bench)

Peers: concurrent.futures.ProcessPoolExecutor, multiprocessing.Pool, and, when
installed (the ``bench`` extra), loky, pebble, Dask (LocalCluster, processes) and
taylorism, the tool taskfarm replaces. A peer that is not installed is skipped with a
note. Prints each figure, the ratio taskfarm / peer, and whether each target of the
performance issue is met, then the summary table.

Workloads: tiny-task throughput (``return x + 1``); one-task round trip (p50, p99);
isolated mode against multiprocessing.Pool(maxtasksperchild=1); CPU-bound numpy
scaling from 1 worker to all CPUs; a 400 MB numpy array given to 2 workers; 100,000
queued tasks against 5,000; memory of the boss and of an idle worker (USS).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import logging
import multiprocessing
import os
import statistics
import time
from collections.abc import Callable

import numpy as np
import psutil
from core import Tiny, memory, throughput
from numpy_farm import crunch, scaling, shared_array_reach

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


def taylorism_pool(n: int) -> float:
    """taylorism forks a process per task: a few hundred tasks are enough. Importing it
    (bronx) sets the root logger to INFO with a handler of its own: that is undone
    after the run, or every later figure would pay a log line per task."""
    root = logging.getLogger()
    level, handlers = root.level, root.handlers[:]
    try:
        return _taylorism_rate(n)
    finally:
        root.setLevel(level)
        root.handlers[:] = handlers


def _taylorism_rate(n: int) -> float:
    import taylorism

    class TayTiny(taylorism.Worker):
        _footprint = dict(attr=dict(x=dict(type=int)))

        def _task(self) -> int:
            return self.x + 1

    k = min(n, 300)
    start = time.perf_counter()
    boss = taylorism.run_as_server({}, {"x": list(range(k))}, scheduler=taylorism.fpx.scheduler(
        limit="threads", max_threads=WORKERS))
    boss.wait_till_finished()
    count = len(boss.get_report()["workers_report"])
    assert count == k, (count, k)
    return k / (time.perf_counter() - start)


def _idle_worker_uss(pids: list[int]) -> float:
    return max(psutil.Process(p).memory_full_info().uss for p in pids) / 2**20


def ppe_memory() -> float:
    """Idle worker USS (MiB) of a ProcessPoolExecutor after 100 tiny tasks."""
    with concurrent.futures.ProcessPoolExecutor(WORKERS) as pool:
        list(pool.map(tiny, range(100)))
        return _idle_worker_uss(list(pool._processes))


def mp_pool_memory() -> float:
    with multiprocessing.get_context("fork").Pool(WORKERS) as pool:
        pool.map(tiny, range(100))
        return _idle_worker_uss([p.pid for p in pool._pool])


def ppe_scaling(tasks: int) -> float:
    """Scaling efficiency of ProcessPoolExecutor on the same numpy work."""
    cpus = len(os.sched_getaffinity(0))

    def run(workers: int) -> float:
        start = time.perf_counter()
        with concurrent.futures.ProcessPoolExecutor(workers) as pool:
            list(pool.map(crunch, range(tasks)))
        return time.perf_counter() - start

    return run(1) / run(cpus) / cpus


def _seen(_array: np.ndarray, _item: int) -> float:
    return time.time()


def ppe_array_reach(mib: int) -> float:
    """Seconds for ProcessPoolExecutor to hand one array to 2 running workers."""
    array = np.ones(mib * 2**20 // 8)
    with concurrent.futures.ProcessPoolExecutor(WORKERS) as pool:
        list(pool.map(tiny, range(WORKERS)))
        given = time.time()
        seen = [f.result() for f in [pool.submit(_seen, array, i) for i in range(2)]]
    return max(seen) - given


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


def _p(times: list[float], q: float) -> float:
    ordered = sorted(times)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--round-trips", type=int, default=300)
    parser.add_argument("--numpy-tasks", type=int, default=16)
    parser.add_argument("--mib", type=int, default=400)
    parser.add_argument("--large", type=int, default=100_000)
    args = parser.parse_args()
    n = args.tasks
    rows: list[tuple[str, str, str, str, str]] = []  # workload, taskfarm, peer, ratio, target

    def row(workload: str, ours: str, theirs: str, ratio: str, target: str) -> None:
        rows.append((workload, ours, theirs, ratio, target))
        print(f"  {workload:58s} {ours:>14s} {theirs:>14s} {ratio:>7s}  {target}")

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    print(f"tiny-task throughput, {n} tasks on {WORKERS} workers (tasks/s):")
    ours = throughput(n, WORKERS)
    peers: dict[str, tuple[Callable[[int], float], float | None]] = {
        "multiprocessing.Pool.imap_unordered": (mp_pool, 1.0),
        "ProcessPoolExecutor.submit": (ppe, 2.0),
        "loky": (loky_pool, None),
        "pebble": (pebble_pool, None),
        "Dask LocalCluster (processes)": (dask_pool, None),
        "taylorism (the tool taskfarm replaces)": (taylorism_pool, None),
    }
    for label, (measure, goal) in peers.items():
        try:
            theirs = measure(n)
        except ImportError as exc:
            print(f"  {label}: skipped ({exc.name} not installed)")
            continue
        ratio = ours / theirs
        row(f"tiny tasks vs {label}", f"{ours:,.0f}/s", f"{theirs:,.0f}/s", f"{ratio:.2f}",
            f"target >= {goal:g}: {verdict(ratio >= goal)}" if goal else "")

    k = min(n, 1000)
    isolated = throughput(k, WORKERS, isolated=True)
    per_child = mp_pool(k, maxtasksperchild=1)
    row(f"isolated mode, {k} tasks, vs Pool(maxtasksperchild=1)", f"{isolated:,.0f}/s",
        f"{per_child:,.0f}/s", f"{isolated / per_child:.2f}",
        f"target >= 2: {verdict(isolated / per_child >= 2)}")

    ours_rt = round_trip_taskfarm(args.round_trips)
    ppe_rt = round_trip_ppe(args.round_trips)
    ratio = statistics.median(ours_rt) / statistics.median(ppe_rt)
    row("one-task round trip p50 vs ProcessPoolExecutor", f"{_p(ours_rt, 0.5):.3f} ms",
        f"{_p(ppe_rt, 0.5):.3f} ms", f"{ratio:.2f}", f"target <= 1: {verdict(ratio <= 1)}")
    row("one-task round trip p99 vs ProcessPoolExecutor", f"{_p(ours_rt, 0.99):.3f} ms",
        f"{_p(ppe_rt, 0.99):.3f} ms", f"{_p(ours_rt, 0.99) / _p(ppe_rt, 0.99):.2f}", "")

    _, _, efficiency = scaling(args.numpy_tasks)
    theirs_eff = ppe_scaling(args.numpy_tasks)
    row(f"numpy scaling efficiency, {args.numpy_tasks} tasks, vs ProcessPoolExecutor",
        f"{efficiency:.0%}", f"{theirs_eff:.0%}", f"{efficiency / theirs_eff:.2f}",
        f"target >= 95%: {verdict(efficiency >= 0.95)}")

    reach, growth, size = shared_array_reach(args.mib)
    theirs_reach = ppe_array_reach(args.mib)
    row(f"{args.mib} MB array to 2 running workers vs ProcessPoolExecutor",
        f"{reach * 1e3:.1f} ms", f"{theirs_reach * 1e3:,.0f} ms",
        f"{reach / theirs_reach:.4f}", f"target < 50 ms: {verdict(reach < 0.05)}")
    row("worker memory growth with that array (taskfarm)", f"{growth / size:.1%}", "", "",
        f"target < 5%: {verdict(growth < 0.05 * size)}")

    small = throughput(n, WORKERS)
    large = throughput(args.large, WORKERS)
    row(f"{args.large:,} queued tiny tasks vs {n:,} (taskfarm)", f"{large:,.0f}/s",
        f"{small:,.0f}/s", f"{large / small:.2f}",
        f"target >= 0.8: {verdict(large / small >= 0.8)}")

    rss, uss = memory()
    row("boss RSS (taskfarm)", f"{rss:.1f} MiB", "", "", f"target <= 40 MB: {verdict(rss <= 38)}")
    theirs_uss = ppe_memory()
    row("idle worker USS vs ProcessPoolExecutor", f"{uss:.1f} MiB", f"{theirs_uss:.1f} MiB",
        f"{uss / theirs_uss:.2f}", f"target <= 15 MB: {verdict(uss <= 14.3)}")
    row("idle worker USS vs multiprocessing.Pool", f"{uss:.1f} MiB", f"{mp_pool_memory():.1f} MiB",
        "", "")

    print("\n| workload | taskfarm | peer | taskfarm/peer | target |")
    print("| --- | --- | --- | --- | --- |")
    for cells in rows:
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
