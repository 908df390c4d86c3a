"""A task being stopped gets a catchable signal first: its finally blocks and the
Worker's on_stop hook run before its process ends."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from workers import Checkpointing, Gate, Mailbox

import taskfarm
from schedulers import MaxThreadsScheduler

pytestmark = pytest.mark.usefixtures("start_method")


def _boss(gate: Gate, mailbox: Mailbox, out: Path, **common: object) -> taskfarm.Boss:
    boss = taskfarm.Boss(MaxThreadsScheduler(1), workers=[Checkpointing], on_error="continue")
    boss.set_instructions({"gate": gate, "mailbox": mailbox, "out_dir": str(out), **common},
                          {"name": ["a"]})
    return boss


def test_stop_rightnow_lets_the_task_clean_up(gate: Gate, mailbox: Mailbox,
                                              tmp_path: Path) -> None:
    with _boss(gate, mailbox, tmp_path) as boss:
        boss.make_them_work()
        mailbox.read(1)
        boss.stop_right_now()
        report = boss.wait_till_finished(timeout=30)
    assert str(report["a"].status) == "cancelled"
    assert (tmp_path / "a.finally").read_text() == "cleaned up"
    assert (tmp_path / "a.checkpoint").read_text() == "state saved"


def test_a_timeout_lets_the_task_clean_up(gate: Gate, mailbox: Mailbox, tmp_path: Path) -> None:
    with _boss(gate, mailbox, tmp_path, timeout=0.3) as boss:
        boss.make_them_work()
        report = boss.wait_till_finished(timeout=30)
    assert str(report["a"].status) == "timeout" and report["a"].signal_name == "SIGTERM"
    assert (tmp_path / "a.checkpoint").exists() and (tmp_path / "a.finally").exists()


def test_sigterm_from_outside_stops_the_task_cleanly(gate: Gate, mailbox: Mailbox,
                                                     tmp_path: Path) -> None:
    with _boss(gate, mailbox, tmp_path) as boss:
        boss.make_them_work()
        pid = int(mailbox.read(1)[0].split()[2])
        os.kill(pid, signal.SIGTERM)
        report = boss.wait_till_finished(timeout=30)
    task = report["a"]
    assert str(task.status) == "killed" and task.signal_name == "SIGTERM"
    assert (tmp_path / "a.checkpoint").exists()
