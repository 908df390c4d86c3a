"""The seven control signals, each with real processes, synchronised on FIFOs."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest
from workers import Add, Blocker, Gate, Mailbox

import taskfarm
from schedulers import MaxThreadsScheduler

pytestmark = pytest.mark.usefixtures("start_method")


def _blocking_boss(gate: Gate, mailbox: Mailbox, labels: list[str], out_dir: Path | str = "",
                   threads: int = 2, **options: object) -> taskfarm.Boss:
    boss = taskfarm.Boss(MaxThreadsScheduler(threads), workers=[Blocker, Add], **options)
    boss.set_instructions({"gate": gate, "mailbox": mailbox, "out_dir": str(out_dir),
                           "name": "t_[label]"}, {"label": labels})
    return boss


def _started(mailbox: Mailbox, count: int) -> dict[str, int]:
    """label -> pid of the next ``count`` tasks to start."""
    lines = mailbox.read(count)
    return {label: int(pid) for _, label, pid in (line.split() for line in lines)}


def test_send_report_while_working(gate: Gate, mailbox: Mailbox) -> None:
    with _blocking_boss(gate, mailbox, ["a", "b", "c"]) as boss:
        boss.make_them_work()
        _started(mailbox, 2)
        report = boss.get_report(interim=True)
        assert report.status is taskfarm.ReportStatus.INTERIM
        assert sorted(report.running) == ["t_a", "t_b"]
        assert [p["name"] for p in report.pending] == ["t_c"]
        assert report.tasks == []
        gate.release(3)
        final = boss.wait_till_finished(timeout=30)
    assert final.status is taskfarm.ReportStatus.FINISHED and len(final.tasks) == 3


def test_halt_stops_launching_and_resume_launches_again(gate: Gate, mailbox: Mailbox) -> None:
    with _blocking_boss(gate, mailbox, ["a", "b", "c", "d"]) as boss:
        boss.make_them_work()
        _started(mailbox, 2)
        boss.halt()  # HALT: running tasks go on, nothing new starts
        boss.get_report()  # the boss has read the HALT (and taken back queued tasks)
        gate.release(2)
        done = [next(boss.as_completed(timeout=30)) for _ in range(2)]
        assert {r.name for r in done} == {"t_a", "t_b"}
        report = boss.get_report(interim=True)
        assert report.status is taskfarm.ReportStatus.PENDING
        assert [p["name"] for p in report.pending] == ["t_c", "t_d"] and report.running == []
        boss.make_them_work()  # RESUME
        assert set(_started(mailbox, 2)) == {"c", "d"}
        gate.release(2)
        final = boss.wait_till_finished(timeout=30)
    assert len(final.tasks) == 4 and all(t.ok for t in final.tasks)


def test_as_completed_on_a_halted_boss_yields_the_running_then_says_why_it_stops(
        gate: Gate, mailbox: Mailbox) -> None:
    with _blocking_boss(gate, mailbox, ["a", "b"]) as boss:   # never told to work
        with pytest.raises(taskfarm.BossStateError, match="halted with work pending"):
            next(boss.as_completed(timeout=30))
    with _blocking_boss(gate, mailbox, ["a", "b", "c", "d"]) as boss:
        boss.make_them_work()
        _started(mailbox, 2)
        boss.halt()
        gate.release(2)
        reports = boss.as_completed(timeout=30)
        assert {next(reports).name, next(reports).name} == {"t_a", "t_b"}
        with pytest.raises(taskfarm.BossStateError, match="call make_them_work"):
            next(reports)
        boss.make_them_work()
        gate.release(2)
        assert {r.name for r in boss.as_completed(timeout=30)} == {"t_c", "t_d"}


def test_end_finishes_pending_work_then_exits(gate: Gate, mailbox: Mailbox) -> None:
    with _blocking_boss(gate, mailbox, ["a", "b", "c"], threads=1) as boss:
        boss.make_them_work(terminate=True)  # RESUME + END
        gate.release(3)
        report = boss.get_report(interim=False, timeout=30)
        assert boss.finished
        with pytest.raises(taskfarm.BossStateError, match="has exited"):
            boss.set_instructions({"x": 1})
    assert report.status is taskfarm.ReportStatus.FINISHED
    assert [t.name for t in report.tasks] == ["t_a", "t_b", "t_c"]


def test_instructions_after_end_are_refused(gate: Gate, mailbox: Mailbox) -> None:
    with _blocking_boss(gate, mailbox, ["a"]) as boss:
        boss.make_them_work()
        boss.end()
        with pytest.raises(taskfarm.BossStateError, match="no instructions after end"):
            boss.set_instructions({"x": 1})
        gate.release(1)
        assert len(boss.wait_till_finished(timeout=30).tasks) == 1


def test_stop_lets_running_tasks_finish_and_reports_pending(gate: Gate, mailbox: Mailbox
                                                            ) -> None:
    with _blocking_boss(gate, mailbox, ["a", "b", "c", "d"]) as boss:
        boss.make_them_work()
        _started(mailbox, 2)
        boss.stop()
        boss.get_report()  # the boss has read the STOP (and taken back queued tasks)
        gate.release(2)
        report = boss.wait_till_finished(timeout=30)
    assert report.status is taskfarm.ReportStatus.STOPPED
    assert sorted(t.name for t in report.tasks) == ["t_a", "t_b"]
    assert all(t.ok for t in report.tasks)
    assert [p["name"] for p in report.pending] == ["t_c", "t_d"]


def test_stop_rightnow_terminates_running_tasks(gate: Gate, mailbox: Mailbox) -> None:
    with _blocking_boss(gate, mailbox, ["a", "b", "c"]) as boss:
        boss.make_them_work()
        pids = _started(mailbox, 2).values()
        boss.stop_right_now()
        report = boss.wait_till_finished(timeout=30)
        assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"
                       for p in pids)
    assert report.status is taskfarm.ReportStatus.STOPPED
    assert sorted((t.name, str(t.status)) for t in report.tasks) == [
        ("t_a", "cancelled"), ("t_b", "cancelled")]
    assert all("STOP_RIGHTNOW" in t.reason for t in report.tasks)
    assert [p["name"] for p in report.pending] == ["t_c"]


def test_stop_listening_leaves_running_tasks_to_finish_alone(
        gate: Gate, mailbox: Mailbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKFARM_TEARDOWN_WAIT", "0.1")   # not a limit on running tasks
    out = tmp_path / "out"
    out.mkdir()
    with _blocking_boss(gate, mailbox, ["a", "b", "c"], out_dir=out) as boss:
        boss.make_them_work()
        pids = list(_started(mailbox, 2).values())
        boss.stop_listening()
        report = boss.wait_till_finished(timeout=30)
        assert report.status is taskfarm.ReportStatus.STOPPED
        assert sorted(report.running) == ["t_a", "t_b"]
        assert [p["name"] for p in report.pending] == ["t_c"]
        with pytest.raises(psutil.TimeoutExpired):   # the boss waits for them, past 0.1 s
            psutil.Process(boss.pid).wait(1.0)
        procs = [psutil.Process(p) for p in pids]  # still working, on their own
        gate.release(2)
        psutil.wait_procs(procs, timeout=30)
    assert sorted(p.name for p in out.iterdir()) == ["a", "b"]  # they did finish


def test_make_them_work_stop_listening_finishes_everything_deaf(gate: Gate, mailbox: Mailbox
                                                                ) -> None:
    with _blocking_boss(gate, mailbox, ["a", "b"]) as boss:
        boss.make_them_work(stop_listening=True)
        with pytest.raises(taskfarm.BossStateError, match="no longer listens"):
            boss.halt()
        gate.release(2)
        report = boss.wait_till_finished(timeout=30)
    assert report.status is taskfarm.ReportStatus.FINISHED and len(report.tasks) == 2


def test_every_call_after_exit_is_a_clear_error() -> None:
    with taskfarm.Boss(workers=[Add]) as boss:
        boss.set_instructions({}, {"x": [1]})
        boss.make_them_work()
        boss.wait_till_finished(timeout=30)
        for call in (boss.make_them_work, boss.halt, boss.stop_them_working, boss.end, boss.stop,
                     boss.stop_right_now, boss.stop_listening, boss.send_report_request,
                     lambda: boss.set_instructions({"x": 2})):
            with pytest.raises(taskfarm.BossStateError):
                call()
        assert boss.get_report().status is taskfarm.ReportStatus.FINISHED  # still readable
    with pytest.raises(taskfarm.BossStateError):
        boss.set_instructions({"x": 3})  # and after close()


def test_halted_with_only_running_tasks_wait_till_finished_lets_them_end(
        gate: Gate, mailbox: Mailbox) -> None:
    with _blocking_boss(gate, mailbox, ["a", "b"]) as boss:
        boss.make_them_work()
        _started(mailbox, 2)
        boss.halt()                       # nothing is pending: both run
        gate.release(2)
        report = boss.wait_till_finished(timeout=30)
    assert report.status is taskfarm.ReportStatus.FINISHED and len(report.tasks) == 2


def test_halted_with_sets_not_started_wait_till_finished_says_so(
        gate: Gate, mailbox: Mailbox) -> None:
    with _blocking_boss(gate, mailbox, ["a", "b", "c"]) as boss:
        boss.make_them_work()
        _started(mailbox, 2)
        boss.halt()
        with pytest.raises(taskfarm.BossStateError, match="halted with work pending"):
            boss.wait_till_finished(timeout=30)
        gate.release(3)


def test_stop_them_working_stops_now_as_in_taylorism(gate: Gate, mailbox: Mailbox) -> None:
    """taylorism's error path: stop_them_working(), then wait_till_finished()."""
    with _blocking_boss(gate, mailbox, ["a", "b", "c"]) as boss:
        boss.make_them_work()
        _started(mailbox, 2)
        boss.stop_them_working()          # STOP_RIGHTNOW
        report = boss.wait_till_finished(timeout=30)
    assert report.status is taskfarm.ReportStatus.STOPPED
    assert sorted(str(t.status) for t in report.tasks) == ["cancelled", "cancelled"]
    assert [p["name"] for p in report.pending] == ["t_c"]
