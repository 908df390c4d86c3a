"""Limit schedulers: their rules on launchable() as unit tests, and end to end with
processes, checking invariants on the reports (never timings)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import psutil
import pytest
from workers import Busy, Probe

import taskfarm
from schedulers import (
    AllOf,
    BaseScheduler,
    LaxistScheduler,
    LongerFirstScheduler,
    MaxMemoryScheduler,
    MaxThreadsScheduler,
    ResourceLockScheduler,
    memory_budget_mib,
    packed_cpus,
)
from taskfarm._boss.tasks import PendingQueue, RunStats, Task


def _pending(*views: dict[str, Any], worker: str = "W") -> PendingQueue:
    queue = PendingQueue()
    for tid, view in enumerate(views):
        queue.push(Task(tid, 0, 0, {"name": f"t{tid}", **view}, worker))
    return queue


def _names(chosen: Sequence[Mapping[str, Any]]) -> list[str]:
    return [c["name"] for c in chosen]


def test_laxist_launches_everything() -> None:
    assert _names(LaxistScheduler().launchable(_pending({}, {}, {}), {}, None)[0]) == \
        ["t0", "t1", "t2"]


def test_max_memory_keeps_the_sum_under_the_budget_and_backfills() -> None:
    scheduler = MaxMemoryScheduler(max_memory=1000, memory_per_task=100)
    pending = _pending({"memory": 600}, {"memory": 500}, {"memory": 300}, {}, {"memory": 50})
    running = {"r": {"memory": 0}}  # declares none: counted at memory_per_task
    chosen, _ = scheduler.launchable(pending, running, None)
    assert _names(chosen) == ["t0", "t2"]  # 100 + 600 + 300; t1 does not fit, t2 does
    chosen, _ = scheduler.launchable(pending, {"r": {"memory": 950}}, None)
    assert _names(chosen) == ["t4"]


def test_max_memory_learns_from_measured_peaks() -> None:
    stats = RunStats()
    stats.record("W", "done", 1.0, 700 * 2**20)
    scheduler = MaxMemoryScheduler(max_memory=1000, memory_per_task=100)
    chosen, _ = scheduler.launchable(_pending({}, {}, {}), {}, stats)
    assert _names(chosen) == ["t0"]  # 700 MiB each, learned; 100 would have let all in
    unlearned = MaxMemoryScheduler(1000, 100, learn=False)
    assert len(unlearned.launchable(_pending({}, {}, {}), {}, stats)[0]) == 3


def test_default_memory_budget_is_a_fraction_of_what_this_process_may_use() -> None:
    total = psutil.virtual_memory().total / 2**20
    assert 0 < memory_budget_mib(0.5) <= 0.5 * total + 1
    assert MaxMemoryScheduler().max_memory == pytest.approx(memory_budget_mib(0.75))


@pytest.mark.parametrize("kwargs", [
    {"max_memory": 0}, {"max_memory": -5}, {"memory_per_task": 0},
    {"max_memory": 100, "memory_per_task": 200}, {"memory_max_fraction": 1.5},
    {"window": 0}, {"nice": 40},
])
def test_max_memory_bad_limits(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        MaxMemoryScheduler(**kwargs)


def test_longer_first_orders_by_expected_time_within_limits() -> None:
    scheduler = LongerFirstScheduler(max_threads=2, max_memory=1000, memory_per_task=100)
    pending = _pending({"expected_time": 1}, {"expected_time": 50}, {"expected_time": 10},
                       {"expected_time": 50})
    chosen, _ = scheduler.launchable(pending, {}, None)
    assert _names(chosen) == ["t1", "t3"]  # the two longest; ties keep the given order
    assert [c["scheduler_ticket"] for c in chosen] == [0, 1]
    assert scheduler.launchable(pending, {"a": {}, "b": {}}, None)[0] == []


def test_resource_lock_never_pairs_tasks_that_share_a_resource() -> None:
    scheduler = ResourceLockScheduler()
    pending = _pending({"resources": ("db",)}, {"resources": ("db", "gpu")},
                       {"resources": ("gpu",)}, {}, {"resources": "db"})
    chosen, _ = scheduler.launchable(pending, {}, None)
    assert _names(chosen) == ["t0", "t2", "t3"]
    chosen, _ = scheduler.launchable(pending, {"r": {"resources": ("gpu",)}}, None)
    assert _names(chosen) == ["t0", "t3"]
    with pytest.raises(ValueError, match="unknown resources"):
        ResourceLockScheduler(known={"db"}).check_instructions({"resources": ("tape",)})


def test_composition_launches_what_every_scheduler_allows() -> None:
    combined = MaxThreadsScheduler(3) & ResourceLockScheduler() & MaxMemoryScheduler(1000, 100)
    assert isinstance(combined, AllOf) and len(combined.schedulers) == 3
    assert not combined.prefetch  # the memory rule is not a pure count
    pending = _pending({"resources": ("db",)}, {"resources": ("db",)}, {"memory": 950}, {})
    chosen, rest = combined.launchable(pending, {}, None)
    assert _names(chosen) == ["t0"]  # threads: t0..t2; lock drops t1; memory drops t2
    assert len(rest) == 3
    assert "MaxThreadsScheduler" in repr(combined) and " & " in repr(combined)
    assert (MaxThreadsScheduler(2) & MaxThreadsScheduler(3)).prefetch


def test_packed_cpus_are_the_affinity_mask() -> None:
    assert sorted(packed_cpus()) == sorted(os.sched_getaffinity(0))


def test_binding_pins_each_worker_to_the_cpu_of_its_ticket() -> None:
    cpus = packed_cpus()
    report = taskfarm.batch_main({}, {"item": list(range(8))}, worker=Probe,
                                 scheduler=MaxThreadsScheduler(2, binded=True),
                                 print_report=None)
    for task in report.tasks:
        affinity, _ = task.result
        assert affinity == [task.cpu] and task.cpu == cpus[task.ticket % len(cpus)]


def test_nice_lowers_the_workers_priority() -> None:
    report = taskfarm.batch_main({}, {"item": [1, 2]}, worker=Probe,
                                 scheduler=MaxThreadsScheduler(1, nice=7), print_report=None)
    assert all(t.result[1] >= 7 for t in report.tasks)
    assert os.getpriority(os.PRIO_PROCESS, 0) < 7  # the main program is untouched


def _peak_overlap(report: taskfarm.Report, weight: Any) -> float:
    """The largest sum of ``weight(task)`` over tasks running at the same instant."""
    events = []
    for task in report.tasks:
        events += [(task.started, 1, task), (task.ended, -1, task)]
    current = peak = 0.0
    for _, kind, task in sorted(events, key=lambda e: (e[0], e[1])):
        current += kind * weight(task)
        peak = max(peak, current)
    return peak


def test_memory_budget_is_never_exceeded_end_to_end() -> None:
    memory = [400, 300, 500, 200, 600, 100, 300, 400] * 3
    report = taskfarm.batch_main({"spin": 50000}, {"item": list(range(24)), "memory": memory},
                                 worker=Busy, scheduler=MaxMemoryScheduler(1000, 100),
                                 print_report=None)
    assert len(report.tasks) == 24 and all(t.ok for t in report.tasks)
    assert _peak_overlap(report, lambda t: t.instructions["memory"]) <= 1000


def test_tasks_sharing_a_resource_never_overlap_end_to_end() -> None:
    resources = [["db"], ["db", "gpu"], ["gpu"], [], ["db"], ["gpu"]] * 3
    report = taskfarm.batch_main({"spin": 50000},
                                 {"item": list(range(18)), "resources": resources},
                                 worker=Busy,
                                 scheduler=MaxThreadsScheduler(2) & ResourceLockScheduler(),
                                 print_report=None)
    assert len(report.tasks) == 18
    for name in ("db", "gpu"):
        assert _peak_overlap(report, lambda t, n=name: n in t.instructions["resources"]) <= 1


def test_a_task_over_the_whole_budget_is_an_error_when_given() -> None:
    with taskfarm.Boss(MaxMemoryScheduler(1000, 100), workers=[Busy]) as boss:
        with pytest.raises(taskfarm.InstructionError, match="more than the whole budget"):
            boss.set_instructions({}, {"item": [1, 2], "memory": [100, 5000]})
        assert boss.set_instructions({}, {"item": [3], "memory": [100]}) == ["Busy-0"]
        boss.make_them_work()
        assert boss.wait_till_finished(timeout=30).tasks[0].ok


class AfterThreeAsks(BaseScheduler):
    """Refuses the first two times it is asked, and asks to be asked again soon: only
    the boss's re-check timer can make it launch (no other event comes)."""

    def __init__(self) -> None:
        self.asked = 0

    def launchable(self, pending_instructions: Sequence[dict[str, Any]],
                   workers: Mapping[str, dict[str, Any]], report: Any) -> tuple[list, list]:
        self.asked += 1
        if self.asked < 3:
            return [], list(pending_instructions)
        return list(pending_instructions), []

    def recheck_after(self) -> float | None:
        return 0.01


def test_the_boss_rechecks_when_the_scheduler_asks() -> None:
    report = taskfarm.batch_main({}, {"item": [1]}, worker=Busy, scheduler=AfterThreeAsks(),
                                 print_report=None)
    assert report.tasks[0].ok
