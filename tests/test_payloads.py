"""Huge and hostile payloads: each arrives intact or fails its own task clearly."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from workers import Add

import taskfarm

pytestmark = pytest.mark.usefixtures("start_method")


class Huge(taskfarm.Worker):
    """Returns an array of ``mib`` MiB whose content the test can check."""

    mib: int

    def task(self) -> np.ndarray:
        return np.arange(self.mib * 2**20 // 8, dtype=np.int64)


def test_a_500_mb_result_arrives_intact() -> None:
    report = taskfarm.batch_main({}, {"mib": [500]}, worker=Huge, print_report=None)
    result = report.tasks[0].result
    assert result.nbytes == 500 * 2**20
    assert result[0] == 0 and result[-1] == result.size - 1
    assert np.array_equal(result[::1_000_003], np.arange(0, result.size, 1_000_003))


class Echo(taskfarm.Worker):
    """Returns what it was given."""

    value: object

    def task(self) -> object:
        return self.value


def test_unpicklable_instructions_are_an_error_at_the_call() -> None:
    with taskfarm.Boss(workers=[Echo, Add]) as boss:
        with pytest.raises(taskfarm.InstructionError, match="cannot be pickled"):
            boss.set_instructions({}, {"value": [1, threading.Lock()]})
        boss.set_instructions({}, {"x": [1]})  # the boss is unaffected
        boss.make_them_work()
        assert boss.wait_till_finished(timeout=30).tasks[0].result == 2


class RaisesWhilePickled:
    """A result that raises when it is pickled."""

    def __reduce__(self) -> tuple:
        raise RuntimeError("refuses to be pickled")


class BadResult(taskfarm.Worker):
    x: int

    def task(self) -> object:
        return RaisesWhilePickled() if self.x == 1 else self.x


def test_a_result_that_raises_while_pickled_fails_its_task_only() -> None:
    report = taskfarm.batch_main({}, {"x": [0, 1, 2]}, worker=BadResult, on_error="continue",
                                 print_report=None)
    assert [str(t.status) for t in sorted(report.tasks, key=lambda t: t.name)] == \
        ["done", "failed", "done"]
    assert "refuses to be pickled" in str(report["BadResult-1"].exception)
