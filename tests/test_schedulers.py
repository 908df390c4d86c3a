"""Schedulers: the rules of launchable() as unit tests, and end to end with processes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from workers import Add, Blocker, Gate, Mailbox

import schedulers
import taskfarm
from schedulers import BaseScheduler, MaxThreadsScheduler, available_cpus
from taskfarm._boss.tasks import PendingQueue, Task


def _pending(n: int) -> PendingQueue:
    queue = PendingQueue()
    for tid in range(n):
        queue.push(Task(tid, 0, 0, {"name": f"t{tid}"}))
    return queue


def test_max_threads_launches_up_to_the_limit_with_free_tickets() -> None:
    pending = _pending(10)
    running = {"r": {"name": "r", "scheduler_ticket": 1}}
    chosen, rest = MaxThreadsScheduler(3).launchable(pending, running, None)
    assert [c["name"] for c in chosen] == ["t0", "t1"]
    assert [c["scheduler_ticket"] for c in chosen] == [0, 2]
    assert len(rest) == 8
    full = {f"r{i}": {"scheduler_ticket": i} for i in range(3)}
    assert MaxThreadsScheduler(3).launchable(pending, full, None)[0] == []


def test_max_threads_zero_means_the_cpus_this_process_may_use() -> None:
    assert MaxThreadsScheduler(0).max_threads == available_cpus() >= 1
    assert available_cpus() <= len(__import__("os").sched_getaffinity(0))


@pytest.mark.parametrize(("value", "error"), [(-1, ValueError), (1.5, TypeError),
                                              (True, TypeError), ("2", TypeError)])
def test_max_threads_bad_values(value: Any, error: type) -> None:
    with pytest.raises(error):
        MaxThreadsScheduler(value)


def test_pending_queue_prefix_is_cheap_and_skips_launched_tasks() -> None:
    queue = _pending(5)
    tasks = list(queue.tasks())
    tasks[0].move(tasks[0].state.RUNNING)
    queue.discard(tasks[0])
    tasks[2].move(tasks[2].state.RUNNING)
    queue.discard(tasks[2])
    assert len(queue) == 3
    assert [i["name"] for i in queue[:2]] == ["t1", "t3"]
    assert [i["name"] for i in queue[1:]] == ["t3", "t4"] and len(queue[1:]) == 2
    assert queue[0]["name"] == "t1" and queue[-1]["name"] == "t4"


class EvenFirst(BaseScheduler):
    """A user's own scheduler: one task at a time, even labels before odd ones."""

    def launchable(self, pending_instructions: Sequence[dict[str, Any]],
                   workers: Mapping[str, dict[str, Any]], report: Any) -> tuple[list, list]:
        if workers:
            return [], list(pending_instructions)
        ordered = sorted(pending_instructions, key=lambda i: int(i["label"]) % 2)
        return ordered[:1], ordered[1:]


def test_a_custom_scheduler_works_unchanged(gate: Gate, mailbox: Mailbox) -> None:
    with taskfarm.Boss(EvenFirst(), workers=[Blocker]) as boss:
        boss.set_instructions({"gate": gate, "mailbox": mailbox}, {"label": list("12345")})
        boss.make_them_work()
        order = []
        for _ in range(5):
            order.append(mailbox.read(1)[0].split()[1])
            gate.release(1)
        boss.wait_till_finished(timeout=30)
    assert order == ["2", "4", "1", "3", "5"]


def test_no_more_than_max_threads_run_at_once(mailbox: Mailbox, tmp_path: Path) -> None:
    labels = list("abcdef")
    gates = {label: Gate(tmp_path / f"gate_{label}") for label in labels}  # one per task
    try:
        with taskfarm.Boss(MaxThreadsScheduler(2), workers=[Blocker]) as boss:
            boss.set_instructions({"mailbox": mailbox},
                                  {"label": labels, "gate": [gates[x] for x in labels]})
            boss.make_them_work()
            for _ in range(3):
                started = [line.split()[1] for line in mailbox.read(2)]
                assert len(boss.get_report().running) == 2
                for label in started:
                    gates[label].release()
            report = boss.wait_till_finished(timeout=30)
    finally:
        for gate in gates.values():
            gate.close()
    assert {t.ticket for t in report.tasks} == {0, 1}


def test_a_scheduler_without_launchable_is_refused() -> None:
    with pytest.raises(TypeError, match="launchable"):
        taskfarm.Boss(scheduler=object())
    assert schedulers.__all__ == sorted(schedulers.__all__)


class Broken(BaseScheduler):
    """A scheduler with a bug."""

    def launchable(self, pending_instructions: Sequence[dict[str, Any]],
                   workers: Mapping[str, dict[str, Any]], report: Any) -> tuple[list, list]:
        raise ZeroDivisionError("a bug in the scheduler")


def test_a_broken_scheduler_ends_the_run_with_a_clear_error() -> None:
    with pytest.raises(taskfarm.SchedulerError, match=r"Broken.*a bug in the scheduler"):
        taskfarm.batch_main({}, {"x": [1]}, worker=Add, scheduler=Broken(), print_report=None)
