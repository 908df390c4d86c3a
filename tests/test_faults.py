"""Fault injection: random workers SIGKILLed in the middle of a prefetching run. Every
instruction set must end exactly once, no done task may have run twice, nothing hangs
and nothing leaks (the autouse fixture checks processes and descriptors)."""

from __future__ import annotations

import os
import random
import signal
import threading
from pathlib import Path

import psutil
from workers import Journal

import taskfarm
from schedulers import MaxThreadsScheduler

TASKS = 400


def _kill_workers(boss_pid: int, stop: threading.Event, kills: list[int], seed: int) -> None:
    """Until ``stop``, SIGKILL a random worker of the boss every few milliseconds."""
    rng = random.Random(seed)
    boss = psutil.Process(boss_pid)
    while not stop.wait(rng.uniform(0.002, 0.01)):
        try:
            workers = boss.children()
        except psutil.NoSuchProcess:
            return
        if workers:
            victim = rng.choice(workers)
            try:
                os.kill(victim.pid, signal.SIGKILL)
                kills.append(victim.pid)
            except ProcessLookupError:
                pass


def test_random_kills_lose_nothing_and_run_nothing_twice(tmp_path: Path) -> None:
    kills: list[int] = []
    stop = threading.Event()
    with taskfarm.Boss(MaxThreadsScheduler(2), workers=[Journal], on_error="continue") as boss:
        names = boss.set_instructions({"out_dir": str(tmp_path)}, {"spin": [2000] * TASKS})
        killer = threading.Thread(target=_kill_workers, args=(boss.pid, stop, kills, 7))
        killer.start()
        boss.make_them_work()
        try:
            seen = [report for report in boss.as_completed(timeout=60)]
        finally:
            stop.set()
            killer.join()
        report = boss.wait_till_finished(timeout=60)
    assert kills, "the test killed no worker"
    # Exactly one terminal report per instruction set, streamed and final alike.
    assert sorted(r.name for r in report.tasks) == sorted(names)
    assert sorted(r.name for r in seen) == sorted(names)
    assert report.pending == [] and report.running == []
    counts = report.counts()
    assert counts["done"] + counts["killed"] == TASKS and counts["killed"] >= 1
    for task in report.tasks:
        path = tmp_path / task.name
        runs = path.read_text().count("\n") if path.exists() else 0
        if task.ok:
            assert runs == 1, f"{task.name} is done but ran {runs} times"
        else:
            assert task.signal_name == "SIGKILL" and runs <= 1
