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
import signal
import time
from typing import Any

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
        assert [executor.submit(back, i).result(WAIT) for i in range(20)] == list(range(20))
        expressed = reader.frames
        assert expressed == 20
        assert executor.submit(back, large).result(WAIT) == large
        assert list(executor.map(back, range(100), chunksize=7)) == list(range(100))
        assert reader.frames > expressed   # the map's chunks, but not the large result
        assert reader.frames - expressed == -(-100 // 7)


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
