"""Intermediate results: ``emit()`` in a task and ``Boss.events()`` in the main
program, with real worker processes."""

from __future__ import annotations

import threading
from collections import defaultdict
from pathlib import Path

import pytest
from event_workers import Emitter
from workers import Add, Gate

import taskfarm
from schedulers import MaxThreadsScheduler
from taskfarm import EventKind, TaskEvent

pytestmark = pytest.mark.usefixtures("start_method")

WAIT = 30.0   # bound on every wait for an event or a report


def _by_task(events: list[TaskEvent]) -> dict[str, list[TaskEvent]]:
    grouped: dict[str, list[TaskEvent]] = defaultdict(list)
    for event in events:
        grouped[event.name].append(event)
    return dict(grouped)


def test_events_come_in_order_for_each_task_and_the_iterator_ends() -> None:
    with taskfarm.Boss(MaxThreadsScheduler(2), workers=[Emitter]) as boss:
        events = boss.events(timeout=WAIT)   # subscribed before anything is given
        names = boss.set_instructions({"emit_count": 3}, {"name": ["a", "b", "c"]})
        boss.make_them_work(terminate=True)
        seen = list(events)                  # ends by itself: every task ended
        report = boss.wait_till_finished(timeout=WAIT)
    assert names == ["a", "b", "c"]
    grouped = _by_task(seen)
    assert sorted(grouped) == names
    for name, task_events in grouped.items():
        kinds = [e.kind for e in task_events]
        assert kinds == [EventKind.QUEUED, EventKind.STARTED, *[EventKind.EMITTED] * 3,
                         EventKind.ENDED], name
        assert len({e.tid for e in task_events}) == 1
        started, ended = task_events[1], task_events[-1]
        task = report[name]
        assert started.pid == task.pid and started.slot in (0, 1)
        assert started.time is not None and task.started is not None
        assert abs(started.time - task.started) < 5
        assert [e.value for e in task_events[2:5]] == [(name, 1, i) for i in range(3)]
        assert ended.report is not None and ended.report.ok and ended.report.result == 3
        assert task.emitted == [(name, 1, i) for i in range(3)]
        assert all(e.report is None for e in task_events[:-1])


def test_an_emitted_value_arrives_while_the_task_still_runs(gate: Gate) -> None:
    with taskfarm.Boss(MaxThreadsScheduler(1), workers=[Emitter]) as boss:
        events = boss.events(timeout=WAIT)
        boss.set_instructions({"emit_count": 2, "emit_gate": gate, "name": "held"})
        boss.make_them_work(terminate=True)
        early = [next(events) for _ in range(4)]   # the task waits on the gate meanwhile
        assert [e.kind for e in early] == [EventKind.QUEUED, EventKind.STARTED,
                                           EventKind.EMITTED, EventKind.EMITTED]
        assert [e.value for e in early[2:]] == [("held", 1, 0), ("held", 1, 1)]
        assert not boss.finished
        gate.release()
        rest = list(events)
        report = boss.wait_till_finished(timeout=WAIT)
    assert [e.kind for e in rest] == [EventKind.ENDED]
    assert report["held"].emitted == [("held", 1, 0), ("held", 1, 1)]


def test_several_iterators_and_as_completed_each_see_all_their_items() -> None:
    with taskfarm.Boss(MaxThreadsScheduler(2), workers=[Emitter]) as boss:
        first, second = boss.events(timeout=WAIT), boss.events(timeout=WAIT)
        names = boss.set_instructions({"emit_count": 2}, {"name": [f"t{i}" for i in range(6)]})
        boss.make_them_work()
        completed = list(boss.as_completed(timeout=WAIT))
        one, two = list(first), list(second)
        boss.wait_till_finished(timeout=WAIT)
    assert sorted(r.name for r in completed) == names
    assert one == two
    assert sorted(e.name for e in one if e.kind is EventKind.ENDED) == names
    assert len([e for e in one if e.kind is EventKind.EMITTED]) == 12
    assert {e.name: e.report.emitted for e in one if e.report is not None} == \
        {r.name: r.emitted for r in completed}


def test_a_consumer_thread_and_as_completed_run_side_by_side() -> None:
    seen: list[TaskEvent] = []
    with taskfarm.Boss(MaxThreadsScheduler(2), workers=[Emitter]) as boss:
        events = boss.events(timeout=WAIT)
        names = boss.set_instructions({"emit_count": 5},
                                      {"name": [f"t{i}" for i in range(8)]})
        # Started once tasks are given: with none given, there is nothing to wait for.
        consumer = threading.Thread(target=lambda: seen.extend(events))
        consumer.start()
        try:
            boss.make_them_work()
            completed = [r.name for r in boss.as_completed(timeout=WAIT)]
        finally:
            consumer.join(WAIT)
        boss.wait_till_finished(timeout=WAIT)
    assert not consumer.is_alive()
    assert sorted(completed) == names
    grouped = _by_task(seen)
    assert sorted(grouped) == names
    for name, task_events in grouped.items():
        assert [e.value for e in task_events if e.kind is EventKind.EMITTED] == \
            [(name, 1, i) for i in range(5)]
        assert task_events[-1].kind is EventKind.ENDED


