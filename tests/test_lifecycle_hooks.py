"""The hooks around tasks in a worker process: ``teardown_process`` when a process ends
normally (the end of the farm, a stop, ``max_tasks_per_child``), ``on_error`` when a
task raises; and ``max_tasks_per_child`` itself."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest
from event_workers import (
    TEARDOWN_DIR,
    TEARDOWN_GATE,
    TEARDOWN_MAILBOX,
    BadTeardown,
    Checkpointer,
    GatedTeardown,
    Recycled,
    TornDown,
)
from workers import Gate, Mailbox, WorkerBoom

import taskfarm
from schedulers import MaxThreadsScheduler

pytestmark = pytest.mark.usefixtures("start_method")

WAIT = 30.0


@pytest.fixture
def marks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The directory teardown_process writes to, named in the environment the boss and
    its workers inherit."""
    out = tmp_path / "teardown"
    out.mkdir()
    monkeypatch.setenv(TEARDOWN_DIR, str(out))
    return out


def _torn_down(marks: Path) -> dict[int, list[str]]:
    return {int(p.name): p.read_text().splitlines() for p in marks.iterdir()}


# ---- teardown_process ------------------------------------------------------------------


def test_teardown_runs_once_in_each_process_when_the_farm_ends(marks: Path) -> None:
    report = taskfarm.batch_main({}, {"td_item": list(range(8))}, worker=TornDown,
                                 scheduler=MaxThreadsScheduler(2), print_report=None,
                                 progress=False)
    pids = {task.result for task in report.tasks}
    assert _torn_down(marks) == {pid: ["torn down"] for pid in pids}


def test_teardown_runs_when_the_farm_is_stopped(marks: Path) -> None:
    with taskfarm.Boss(MaxThreadsScheduler(1), workers=[TornDown]) as boss:
        boss.set_instructions({}, {"td_item": [1, 2]})
        boss.make_them_work()
        pids = {r.result for r in boss.as_completed(timeout=WAIT)}
        assert _torn_down(marks) == {}   # the process is still there, idle
        boss.stop()
        report = boss.get_report(interim=False, timeout=WAIT)
    assert len(report.tasks) == 2
    assert _torn_down(marks) == {pid: ["torn down"] for pid in pids}


def test_teardown_runs_in_each_process_of_an_isolated_farm(marks: Path) -> None:
    report = taskfarm.batch_main({}, {"td_item": list(range(3))}, worker=TornDown,
                                 isolated=True, print_report=None, progress=False)
    pids = {task.result for task in report.tasks}
    assert len(pids) == 3
    assert _torn_down(marks) == {pid: ["torn down"] for pid in pids}


def test_the_final_report_comes_once_every_teardown_has_run(
        marks: Path, gate: Gate, mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TEARDOWN_GATE, gate.path)
    monkeypatch.setenv(TEARDOWN_MAILBOX, mailbox.path)
    finals: list[taskfarm.Report] = []
    with taskfarm.Boss(MaxThreadsScheduler(1), workers=[GatedTeardown]) as boss:
        boss.set_instructions({"gated_item": 1, "name": "only"})
        boss.make_them_work()
        waiter = threading.Thread(
            target=lambda: finals.append(boss.wait_till_finished(timeout=WAIT)))
        waiter.start()
        try:
            pid = int(mailbox.read(1)[0].split()[2])   # teardown_process has begun
            waiter.join(0.5)   # a bounded look: it must still be waiting
            early = not waiter.is_alive()
            torn_down_when_returned = _torn_down(marks)
        finally:
            gate.release()
            waiter.join(WAIT)
    assert finals and finals[0]["only"].result == pid
    assert not early, (
        "wait_till_finished() returned the final report while teardown_process still "
        f"ran in worker process {pid} (marks then: {torn_down_when_returned})")
    assert _torn_down(marks) == {pid: ["torn down"]}


class HangingTeardown(taskfarm.Worker):
    """Its teardown_process says so, then never returns."""

    hang_mailbox: Mailbox

    def task(self) -> int:
        type(self).hang_mailbox = self.hang_mailbox   # for teardown_process
        return os.getpid()

    @classmethod
    def teardown_process(cls) -> None:
        cls.hang_mailbox.post(f"tearing down {os.getpid()}")
        threading.Event().wait()


