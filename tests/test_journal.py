"""The journal (``journal=PATH``): endings committed before the caller sees them,
resume without redoing what is done, idempotent input, ``after=`` satisfied by a
previous run, instructions that changed under a name, results of 100 MB, and a driver
SIGKILLed at random points of a campaign that still ends with every task done once
recorded and no recorded task run again.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

import taskfarm

pytestmark = pytest.mark.usefixtures("start_method")


class Journaled(taskfarm.Worker):
    """Appends its name to a side file each time it runs; fails when asked."""

    journaled_x: int
    side: str = ""
    fail_on: int = -1
    fail_flag: str = ""    # fail_on fails only while this file exists

    def task(self) -> int:
        if self.side:
            with open(self.side, "a") as out:
                out.write(f"{self.name}\n")
        if self.journaled_x == self.fail_on and (not self.fail_flag
                                                 or os.path.exists(self.fail_flag)):
            raise ValueError(f"bad {self.journaled_x}")
        return self.journaled_x * 10


def _runs(side: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    if side.exists():
        for line in side.read_text().split():
            counts[line] = counts.get(line, 0) + 1
    return counts


def _farm(journal: Path, side: Path, xs: list[int], **options: object) -> taskfarm.Report:
    return taskfarm.batch_main({"side": str(side), "name": "j[journaled_x]", **options},
                               {"journaled_x": xs}, worker=Journaled, journal=journal,
                               on_error="continue", print_report=None, progress=False)


def test_a_resumed_run_redoes_only_what_did_not_end_done(tmp_path: Path) -> None:
    journal, side, flag = tmp_path / "campaign.db", tmp_path / "side", tmp_path / "flag"
    flag.touch()
    first = _farm(journal, side, [0, 1, 2, 3], fail_on=2, fail_flag=str(flag))
    assert {t.name: str(t.status) for t in first.tasks} == {
        "j0": "done", "j1": "done", "j2": "failed", "j3": "done"}
    assert stat.S_IMODE(journal.stat().st_mode) == 0o600
    with sqlite3.connect(journal) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    flag.unlink()
    second = _farm(journal, side, [0, 1, 2, 3], fail_on=2, fail_flag=str(flag))  # j2 works
    by_name = {t.name: t for t in second.tasks}
    assert {n: (t.result, t.resumed) for n, t in by_name.items()} == {
        "j0": (0, True), "j1": (10, True), "j2": (20, False), "j3": (30, True)}
    assert _runs(side) == {"j0": 1, "j1": 1, "j2": 2, "j3": 1}
    assert by_name["j0"].ok and by_name["j0"].pid is not None  # what the first run recorded


def test_instructions_changed_under_a_recorded_name_are_refused(tmp_path: Path) -> None:
    journal, side = tmp_path / "j.db", tmp_path / "side"
    _farm(journal, side, [0])
    with pytest.raises(taskfarm.InstructionError, match="under other instructions"):
        _farm(journal, side, [0], fail_on=7)   # same name, another fail_on
    assert _runs(side) == {"j0": 1}


def test_with_a_journal_a_name_given_twice_runs_once(tmp_path: Path) -> None:
    journal, side = tmp_path / "j.db", tmp_path / "side"
    with taskfarm.Boss(workers=[Journaled], journal=journal, keep_reports=False) as boss:
        boss.make_them_work()
        common = {"side": str(side), "name": "j[journaled_x]"}
        assert boss.set_instructions(common, {"journaled_x": [1, 2]}) == ["j1", "j2"]
        first = sorted(r.name for r in boss.as_completed(timeout=30))
        # Delivered again (at least once): already done, so read back, not run.
        assert boss.set_instructions(common, {"journaled_x": [2, 3]}) == ["j2", "j3"]
        again = {r.name: r.resumed for r in boss.as_completed(timeout=30)}
    assert first == ["j1", "j2"] and again == {"j2": True, "j3": False}
    assert _runs(side) == {"j1": 1, "j2": 1, "j3": 1}


def test_after_is_satisfied_by_a_task_done_in_an_earlier_run(tmp_path: Path) -> None:
    journal, side = tmp_path / "j.db", tmp_path / "side"
    _farm(journal, side, [1])
    report = taskfarm.batch_main({"side": str(side), "after": ["j1"]},
                                 {"journaled_x": [5], "name": ["later"]}, worker=Journaled,
                                 journal=journal, print_report=None, progress=False)
    assert report["later"].ok and report["later"].result == 50


class BigResult(taskfarm.Worker):
    megabytes: int

    def task(self) -> np.ndarray:
        return np.full(self.megabytes << 17, 7.0)   # 8-byte floats


def test_a_100_mb_result_round_trips_through_the_journal(tmp_path: Path) -> None:
    journal = tmp_path / "big.db"
    options = {"worker": BigResult, "journal": journal, "print_report": None,
               "progress": False}
    first = taskfarm.batch_main({"megabytes": 100, "name": "big"}, **options)  # type: ignore[arg-type]
    assert first["big"].result.nbytes == 100 << 20
    files = list((tmp_path / "big.db.results").iterdir())
    assert len(files) == 1 and files[0].stat().st_size > 100 << 20
    assert os.path.getsize(journal) < 1 << 20          # not inside the database
    del first
    second = taskfarm.batch_main({"megabytes": 100, "name": "big"}, **options)  # type: ignore[arg-type]
    result = second["big"].result
    assert second["big"].resumed and result.nbytes == 100 << 20 and result[-1] == 7.0


def test_an_ending_is_in_the_journal_before_the_caller_sees_its_report(
        tmp_path: Path) -> None:
    journal = tmp_path / "j.db"
    with taskfarm.Boss(workers=[Journaled], journal=journal) as boss:
        boss.set_instructions({"name": "j[journaled_x]", "fail_on": 3},
                              {"journaled_x": list(range(8))})
        boss.make_them_work(terminate=True)
        with sqlite3.connect(journal) as reader:
            for report in boss.as_completed(timeout=30):
                row = reader.execute("SELECT status FROM tasks WHERE name = ?",
                                     (report.name,)).fetchone()
                assert row == (str(report.status),)
        with pytest.raises(ValueError, match="bad 3"):
            boss.wait_till_finished(timeout=30)


DRIVER = textwrap.dedent("""
    import os, sys, time
    import taskfarm
    from schedulers import MaxThreadsScheduler

    class Step(taskfarm.Worker):
        step: int
        side: str

        def task(self):
            time.sleep(0.02)
            with open(self.side, "a") as out:   # one line per execution, with its run
                out.write(f"{self.name} {os.environ['CAMPAIGN_RUN']}\\n")
            return self.step

    boss = taskfarm.Boss(MaxThreadsScheduler(2), workers=[Step], journal=sys.argv[1],
                         on_error="continue")
    print(boss.pid, flush=True)
    boss.set_instructions({"side": sys.argv[2], "name": "step[step]"},
                          {"step": list(range(int(sys.argv[3])))})
    boss.make_them_work()
    report = boss.wait_till_finished()
    print("ALL DONE" if all(t.ok for t in report.tasks) else "NOT DONE", flush=True)
    boss.close()
