"""Leases (taskfarm/_main/executor_lease.py): lone calls written by the main program
straight to a worker process that holds a lease, attacked. Real processes and signals.

Each test first makes a lease the way a program does: calls submitted one at a time,
each waited for before the next.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import sys
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


@pytest.mark.parametrize("then", ["", "shutdown"])
def test_a_call_written_to_a_lease_whose_worker_died_before_reading_it_runs_elsewhere(
        then: str) -> None:
    """The worker dies idle, and the call is written before the main program hears of
    it: the call was never read, so it never started; the boss runs it elsewhere, also
    when shutdown() came meanwhile."""
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
            if then:
                executor.shutdown(wait=False)
        finally:
            os.kill(boss, signal.SIGCONT)
        assert future.result(WAIT) == 5
        if not then:
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


# ---- attacks found in review: Ctrl-C windows, orderings, cancels, shutdown ---------------


def _sigint_at(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> list[str]:
    """A real SIGINT sent the first time ``module.os.<name>`` is called; returns the list
    that says it was."""
    real = getattr(os, name)
    sent: list[str] = []

    def interrupted(*args: Any) -> Any:
        if not sent:
            sent.append(name)
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args)

    monkeypatch.setattr(module.os, name, interrupted)
    return sent


def test_a_ctrl_c_as_a_lease_ends_leaves_the_executor_working(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A lone map chunk ends the lease from the submitting thread: a Ctrl-C as it does
    must not leave the executor's 'a call is being given' mark set (the feeder would
    wait for it for ever), nor the FIFO behind."""
    from taskfarm._main import executor_lease

    before = fifos()
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with taskfarm.Executor(2) as executor:
            lone(executor)
            assert leased(executor)
            sent = _sigint_at(monkeypatch, executor_lease, "unlink")
            with pytest.raises(KeyboardInterrupt):
                list(executor.map(back, range(3), chunksize=5))
            monkeypatch.undo()
            assert sent, "the lease was not ended there: the test proves nothing"
            assert [executor.submit(back, i).result(WAIT) for i in range(3)] == [0, 1, 2]
            assert list(executor.map(back, range(5), chunksize=2)) == list(range(5))
    finally:
        signal.signal(signal.SIGINT, previous)
    assert fifos() == before


