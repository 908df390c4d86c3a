"""Reliability figures: how fast a dead worker is reported, and how fast STOP_RIGHTNOW
clears a busy farm.

    python benchmarks/reliability.py [--kills 30] [--workers 50]

Goals (reliability issue): SIGKILL of a busy worker to its 'killed' TaskReport in the
main program <= 50 ms p50; STOP_RIGHTNOW with 50 running workers until all are gone
<= 200 ms.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import tempfile
import time

import psutil

import taskfarm
from schedulers import MaxThreadsScheduler


class Wait(taskfarm.Worker):
    """Announces its pid in a FIFO, then blocks until killed."""

    fifo: str
    item: int

    def task(self) -> None:
        fd = os.open(self.fifo, os.O_WRONLY)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.close(fd)
        signal.pause()


def _fifo() -> tuple[str, int]:
    path = os.path.join(tempfile.mkdtemp(), "pids")
    os.mkfifo(path)
    return path, os.open(path, os.O_RDWR)


def _next_pid(fd: int, buffer: list[bytes]) -> int:
    while b"\n" not in buffer[0]:
        buffer[0] += os.read(fd, 4096)
    line, buffer[0] = buffer[0].split(b"\n", 1)
    return int(line)


def kill_to_report(kills: int) -> list[float]:
    """Seconds from SIGKILL of a busy worker to its TaskReport, one kill at a time."""
    path, fd = _fifo()
    buffer = [b""]
    times = []
    with taskfarm.Boss(MaxThreadsScheduler(1), workers=[Wait], on_error="continue") as boss:
        boss.set_instructions({"fifo": path}, {"item": list(range(kills))})
        boss.make_them_work()
        for _ in range(kills):
            pid = _next_pid(fd, buffer)
            start = time.perf_counter()
            os.kill(pid, signal.SIGKILL)
            report = next(boss.as_completed(timeout=30))
            times.append(time.perf_counter() - start)
            assert str(report.status) == "killed"
    os.close(fd)
    return times


def stop_rightnow(workers: int) -> float:
    """Seconds from STOP_RIGHTNOW to every worker process gone, with ``workers`` busy."""
    path, fd = _fifo()
    buffer = [b""]
    with taskfarm.Boss(MaxThreadsScheduler(workers), workers=[Wait]) as boss:
        boss.set_instructions({"fifo": path}, {"item": list(range(workers))})
        boss.make_them_work()
        pids = [_next_pid(fd, buffer) for _ in range(workers)]
        procs = [psutil.Process(p) for p in pids]
        start = time.perf_counter()
        boss.stop_right_now()
        psutil.wait_procs(procs, timeout=30)
        elapsed = time.perf_counter() - start
        report = boss.wait_till_finished(timeout=30)
    os.close(fd)
    assert all(str(t.status) == "cancelled" for t in report.tasks)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=30)
    parser.add_argument("--workers", type=int, default=50)
    args = parser.parse_args()
    times = sorted(kill_to_report(args.kills))
    p50 = statistics.median(times) * 1e3
    print(f"SIGKILL of a busy worker -> 'killed' TaskReport, {args.kills} kills: p50 {p50:.1f} ms, "
          f"max {times[-1] * 1e3:.1f} ms (goal p50 <= 50 ms: {'met' if p50 <= 50 else 'MISSED'})")
    elapsed = stop_rightnow(args.workers) * 1e3
    print(f"STOP_RIGHTNOW with {args.workers} running workers, all gone in {elapsed:.0f} ms "
          f"(goal <= 200 ms: {'met' if elapsed <= 200 else 'MISSED'})")


if __name__ == "__main__":
    main()
