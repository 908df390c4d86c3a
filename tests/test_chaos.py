"""Chaos run: 2,000 tasks under ``on_error="continue"``, in pool mode and in isolated
mode, while a thread of the test SIGKILLs random worker processes and (in isolated
mode) zygotes, and SIGSTOPs workers (and, twice, a zygote) for a while before it
SIGCONTs them. The tasks are ordinary ones (a few milliseconds of work), ones that
raise, ones that read a SharedArray, and ones that block until their 0.3 s timeout
ends them. About 10 s (pool) and 20 s (isolated) on a 2-core machine.

Checked, for every run:

- every task given has exactly one terminal report, streamed (``as_completed``) and
  final alike, with the same status in both; nothing is left pending or running;
- no task ran twice (``retries=0``: each run appends the task's name to a log in one
  write), and a done or failed task ran exactly once;
- each status is what happened: ``ok``/``shared`` tasks are done with the right
  result, ``raise`` tasks failed with their own exception, ``hang`` tasks timed out,
  or any of them was killed by a SIGKILL of the chaos thread (in isolated mode, also
  by its zygote's death, where how it ended is unknown); no more tasks are killed
  than the chaos thread can account for;
- nothing hangs: every wait is bounded, and a timeout fails the test;
- nothing is left: no process, no descriptor (the autouse fixture of conftest), no
  /dev/shm segment.

The seed is random for each run and named in every assertion message; set
``TASKFARM_CHAOS_SEED`` to run with a given one again (the chaos itself follows the
timing of the run, so a seed fixes the tasks and the chaos thread's choices, not
exactly which task each signal hits).
"""

from __future__ import annotations

import contextlib
import gc
import glob
import os
import random
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import psutil
import pytest
from chaos_workers import ChaosBoom, ChaosTask

import taskfarm
from schedulers import MaxThreadsScheduler

SEED_VARIABLE = "TASKFARM_CHAOS_SEED"
KINDS = ("ok", "shared", "raise", "hang")
WEIGHTS = (930, 20, 30, 20)        # per mille
HANG_TIMEOUT = 0.3                  # seconds: the timeout of the "hang" tasks
SHARED_VALUES = np.arange(1000.0)   # what a "shared" task sums
REPORT_WAIT = 30.0                  # the longest wait for any report
JOIN_WAIT = 10.0                    # the longest wait for the chaos thread to end
LEAK_WAIT = 5.0                     # every farm process is gone this long after the farm

# The chaos thread: one action per tick.
TICK = (0.005, 0.03)                # seconds between two actions
P_KILL, P_STOP, P_ZYGOTE_KILL, P_ZYGOTE_STOP = 0.2, 0.2, 0.03, 0.01
MOST_STOPPED = 2                    # workers stopped at once
LONG_STOP = 1.5                     # past a hang task's timeout and its grace period
MOST_ZYGOTE_KILLS = 6               # more than ZYGOTE_RESTARTS: the boss forks after that
MOST_ZYGOTE_STOPS = 2
ZYGOTE_STOP = (0.5, 3.0)            # seconds; from 2 s on the boss takes it for broken
OK_SPIN = 0.006                     # an ok task works up to this long (seconds)
WORKERS_PER_ZYGOTE = 2              # at most as many tasks run at once (the scheduler)


def _live(proc: psutil.Process) -> bool:
    """The process exists and is not a zombie."""
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _farm(boss_pid: int) -> tuple[list[psutil.Process], list[psutil.Process]]:
    """The boss's live worker processes and zygotes, now. Every worker leads a
    process group of its own (once it has started); a zygote is a child of the boss
    that does not, and whose own children are workers. Zombies are left out (the boss
    reaps a dead zygote only at the end)."""
    workers: list[psutil.Process] = []
    zygotes: list[psutil.Process] = []
    try:
        children = psutil.Process(boss_pid).children()
    except psutil.NoSuchProcess:
        return workers, zygotes
    for child in filter(_live, children):
        try:
            if os.getpgid(child.pid) == child.pid:
                workers.append(child)
                continue
            grandchildren = [g for g in child.children() if _live(g)]
        except (psutil.NoSuchProcess, ProcessLookupError):
            continue
        if grandchildren:  # else a worker the boss forked, before its setpgid
            zygotes.append(child)
        for worker in grandchildren:
            try:
                if os.getpgid(worker.pid) == worker.pid:
                    workers.append(worker)
            except ProcessLookupError:
                pass
    return workers, zygotes


