"""Soak of a long-lived service: the detector-quality service of
``examples/streaming_service.py``, run at a short stride (a new SharedArray and a few
jobs every stride), measured every minute. Not part of CI (it runs for minutes).

Each line gives the resident memory (RSS, MiB) and open descriptors of the service's
main program, of its boss (the child running ``-m taskfarm._boss``) and of each worker
(the boss's children), the number of processes, this service's segments in /dev/shm
(KiB of the files ``taskfarm-<main pid>-*``), and the descriptors that map segments
(Python's mmap keeps one per mapped array: they follow the arrays in use, and are left
out of the fds columns). Each figure is the smallest of 10 readings over the 5 seconds
before the line: the buffers of the jobs at hand come and go, a leak raises the floor.

The service runs with glibc's mmap threshold fixed (``MALLOC_MMAP_THRESHOLD_`` in its
environment, inherited by its boss and workers), so that a job's big buffers go back to
the system when freed. By default glibc raises the threshold as such buffers are freed
and keeps the later ones in its heap, whose high-water mark creeps up to the largest
job seen: a worker rose about 5 MiB over 8 minutes that way, then stayed flat.
``--glibc-default`` measures without it.

At the end the service is stopped with SIGTERM (it must exit 0), and the verdict is
"flat" when every RSS and the /dev/shm usage is within 2 MiB of its value at minute 5
(at the first line if the run is shorter than 5 minutes), and every descriptor count
and the process count are equal to it.

    python benchmarks/soak_service.py [--minutes 30] [--stride 0.2] [--interval 60]
                                      [--glibc-default]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "streaming_service.py"
MIB = 2**20
RSS_SLACK = 2 * MIB
REFERENCE_MINUTE = 5
READINGS, READINGS_OVER = 10, 5.0     # each line: the floor of 10 readings over 5 s
MMAP_THRESHOLD = "131072"             # glibc's default starting threshold, kept fixed


def descriptors(pid: int) -> tuple[int, int]:
    """Open descriptors of a process: (others, those of SharedArray segments). Python's
    mmap keeps a descriptor of each mapped file, so the second count follows the arrays
    in use at that moment (it is shown, not judged: a mapping kept too long shows in
    RSS and /dev/shm instead)."""
    others = segments = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:      # closed meanwhile
            continue
        if target.startswith("/dev/shm/taskfarm-"):
            segments += 1
        else:
            others += 1
    return others, segments


def measure(main: psutil.Process) -> dict[str, int]:
    """Every figure of one reading, by name: ``main rss``, ``boss fds``, ``worker 0
    rss`` (workers by pid order), ``processes``, ``shm``, ``mapped``."""
    figures: dict[str, int] = {"mapped": 0}
    boss = next(p for p in main.children() if "taskfarm._boss" in " ".join(p.cmdline()))
    workers = sorted(boss.children(recursive=True), key=lambda p: p.pid)
    named = [("main", main), ("boss", boss)]
    named += [(f"worker {n}", p) for n, p in enumerate(workers)]
    for name, process in named:
        figures[f"{name} rss"] = process.memory_info().rss
        figures[f"{name} fds"], mapped = descriptors(process.pid)
        figures["mapped"] += mapped
    figures["processes"] = len(named)
    prefix = f"taskfarm-{main.pid}-"
    figures["shm"] = sum(entry.stat().st_size for entry in os.scandir("/dev/shm")
                         if entry.name.startswith(prefix))
    return figures


def floor(main: psutil.Process, readings: int, spread: float) -> dict[str, int]:
    """The smallest value of each figure over ``readings`` readings ``spread`` seconds
    apart: the buffers of the jobs at hand come and go, a leak raises the floor."""
    lows: dict[str, int] | None = None
    for n in range(readings):
        if n:
            time.sleep(spread)
        try:
            figures = measure(main)
        except (psutil.NoSuchProcess, FileNotFoundError):   # a process just ended
            continue
        lows = figures if lows is None else {k: min(v, figures.get(k, v))
                                            for k, v in lows.items()}
    if lows is None:
        raise SystemExit("the service's processes could not be measured")
    return lows


def line(elapsed: float, figures: dict[str, int]) -> str:
    workers = sorted({key.rsplit(" ", 1)[0] for key in figures if key.startswith("worker")})
    rss = "/".join(f"{figures[f'{w} rss'] / MIB:.1f}" for w in workers)
    fds = "/".join(str(figures[f"{w} fds"]) for w in workers)
    return (f"{elapsed / 60:6.1f}  {figures['main rss'] / MIB:8.1f}  "
            f"{figures['boss rss'] / MIB:8.1f}  {rss:>17}  {figures['main fds']:8d}  "
            f"{figures['boss fds']:8d}  {fds:>10}  {figures['processes']:5d}  "
            f"{figures['shm'] / 1024:8.0f}  {figures['mapped']:6d}")


def verdict(reference: dict[str, int], last: dict[str, int], minute: float) -> str:
    """'flat', or what moved since the reference line."""
    moved = []
    for key in sorted(reference.keys() | last.keys()):
        before, after = reference.get(key), last.get(key)
        if before is None or after is None:
            moved.append(f"{key} {'appeared' if before is None else 'disappeared'}")
        elif key.endswith("rss") or key == "shm":
            if abs(after - before) > RSS_SLACK:
                moved.append(f"{key} {before / MIB:.1f} -> {after / MIB:.1f} MiB")
        elif key == "mapped":
            continue
        elif after != before:
            moved.append(f"{key} {before} -> {after}")
    since = f"its value at minute {minute:.1f}"
    if not moved:
        return f"verdict: flat (every figure within 2 MiB or equal to {since})"
    return f"verdict: NOT flat, since {since}: " + "; ".join(moved)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--stride", type=float, default=0.2, help="the service's stride, s")
    parser.add_argument("--interval", type=float, default=60, help="seconds between lines")
    parser.add_argument("--glibc-default", action="store_true",
                        help="leave glibc's mmap threshold dynamic (see above)")
    args = parser.parse_args()
    env = dict(os.environ)
    if not args.glibc_default:
        env["MALLOC_MMAP_THRESHOLD_"] = MMAP_THRESHOLD
    output = tempfile.TemporaryFile("w+")
    service = subprocess.Popen([sys.executable, str(EXAMPLE), "--stride", str(args.stride),
                                "--quiet"], stdout=output, stderr=subprocess.STDOUT, text=True,
                               env=env)
    samples: list[tuple[float, dict[str, int]]] = []
    try:
        main_process = psutil.Process(service.pid)
        began = time.monotonic()
        malloc = ("glibc's default" if args.glibc_default
                  else f"MALLOC_MMAP_THRESHOLD_={MMAP_THRESHOLD}")
        print(f"streaming service at a {args.stride} s stride, pid {service.pid}, {malloc}")
        print("minute  main_MiB  boss_MiB        worker_MiB  main_fds  boss_fds  worker_fds"
              "  procs   shm_KiB  mapped")
        spread = min(READINGS_OVER, args.interval / 2) / (READINGS - 1)
        for n in range(1, int(args.minutes * 60 / args.interval) + 1):
            first_reading = began + n * args.interval - spread * (READINGS - 1)
            time.sleep(max(0.0, first_reading - time.monotonic()))
            if service.poll() is not None:
                raise SystemExit(f"the service exited early (status {service.returncode})")
            samples.append((n * args.interval, floor(main_process, READINGS, spread)))
            print(line(*samples[-1]), flush=True)
        service.send_signal(signal.SIGTERM)     # a clean stop: it must exit 0
        status = service.wait(timeout=60)
    finally:
        if service.poll() is None:
            service.kill()
            service.wait(timeout=60)
    output.seek(0)
    summary = output.read().partition("\nsummary:")[2]
    print(f"\nthe service exited with status {status}; its summary:{summary}", end="")
    if not samples:
        raise SystemExit("no line: run for at least one --interval")
    at, reference = next(((t, s) for t, s in samples if t >= REFERENCE_MINUTE * 60 - 1),
                         samples[0])
    print(verdict(reference, samples[-1][1], at / 60))
    if status != 0:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