def test_a_ctrl_c_as_a_lease_opens_leaves_no_lease_without_its_task(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from taskfarm._main import executor_lease

    before = fifos()
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with taskfarm.Executor(2) as executor:
            assert executor.submit(back, 0).result(WAIT) == 0
            sent = _sigint_at(monkeypatch, executor_lease, "mkfifo")
            with pytest.raises(KeyboardInterrupt):
                executor.submit(back, 1)   # the second lone call: it opens a lease
            monkeypatch.undo()
            assert sent, "no lease was opened: the test proves nothing"
            lone(executor)
            leases = executor._machinery.calls.leases
            # Every lease still known is the current one, or ends (its task runs).
            assert len(leases.live) <= 1
    finally:
        signal.signal(signal.SIGINT, previous)
    assert fifos() == before


def start_thread_that_logs(delay: float) -> str:
    """A leased call whose thread logs once the call has returned: a notice between
    calls of the lease."""
    import logging

    timer = threading.Timer(delay, logging.getLogger("lease-test").warning, ("late",))
    timer.daemon = True
    timer.start()
    return "ok"


def test_a_lease_that_ends_through_the_boss_after_a_call_came_express_loses_nothing(
        ) -> None:
    """The lease's own ending goes through the boss (its worker sent a log record
    between calls) while its last call's result waits on the express pipe: the
    receiver may read the boss's first. The last call keeps its result."""
    import logging
    import select

    arrived, release = threading.Event(), threading.Event()

    class Blocking(logging.Handler):   # holds the receiver thread, which handles records
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage() == "late" and record.name.endswith("lease-test"):
                arrived.set()
                release.wait(WAIT)

    handler = Blocking()
    logging.getLogger().addHandler(handler)   # (the main program names it taskfarm.task.*)
    try:
        with taskfarm.Executor(2) as executor:
            lone(executor)
            assert executor.submit(start_thread_that_logs, 0.05).result(WAIT) == "ok"
            assert arrived.wait(WAIT)   # the receiver is held now
            last = executor.submit(back, 42)   # written to the lease
            assert last.running()
            others = [executor.submit(back, i) for i in range(2)]   # the lease ends
            inbox = executor._machinery.feeder.boss._inbox
            assert inbox.express is not None
            pending = {inbox.conn.fd, inbox.express.fd}
            while pending:   # both the boss's message and the express frame are there
                ready, _, _ = select.select(list(pending), [], [], WAIT)
                assert ready, "the lease did not end: the test proves nothing"
                pending.difference_update(ready)
            release.set()
            assert last.result(WAIT) == 42
            assert [f.result(WAIT) for f in others] == [0, 1]
    finally:
        release.set()
        logging.getLogger().removeHandler(handler)


def gated(started: Any, go: Any) -> str:
    started.set()
    go.wait(WAIT)
    return "first"


def test_cancelling_the_first_call_of_a_lease_stops_no_later_call(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The lease's first call is cancelled while running but before its STARTED notice
    (held for long here): the boss is asked to cancel the lease's task. A call given
    after must not be stopped with it."""
    import multiprocessing

    from taskfarm._main import executor

    monkeypatch.setattr(executor, "STARTED_HOLD", WAIT)
    with multiprocessing.Manager() as manager, taskfarm.Executor(2) as pool:
        started, go = manager.Event(), manager.Event()
        assert pool.submit(back, 0).result(WAIT) == 0
        first = pool.submit(gated, started, go)   # the second lone call: a lease
        assert started.wait(WAIT)
        boss = pool._machinery.feeder.boss.pid
        reader = pool._machinery.feeder.boss._inbox.express
        assert reader is not None
        frames = reader.frames
        os.kill(boss, signal.SIGSTOP)   # it handles the cancel late
        try:
            assert first.cancel()
            go.set()
            deadline = time.monotonic() + WAIT
            while reader.frames == frames:   # the first call's result came by express
                assert time.monotonic() < deadline
                time.sleep(0.001)
            later = pool.submit(time.sleep, 2)   # long enough for the cancel to come
        finally:
            os.kill(boss, signal.SIGCONT)
        assert later.result(WAIT) is None


def logs_then_returns(seen: Any) -> str:
    """Logs, and returns once the main program has the record: its ending comes in
    a message of the boss after the record's."""
    import logging

    logging.getLogger("lease-test").warning("late")
    seen.wait(WAIT)
    return "C"


def test_a_callback_submitting_as_a_lease_ends_through_the_boss_is_queued_not_given(
        ) -> None:
    """The lease ends through the boss (its last call logged) while another call's
    result waits on the express pipe: reading it from the sink must not make the sink
    forget it is the sink, or a done-callback's submit would be given from the thread
    that holds the event stream, and wait for it for ever."""
    import logging
    import multiprocessing
    import select

    arrived, release = threading.Event(), threading.Event()
    manager = multiprocessing.Manager()
    seen = manager.Event()

    class Blocking(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage() == "late" and record.name.endswith("lease-test"):
                seen.set()
                arrived.set()
                release.wait(WAIT)

    handler = Blocking()
    logging.getLogger().addHandler(handler)
    try:
        with manager, taskfarm.Executor(2) as executor:
            lone(executor)
            last = executor.submit(logs_then_returns, seen)   # written to the lease
            queued = executor.submit(back, "Q")   # ends the lease, behind it
            assert arrived.wait(WAIT)   # the receiver is held
            inbox = executor._machinery.feeder.boss._inbox
            assert inbox.express is not None
            pending = {inbox.conn.fd, inbox.express.fd}
            while pending:   # the lease's ending and the queued call's result wait
                ready, _, _ = select.select(list(pending), [], [], WAIT)
                assert ready
                pending.difference_update(ready)
            later: list[concurrent.futures.Future[Any]] = []
            last.add_done_callback(lambda _: later.append(executor.submit(back, "later")))
            release.set()
            assert (last.result(WAIT), queued.result(WAIT)) == ("C", "Q")
            assert executor.submit(back, 5).result(WAIT) == 5
            assert [f.result(WAIT) for f in later] == ["later"]
    finally:
        release.set()
        logging.getLogger().removeHandler(handler)


def _sigint_on_call(code: Any, armed: threading.Event) -> Any:
    """A profile hook sending a real SIGINT as the main thread calls ``code``."""
    def hook(frame: Any, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code is code and armed.is_set():
            armed.clear()
            os.kill(os.getpid(), signal.SIGINT)
    return hook


@pytest.mark.parametrize("where", ["given here", "recorded as sent"])
def test_a_ctrl_c_where_python_cannot_hold_it_leaves_the_executor_working(
        where: str) -> None:
    """As add()'s ``finally`` begins (the call given), or as the call is recorded as
    sent but not given: the feeder must not wait for a give that is over, nor count
    a call that never reached the boss as in flight."""
    from taskfarm._main import executor_farm, executor_feeder

    code = executor_farm.Calls._given_here.__code__ if where == "given here" \
        else executor_feeder.cancelled.__code__
    armed = threading.Event()
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with taskfarm.Executor(2) as executor:
            assert executor.submit(back, 0).result(WAIT) == 0
            list(executor.map(back, range(2)))   # no lease: the next lone call goes to the boss
            sys.setprofile(_sigint_on_call(code, armed))
            armed.set()
            try:
                executor.submit(back, 1)
            except KeyboardInterrupt:
                pass
            finally:
                sys.setprofile(None)
            assert not armed.is_set(), "no SIGINT was sent: the test proves nothing"
            futures = [executor.submit(back, i) for i in range(3)]   # for the feeder
            assert [f.result(WAIT) for f in futures] == [0, 1, 2]
            lone(executor)
            assert leased(executor)
    finally:
        signal.signal(signal.SIGINT, previous)


def gated_boom(go: Any) -> None:
    go.wait(WAIT)
    raise ValueError("boom")


def test_a_ctrl_c_while_a_lease_opens_is_not_held_for_a_done_callback() -> None:
    """The lease's task is given while the receiver runs a long done-callback (a
    submit waits for it): a Ctrl-C then is raised at once, not once it returns."""
    import multiprocessing

    from taskfarm._main import handle

    in_callback, in_give, release = threading.Event(), threading.Event(), threading.Event()
    over = threading.Event()
    before = fifos()
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)

    def callback(_: Any) -> None:   # in the receiver thread
        in_callback.set()
        if in_give.wait(WAIT):
            os.kill(os.getpid(), signal.SIGINT)
        release.wait(10)
        over.set()

    def hook(frame: Any, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code is handle.Boss._give.__code__:
            in_give.set()

    try:
        with multiprocessing.Manager() as manager, taskfarm.Executor(2) as executor:
            go = manager.Event()
            list(executor.map(back, range(2)))
            failed = executor.submit(gated_boom, go)   # a lone call, through the boss
            failed.add_done_callback(callback)
            go.set()
            assert in_callback.wait(WAIT)
            sys.setprofile(hook)
            try:
                with pytest.raises(KeyboardInterrupt):
                    executor.submit(back, 2)   # the second lone call: it opens a lease
                    release.wait(WAIT)
                assert in_give.is_set(), "no lease was given: the test proves nothing"
                assert not over.is_set(), "the Ctrl-C waited for the callback"
            finally:
                sys.setprofile(None)
                release.set()
            lone(executor)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert fifos() == before


def test_workers_of_the_main_program_copy_hold_no_lease(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """They write no express results (the boss does not start them itself): a lease
    there would end with each call, a FIFO made for nothing."""
    from taskfarm._main import executor_lease

    made: list[int] = []
    real = executor_lease._fifo

    def counted() -> tuple[str, int]:
        made.append(1)
        return real()

    monkeypatch.setattr(executor_lease, "_fifo", counted)
    with taskfarm.Executor(2, start_method="main") as executor:
        lone(executor, 6)
        assert not made
