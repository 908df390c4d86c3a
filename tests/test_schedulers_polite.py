"""PoliteScheduler: its policy with an injected probe, then end to end under a real
synthetic load that the test creates and removes itself."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from workers import Busy, Mailbox, RecordingLoad

import taskfarm
from schedulers import PoliteScheduler
from taskfarm._boss.tasks import PendingQueue, Task


class Readings:
    """A probe returning given (busy, available) readings in turn."""

    def __init__(self, *readings: tuple[float, float]) -> None:
        self.readings = list(readings)

    def __call__(self) -> tuple[float, float]:
        return self.readings.pop(0)


def _pending(n: int) -> PendingQueue:
    queue = PendingQueue()
    for tid in range(n):
        queue.push(Task(tid, 0, 0, {"name": f"t{tid}"}))
    return queue


def _running(n: int) -> dict[str, dict[str, Any]]:
    return {f"r{i}": {"scheduler_ticket": i} for i in range(n)}


def test_grows_only_into_the_spare_cpus_below_max_load() -> None:
    cpus = os.cpu_count() or 1
    scheduler = PoliteScheduler(max_threads=64, max_load=0.75, recheck=1000,
                                probe=Readings((0.0, 0.9)))
    chosen, _ = scheduler.launchable(_pending(100), {}, None)
    assert len(chosen) == int(0.75 * cpus)
    assert all(c["taskfarm_nice"] == 10 for c in chosen)  # others come first
    # Between measurements a task that ended is replaced, the farm does not grow.
    assert len(scheduler.launchable(_pending(100), _running(len(chosen) - 1), None)[0]) == 1
    assert scheduler.launchable(_pending(100), _running(len(chosen)), None)[0] == []


def test_holds_back_when_the_machine_is_busy_or_short_of_memory() -> None:
    busy = PoliteScheduler(recheck=1000, probe=Readings((1.0, 0.9)))
    assert busy.launchable(_pending(5), {}, None)[0] == []
    short = PoliteScheduler(recheck=1000, probe=Readings((0.0, 0.05)))
    assert short.launchable(_pending(5), {}, None)[0] == []


def test_measures_again_on_the_timer_it_asks_for() -> None:
    scheduler = PoliteScheduler(recheck=0.05, probe=Readings((1.0, 0.9), (0.0, 0.9)))
    assert scheduler.recheck_after() == 0.0
    assert scheduler.launchable(_pending(5), {}, None)[0] == []
    assert 0 < scheduler.recheck_after() <= 0.05


@pytest.mark.parametrize("kwargs", [{"max_load": 0}, {"max_load": 1.5}, {"min_available": -1},
                                    {"recheck": 0}, {"nice": -3}, {"max_threads": -1}])
def test_bad_settings(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        PoliteScheduler(**kwargs)


@pytest.fixture
def load() -> Iterator[list[subprocess.Popen[bytes]]]:
    """One spinning process per CPU: a machine someone else is using fully. Skips on a
    machine already busy with other work, where the load could not be taken away."""
    import psutil

    if psutil.cpu_percent(interval=0.5) > 25:
        pytest.skip("the machine is already busy: the test could not remove the load")
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                for _ in range(os.cpu_count() or 1)]
    for _ in range(20):  # until the load is there to be seen (bounded)
        if psutil.cpu_percent(interval=0.25) >= 90:
            break
    yield spinners
    for spinner in spinners:
        spinner.kill()
        spinner.wait()


def test_holds_back_under_real_load_and_starts_once_it_is_gone(
        load: list[subprocess.Popen[bytes]], mailbox: Mailbox) -> None:
    # The test's load makes the machine fully busy (hold back); once it is gone, what
    # else runs (under 25%, or the test skips) leaves room under 90% (launch).
    scheduler = PoliteScheduler(max_threads=2, max_load=0.9, recheck=0.3,
                                probe=RecordingLoad(mailbox.path))
    with taskfarm.Boss(scheduler, workers=[Busy]) as boss:
        boss.set_instructions({}, {"item": [1, 2, 3]})
        boss.make_them_work()
        readings = []
        while len([r for r in readings if r >= 0.9]) < 2:  # two measurements under load
            readings.append(float(mailbox.read(1, timeout=30)[0].split()[0]))
        report = boss.get_report()
        assert report.tasks == [] and report.running == [] and len(report.pending) == 3
        for spinner in load:
            spinner.kill()
            spinner.wait()
        done = [r for r in boss.as_completed(timeout=60)]
        final = boss.wait_till_finished(timeout=30)
    assert len(done) == 3 and all(t.ok for t in final.tasks)
