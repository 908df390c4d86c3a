"""Fault injection: random workers SIGKILLed in the middle of a prefetching run. Every
instruction set must end exactly once, no done task may have run twice, nothing hangs
and nothing leaks (the autouse fixture checks processes and descriptors)."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
from workers import Chaos, Gate, Journal

import taskfarm
from schedulers import MaxThreadsScheduler

TASKS = 400


def _kill_workers(boss_pid: int, stop: threading.Event, kills: list[int], seed: int,
                  most: int = 10**9) -> None:
    """Until ``stop`` (or ``most`` kills), SIGKILL a random worker of the boss every few
    milliseconds."""
    rng = random.Random(seed)
    boss = psutil.Process(boss_pid)
    while len(kills) < most and not stop.wait(rng.uniform(0.002, 0.01)):
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


@contextlib.contextmanager
def _chaos(boss_pid: int, seed: int, most: int = 10**9) -> Iterator[list[int]]:
    """SIGKILL random workers of the boss (see _kill_workers) while in the block; the
    list of pids killed so far is what the block gets."""
    kills: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_workers, args=(boss_pid, stop, kills, seed, most))
    killer.start()
    try:
        yield kills
    finally:
        stop.set()
        killer.join()


def test_random_kills_lose_nothing_and_run_nothing_twice(tmp_path: Path) -> None:
    with taskfarm.Boss(MaxThreadsScheduler(2), workers=[Journal], on_error="continue") as boss:
        names = boss.set_instructions({"out_dir": str(tmp_path)}, {"spin": [2000] * TASKS})
        with _chaos(boss.pid, 7) as kills:
            boss.make_them_work()
            seen = [report for report in boss.as_completed(timeout=60)]
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


def _boss_fds(boss_pid: int) -> int:
    """The boss's descriptors that are not per worker (each worker has three: its two
    pipes and its pidfd)."""
    workers = len(psutil.Process(boss_pid).children())
    return len(os.listdir(f"/proc/{boss_pid}/fd")) - 3 * workers


def test_fault_injection_2000_tasks(tmp_path: Path, gate: Gate) -> None:
    rng = random.Random(11)
    hows = rng.choices(["ok", "raise", "exit", "hang"], weights=[960, 25, 10, 5], k=2000)
    with taskfarm.Boss(MaxThreadsScheduler(2), workers=[Chaos], on_error="continue") as boss:
        boss.set_instructions({"out_dir": str(tmp_path), "how": "ok"}, {"name": ["w1", "w2"]})
        boss.make_them_work()
        assert len([r for r in boss.as_completed(timeout=60)]) == 2
        fds_before = _boss_fds(boss.pid)
        names = boss.set_instructions({"out_dir": str(tmp_path), "gate": gate, "timeout": 0.5},
                                      {"how": hows})
        with _chaos(boss.pid, 3, 40) as kills:
            seen = [r for r in boss.as_completed(timeout=120)]
        fds_after = _boss_fds(boss.pid)
        report = boss.wait_till_finished(timeout=60)
    assert fds_after == fds_before, "the boss leaked descriptors"
    by_name = {t.name: t for t in report.tasks}
    assert sorted(r.name for r in seen) == sorted(names)  # exactly one report each
    assert len(by_name) == 2002 and report.pending == []
    counts = report.counts()
    assert counts["done"] + counts["failed"] + counts["killed"] + counts["timeout"] == 2002
    for name, how in zip(names, hows, strict=True):
        task = by_name[name]
        runs = (tmp_path / name).read_text().count("done") if (tmp_path / name).exists() else 0
        status = str(task.status)
        if task.ok:
            assert how == "ok" and runs == 1, f"{name} done, ran {runs} times"
        elif how == "exit":  # its own exit, or a chaos SIGKILL first
            assert status == "killed" and (task.exitcode == 7 or task.signal_name == "SIGKILL")
        elif how == "raise":  # its exception, or a chaos SIGKILL first
            assert status == "failed" or (status == "killed" and task.signal_name == "SIGKILL")
        elif how == "hang":  # its timeout, or a chaos SIGKILL first
            assert status == "timeout" or (status == "killed" and task.signal_name == "SIGKILL")
        elif how == "ok":
            assert status == "killed" and task.signal_name == "SIGKILL" and runs <= 1
    print(f"fault injection: {len(kills)} SIGKILLs, {counts}")