def test_a_teardown_that_hangs_is_stopped_after_the_teardown_wait(
        mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKFARM_TEARDOWN_WAIT", "0.3")   # 30 s by default
    started = time.monotonic()
    report = taskfarm.batch_main({"hang_mailbox": mailbox}, {"name": ["h"]},
                                 worker=HangingTeardown, print_report=None, progress=False)
    assert time.monotonic() - started < 20
    assert report.tasks[0].ok
    pid = int(mailbox.read(1)[0].split()[-1])
    assert pid == report.tasks[0].result and not psutil.pid_exists(pid)


def test_an_error_in_teardown_is_printed_not_swallowed(
        capfd: pytest.CaptureFixture[str]) -> None:
    report = taskfarm.batch_main({"bad_td_item": 1}, worker=BadTeardown, print_report=None,
                                 progress=False)
    pid = report.tasks[0].result
    assert report.tasks[0].ok
    err = capfd.readouterr().err
    assert f"BadTeardown.teardown_process() raised in worker process {pid}" in err
    assert f"WorkerBoom: teardown failed in {pid}" in err
    assert "Traceback" in err


# ---- max_tasks_per_child ---------------------------------------------------------------


def test_a_process_is_replaced_after_max_tasks_per_child_and_torn_down(marks: Path) -> None:
    report = taskfarm.batch_main({}, {"recycle_item": list(range(6))}, worker=Recycled,
                                 scheduler=MaxThreadsScheduler(1), max_tasks_per_child=2,
                                 print_report=None, progress=False)
    runs = [task.result for task in sorted(report.tasks, key=lambda t: t.started or 0.0)]
    per_pid = Counter(pid for pid, _ in runs)
    assert len(per_pid) == 3 and set(per_pid.values()) == {2}
    assert sorted(count for _, count in runs) == [1, 1, 1, 2, 2, 2]  # each a fresh process
    assert all(task.pid == task.result[0] for task in report.tasks)
    assert _torn_down(marks) == {pid: ["torn down after 2"] for pid in per_pid}


def test_without_max_tasks_per_child_one_process_runs_everything(marks: Path) -> None:
    report = taskfarm.batch_main({}, {"recycle_item": list(range(6))}, worker=Recycled,
                                 scheduler=MaxThreadsScheduler(1), print_report=None,
                                 progress=False)
    assert len({task.pid for task in report.tasks}) == 1
    assert list(_torn_down(marks).values()) == [["torn down after 6"]]


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_bad_max_tasks_per_child_is_an_error_at_boss(bad: object) -> None:
    with pytest.raises(ValueError, match="max_tasks_per_child must be a positive integer"):
        taskfarm.Boss(max_tasks_per_child=bad)  # type: ignore[arg-type]


# ---- on_error --------------------------------------------------------------------------


def test_on_error_runs_in_the_worker_before_the_report_is_sent(tmp_path: Path) -> None:
    with taskfarm.Boss(MaxThreadsScheduler(2), workers=[Checkpointer],
                       on_error="continue") as boss:
        boss.set_instructions({"oe_dir": str(tmp_path)},
                              {"name": ["bad", "good"], "oe_fail": [True, False]})
        boss.make_them_work()
        seen = {}
        for task in boss.as_completed(timeout=WAIT):
            # Checked as each report arrives: the checkpoint is already there.
            seen[task.name] = (str(task.status),
                               (tmp_path / f"{task.name}.checkpoint").exists())
        boss.wait_till_finished(timeout=WAIT)
    assert seen == {"bad": ("failed", True), "good": ("done", False)}
    assert (tmp_path / "bad.checkpoint").read_text() == "WorkerBoom: task bad failed"


def test_an_error_in_on_error_is_a_note_on_the_task_exception(tmp_path: Path) -> None:
    with pytest.raises(WorkerBoom, match="task twice failed") as raised:
        taskfarm.batch_main({"oe_dir": str(tmp_path), "oe_hook_fails": True, "name": "twice"},
                            worker=Checkpointer, print_report=None, progress=False)
    notes = "\n".join(getattr(raised.value, "__notes__", []))
    assert "Checkpointer.on_error() raised in turn" in notes
    assert "ValueError: checkpoint of twice failed too" in notes
    assert (tmp_path / "twice.checkpoint").exists()   # it ran up to its own failure


def test_the_note_is_in_the_report_too(tmp_path: Path) -> None:
    report = taskfarm.batch_main({"oe_dir": str(tmp_path), "oe_hook_fails": True,
                                  "name": "noted"}, worker=Checkpointer, on_error="continue",
                                 print_report=None, progress=False)
    task = report["noted"]
    assert str(task.status) == "failed" and isinstance(task.exception, WorkerBoom)
    assert "checkpoint of noted failed too" in "\n".join(task.exception.__notes__)
    assert task.traceback is not None and "checkpoint of noted failed too" in task.traceback


def test_records_logged_in_teardown_process_reach_the_workers_stderr(tmp_path: Path) -> None:
    """At its end the boss no longer reads a worker: what teardown_process logs is
    printed on the worker's stderr rather than lost."""
    script = tmp_path / "farm.py"
    script.write_text(textwrap.dedent("""
        import logging
        import taskfarm

        class Saver(taskfarm.Worker):
            saver_x: int

            @classmethod
            def teardown_process(cls):
                logging.getLogger("saver").warning("state of the model written")

            def task(self):
                return self.saver_x

        taskfarm.batch_main({}, {"saver_x": [1]}, worker=Saver, print_report=None,
                            progress=False)
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "WARNING:saver:state of the model written" in done.stderr
