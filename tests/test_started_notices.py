"""Unit tests of the boss's STARTED notices (taskfarm._boss.started), on a fake clock:
without a hold a notice goes out at once; with one it waits, is dropped if its task
ends first (the ENDED says it started), and goes out, oldest first, once its hold is
over; nothing stays held past the run's end. No process, no sleep."""

from __future__ import annotations

import pytest

from taskfarm._boss.deadlines import Deadlines
from taskfarm._boss.started import StartedNotices
from taskfarm._common.messages import NoticeKind


class FakeClock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def notices_with(hold: float) -> tuple[StartedNotices, Deadlines, FakeClock]:
    clock = FakeClock()
    deadlines = Deadlines(clock)
    started = StartedNotices(deadlines, enabled=True)
    started.watch(True, hold)
    return started, deadlines, clock


def sent(started: StartedNotices) -> list[int]:
    assert all(n.kind is NoticeKind.STARTED for n in started.notices)
    return [n.tid for n in started.notices]


def test_without_a_hold_a_notice_goes_out_at_once() -> None:
    started, deadlines, _ = notices_with(0.0)
    started.say(7, 1234, 0, 99.0)
    assert started.notices[0].value == (1234, 0, 99.0)
    assert sent(started) == [7]
    assert len(deadlines) == 0   # nothing to wake the loop for


@pytest.mark.parametrize(("ended", "expected"), [(1, []), (5, [1])],
                         ids=["its-task-ended", "another-task-ended"])
def test_a_held_notice_is_dropped_only_when_its_own_task_ends_within_the_hold(
        ended: int, expected: list[int]) -> None:
    started, deadlines, clock = notices_with(0.002)
    started.say(1, 10, 0, 99.0)
    started.ended(ended)
    clock.now += 0.002
    deadlines.run_due()
    assert sent(started) == expected


def test_a_held_notice_goes_out_once_its_hold_is_over_and_never_early() -> None:
    started, deadlines, clock = notices_with(0.002)
    started.say(1, 10, 0, 99.0)
    clock.now += 0.001
    started.say(2, 11, 1, 99.0)
    assert deadlines.run_due() == 0 and sent(started) == []
    clock.now += 0.001           # 1's hold is over, not 2's
    deadlines.run_due()
    assert sent(started) == [1]
    assert deadlines.wait_ms() == pytest.approx(1.0)   # the loop wakes again for 2
    clock.now += 0.001
    deadlines.run_due()
    assert sent(started) == [1, 2]
    assert len(deadlines) == 0


def test_nothing_stays_held_past_the_end_or_when_the_hold_is_lifted() -> None:
    started, _, _ = notices_with(0.002)
    started.say(1, 10, 0, 99.0)
    started.say(2, 11, 1, 99.0)
    started.release(everything=True)    # the run's end (BossLoop._flush)
    assert sent(started) == [1, 2]
    started.say(3, 10, 0, 99.0)
    started.watch(True, 0.0)            # a watcher that wants them at once
    assert sent(started) == [1, 2, 3]