def test_an_iterator_sees_events_from_its_call_on() -> None:
    with taskfarm.Boss(workers=[Emitter, Add]) as boss:
        boss.set_instructions({"emit_count": 1, "name": "early"})
        boss.make_them_work()
        assert next(iter(boss.as_completed(timeout=WAIT))).name == "early"
        late = boss.events(timeout=WAIT)     # after "early" ended: it sees only "late"
        boss.set_instructions({"x": 1, "name": "late"})
        seen = list(late)
        report = boss.wait_till_finished(timeout=WAIT)
        after_the_end = list(boss.events(timeout=WAIT))   # the boss has exited
    assert {e.name for e in seen} == {"late"}
    assert seen[0].kind is EventKind.QUEUED and seen[-1].kind is EventKind.ENDED
    assert after_the_end == []
    assert report["early"].emitted == [("early", 1, 0)] and report["late"].emitted == []


def test_a_task_that_emits_then_dies_delivers_its_values_then_its_killed_report() -> None:
    with taskfarm.Boss(MaxThreadsScheduler(1), workers=[Emitter], on_error="continue") as boss:
        events = boss.events(timeout=WAIT)
        boss.set_instructions({"emit_count": 50, "emit_then": "sigkill", "name": "doomed"})
        boss.make_them_work(terminate=True)
        seen = list(events)
        report = boss.wait_till_finished(timeout=WAIT)
    task = report["doomed"]
    assert str(task.status) == "killed" and task.signal_name == "SIGKILL"
    assert isinstance(task.exception, taskfarm.WorkerKilledError)
    values = [("doomed", 1, i) for i in range(50)]
    assert task.emitted == values
    assert [e.value for e in seen if e.kind is EventKind.EMITTED] == values
    assert seen[-1].kind is EventKind.ENDED and seen[-1].report is not None
    assert str(seen[-1].report.status) == "killed"


def test_values_emitted_before_a_failure_are_kept_and_retries_add_theirs(
        tmp_path: Path) -> None:
    report = taskfarm.batch_main(
        {"emit_count": 2, "emit_marks": str(tmp_path), "retries": 1},
        {"name": ["flaky"], "emit_then": ["fail_once"]}, worker=Emitter,
        print_report=None, progress=False)
    assert report["flaky"].ok
    assert report["flaky"].emitted == [("flaky", 1, 0), ("flaky", 1, 1),
                                       ("flaky", 2, 0), ("flaky", 2, 1)]
    failed = taskfarm.batch_main({"emit_count": 1, "emit_then": "raise", "name": "boom"},
                                 worker=Emitter, on_error="continue", print_report=None,
                                 progress=False)
    assert str(failed["boom"].status) == "failed"
    assert failed["boom"].emitted == [("boom", 1, 0)]


def test_emitting_an_unpicklable_value_raises_typeerror_in_the_task() -> None:
    report = taskfarm.batch_main({"emit_count": 1, "emit_then": "unpicklable", "name": "bad"},
                                 worker=Emitter, on_error="continue", print_report=None,
                                 progress=False)
    task = report["bad"]
    assert str(task.status) == "failed" and isinstance(task.exception, TypeError)
    assert "picklable" in str(task.exception)
    assert task.emitted == [("bad", 1, 0)]   # what it emitted before still arrived


def test_a_value_that_cannot_be_unpickled_arrives_as_the_error_saying_why() -> None:
    report = taskfarm.batch_main({"emit_count": 1, "emit_then": "unloadable", "name": "odd"},
                                 worker=Emitter, print_report=None, progress=False)
    task = report["odd"]
    assert task.ok and task.emitted[0] == ("odd", 1, 0)
    assert isinstance(task.emitted[1], taskfarm.RemoteTaskError)
    assert "cannot be unpickled" in str(task.emitted[1])


def test_emit_outside_a_farm_is_a_runtime_error() -> None:
    worker = Emitter(emit_count=1, name="alone")
    with pytest.raises(RuntimeError, match="emit"):
        worker.task()


def test_without_kept_reports_values_still_stream_but_reports_do_not_keep_them() -> None:
    with taskfarm.Boss(MaxThreadsScheduler(1), workers=[Emitter],
                       keep_reports=False) as boss:
        events = boss.events(timeout=WAIT)
        boss.set_instructions({"emit_count": 3, "name": "streamed"})
        boss.make_them_work()
        completed = list(boss.as_completed(timeout=WAIT))
        seen = list(events)
        boss.wait_till_finished(timeout=WAIT)
    assert [r.name for r in completed] == ["streamed"] and completed[0].emitted == []
    assert [e.value for e in seen if e.kind is EventKind.EMITTED] == \
        [("streamed", 1, i) for i in range(3)]


def test_waiting_for_an_event_is_bounded(gate: Gate) -> None:
    with taskfarm.Boss(MaxThreadsScheduler(1), workers=[Emitter]) as boss:
        events = boss.events(timeout=0.3)
        boss.set_instructions({"emit_count": 0, "emit_gate": gate, "name": "quiet"})
        boss.make_them_work()
        kinds = [next(events).kind, next(events).kind]
        with pytest.raises(TimeoutError):
            next(events)   # the task waits on its gate: nothing comes
        gate.release()
        report = boss.wait_till_finished(timeout=WAIT)
    assert kinds == [EventKind.QUEUED, EventKind.STARTED] and report["quiet"].ok