def _farm_processes(main_pid: int) -> list[psutil.Process]:
    """Every live process of this program's farms, anywhere on the machine (orphans
    too, which the autouse fixture cannot see): the boss, and the zygotes and
    workers forked from it, keep its command line, which ends with our pid."""
    found: list[psutil.Process] = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "taskfarm._boss" in cmdline and cmdline[-1:] == [str(main_pid)] and _live(proc):
            found.append(proc)
    return found


class ChaosMonkey:
    """A thread that, until the block ends, SIGKILLs random workers (and zygotes, if
    ``isolated``) of the boss and SIGSTOPs workers, each SIGCONTed after a while.
    Leaving the block stops and joins the thread and SIGCONTs whatever it stopped,
    whatever happened in the block (each stopped process is held by a pidfd, so a
    SIGCONT never reaches a process that reused its pid)."""

    def __init__(self, boss_pid: int, isolated: bool, seed: int) -> None:
        self.boss_pid, self.isolated = boss_pid, isolated
        self.rng = random.Random(seed)
        self.kills: set[int] = set()        # workers SIGKILLed
        self.zygote_kills: set[int] = set() # zygotes SIGKILLed
        self.stops = 0                      # workers SIGSTOPped (and SIGCONTed)
        self.zygote_stops = 0               # zygotes SIGSTOPped (and SIGCONTed)
        self.errors: list[str] = []         # what went wrong in the thread itself
        # pid -> (pidfd, SIGCONT time, a zygote?) of each process stopped now
        self._stopped: dict[int, tuple[int, float, bool]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-monkey")

    def __enter__(self) -> ChaosMonkey:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        try:
            self._thread.join(JOIN_WAIT)
            if self._thread.is_alive():
                self.errors.append(f"the chaos thread did not end within {JOIN_WAIT} s")
        finally:
            self.resume_all()

    def summary(self) -> str:
        """What the thread did, in one line."""
        return (f"{len(self.kills)} worker SIGKILLs, {len(self.zygote_kills)} zygote "
                f"SIGKILLs, {self.stops} worker SIGSTOPs, {self.zygote_stops} zygote SIGSTOPs")

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.rng.uniform(*TICK)):
                self._resume_due()
                self._act()
        except BaseException as exc:
            self.errors.append(f"chaos thread: {exc!r}")
        finally:
            self.resume_all()

    def _act(self) -> None:
        workers, zygotes = _farm(self.boss_pid)
        roll = self.rng.random()
        if roll < P_KILL:
            if workers:
                victim = self.rng.choice(workers)
                if _send(victim.pid, signal.SIGKILL):
                    self.kills.add(victim.pid)
        elif roll < P_KILL + P_STOP:
            with self._lock:
                candidates = [w for w in workers if w.pid not in self._stopped]
                stopped = sum(not zygote for _, _, zygote in self._stopped.values())
                if candidates and stopped < MOST_STOPPED:
                    pause = LONG_STOP if self.rng.random() < 0.1 else self.rng.uniform(0.01, 0.4)
                    if self._pause(self.rng.choice(candidates), pause, False):
                        self.stops += 1
        elif roll < P_KILL + P_STOP + P_ZYGOTE_KILL:
            if self.isolated and zygotes and len(self.zygote_kills) < MOST_ZYGOTE_KILLS:
                victim = self.rng.choice(zygotes)
                if _send(victim.pid, signal.SIGKILL):
                    self.zygote_kills.add(victim.pid)
        elif roll < P_KILL + P_STOP + P_ZYGOTE_KILL + P_ZYGOTE_STOP:
            with self._lock:
                candidates = [z for z in zygotes if z.pid not in self._stopped]
                if self.isolated and candidates and self.zygote_stops < MOST_ZYGOTE_STOPS:
                    pause = self.rng.uniform(*ZYGOTE_STOP)
                    if self._pause(self.rng.choice(candidates), pause, True):
                        self.zygote_stops += 1

    def _pause(self, victim: psutil.Process, pause: float, zygote: bool) -> bool:
        """SIGSTOP one process (the lock held), to be SIGCONTed in ``pause`` seconds;
        False if it is gone."""
        try:
            pidfd = os.pidfd_open(victim.pid)
        except ProcessLookupError:
            return False
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGSTOP)
        except ProcessLookupError:
            os.close(pidfd)
            return False
        self._stopped[victim.pid] = (pidfd, time.monotonic() + pause, zygote)
        return True

    def _resume_due(self) -> None:
        now = time.monotonic()
        with self._lock:
            for pid in [p for p, (_, due, _) in self._stopped.items() if due <= now]:
                _resume(self._stopped.pop(pid)[0])

    def resume_all(self) -> None:
        """SIGCONT every process still stopped (idempotent, from any thread)."""
        with self._lock:
            while self._stopped:
                _resume(self._stopped.popitem()[1][0])


