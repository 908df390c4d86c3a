"""Tasks that fail, crash or cannot report: each ends in exactly one terminal state,
on the right task only, and a dead worker never hangs the farm."""

from __future__ import annotations

import traceback

import pytest
from workers import Blocker, Gate, Mailbox, Misbehave, OddError, WorkerBoom

import taskfarm
from schedulers import MaxThreadsScheduler

pytestmark = pytest.mark.usefixtures("start_method")

# how -> (status, exception type, text in the reason or message)
CRASHES = [
    ("raise", "failed", WorkerBoom, "boom 7"),
    ("sigkill", "killed", taskfarm.WorkerKilledError, "killed by SIGKILL"),
    ("exit3", "killed", taskfarm.WorkerKilledError, "exited with code 3"),
    ("segfault", "killed", taskfarm.WorkerKilledError, "killed by SIGSEGV"),
    ("unpicklable_result", "failed", taskfarm.RemoteTaskError, "could not be pickled"),
    ("unpicklable_exception", "failed", taskfarm.RemoteTaskError, "carries a lock"),
    ("odd_exception", "failed", taskfarm.RemoteTaskError, "odd 1 2"),
]


@pytest.mark.parametrize(("how", "status", "error", "text"), CRASHES,
                         ids=[c[0] for c in CRASHES])
def test_keep_going_records_the_failure_on_its_task_only(how: str, status: str, error: type,
                                                        text: str) -> None:
    hows = ["ok", "ok", how, "ok", "ok", "ok"]
    report = taskfarm.batch_main({"tag": 7}, {"how": hows}, worker=Misbehave,
                                 on_error="continue", scheduler=MaxThreadsScheduler(2),
                                 print_report=None)
    assert report.status is taskfarm.ReportStatus.FINISHED
    bad = report["Misbehave-2"]
    assert str(bad.status) == status
    assert isinstance(bad.exception, error)
    assert text in f"{bad.exception} {bad.reason}"
    others = [t for t in report.tasks if t.name != "Misbehave-2"]
    assert len(others) == 5 and all(t.ok and t.result == 7 for t in others)
    if status == "killed":
        assert bad.pid is not None and (bad.signal_name or bad.exitcode == 3)


def test_fail_fast_reraises_the_workers_own_exception_with_its_traceback() -> None:
    with taskfarm.Boss(MaxThreadsScheduler(1), workers=[Misbehave]) as boss:
        boss.set_instructions({"tag": 3}, {"how": ["ok", "raise", "ok", "ok"]})
        boss.make_them_work()
        with pytest.raises(WorkerBoom, match="boom 3") as info:
            boss.wait_till_finished(timeout=30)
        report = boss.get_report()
    frames = "".join(traceback.format_tb(info.value.__traceback__))
    assert "raise_boom" in frames and "workers.py" in frames  # the worker's own frames
    assert report.status is taskfarm.ReportStatus.FAILED
    statuses = [str(t.status) for t in report.tasks]
    assert statuses[:2] == ["done", "failed"]
    # Tasks queued behind the failing one in its worker (tiny tasks are prefetched)
    # may have started before the boss heard of the failure: they end done or
    # cancelled; the others stay pending.
    assert set(statuses[2:]) <= {"done", "cancelled"}
    assert len(report.tasks) + len(report.pending) == 4
    assert "raise_boom" in report["Misbehave-1"].traceback


def test_fail_fast_cancels_running_tasks(gate: Gate, mailbox: Mailbox) -> None:
    with taskfarm.Boss(MaxThreadsScheduler(2), workers=[Blocker, Misbehave]) as boss:
        boss.set_instructions({"gate": gate, "mailbox": mailbox, "label": "slow"})
        boss.make_them_work()
        mailbox.read(1)
        boss.set_instructions({"how": "sigkill"})
        with pytest.raises(taskfarm.WorkerKilledError, match="killed by SIGKILL") as info:
            boss.wait_till_finished(timeout=30)
        report = boss.get_report()
    assert info.value.signal_name == "SIGKILL"
    statuses = {t.name: str(t.status) for t in report.tasks}
    assert statuses == {"Blocker-0": "cancelled", "Misbehave-1": "killed"}
    assert "fail-fast" in report["Blocker-0"].reason


def test_batch_main_prints_the_report_then_reraises(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(WorkerBoom):
        taskfarm.batch_main({"how": "raise"}, worker=Misbehave)
    out = capsys.readouterr().out
    assert "taskfarm report: failed" in out and "raise_boom" in out


def test_killed_slot_is_replaced_and_the_farm_goes_on() -> None:
    hows = ["sigkill", "exit3"] * 5 + ["ok"] * 10
    report = taskfarm.batch_main({}, {"how": hows}, worker=Misbehave, on_error="continue",
                                 scheduler=MaxThreadsScheduler(2), print_report=None)
    counts = report.counts()
    assert counts["killed"] == 10 and counts["done"] == 10 and len(report.tasks) == 20


def test_exception_that_cannot_be_rebuilt_arrives_as_text() -> None:
    with pytest.raises(taskfarm.RemoteTaskError) as info:
        taskfarm.batch_main({"how": "odd_exception"}, worker=Misbehave, print_report=None)
    assert info.value.type_name.endswith("OddError")
    assert "odd 1 2" in str(info.value) and "Worker traceback" in str(info.value)
    assert OddError.__name__ in info.value.traceback_text