""")


def test_a_driver_killed_at_random_points_resumes_to_the_end_without_redoing(
        tmp_path: Path) -> None:
    script, journal, side = tmp_path / "driver.py", tmp_path / "c.db", tmp_path / "side"
    script.write_text(DRIVER)
    tasks, seed = 150, random.randrange(1 << 30)
    chance = random.Random(seed)
    bosses: list[int] = []

    def start(run: int) -> subprocess.Popen[str]:
        env = {**os.environ, "CAMPAIGN_RUN": str(run)}
        proc = subprocess.Popen([sys.executable, str(script), str(journal), str(side),
                                 str(tasks)], stdout=subprocess.PIPE, text=True, env=env,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        assert proc.stdout is not None
        bosses.append(int(proc.stdout.readline()))
        return proc

    try:
        for run in range(1, 7):
            proc = start(run)
            lines = len(side.read_text().splitlines()) if side.exists() else 0
            deadline = time.monotonic() + 30
            while (side.read_text().count("\n") if side.exists() else 0) <= lines:
                if proc.poll() is not None:   # nothing was left to run
                    break
                assert time.monotonic() < deadline, f"seed {seed}"
                time.sleep(0.005)
            time.sleep(chance.uniform(0.0, 0.3))    # then a random point of the run
            proc.kill()
            proc.wait(30)
        proc = start(99)
        out, _ = proc.communicate(timeout=120)
        assert "ALL DONE" in out, f"seed {seed}: {out}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with sqlite3.connect(journal) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        recorded = dict(db.execute("SELECT name, run FROM tasks WHERE status = 'done'"))
        runs = {run_id: i for i, (run_id,) in enumerate(db.execute("SELECT id FROM runs"), 1)}
    assert len(recorded) == tasks, f"seed {seed}"
    executions: dict[str, list[int]] = {}
    for line in side.read_text().splitlines():
        name, run = line.split()
        executions.setdefault(name, []).append(int(run))
    for name, run_id in recorded.items():
        done_in = runs[run_id] if runs[run_id] <= 6 else 99   # the journal's run -> ours
        later = [r for r in executions[name] if r > done_in]
        assert not later, f"seed {seed}: {name} recorded done in run {done_in}, ran again"
    gone = psutil.wait_procs([psutil.Process(p) for p in bosses if psutil.pid_exists(p)],
                             timeout=10)[1]
    assert not gone, f"seed {seed}: boss processes left: {gone}"


def test_a_campaign_resumes_with_other_policies(tmp_path: Path) -> None:
    """Timeout and retries say how a task runs, not what it computes."""
    journal, side = tmp_path / "j.db", tmp_path / "side"
    _farm(journal, side, [0, 1], timeout=60)
    again = _farm(journal, side, [0, 1], timeout=600, retries=2)
    assert all(t.resumed for t in again.tasks) and _runs(side) == {"j0": 1, "j1": 1}
