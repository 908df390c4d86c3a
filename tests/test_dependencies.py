"""Tasks that wait for others (``after=[...]``): order, cancellation when a
prerequisite fails, bad input at the call, prerequisites from earlier calls."""

from __future__ import annotations

import pytest
from workers import Add, Blocker, Gate, Mailbox, Misbehave, WorkerBoom

import taskfarm
from schedulers import MaxThreadsScheduler
from taskfarm._boss.dependencies import Dependencies
from taskfarm._boss.tasks import Task

pytestmark = pytest.mark.usefixtures("start_method")


def test_a_task_starts_only_after_its_prerequisites_are_done() -> None:
    report = taskfarm.batch_main(
        {}, {"x": [1, 2, 3, 4], "name": ["a", "b", "c", "d"],
             "after": [[], ["a"], ["a", "b"], []]},
        worker=Add, scheduler=MaxThreadsScheduler(2), print_report=None)
    assert all(t.ok for t in report.tasks)
    assert report["b"].started >= report["a"].ended
    assert report["c"].started >= max(report["a"].ended, report["b"].ended)


def test_a_failed_prerequisite_cancels_its_dependents_in_cascade() -> None:
    report = taskfarm.batch_main(
        {}, {"how": ["raise", "ok", "ok", "ok"], "name": ["a", "b", "c", "d"],
             "after": [[], ["a"], ["b"], []]},
        worker=Misbehave, on_error="continue", print_report=None)
    statuses = {t.name: str(t.status) for t in report.tasks}
    assert statuses == {"a": "failed", "b": "cancelled", "c": "cancelled", "d": "done"}
    assert "'a' ended failed" in report["b"].reason
    assert "'b' ended cancelled" in report["c"].reason
    assert report["b"].started is None and report["b"].pid is None


def test_fail_fast_stops_and_leaves_dependents_pending() -> None:
    with taskfarm.Boss(MaxThreadsScheduler(1), workers=[Misbehave]) as boss:
        boss.set_instructions({}, {"how": ["raise", "ok"], "name": ["a", "b"],
                                   "after": [[], ["a"]]})
        boss.make_them_work()
        with pytest.raises(WorkerBoom):
            boss.wait_till_finished(timeout=30)
        report = boss.get_report()
    assert [t.name for t in report.tasks] == ["a"]
    assert [p["name"] for p in report.pending] == ["b"]


@pytest.mark.parametrize(("after", "message"), [
    ([["nope"], []], "waits for 'nope', which is not a task given"),
    ([["b"], ["a"]], "cycle: a -> b -> a"),
    ([["a"], []], "cycle: a -> a"),
])
def test_bad_dependencies_are_errors_at_the_call(after: list[list[str]], message: str) -> None:
    with taskfarm.Boss(workers=[Add]) as boss:
        with pytest.raises(taskfarm.InstructionError, match=message):
            boss.set_instructions({}, {"x": [1, 2], "name": ["a", "b"], "after": after})
        assert boss.set_instructions({}, {"x": [1], "name": ["a"]}) == ["a"]  # nothing kept


def test_prerequisites_from_earlier_calls(gate: Gate, mailbox: Mailbox) -> None:
    with taskfarm.Boss(MaxThreadsScheduler(2), workers=[Add, Blocker, Misbehave],
                       on_error="continue") as boss:
        boss.make_them_work()
        boss.set_instructions({"x": 1, "name": "done_early"})
        boss.set_instructions({"how": "raise", "name": "failed_early"})
        assert {r.name for r in (next(boss.as_completed(timeout=30)) for _ in range(2))} == \
            {"done_early", "failed_early"}
        boss.set_instructions({"gate": gate, "mailbox": mailbox, "label": "slow"})
        mailbox.read(1)
        boss.set_instructions({}, {"x": [2, 3, 4], "name": ["after_done", "after_failed",
                                                            "after_running"],
                                   "after": [["done_early"], ["failed_early"], ["Blocker-2"]]})
        first = next(boss.as_completed(timeout=30))
        second = next(boss.as_completed(timeout=30))
        assert {first.name, second.name} == {"after_done", "after_failed"}
        assert boss.get_report().pending[0]["name"] == "after_running"  # still waiting
        gate.release(1)
        report = boss.wait_till_finished(timeout=30)
    statuses = {t.name: str(t.status) for t in report.tasks}
    assert statuses["after_done"] == "done" and statuses["after_failed"] == "cancelled"
    assert statuses["after_running"] == "done"
    assert report["after_running"].started >= report["Blocker-2"].ended


def test_the_boss_remembers_recent_endings_for_reports_in_flight() -> None:
    deps = Dependencies()
    early = Task(0, 0, 0, {"name": "early"})
    assert deps.add(early, ()) is None
    deps.ended("early", "done")
    assert deps.add(Task(1, 0, 0, {"name": "late"}), ("early",)) is None
    bad = Task(2, 0, 0, {"name": "bad"})
    deps.add(bad, ())
    deps.ended("bad", "killed")
    assert "'bad' ended killed" in deps.add(Task(3, 0, 0, {"name": "x"}), ("bad",))
    # Not held and not remembered as failed: it ended done (messages come in order).
    assert deps.add(Task(4, 0, 0, {"name": "y"}), ("ended_done_long_ago",)) is None
