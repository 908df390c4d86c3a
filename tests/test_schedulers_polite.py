"""PoliteScheduler: its policy with an injected probe, then end to end under a real
synthetic load that the test creates and removes itself."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from workers import Busy, Mailbox, RecordingLoad

import taskfarm
from schedulers import PoliteScheduler
from schedulers import load as polite_load
from schedulers.load import NotMeasuredYet
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


class Clock:
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records
            if r.name == "taskfarm.schedulers"]


def test_a_hold_is_said_once_when_it_begins_warned_once_and_ended_once(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="taskfarm.schedulers")
    clock = Clock()
    scheduler = PoliteScheduler(max_threads=2, max_load=1.0, min_available=0.2, recheck=5,
                                clock=clock, probe=Readings(*[(1.0, 0.6)] * 10, (0.0, 0.6)))
    assert scheduler.launchable(_pending(4), {}, None)[0] == []
    [(level, line)] = _lines(caplog)
    assert level == logging.INFO
    assert "holds 4 pending tasks" in line and "CPU use 100%" in line
    assert "max_load 100%" in line and "available memory 60% >= min_available 20%" in line
    assert "next look in 5 s" in line
    assert scheduler.holding is not None and "CPU use 100%" in scheduler.holding
    for _ in range(5):  # re-checks (measurements and events) while held: silent
        clock.now += 5
        assert scheduler.launchable(_pending(4), {}, None)[0] == []
        scheduler.launchable(_pending(4), {}, None)
    assert len(_lines(caplog)) == 1
    # The warning is due at 30 s, before the next measurement: the timer says so.
    assert scheduler.recheck_after() == 5
    clock.now += 5
    assert scheduler.launchable(_pending(4), {}, None)[0] == []
    [_, (level, line)] = _lines(caplog)
    assert level == logging.WARNING and "launched nothing for 30 s" in line
    assert "4 tasks are pending" in line and "CPU use 100%" in line
    for _ in range(3):  # one warning per hold
        clock.now += 5
        scheduler.launchable(_pending(4), {}, None)
    assert len(_lines(caplog)) == 2
    clock.now += 5  # the machine is free again
    assert len(scheduler.launchable(_pending(4), {}, None)[0]) == min(2, os.cpu_count() or 1)
    [_, _, (level, line)] = _lines(caplog)
    assert level == logging.INFO and line.startswith("PoliteScheduler resumed after 50 s")
    assert scheduler.holding is None
    scheduler.launchable(_pending(2), _running(2), None)
    assert len(_lines(caplog)) == 3


def test_a_long_recheck_does_not_delay_the_warning(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    scheduler = PoliteScheduler(recheck=3600, clock=clock, probe=Readings((1.0, 0.9)))
    scheduler.launchable(_pending(1), {}, None)
    assert scheduler.recheck_after() == scheduler.warn_after
    clock.now += scheduler.warn_after
    scheduler.launchable(_pending(1), {}, None)  # no measurement due: the last one says
    assert [lvl for lvl, _ in _lines(caplog)] == [logging.WARNING]
    assert scheduler.recheck_after() == 3600 - scheduler.warn_after


def test_short_memory_is_named_as_the_reason() -> None:
    scheduler = PoliteScheduler(recheck=1000, clock=Clock(), probe=Readings((0.0, 0.05)))
    scheduler.launchable(_pending(1), {}, None)
    assert scheduler.holding is not None
    assert "available memory 5% < min_available 20%" in scheduler.holding
    assert "leaves none free" not in scheduler.holding


def test_a_farm_that_runs_but_does_not_grow_is_not_holding(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="taskfarm.schedulers")
    scheduler = PoliteScheduler(recheck=1000, clock=Clock(), probe=Readings((1.0, 0.9)))
    assert scheduler.launchable(_pending(5), _running(2), None)[0] == []
    assert scheduler.holding is None and _lines(caplog) == []


def test_unconfigured_logging_still_shows_the_hold_on_stderr(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # pytest's own, removed
    scheduler = PoliteScheduler(recheck=1000, clock=Clock(), probe=Readings((1.0, 0.9)))
    scheduler.launchable(_pending(3), {}, None)
    err = capsys.readouterr().err
    assert err.startswith("INFO:taskfarm.schedulers:PoliteScheduler holds 3 pending tasks")


class FakeCpuPercent:
    """psutil.cpu_percent that records its calls and refuses to sample (sleep)."""

    def __init__(self) -> None:
        self.calls: list[float | None] = []

    def __call__(self, interval: float | None = None) -> float:
        self.calls.append(interval)
        if interval:
            raise AssertionError(f"cpu_percent(interval={interval}) would block")
        return 0.0


def test_the_first_decision_never_waits_for_a_cpu_sample(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import psutil

    caplog.set_level(logging.INFO, logger="taskfarm.schedulers")
    clock, cpu_percent = Clock(), FakeCpuPercent()
    monkeypatch.setattr(psutil, "cpu_percent", cpu_percent)
    monkeypatch.setattr(polite_load, "_CPU", polite_load._CpuUse(clock))
    monkeypatch.setattr(polite_load.time, "sleep", lambda s: pytest.fail(f"slept {s} s"))
    scheduler = PoliteScheduler(max_threads=64, max_load=1.0, recheck=5, clock=clock)
    # No reading yet: nothing launched, nothing said, called again in 0.1 s.
    assert scheduler.launchable(_pending(100), {}, None)[0] == []
    assert cpu_percent.calls == [None]
    assert scheduler.recheck_after() == pytest.approx(0.1)
    assert scheduler.holding is None and _lines(caplog) == []
    clock.now += 0.0625  # an event before then: still no reading, still no wait
    assert scheduler.launchable(_pending(100), {}, None)[0] == []
    assert scheduler.recheck_after() == pytest.approx(0.1 - 0.0625)
    clock.now += 0.0625
    chosen, _ = scheduler.launchable(_pending(100), {}, None)
    assert len(chosen) == min(64, os.cpu_count() or 1)  # the sample: nothing busy
    assert cpu_percent.calls == [None, None]
    assert scheduler.recheck_after() == 5


def test_a_probe_with_no_reading_yet_keeps_the_last_budget() -> None:
    clock = Clock()
    outcomes: list[tuple[float, float] | NotMeasuredYet] = [(0.0, 0.9), NotMeasuredYet(0.2)]

    def probe() -> tuple[float, float]:
        outcome = outcomes.pop(0)
        if isinstance(outcome, NotMeasuredYet):
            raise outcome
        return outcome

    scheduler = PoliteScheduler(max_threads=2, max_load=1.0, recheck=5, clock=clock,
                                probe=probe)
    budget = len(scheduler.launchable(_pending(5), {}, None)[0])
    assert budget == min(2, os.cpu_count() or 1)
    clock.now += 5  # measurement due, no reading: one task ended is still replaced
    assert len(scheduler.launchable(_pending(5), _running(budget - 1), None)[0]) == 1
    assert scheduler.recheck_after() == pytest.approx(0.2)


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
