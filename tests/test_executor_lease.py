"""Leases (taskfarm/_main/executor_lease.py): lone calls written by the main program
straight to a worker process that holds a lease, attacked. Real processes and signals.

Each test first makes a lease the way a program does: calls submitted one at a time,
each waited for before the next.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

import taskfarm

WAIT = 60.0
BIG = b"x" * 10_000   # more than a pipe takes in one atomic write (PIPE_BUF)


def back(value: Any) -> Any:
    return value


def pid_of() -> int:
    return os.getpid()


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def boom(value: int) -> None:
    raise ValueError(value, "boom")


def make(size: int) -> bytes:
    return b"y" * size


def fork_and_return(value: int) -> int:
    """Both copies return: the copy must not go on serving the lease."""
    os.fork()
    return value


def leased(executor: taskfarm.Executor) -> bool:
    return executor._machinery.calls.leases.current is not None


def lone(executor: taskfarm.Executor, count: int = 4) -> None:
    """Calls one at a time, as a program waiting for each: the second opens a lease."""
    for i in range(count):
        assert executor.submit(back, i).result(WAIT) == i


def wait_for(process: psutil.Process, status: str) -> None:
    """Until the process is in that state (the kernel's word for it, polled)."""
    deadline = time.monotonic() + WAIT
    while process.status() != status:
        assert time.monotonic() < deadline, f"{process.pid} never {status}"
        time.sleep(0.001)


def fifos() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("taskfarm-lease-*")}


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_lone_calls_in_a_row_run_in_the_leased_worker_and_leave_nothing_behind(
        context: str) -> None:
    before = fifos()
    with taskfarm.Executor(2, mp_context=context) as executor:
        pids = [executor.submit(pid_of).result(WAIT) for _ in range(10)]
        assert leased(executor)
        assert len(set(pids[1:])) == 1   # from the lease's first call on, one process
    assert fifos() == before


def test_a_leased_call_whose_worker_dies_fails_alone_and_the_executor_goes_on() -> None:
    with taskfarm.Executor(2) as executor:
        lone(executor)
        assert leased(executor)
        future = executor.submit(die)
        with pytest.raises(concurrent.futures.process.BrokenProcessPool) as info:
            future.result(WAIT)
        assert getattr(info.value, "signal_name", None) == "SIGKILL"
        lone(executor)
        assert leased(executor)   # a new lease


def test_a_leased_call_that_raises_keeps_its_exception_and_its_frames() -> None:
    with taskfarm.Executor(2) as executor:
        lone(executor)
        with pytest.raises(ValueError) as info:
            executor.submit(boom, 7).result(WAIT)
        assert info.value.args == (7, "boom")
        assert 'raise ValueError(value, "boom")' in info.value.__cause__.tb  # type: ignore[union-attr]
        lone(executor)


@pytest.mark.parametrize("workers", [1, 2])
def test_what_a_lease_cannot_take_goes_to_the_boss_without_a_deadlock(workers: int) -> None:
    """With one worker, the lease holds the only process: whatever goes to the boss
    must end the lease first, or it would wait for it for ever."""
    with taskfarm.Executor(workers) as executor:
        lone(executor)
        assert executor.submit(back, BIG).result(WAIT) == BIG   # too large to write
        lone(executor)
        assert executor.submit(make, 10_000).result(WAIT) == make(10_000)  # its result
        lone(executor)
        futures = [executor.submit(back, i) for i in range(50)]   # in flight together
        assert [f.result(WAIT) for f in futures] == list(range(50))
        lone(executor)
        assert list(executor.map(back, range(20))) == list(range(20))
        lone(executor)
        assert leased(executor)
    # and shutdown (the with) ended the last lease: the farm finished


def test_a_call_written_to_a_lease_whose_worker_died_before_reading_it_runs_elsewhere(
        ) -> None:
    """The worker dies idle, and the call is written before the main program hears of
    it: the call was never read, so it never started; the boss runs it elsewhere."""
    with taskfarm.Executor(2) as executor:
        lone(executor)
        worker = executor.submit(pid_of).result(WAIT)
        boss = executor._machinery.feeder.boss.pid
        process = psutil.Process(worker)
        os.kill(boss, signal.SIGSTOP)   # it hears of no death meanwhile
        try:
            # Stopped as it waits for the next call (a stop is delivered on its way):
            # it reads nothing meanwhile.
            wait_for(process, psutil.STATUS_SLEEPING)
            os.kill(worker, signal.SIGSTOP)
            wait_for(process, psutil.STATUS_STOPPED)
            future = executor.submit(back, 5)   # written to the lease
            assert future.running()
            os.kill(worker, signal.SIGKILL)
        finally:
            os.kill(boss, signal.SIGCONT)
        assert future.result(WAIT) == 5
        lone(executor)


def test_threads_submitting_lone_calls_together_get_each_result() -> None:
    errors: list[BaseException] = []
    with taskfarm.Executor(2) as executor:
        def loop(base: int) -> None:
            try:
                for i in range(base, base + 40):
                    assert executor.submit(back, i).result(WAIT) == i
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=loop, args=(n * 1000,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT)
    assert not errors


def test_shutdown_with_a_leased_call_running_lets_it_finish() -> None:
    release = threading.Event()
    with taskfarm.Executor(1) as executor:
        lone(executor)
        future = executor.submit(pow, 2, 10)
        executor.shutdown(wait=True)
        release.set()
        assert future.result(WAIT) == 1024


def test_a_leased_call_that_forks_leaves_its_copy_out_of_the_lease() -> None:
    """The copy returns from the call as the worker does: it must neither answer for
    the call nor read the next ones (it would take them from the worker)."""
    with taskfarm.Executor(2) as executor:
        lone(executor)
        worker = executor.submit(pid_of).result(WAIT)
        assert executor.submit(fork_and_return, 7).result(WAIT) == 7
        assert {executor.submit(pid_of).result(WAIT) for _ in range(30)} == {worker}
