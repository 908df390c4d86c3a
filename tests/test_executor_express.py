"""Express results: an executor's workers write the result of a call that ended done
straight to the main program (taskfarm/_common/express.py). What must hold: every
result arrives exactly once, whichever way it took; a result too large for one frame,
and one whose call logged, take the boss's way (a log record never arrives after its
call's result); a worker killed between its two writes leaves the future with its
result and the executor going on; a full pipe makes a worker's write fail, not block.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import tempfile
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import psutil
import pytest

import taskfarm
from taskfarm._common import express
from taskfarm._main.express import ExpressReader

WAIT = 30.0


def back(value: Any) -> Any:
    return value


def log_then_return(value: int) -> int:
    logging.getLogger("taskfarm.task.express").warning("logged by call %d", value)
    return value


def killed_after_writing(value: int) -> int:
    """Return ``value``; the worker process is killed once it has written the result
    to the main program and before it tells the boss (a real SIGKILL at that point)."""
    from taskfarm._worker import serve

    write = serve._express

    def write_then_die(fd: int, outcome: Any) -> Any:
        written = write(fd, outcome)
        os.kill(os.getpid(), signal.SIGKILL)
        return written

    serve._express = write_then_die
    return value


def slow_to_tell_the_boss() -> int:
    """This worker process, from now on, tells the boss that a call ended a while
    after it wrote the call's result to the main program."""
    from taskfarm._worker import serve

    write = serve._express

    def write_then_linger(fd: int, outcome: Any) -> Any:
        written = write(fd, outcome)
        time.sleep(0.2)
        return written

    serve._express = write_then_linger
    return os.getpid()


def killed_after_writing_a_second_time(marks: str, value: int) -> int:
    """The first attempt: ``killed_after_writing``. The second (the boss retries it):
    says it started, then runs until the test lets it go."""
    started, release = Path(marks, "started"), Path(marks, "release")
    if not Path(marks, "first").exists():
        Path(marks, "first").touch()
        return killed_after_writing(value)
    started.touch()
    while not release.exists():
        time.sleep(0.01)
    return value


def own_descriptors() -> dict[int, bool]:
    """This process's open descriptors above stderr, each with its inheritable flag."""
    found = {}
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2:
            try:
                found[fd] = os.get_inheritable(fd)
            except OSError:   # the directory listing's own, closed by now
                pass
    return found


def reader_of(executor: taskfarm.Executor) -> ExpressReader:
    reader = executor._machinery.feeder.boss._inbox.express
    assert reader is not None
    return reader


