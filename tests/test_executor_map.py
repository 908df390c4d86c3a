"""taskfarm.Executor.map with several chunks per task (executor.MAX_GROUP): what a
caller sees is what a task per chunk gives. Results come in order; a chunk that
raises (or whose results cannot be pickled) raises its own exception, with the
worker's frames, exactly where it would alone, after every result before it; a
worker process that dies fails its task's chunks and the executor goes on; an
executor with a timeout keeps a task per chunk, so the timeout stays a chunk's.

GROUP_TASKS is set to 1 here so that small maps are grouped too.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import traceback
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import pytest

import taskfarm
from taskfarm._main import executor as executor_module

WAIT = 30.0


def fail_at(x: int, bad: int) -> int:
    if x == bad:
        raise ValueError("bad item", x)
    return x * 10


def product(x: int, y: int) -> int:
    return x * y


def unpicklable_at(x: int, bad: int) -> Any:
    return threading.Lock() if x == bad else x   # no pickle takes a lock


def leave_at(x: int, bad: int) -> int:
    if x == bad:
        raise SystemExit(3)
    return x


def die_at(x: int, bad: int) -> int:
    if x == bad:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def slow_at(x: int, bad: int) -> int:
    if x == bad:
        time.sleep(60)
    return x


@pytest.fixture(autouse=True)
def small_maps_grouped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(executor_module, "GROUP_TASKS", 1)


@pytest.fixture
def executor() -> Iterator[taskfarm.Executor]:
    made = taskfarm.Executor(2)
    yield made
    made.shutdown(wait=True)


def consume(results: Iterator[Any]) -> tuple[list[Any], BaseException | None]:
    got: list[Any] = []
    try:
        for value in results:
            got.append(value)
    except BaseException as exc:  # what the caller would see
        return got, exc
    return got, None


def test_results_in_order_over_one_and_several_iterables(executor: taskfarm.Executor) -> None:
    items = range(103)
    assert list(executor.map(product, items, items, chunksize=4, timeout=WAIT)) == \
        [x * x for x in items]
    assert list(executor.map(abs, range(-50, 50), chunksize=3, timeout=WAIT)) == \
        [abs(x) for x in range(-50, 50)]


def test_a_chunk_raises_where_it_would_alone(executor: taskfarm.Executor) -> None:
    # chunks of 4: item 37 is in the chunk that starts at 36
    got, exc = consume(executor.map(fail_at, range(100), [37] * 100, chunksize=4,
                                    timeout=WAIT))
    assert got == [x * 10 for x in range(36)]
    assert isinstance(exc, ValueError) and exc.args == ("bad item", 37)
    frames = "".join(traceback.format_tb(exc.__traceback__))
    assert "fail_at" in frames                      # the worker's own frames
    assert "fail_at" in str(exc.__cause__)          # and its traceback text, as PPE's
    assert list(executor.map(fail_at, range(10), [-1] * 10, chunksize=2)) == \
        [x * 10 for x in range(10)]                 # the executor goes on


def test_a_result_that_cannot_be_pickled_fails_its_own_chunk(
        executor: taskfarm.Executor) -> None:
    got, exc = consume(executor.map(unpicklable_at, range(60), [25] * 60, chunksize=5,
                                    timeout=WAIT))
    assert got == list(range(25))
    assert exc is not None and not isinstance(exc, BrokenProcessPool)
    assert "pickl" in f"{type(exc).__name__} {exc}".lower()


def test_an_argument_that_cannot_be_pickled_fails_its_own_chunk(
        executor: taskfarm.Executor) -> None:
    items: list[Any] = list(range(60))
    items[27] = threading.Lock()    # in the chunk of 25-29
    got, exc = consume(executor.map(product, items, [1] * 60, chunksize=5, timeout=WAIT))
    assert got == list(range(25))
    assert exc is not None and "pickl" in f"{type(exc).__name__} {exc}".lower()
    got, exc = consume(executor.map(abs, [threading.Lock(), *range(30)], chunksize=5,
                                    timeout=WAIT))
    assert got == [] and exc is not None   # in the first chunk: nothing before it


def test_a_chunk_of_three_that_cannot_be_pickled_is_one_chunk(
        executor: taskfarm.Executor, monkeypatch: pytest.MonkeyPatch) -> None:
    """A chunk (not several) of three argument tuples fails as one chunk: only several
    chunks are searched for the one that cannot be pickled."""
    monkeypatch.setattr(executor_module, "MAX_GROUP", 1)
    items: list[Any] = [1, 2, 3, threading.Lock(), 5, 6]
    got, exc = consume(executor.map(product, items, [1] * 6, chunksize=3, timeout=WAIT))
    assert got == [1, 2, 3]
    assert exc is not None and "pickl" in f"{type(exc).__name__} {exc}".lower()
    assert executor.submit(product, 2, 3).result(timeout=WAIT) == 6   # not broken


def test_system_exit_in_a_chunk_arrives_as_itself(executor: taskfarm.Executor) -> None:
    got, exc = consume(executor.map(leave_at, range(40), [9] * 40, chunksize=3,
                                    timeout=WAIT))
    assert got == list(range(9))
    assert isinstance(exc, SystemExit) and exc.code == 3


def test_a_dead_worker_fails_its_tasks_chunks_and_the_executor_goes_on(
        executor: taskfarm.Executor) -> None:
    got, exc = consume(executor.map(die_at, range(64), [50] * 64, chunksize=2,
                                    timeout=WAIT))
    assert isinstance(exc, BrokenProcessPool) and "SIGKILL" in str(exc)
    # 32 chunks, 8 per task: the task of items 48-63 died; everything before came.
    assert got == list(range(48))
    assert list(executor.map(abs, range(-8, 8), chunksize=2, timeout=WAIT)) == \
        [abs(x) for x in range(-8, 8)]


def test_with_a_timeout_each_chunk_is_its_own_task() -> None:
    with taskfarm.Executor(2, timeout=1.0) as executor:
        got, exc = consume(executor.map(slow_at, range(40), [21] * 40, chunksize=2,
                                        timeout=WAIT))
    assert got == list(range(20))   # the chunk of 20-21 timed out; all before it came
    assert isinstance(exc, taskfarm.TaskCancelledError)
