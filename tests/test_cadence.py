"""Cadence and Accumulator, on a fake clock: windows aligned on the stride, yielded once
complete (end + delay), skip-ahead past max_lag (said in the window and logged), close
from another thread, and mini-batches by threshold or by waiting time. No real waiting.
"""

from __future__ import annotations

import logging
import threading

import pytest

import taskfarm


class FakeClock:
    """Time that moves only when slept on (or set)."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_windows_are_aligned_and_come_once_complete_plus_the_delay() -> None:
    clock = FakeClock(103.0)
    cadence = taskfarm.Cadence(10.0, delay=2.0, clock=clock, sleep=clock.sleep)
    first = next(cadence)
    assert (first.index, first.start, first.end, first.skipped) == (10, 100.0, 110.0, 0)
    assert clock.now == pytest.approx(112.0)      # its end plus the delay
    second = next(cadence)
    assert (second.start, second.end) == (110.0, 120.0) and clock.now == pytest.approx(122.0)
    assert cadence.ready() is None                  # the next is not complete yet
    assert cadence.due_at() == pytest.approx(132.0)


def test_a_start_in_the_past_catches_up_window_by_window_without_waiting() -> None:
    clock = FakeClock(1000.0)
    cadence = taskfarm.Cadence(100.0, start=705.0, clock=clock, sleep=clock.sleep)
    starts = [next(cadence).start for _ in range(3)]
    assert starts == [700.0, 800.0, 900.0] and clock.slept == []
    assert cadence.lag() == 0 and cadence.ready() is None


def test_more_than_max_lag_behind_skips_to_the_latest_complete_window(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock(50.0)
    cadence = taskfarm.Cadence(10.0, max_lag=2, clock=clock, sleep=clock.sleep)
    assert next(cadence).start == 50.0              # now 60
    clock.now = 92.0                                # slowed down: windows 60..80 complete
    assert cadence.lag() == 3
    window = next(cadence)                          # 2 behind the latest: no skip yet
    assert (window.start, window.skipped) == (60.0, 0)
    clock.now = 125.0                               # windows 70..110 complete: 4 behind
    with caplog.at_level(logging.WARNING, logger="taskfarm.cadence"):
        window = next(cadence)
    assert (window.start, window.end, window.skipped) == (110.0, 120.0, 4)
    assert cadence.skipped == 4
    assert "skipped 4" in caplog.text
    assert next(cadence).start == 120.0             # and on at pace


def test_max_lag_zero_always_yields_the_latest_complete_window() -> None:
    clock = FakeClock(0.5)
    cadence = taskfarm.Cadence(1.0, max_lag=0, clock=clock, sleep=clock.sleep)
    next(cadence)
    clock.now = 5.5
    window = next(cadence)
    assert (window.start, window.skipped) == (4.0, 3)


def test_close_ends_the_iteration_even_while_it_waits() -> None:
    cadence = taskfarm.Cadence(3600.0)              # the real clock: the wait is long
    done = threading.Event()
    got: list[object] = []

    def run() -> None:
        got.extend(cadence)
        done.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    cadence.close()
    assert done.wait(10) and got == [] and cadence.closed


@pytest.mark.parametrize("kwargs, error", [
    ({"stride": 0}, "stride"), ({"stride": float("nan")}, "stride"),
    ({"stride": 1, "delay": -1}, "delay"), ({"stride": 1, "max_lag": -1}, "max_lag"),
    ({"stride": 1, "max_lag": 1.5}, "max_lag"),
])
def test_bad_cadence_arguments_are_value_errors(kwargs: dict[str, float],
                                                error: str) -> None:
    with pytest.raises(ValueError, match=error):
        taskfarm.Cadence(**kwargs)  # type: ignore[arg-type]


def test_an_accumulator_releases_a_batch_at_the_threshold() -> None:
    clock = FakeClock(0.0)
    batches: taskfarm.Accumulator[int] = taskfarm.Accumulator(3, max_wait=10.0, clock=clock)
    batches.add(1, 2)
    assert batches.take() is None and batches.due_in() == pytest.approx(10.0)
    batches.add(3, 4)
    assert batches.due_in() == 0.0
    assert batches.take() == [1, 2, 3, 4] and len(batches) == 0
    assert batches.take() is None and batches.due_in() is None


def test_an_accumulator_releases_what_it_has_once_the_oldest_waited_long_enough() -> None:
    clock = FakeClock(0.0)
    batches: taskfarm.Accumulator[str] = taskfarm.Accumulator(100, max_wait=5.0, clock=clock)
    batches.add("a")
    clock.now = 3.0
    batches.add("b")
    assert batches.take() is None and batches.due_in() == pytest.approx(2.0)
    clock.now = 5.0
    assert batches.take() == ["a", "b"]


def test_an_accumulator_caps_a_batch_at_max_items_and_keeps_the_rest() -> None:
    batches: taskfarm.Accumulator[int] = taskfarm.Accumulator(2, max_items=3,
                                                              clock=FakeClock(0.0))
    batches.add(*range(7))
    assert batches.take() == [0, 1, 2]
    assert batches.take() == [3, 4, 5]
    assert batches.take() is None and len(batches) == 1   # one left, below the threshold


@pytest.mark.parametrize("args, error", [
    ((0,), "threshold"), ((2, -1.0), "max_wait"), ((3, None, 2), "max_items"),
])
def test_bad_accumulator_arguments_are_value_errors(args: tuple[object, ...],
                                                    error: str) -> None:
    with pytest.raises(ValueError, match=error):
        taskfarm.Accumulator(*args)  # type: ignore[arg-type]