@pytest.mark.parametrize("start_method", ["fork", "spawn"], indirect=True)
def test_small_results_come_express_and_large_ones_through_the_boss(start_method: str
                                                                    ) -> None:
    large = b"x" * (express.LIMIT + 1)
    with taskfarm.Executor(2) as executor:
        reader = reader_of(executor)
        assert executor.submit(back, large).result(WAIT) == large
        assert reader.frames == 0   # too large for a frame
        assert [executor.submit(back, i).result(WAIT) for i in range(20)] == list(range(20))
        assert reader.frames == 20
        assert list(executor.map(back, range(100), chunksize=7)) == list(range(100))
        # The map's chunks, and the end of the lease that ran the lone calls (see
        # taskfarm/_main/executor_lease.py), which the map ended.
        assert reader.frames - 20 == -(-100 // 7) + 1


def test_an_isolated_executor_takes_the_boss_way() -> None:
    with taskfarm.Executor(2, isolated=True) as executor:
        assert [executor.submit(back, i).result(WAIT) for i in range(3)] == [0, 1, 2]
        assert reader_of(executor).frames == 0


def test_a_call_that_logs_has_its_record_before_its_result(
        caplog: pytest.LogCaptureFixture) -> None:
    with taskfarm.Executor(2) as executor, caplog.at_level(logging.WARNING):
        reader = reader_of(executor)
        for i in range(20):
            assert executor.submit(log_then_return, i).result(WAIT) == i
            assert f"logged by call {i}" in caplog.text   # here when result() returns
        assert reader.frames == 0


def test_a_worker_killed_between_its_two_writes_leaves_the_result(
        caplog: pytest.LogCaptureFixture) -> None:
    with taskfarm.Executor(1, retries=1) as executor:
        reader = reader_of(executor)
        before = executor.submit(os.getpid).result(WAIT)
        assert executor.submit(killed_after_writing, 7).result(WAIT) == 7
        assert executor.submit(os.getpid).result(WAIT) != before   # it was killed
        # The boss saw a worker die with its task; it retried it (retries=1), and
        # that second ending, whichever it was, changes nothing here.
        assert [executor.submit(back, i).result(WAIT) for i in range(5)] == list(range(5))
        assert reader.frames >= 8
    assert "could not handle" not in caplog.text


def test_the_next_call_goes_to_the_worker_done_with_the_last_one() -> None:
    # The boss hears of each ending 0.2 s after the main program has the result and
    # submits the next call: told by the main program (AddTasks.ended), it queues the
    # call on that worker rather than start a second process.
    with taskfarm.Executor(2) as executor:
        first = executor.submit(slow_to_tell_the_boss).result(WAIT)
        pids = {executor.submit(os.getpid).result(WAIT) for _ in range(3)}
        assert pids == {first}
        assert reader_of(executor).frames == 4


def test_a_result_written_before_its_worker_died_is_the_one_kept() -> None:
    # The worker writes a call's result to the main program and is killed before it
    # tells the boss, which then reports the call's worker killed. The receiver is
    # held (a done-callback) until both are there to read: the result is read first,
    # whichever pipe it looks at first, and the future has it.
    with taskfarm.Executor(1) as executor:
        inbox = executor._machinery.feeder.boss._inbox
        reader = reader_of(executor)
        worker = psutil.Process(executor.submit(os.getpid).result(WAIT))

        def hold(_: Future[Any]) -> None:   # in the receiver thread
            select.select([reader.fd], [], [], WAIT)     # the result is written
            worker.wait(WAIT)                            # the worker is gone
            select.select([inbox.conn.fd], [], [], WAIT)  # the boss has word of it

        through_the_boss = executor.submit(back, b"x" * (express.LIMIT + 1))
        through_the_boss.add_done_callback(hold)
        killed = executor.submit(killed_after_writing, 7)
        assert killed.result(WAIT) == 7
        assert len(through_the_boss.result(WAIT)) == express.LIMIT + 1
        assert executor.submit(back, 8).result(WAIT) == 8


def test_a_call_retried_elsewhere_does_not_hold_the_next_one() -> None:
    # The first attempt's worker wrote the result and was killed; the boss retried
    # the call on a new worker, where it runs on. The main program, which has the
    # result, tells the boss that call ended: that is no reason to queue the next
    # call behind the retry while the executor has room for a second worker.
    with tempfile.TemporaryDirectory() as marks, \
            taskfarm.Executor(2, retries=1) as executor:
        executor.submit(os.getpid).result(WAIT)
        assert executor.submit(killed_after_writing_a_second_time, marks, 7).result(WAIT) == 7
        started = Path(marks, "started")
        deadline = time.monotonic() + WAIT
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert started.exists()
        try:
            assert executor.submit(back, 8).result(WAIT) == 8   # not behind the retry
        finally:
            Path(marks, "release").touch()


@pytest.mark.parametrize("start_method", ["fork", "spawn"], indirect=True)
def test_a_worker_holds_its_own_pipes_only_and_passes_none_on(start_method: str) -> None:
    # No end of the boss's pipes (or the main program could miss the boss's end), and
    # nothing a program the call starts would inherit.
    with taskfarm.Executor(1) as executor:
        held = executor.submit(own_descriptors).result(WAIT)
        assert len(held) == 3, held   # its task and result pipes, and the express pipe
        assert not any(held.values()), held


def test_every_result_of_a_burst_arrives_once() -> None:
    with taskfarm.Executor(2) as executor:
        futures = [executor.submit(back, i) for i in range(3000)]
        assert [f.result(WAIT) for f in futures] == list(range(3000))
        executor.shutdown(wait=True)
        assert reader_of(executor).ended


# ---- the frames and the pipe ------------------------------------------------------------

def test_frames_split_whole_frames_and_keep_the_rest() -> None:
    data = b"".join(express.HEADER.pack(len(b), tid) + b
                    for tid, b in ((1, b"one"), (2, b""), (3, b"three")))
    assert express.frames(data) == ([(1, b"one"), (2, b""), (3, b"three")], b"")
    found, rest = express.frames(data[:-2])
    assert found == [(1, b"one"), (2, b"")]
    assert rest == (express.HEADER.pack(5, 3) + b"three")[:-2]
    assert express.frames(rest + data[-2:]) == ([(3, b"three")], b"")


def test_a_full_pipe_fails_the_write_without_writing_anything() -> None:
    read_end, write_end = os.pipe()
    try:
        os.set_blocking(write_end, False)
        blob = b"y" * express.LIMIT
        written = 0
        while express.write(write_end, written, blob):
            written += 1
        assert written > 0
        assert not express.write(write_end, written, b"z")   # full: refused, not blocked
        reader = ExpressReader(read_end)
        got: list[tuple[int, bytes]] = []
        reader.on_result = lambda tid, b: got.append((tid, b))
        reader.drain()
        assert got == [(n, blob) for n in range(written)]   # whole frames only
        assert not express.write(write_end, 0, b"x" * (express.LIMIT + 1))   # too large
        os.close(write_end)
        write_end = -1
        reader.drain()
        assert reader.ended
        reader.close()
    finally:
        if write_end >= 0:
            os.close(write_end)