def _send(pid: int, sig: signal.Signals) -> bool:
    """Send ``sig``; False if the process is gone."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def _resume(pidfd: int) -> None:
    """SIGCONT a process held by its pidfd, and close the pidfd."""
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGCONT)
    except ProcessLookupError:
        pass  # it was killed meanwhile
    finally:
        os.close(pidfd)


def _segments() -> set[str]:
    """The SharedArray segments in /dev/shm made by this process."""
    return set(glob.glob(f"/dev/shm/taskfarm-{os.getpid()}-*"))


def _seed() -> int:
    """``TASKFARM_CHAOS_SEED``, or a fresh seed."""
    given = os.environ.get(SEED_VARIABLE)
    return int(given) if given else random.SystemRandom().randrange(2**32)


def _wrong(task: taskfarm.TaskReport, kind: str, runs: int, isolated: bool) -> str | None:
    """Why this ending of a ``kind`` task that ran ``runs`` times is impossible, or
    None when it is what could have happened."""
    status = str(task.status)
    if runs > 1:
        return f"ran {runs} times"
    if status == "killed":  # by the chaos thread, or with its zygote (how is unknown)
        if task.signal_name == "SIGKILL" or (isolated and task.signal_name is None
                                             and task.exitcode is None):
            return None
        return f"killed, but not by a SIGKILL: {task.signal_name} {task.exitcode} {task.reason}"
    if kind in ("ok", "shared"):
        expected: Any = task.name if kind == "ok" else float(SHARED_VALUES.sum())
        if status != "done" or runs != 1 or task.result != expected:
            return f"{status} after {runs} runs with {task.result!r} ({task.summary()})"
    elif kind == "raise":
        if status != "failed" or runs != 1 or not isinstance(task.exception, ChaosBoom) \
                or str(task.exception) != task.name:
            return f"{status} after {runs} runs: {task.summary()}"
    elif kind == "hang" and status != "timeout":
        return f"{status}: {task.summary()}"
    return None


def _check(names: list[str], kinds: list[str], seen: list[taskfarm.TaskReport],
           report: taskfarm.Report, runs: Counter[str], monkey: ChaosMonkey,
           isolated: bool) -> list[str]:
    """Every invariant the run broke (see the module docstring)."""
    problems: list[str] = []
    if monkey.errors:
        problems.append(f"chaos thread: {monkey.errors}")
    if not monkey.kills or not monkey.stops or (isolated and not monkey.zygote_kills):
        problems.append(f"too little chaos: {monkey.summary()}")
    # Exactly one terminal report per task, streamed and final alike.
    for label, reports in (("streamed", seen), ("final", report.tasks)):
        twice = sorted(n for n, c in Counter(r.name for r in reports).items() if c > 1)
        missing = sorted(set(names) - {r.name for r in reports})
        unknown = sorted({r.name for r in reports} - set(names))
        for what, which in (("two reports", twice), ("no report", missing),
                            ("a report but never given", unknown)):
            if which:
                problems.append(f"{label}: {len(which)} tasks with {what}: {which[:10]}")
    if report.pending or report.running or str(report.status) != "finished":
        problems.append(f"final report {report.status} ({report.reason}): pending "
                        f"{report.pending[:5]}, running {report.running[:5]}")
    final = {t.name: t for t in report.tasks}
    differ = [(r.name, str(r.status), str(final[r.name].status)) for r in seen
              if r.name in final and r.status is not final[r.name].status]
    if differ:
        problems.append(f"streamed and final statuses differ: {differ[:10]}")
    # How many times each task ran, and whether its ending is what could happen.
    if set(runs) - set(names):
        problems.append(f"runs of tasks never given: {sorted(set(runs) - set(names))[:10]}")
    wrong = [(name, kind, problem) for name, kind in zip(names, kinds, strict=True)
             if name in final
             and (problem := _wrong(final[name], kind, runs[name], isolated)) is not None]
    if wrong:
        problems.append(f"{len(wrong)} impossible endings: {wrong[:10]}")
    counts = report.counts()
    most_killed = len(monkey.kills) + WORKERS_PER_ZYGOTE * len(monkey.zygote_kills)
    if counts["killed"] > most_killed:
        problems.append(f"{counts['killed']} tasks killed; the chaos thread accounts for "
                        f"at most {most_killed}")
    if not counts["done"]:
        problems.append("no task done")
    return problems


def _chaos_run(log: Path, isolated: bool, tasks: int, seed: int) -> tuple[list[str], str]:
    """Run the farm under chaos; what went wrong, and a summary of the run. Every
    object that holds the SharedArray (the Boss, its reports) is gone on return."""
    rng = random.Random(seed)
    kinds = rng.choices(KINDS, weights=WEIGHTS, k=tasks)
    shared = taskfarm.SharedArray(SHARED_VALUES)
    seen: list[taskfarm.TaskReport] = []
    began = time.monotonic()
    with taskfarm.Boss(MaxThreadsScheduler(2), workers=[ChaosTask], on_error="continue",
                       isolated=isolated, start_method="fork") as boss:
        names = boss.set_instructions(
            {"chaos_log": str(log)},
            {"chaos_how": kinds,
             "timeout": [HANG_TIMEOUT if k == "hang" else None for k in kinds],
             "chaos_data": [shared if k == "shared" else None for k in kinds],
             "chaos_spin": [rng.uniform(0, OK_SPIN) if k == "ok" else 0.0 for k in kinds]})
        del shared
        hang = ""
        with ChaosMonkey(boss.pid, isolated, rng.getrandbits(64)) as monkey:
            boss.make_them_work()
            try:
                seen.extend(boss.as_completed(timeout=REPORT_WAIT))
            except TimeoutError as exc:
                missing = sorted(set(names) - {r.name for r in seen})
                hang = (f"hang: {exc}; {len(seen)} of {tasks} reports, missing "
                        f"{missing[:10]}")
        if not hang:
            try:
                report = boss.wait_till_finished(timeout=REPORT_WAIT)
            except TimeoutError as exc:
                hang = f"hang: {exc}"
    summary = f"{tasks} tasks in {time.monotonic() - began:.1f} s; {monkey.summary()}"
    left = _farm_processes(os.getpid())
    left = psutil.wait_procs(left, timeout=LEAK_WAIT)[1]
    left = [p for p in left if _live(p)]
    leaks = [f"processes left (parent, pid, status): "
             f"{[(_parent(p), p.pid, _status(p)) for p in left]}"] if left else []
    for proc in left:  # ours: leave nothing to the tests that follow
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    if hang:
        return [hang, *leaks], summary
    runs = Counter(log.read_text().splitlines()) if log.exists() else Counter()
    final = {t.name: str(t.status) for t in report.tasks}
    endings = Counter(f"{kind} {final.get(name)}" for name, kind in zip(names, kinds, strict=True))
    summary += f"; {dict(sorted(endings.items()))}"
    return leaks + _check(names, kinds, seen, report, runs, monkey, isolated), summary


def _parent(proc: psutil.Process) -> int | None:
    """Its parent's pid, or None if it is gone."""
    try:
        return proc.ppid()
    except psutil.NoSuchProcess:
        return None


def _status(proc: psutil.Process) -> str:
    """Its status (running, stopped...), or "gone"."""
    try:
        return proc.status()
    except psutil.NoSuchProcess:
        return "gone"


@pytest.mark.parametrize(("isolated", "tasks"), [(False, 2000), (True, 2000)],
                         ids=["pool", "isolated"])
def test_chaos_every_task_ends_once(tmp_path: Path, isolated: bool, tasks: int) -> None:
    seed = _seed()
    where = f"[{'isolated' if isolated else 'pool'} mode, {SEED_VARIABLE}={seed}]"
    segments_before = _segments()
    problems, summary = _chaos_run(tmp_path / "runs.log", isolated, tasks, seed)
    print(f"\nchaos {where}: {summary}")
    assert not problems, f"{where} {summary}:\n" + "\n".join(problems)
    gc.collect()  # a SharedArray is removed when collected
    left = _segments() - segments_before
    assert not left, f"{where} /dev/shm segments left: {sorted(left)}"
