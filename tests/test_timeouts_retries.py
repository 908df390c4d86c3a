"""Per-task timeouts and retries, set per instruction set, per Worker class or per run."""

from __future__ import annotations

from pathlib import Path

import pytest
from workers import Add, Flaky, Gate, Stuck

import taskfarm
from schedulers import MaxThreadsScheduler

pytestmark = pytest.mark.usefixtures("start_method")


def test_a_task_past_its_timeout_ends_timeout_and_its_slot_is_refilled(gate: Gate) -> None:
    report = taskfarm.batch_main({"gate": gate, "timeout": 0.3}, {"label": ["a"]},
                                 worker=Stuck, on_error="continue",
                                 scheduler=MaxThreadsScheduler(1), print_report=None)
    task = report.tasks[0]
    assert str(task.status) == "timeout" and task.signal_name == "SIGTERM"
    assert "timeout of 0.3 s" in task.reason and task.duration >= 0.3
    # The slot is refilled: a later task in the same run is done.
    with taskfarm.Boss(MaxThreadsScheduler(1), workers=[Stuck, Add],
                       on_error="continue") as boss:
        boss.set_instructions({"gate": gate, "timeout": 0.2, "name": "stuck"})
        boss.set_instructions({"x": 1, "name": "after"})
        boss.make_them_work()
        final = boss.wait_till_finished(timeout=30)
    assert str(final["stuck"].status) == "timeout" and final["after"].result == 2


def test_a_task_queued_behind_a_timed_out_one_is_not_blamed(gate: Gate) -> None:
    with taskfarm.Boss(MaxThreadsScheduler(1), workers=[Stuck, Add],
                       on_error="continue") as boss:
        boss.set_instructions({"gate": gate, "timeout": 0.2, "name": "stuck"})
        boss.set_instructions({}, {"x": [1, 2, 3]})  # queued behind it (prefetch)
        boss.make_them_work()
        report = boss.wait_till_finished(timeout=30)
    assert str(report["stuck"].status) == "timeout"
    assert sorted(t.result for t in report.tasks if t.name != "stuck") == [2, 3, 4]


class SlowByDefault(Stuck):
    timeout = 0.2


def test_timeout_precedence_set_over_class_over_run(gate: Gate) -> None:
    with taskfarm.Boss(workers=[Stuck, SlowByDefault], on_error="continue",
                       timeout=0.25) as boss:
        boss.set_instructions({"gate": gate, "name": "by_run"}, worker=Stuck)
        boss.set_instructions({"gate": gate, "name": "by_class"}, worker=SlowByDefault)
        boss.set_instructions({"gate": gate, "name": "by_set", "timeout": 0.3},
                              worker=SlowByDefault)
        boss.make_them_work()
        report = boss.wait_till_finished(timeout=30)
    assert {t.name: t.instructions["timeout"] for t in report.tasks} == \
        {"by_run": 0.25, "by_class": 0.2, "by_set": 0.3}
    assert all(str(t.status) == "timeout" for t in report.tasks)


def test_fail_fast_on_a_timeout(gate: Gate) -> None:
    with pytest.raises(taskfarm.TaskCancelledError, match=r"timeout of 0\.2 s"):
        taskfarm.batch_main({"gate": gate, "timeout": 0.2}, worker=Stuck, print_report=None)


@pytest.mark.parametrize("how", ["fail_once", "kill_once"])
def test_retries_run_the_task_again_and_record_each_attempt(how: str, tmp_path: Path) -> None:
    report = taskfarm.batch_main({"marks": str(tmp_path), "how": how, "retries": 2},
                                 {"name": ["a", "b"]}, worker=Flaky, print_report=None)
    for task in report.tasks:
        assert task.ok and task.result[0] == 2
        first, last = task.attempts
        assert first[0] == ("failed" if how == "fail_once" else "killed")
        assert ("attempt 1" in first[1]) if how == "fail_once" else ("SIGKILL" in first[1])
        assert last == ("done", "")


def test_retries_stop_at_the_limit_and_fail_fast_fires_on_the_last(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="attempt 3"):
        taskfarm.batch_main({"marks": str(tmp_path), "how": "always_fail", "retries": 2},
                            {"name": ["a"]}, worker=Flaky, print_report=None)
    assert (tmp_path / "a").read_text() == "xxx"


def test_retry_on_limits_what_is_retried(tmp_path: Path) -> None:
    report = taskfarm.batch_main({"marks": str(tmp_path), "retries": 3,
                                  "retry_on": ["killed", "timeout"]},
                                 {"name": ["a"]}, worker=Flaky, on_error="continue",
                                 print_report=None)
    assert str(report["a"].status) == "failed" and len(report["a"].attempts) == 1


def test_a_retry_can_ask_for_more_memory(tmp_path: Path) -> None:
    report = taskfarm.batch_main({"marks": str(tmp_path), "how": "kill_once", "retries": 1,
                                  "memory": 100, "retry_memory": 2.0},
                                 {"name": ["a"]}, worker=Flaky, print_report=None)
    assert report["a"].result == (2, 200.0)


@pytest.mark.parametrize(("common", "message"), [
    ({"timeout": -1}, "timeout must be a positive"),
    ({"timeout": 0}, "timeout must be a positive"),
    ({"retries": -1}, "retries must be an int >= 0"),
    ({"retry_on": ["exploded"]}, "retry_on must list"),
    ({"retry_memory": 0.5}, "retry_memory must be a factor >= 1"),
])
def test_bad_policies_are_errors_when_given(common: dict[str, object], message: str,
                                            tmp_path: Path) -> None:
    with taskfarm.Boss(workers=[Flaky]) as boss:
        with pytest.raises(taskfarm.InstructionError, match=message):
            boss.set_instructions({"marks": str(tmp_path), **common})


def test_bad_run_policies_are_errors_at_boss() -> None:
    with pytest.raises(ValueError, match="timeout must be a positive"):
        taskfarm.Boss(timeout=-3)
    with pytest.raises(ValueError, match="retries must be an int"):
        taskfarm.Boss(retries=-1)
