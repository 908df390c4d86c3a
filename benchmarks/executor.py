"""taskfarm.Executor side by side with its peers, on the same user code, in one run.

    python benchmarks/executor.py [--tasks 20000] [--items 200000] [--rounds 3]

The same tiny call (``x + 1``), 2 workers each:

- ``submit`` one call at a time (then wait for all): taskfarm.Executor against
  concurrent.futures.ProcessPoolExecutor (target: >= 2x);
- ``map(..., chunksize=k)`` against multiprocessing.Pool.imap_unordered(...,
  chunksize=k) (target: >= 1x);
- the one-call round trip (submit, then result), p50 and p99, against
  ProcessPoolExecutor (target: p50 <= the peer's).

Peers and taskfarm run interleaved, ``--rounds`` times, and the medians are compared:
the machine's speed drifts from one minute to the next. Also printed: the CPU time
the main program spends per call (all its threads), which is what the executor's
design works to cut.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import statistics
import time
from collections.abc import Callable
from typing import Any

import taskfarm

WORKERS = 2
CHUNKSIZES = (10, 100)


def tiny(x: int) -> int:
    """The call every contender runs: ``x + 1``."""
    return x + 1


def _warm(executor: concurrent.futures.Executor) -> None:
    list(executor.map(tiny, range(4 * WORKERS)))


def submit_rate(make: Callable[[], Any], n: int) -> tuple[float, float]:
    """Calls per second, and main-program CPU microseconds per call."""
    with make() as executor:
        _warm(executor)
        cpu, start = time.process_time(), time.perf_counter()
        futures = [executor.submit(tiny, i) for i in range(n)]
        done, _ = concurrent.futures.wait(futures, timeout=600)
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu
        assert len(done) == n and sum(f.result() for f in done) == n * (n + 1) // 2
    return n / elapsed, cpu / n * 1e6


def map_rate(make: Callable[[], Any], n: int, chunksize: int) -> float:
    with make() as executor:
        _warm(executor)
        start = time.perf_counter()
        total = sum(executor.map(tiny, range(n), chunksize=chunksize))
        elapsed = time.perf_counter() - start
    assert total == n * (n + 1) // 2
    return n / elapsed


def pool_rate(n: int, chunksize: int) -> float:
    with multiprocessing.get_context("fork").Pool(WORKERS) as pool:
        pool.map(tiny, range(4 * WORKERS))
        start = time.perf_counter()
        total = sum(pool.imap_unordered(tiny, range(n), chunksize=chunksize))
        elapsed = time.perf_counter() - start
    assert total == n * (n + 1) // 2
    return n / elapsed


def round_trip(make: Callable[[], Any], n: int = 500) -> tuple[float, float]:
    """p50 and p99 of submit-then-result, in microseconds."""
    with make() as executor:
        _warm(executor)
        times = []
        for i in range(n):
            start = time.perf_counter()
            executor.submit(tiny, i).result()
            times.append(time.perf_counter() - start)
    times.sort()
    return statistics.median(times) * 1e6, times[int(len(times) * 0.99)] * 1e6


def ours() -> taskfarm.Executor:
    return taskfarm.Executor(WORKERS)


def ppe() -> concurrent.futures.ProcessPoolExecutor:
    return concurrent.futures.ProcessPoolExecutor(WORKERS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20000)
    parser.add_argument("--items", type=int, default=200000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    figures: dict[str, list[float]] = {}

    def record(name: str, value: float) -> None:
        figures.setdefault(name, []).append(value)

    for round_number in range(args.rounds):
        print(f"round {round_number + 1}/{args.rounds}", flush=True)
        rate, cpu = submit_rate(ours, args.tasks)
        record("submit taskfarm", rate)
        record("main CPU us/call taskfarm", cpu)
        rate, cpu = submit_rate(ppe, args.tasks)
        record("submit PPE", rate)
        record("main CPU us/call PPE", cpu)
        for k in CHUNKSIZES:
            record(f"map k={k} taskfarm", map_rate(ours, args.items, k))
            record(f"map k={k} Pool.imap_unordered", pool_rate(args.items, k))
        for who, make in (("taskfarm", ours), ("PPE", ppe)):
            p50, p99 = round_trip(make)
            record(f"round trip p50 {who}", p50)
            record(f"round trip p99 {who}", p99)

    median = {name: statistics.median(values) for name, values in figures.items()}
    print(f"\nmedians of {args.rounds} rounds, {WORKERS} workers each:")
    for name, value in median.items():
        print(f"  {name:36s} {value:12,.1f}")
    print("\ntargets:")
    checks = [("submit, calls/s", median["submit taskfarm"], median["submit PPE"], 2.0,
               True)]
    checks += [(f"map chunksize={k}, items/s", median[f"map k={k} taskfarm"],
                median[f"map k={k} Pool.imap_unordered"], 1.0, True) for k in CHUNKSIZES]
    checks.append(("round trip p50, us", median["round trip p50 taskfarm"],
                   median["round trip p50 PPE"], 1.0, False))
    for what, mine, peer, target, higher in checks:
        ratio = mine / peer
        met = ratio >= target if higher else ratio <= target
        sign = ">=" if higher else "<="
        print(f"  {what:28s} taskfarm {mine:12,.1f}  peer {peer:12,.1f}  ratio {ratio:5.2f} "
              f"(target {sign} {target:g}): {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
