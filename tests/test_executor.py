"""``taskfarm.Executor``: the ``concurrent.futures`` contract, and what the farm adds
(a dead worker fails one future, timeouts, no stale references), with real processes
under both start methods. CPython's own executor tests run in
``tests/test_cpython_futures.py``.

The crash table (stage x kind) checks that each failure ends its own future with a
clear error and the executor goes on:

    stage                              exception     exit        signal
    arguments pickled (main)           x (pickle)    -           -
    arguments unpickled (worker)       x             x           x (SIGSEGV)
    call runs (worker)                 x             x           x (SIGKILL)
    result pickled (worker)            x             x           x (SIGSEGV)
    result unpickled (main)            x             x (caught)  -
"""

from __future__ import annotations

import asyncio
import functools
import gc
import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
import weakref
from concurrent import futures
from concurrent.futures import BrokenExecutor, Future
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import psutil
import pytest
from workers import Gate, Mailbox

import taskfarm
from taskfarm._main import executor as executor_module

WAIT = 30.0   # the longest any wait in these tests may take


# ---- functions the workers run (importable by reference) -----------------------------

def add(x: int, y: int = 0) -> int:
    return x + y


def capture(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
    return args, kwargs


def divide(x: int, y: int) -> float:
    return x / y


def pid() -> int:
    return os.getpid()


def die(signum: int) -> None:
    os.kill(os.getpid(), signum)


def leave(code: int) -> None:
    sys.exit(code)


def hard_exit(code: int) -> None:
    os._exit(code)


def wait_at(gate: Gate, mailbox: Mailbox | None = None, tag: str = "") -> int:
    if mailbox is not None:
        mailbox.post(f"{tag} {os.getpid()}")
    gate.wait()
    return os.getpid()


def sys_path() -> list[str]:
    return list(sys.path)


def put(proxy: Any, key: str, value: int) -> None:
    proxy[key] = value


def back(value: Any) -> Any:
    return value


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


_COUNT = 0


def count_setup(mailbox: Mailbox) -> None:
    global _COUNT
    _COUNT += 1
    mailbox.post(f"setup {os.getpid()}")


def setups() -> tuple[int, int]:
    return os.getpid(), _COUNT


def failing_setup() -> None:
    raise ValueError("no database")


class Bomb:
    """Goes off when pickled or unpickled, as ``how`` says."""

    def __init__(self, when: str, how: str) -> None:
        self.when, self.how = when, how

    def __reduce__(self) -> Any:
        if self.when == "pickle":
            _go_off(self.how)
        return _go_off, (self.how,)


def _go_off(how: str) -> None:
    if how == "error":
        raise pickle.PicklingError("bomb")
    if how == "exit":
        sys.exit(3)
    if how == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)
    raise AssertionError(how)


def make_bomb(when: str, how: str) -> Bomb:
    return Bomb(when, how)


class Unpicklable:
    def __reduce__(self) -> Any:
        raise TypeError("this object stays here")


# ---- helpers --------------------------------------------------------------------------

@pytest.fixture
def executor() -> Any:
    """An executor with the default start method."""
    made = taskfarm.Executor(2)
    yield made
    made.shutdown(wait=True)


@pytest.fixture
def executor_each(start_method: str) -> Any:
    """An executor under each start method (what reaches a worker, and how it dies,
    can depend on how the worker started)."""
    made = taskfarm.Executor(2)
    yield made
    made.shutdown(wait=True)


def farm_processes() -> list[psutil.Process]:
    """The boss and worker processes still running (their command line names the
    farm's entry points)."""
    return [p for p in psutil.Process().children(recursive=True) if p.is_running()
            and p.status() != psutil.STATUS_ZOMBIE and "taskfarm" in " ".join(p.cmdline())]


def run_script(script: Any, *args: str, env: dict[str, str] | None = None
               ) -> subprocess.CompletedProcess[bytes]:
    """Run a program of the test's own in a fresh interpreter; its output, captured."""
    return subprocess.run([sys.executable, str(script), *args], capture_output=True,
                          timeout=WAIT, env=env, check=False)


def executor_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate()
            if t.name in ("taskfarm-executor", "taskfarm-receiver")]


# ---- submit and the future --------------------------------------------------------------

def test_submit_returns_a_genuine_future_with_the_result(executor: taskfarm.Executor) -> None:
    future = executor.submit(add, 2, y=40)
    # A Future (its subclass only tells the executor of a cancel): what takes one,
    # asyncio's bridge included, takes it.
    assert isinstance(future, Future)
    assert future.result(timeout=WAIT) == 42

    async def awaited() -> Any:
        return await asyncio.wait_for(asyncio.wrap_future(executor.submit(add, 1, 2)), WAIT)

    assert asyncio.run(awaited()) == 3
    assert executor.submit(capture, 1, fn=2, self=3).result(timeout=WAIT) == \
        ((1,), {"fn": 2, "self": 3})
    done, _ = futures.wait([executor.submit(add, i) for i in range(20)], timeout=WAIT)
    assert sorted(f.result() for f in done) == list(range(20))


def test_lone_calls_and_bursts_keep_every_result(executor: taskfarm.Executor) -> None:
    # A lone call is given to the boss from the submitting thread, a burst by the
    # feeder: both, interleaved, from several threads.
    def client(base: int) -> list[int]:
        got = [executor.submit(add, base, i).result(timeout=WAIT) for i in range(5)]
        burst = [executor.submit(add, base, i) for i in range(50)]
        return got + [f.result(timeout=WAIT) for f in burst]

    threads = [futures.ThreadPoolExecutor(1) for _ in range(3)]
    results = [pool.submit(client, 1000 * n) for n, pool in enumerate(threads)]
    for n, result in enumerate(results):
        assert result.result(timeout=WAIT) == \
            [1000 * n + i for i in range(5)] + [1000 * n + i for i in range(50)]
    for pool in threads:
        pool.shutdown()


def test_a_done_callback_may_submit(executor: taskfarm.Executor) -> None:
    # Done callbacks run in the thread that reads the boss's messages: a lone call
    # submitted there must wait for the feeder rather than be given from there.
    second: Future[Future[int]] = Future()
    first = executor.submit(add, 1)
    first.add_done_callback(lambda f: second.set_result(executor.submit(add, f.result(), 1)))
    assert second.result(timeout=WAIT).result(timeout=WAIT) == 2


def test_functions_and_lambdas_of_the_caller_travel_by_value(
        executor_each: taskfarm.Executor) -> None:
    executor = executor_each
    offset = 10

    def local(x: int) -> int:
        return x + offset

    assert executor.submit(local, 1).result(timeout=WAIT) == 11
    assert executor.submit(lambda x: x * 2, 21).result(timeout=WAIT) == 42
    assert list(executor.map(lambda x: -x, range(5), chunksize=2)) == [0, -1, -2, -3, -4]


def test_functions_of_main_see_the_globals_of_the_moment(tmp_path: Any) -> None:
    # A function of __main__ travels by value; its pickle is kept from one call to
    # the next only while nothing that went into it changed (executor_functions.py).
    script = tmp_path / "script.py"
    script.write_text(
        "import taskfarm\n"
        "SCALE = 2\n"
        "ITEMS = [1]\n"
        "def scaled(x): return x * SCALE\n"
        "def counted(x): return x + len(ITEMS)\n"
        "def helper(x): return x + 1\n"
        "def calling(x): return helper(x)\n"
        "def defaulted(x, k=1): return x + k\n"
        "if __name__ == '__main__':\n"
        "    with taskfarm.Executor(1) as executor:\n"
        "        got = [executor.submit(scaled, 1).result()]\n"
        "        SCALE = 10 ** 6\n"
        "        got.append(executor.submit(scaled, 1).result())\n"
        "        got.append(executor.submit(counted, 1).result())\n"
        "        ITEMS.append(2)\n"
        "        got.append(executor.submit(counted, 1).result())\n"
        "        got.append(executor.submit(calling, 1).result())\n"
        "        def helper(x): return x + 10\n"
        "        got.append(executor.submit(calling, 1).result())\n"
        "        got.append(executor.submit(defaulted, 1).result())\n"
        "        defaulted.__defaults__ = (5,)\n"
        "        got.append(executor.submit(defaulted, 1).result())\n"
        "        print(got)\n")
    done = run_script(script)
    assert done.stdout.strip() == b"[2, 1000000, 2, 3, 2, 11, 2, 6]", done.stderr


def test_a_function_of_main_that_raises_shows_its_own_file_and_line(tmp_path: Any) -> None:
    # A function of __main__ travels by value; the traceback of its failure still
    # names the script and shows the line that raised, as it would have run here.
    script = tmp_path / "script.py"
    script.write_text(
        "import traceback, taskfarm\n"
        "def explode(x):\n"
        "    raise ValueError(x)  # the line that raised\n"
        "if __name__ == '__main__':\n"
        "    with taskfarm.Executor(1) as executor:\n"
        "        future = executor.submit(lambda x: explode(x), 5)\n"
        "        try:\n"
        "            future.result()\n"
        "        except ValueError as error:\n"
        "            traceback.print_exception(error)\n")
    done = run_script(script)
    shown = done.stderr.decode()
    assert f'File "{script}", line 3, in explode' in shown, shown
    assert "raise ValueError(x)  # the line that raised" in shown, shown
    assert f'File "{script}", line 6, in <lambda>' in shown, shown


def test_an_argument_that_cannot_be_pickled_fails_its_future_only(
        executor: taskfarm.Executor) -> None:
    bad = executor.submit(back, Unpicklable())          # submit itself never raises
    good = executor.submit(add, 1, 2)
    with pytest.raises(TypeError, match="stays here") as info:
        bad.result(timeout=WAIT)
    assert "while pickling the arguments" in "".join(info.value.__notes__)
    assert good.result(timeout=WAIT) == 3


def test_exceptions_keep_type_args_and_worker_frames(executor: taskfarm.Executor) -> None:
    with pytest.raises(ZeroDivisionError) as info:
        executor.submit(divide, 1, 0).result(timeout=WAIT)
    assert info.value.args == ("division by zero",)
    frames = [frame.name for frame in info.traceback]
    assert "divide" in frames
    assert "return x / y" in info.value.__cause__.tb  # type: ignore[union-attr]
    with pytest.raises(SystemExit) as exited:
        executor.submit(leave, 4).result(timeout=WAIT)
    assert exited.value.code == 4


def test_a_killed_worker_fails_only_its_future_and_the_executor_goes_on(
        start_method: str, gate: Gate, mailbox: Mailbox) -> None:
    with taskfarm.Executor(2) as executor:
        victim = executor.submit(wait_at, gate, mailbox, "victim")
        other = executor.submit(wait_at, gate, mailbox, "other")
        pids = dict(line.split() for line in mailbox.read(2, timeout=WAIT))
        os.kill(int(pids["victim"]), signal.SIGKILL)
        with pytest.raises(BrokenProcessPool, match="SIGKILL") as info:
            victim.result(timeout=WAIT)
        assert isinstance(info.value, taskfarm.WorkerKilledError)
        assert info.value.signal_name == "SIGKILL"
        assert info.value.pid == int(pids["victim"])
        gate.release(1)
        assert other.result(timeout=WAIT) == int(pids["other"])
        assert executor.submit(add, 1, 1).result(timeout=WAIT) == 2


@pytest.mark.parametrize(("fn", "args", "error", "match"), [
    (back, (Bomb("pickle", "error"),), pickle.PicklingError, "bomb"),
    (back, (Bomb("unpickle", "error"),), pickle.PicklingError, "bomb"),
    (back, (Bomb("unpickle", "exit"),), SystemExit, "3"),
    (back, (Bomb("unpickle", "segv"),), BrokenProcessPool, "SIGSEGV"),
    (die, (signal.SIGKILL,), BrokenProcessPool, "SIGKILL"),
    (hard_exit, (7,), BrokenProcessPool, "code 7"),
    (leave, (5,), SystemExit, "5"),
    (divide, (1, 0), ZeroDivisionError, "division"),
    (make_bomb, ("pickle", "error"), pickle.PicklingError, "bomb"),
    (make_bomb, ("pickle", "exit"), SystemExit, "3"),
    (make_bomb, ("pickle", "segv"), BrokenProcessPool, "SIGSEGV"),
    (make_bomb, ("unpickle", "error"), taskfarm.RemoteTaskError, "could not be unpickled"),
    (make_bomb, ("unpickle", "exit"), taskfarm.RemoteTaskError, "SystemExit"),
], ids=["args-pickle-error", "args-unpickle-error", "args-unpickle-exit",
        "args-unpickle-segv", "call-sigkill", "call-os-exit", "call-sys-exit",
        "call-raises", "result-pickle-error", "result-pickle-exit", "result-pickle-segv",
        "result-unpickle-error", "result-unpickle-exit"])
def test_crash_table(executor_each: taskfarm.Executor, fn: Any, args: tuple[Any, ...],
                     error: type[BaseException], match: str) -> None:
    executor = executor_each
    failing = executor.submit(fn, *args)
    with pytest.raises(error, match=match):
        failing.result(timeout=WAIT)
    assert executor.submit(add, 2, 3).result(timeout=WAIT) == 5


# ---- running, cancelling, shutting down ----------------------------------------------------

def test_a_future_runs_only_once_a_worker_started_it(start_method: str, gate: Gate,
                                                      mailbox: Mailbox) -> None:
    with taskfarm.Executor(1) as executor:
        first = executor.submit(wait_at, gate, mailbox, "first")
        queued = executor.submit(wait_at, gate, mailbox, "queued")
        mailbox.read(1, timeout=WAIT)
        deadline = time.monotonic() + WAIT
        while not first.running():   # the STARTED notice is on its way
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert not queued.running()
        assert not first.cancel()
        assert queued.cancel()
        gate.release(1)
        assert first.result(timeout=WAIT) > 0
        assert queued.cancelled()
        done, _ = futures.wait([queued], timeout=WAIT)
        assert done == {queued}


def test_a_cancel_while_the_start_is_held_stops_the_call(
        gate: Gate, mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """The boss holds the news that a call started (STARTED_HOLD): until it comes, the
    call may still be cancelled, and it is stopped as for a timeout."""
    monkeypatch.setattr(executor_module, "STARTED_HOLD", 60.0)
    with taskfarm.Executor(1) as executor:
        held = executor.submit(wait_at, gate, mailbox, "held")
        mailbox.read(1, timeout=WAIT)     # the worker runs it
        assert not held.running()
        assert held.cancel()
        # Its process is stopped and replaced: the next call runs although the gate
        # stays shut.
        assert executor.submit(add, 2, 3).result(timeout=WAIT) == 5
        assert held.cancelled()


def test_cancelling_twice_or_after_shutdown_logs_nothing(
        gate: Gate, mailbox: Mailbox, caplog: pytest.LogCaptureFixture) -> None:
    """A future cancelled again (by its caller, by shutdown(cancel_futures=True), by a
    map's iterator closing) stays quietly cancelled: concurrent.futures logs CRITICAL
    "in unexpected state" if a cancelled future is notified twice."""
    executor = taskfarm.Executor(1)
    try:
        running = executor.submit(wait_at, gate, mailbox, "running")
        mailbox.read(1, timeout=WAIT)
        queued = executor.submit(add, 1, 2)
        assert queued.cancel() and queued.cancel()
        results = executor.map(add, range(20), chunksize=2)
        executor.shutdown(wait=False, cancel_futures=True)
        with pytest.raises(futures.CancelledError):
            list(results)
        gate.release(1)
        assert running.result(timeout=WAIT) > 0
        done, _ = futures.wait([queued], timeout=WAIT)
        assert done == {queued}
    finally:
        gate.release(1)
        executor.shutdown(wait=True)
    assert not [r for r in caplog.records if r.name == "concurrent.futures"]


def test_shutdown_cancels_what_has_not_started(start_method: str, gate: Gate,
                                               mailbox: Mailbox) -> None:
    executor = taskfarm.Executor(1)
    running = executor.submit(wait_at, gate, mailbox, "running")
    mailbox.read(1, timeout=WAIT)
    waiting = [executor.submit(add, i) for i in range(20)]
    threading.Timer(0.2, gate.release).start()
    executor.shutdown(wait=True, cancel_futures=True)
    assert running.result(timeout=0) > 0
    assert all(f.cancelled() for f in waiting)
    assert not farm_processes()


def test_shutdown_is_idempotent_and_refuses_later_submits(executor: taskfarm.Executor) -> None:
    future = executor.submit(nap, 0.2)
    executor.shutdown(wait=True)
    assert future.done() and future.result() == 0.2
    executor.shutdown(wait=True)
    executor.shutdown(wait=False, cancel_futures=True)
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        executor.submit(add, 1)
    assert not farm_processes()
    assert not executor_threads()


def test_shutdown_without_waiting_and_dropping_lose_no_work(start_method: str) -> None:
    executor = taskfarm.Executor(2)
    results = executor.map(nap, [0.05] * 6)
    submitted = [executor.submit(add, i, 1) for i in range(10)]
    executor.shutdown(wait=False)
    assert list(results) == [0.05] * 6
    assert [f.result(timeout=WAIT) for f in submitted] == list(range(1, 11))
    dropped = taskfarm.Executor(2)
    more = [dropped.submit(add, i, 2) for i in range(10)]
    del dropped
    gc.collect()
    assert [f.result(timeout=WAIT) for f in more] == list(range(2, 12))
    deadline = time.monotonic() + WAIT
    while executor_threads():  # the farms end once their work is done
        assert time.monotonic() < deadline, executor_threads()
        time.sleep(0.02)


EXIT_SCRIPT = """
import sys, time
import taskfarm
from test_executor import nap

def say(text):
    time.sleep(0.3)
    print(text, flush=True)

if __name__ == "__main__":
    executor = taskfarm.Executor(2)
    executor.submit(say, "apple")
    executor.submit(nap, 0.1)
    if sys.argv[1] == "boss":
        boss = taskfarm.Boss()
    # no shutdown: the interpreter's exit lets the calls finish, quietly
"""


def test_pending_calls_finish_quietly_at_interpreter_exit(start_method: str,
                                                          tmp_path: Any) -> None:
    script = tmp_path / "script.py"
    script.write_text(EXIT_SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [os.path.dirname(__file__), *filter(None, [os.environ.get("PYTHONPATH")])])}
    done = run_script(script, "boss", env=env)
    assert done.returncode == 0
    assert done.stdout.strip() == b"apple"
    assert done.stderr == b""


def test_submit_after_interpreter_shutdown_is_refused(tmp_path: Any) -> None:
    script = tmp_path / "script.py"
    script.write_text(
        "import atexit, taskfarm\n"
        "@atexit.register\n"
        "def last():\n"
        "    try:\n"
        "        executor.submit(id, 1)\n"
        "    except RuntimeError as exc:\n"
        "        print(exc)\n"
        "executor = taskfarm.Executor(1)\n"
        "executor.submit(id, 42).result()\n")
    done = run_script(script)
    assert done.stdout.strip() == b"cannot schedule new futures after interpreter shutdown"


# ---- map --------------------------------------------------------------------------------------

def test_map_in_order_with_exceptions_at_their_position(executor: taskfarm.Executor) -> None:
    assert list(executor.map(add, range(10), range(10))) == list(range(0, 20, 2))
    for chunksize, before in ((1, 3), (3, 3), (50, 0)):  # a chunk fails as a whole
        results = executor.map(divide, [1, 2, 3, 4], [1, 1, 1, 0], chunksize=chunksize)
        assert [next(results) for _ in range(before)] == [1.0, 2.0, 3.0][:before]
        with pytest.raises(ZeroDivisionError):
            next(results)
    # Over one iterable a chunk travels as its list of items: the same results.
    assert list(executor.map(abs, range(-5, 6), chunksize=3)) == [abs(i) for i in range(-5, 6)]
    results = executor.map(functools.partial(divide, 12), [1, 2, 0, 4], chunksize=2)
    assert [next(results), next(results)] == [12.0, 6.0]
    with pytest.raises(ZeroDivisionError):
        next(results)
    with pytest.raises(ValueError, match="chunksize"):
        executor.map(add, [1], chunksize=0)


def test_map_timeout(executor: taskfarm.Executor) -> None:
    # Workers started first: the timeout is about the calls, not about starting the
    # processes on a loaded machine; a nap of 2 s cannot end within 1.5 s.
    assert list(executor.map(nap, [0, 0])) == [0, 0]
    results = executor.map(nap, [0, 0, 2], timeout=1.5)
    assert next(results) == 0
    assert next(results) == 0
    with pytest.raises(futures.TimeoutError):
        next(results)


def test_map_keeps_no_result_it_has_yielded(executor: taskfarm.Executor) -> None:
    for chunksize in (1, 4):
        for value in executor.map(Unkept, range(8), chunksize=chunksize):
            ref = weakref.ref(value)
            del value
            gc.collect()
            assert ref() is None


class Unkept:
    def __init__(self, value: int) -> None:
        self.value = value


def test_no_reference_kept_to_calls_or_results(executor: taskfarm.Executor) -> None:
    argument = Unkept(1)
    ref = weakref.ref(argument)
    executor.submit(back, argument).result(timeout=WAIT)   # future dropped at once
    executor.submit(add, 1).result(timeout=WAIT)
    del argument
    gc.collect()
    assert ref() is None


# ---- initializer, options, contexts ------------------------------------------------------------

def test_initializer_runs_once_per_worker_process(start_method: str, mailbox: Mailbox) -> None:
    with taskfarm.Executor(2, initializer=count_setup, initargs=(mailbox,)) as executor:
        seen = [f.result(timeout=WAIT) for f in [executor.submit(setups) for _ in range(30)]]
    assert {count for _, count in seen} == {1}
    assert len(mailbox.read(len({p for p, _ in seen}), timeout=WAIT)) >= 1


def test_a_failing_initializer_breaks_the_executor(start_method: str) -> None:
    with taskfarm.Executor(2, initializer=failing_setup) as executor:
        submitted = [executor.submit(add, i) for i in range(5)]
        with pytest.raises(BrokenExecutor, match="no database") as info:
            submitted[0].result(timeout=WAIT)
        remote = info.value.__cause__.__cause__  # type: ignore[union-attr]
        assert "ValueError: no database" in remote.tb  # type: ignore[union-attr]
        for future in submitted:
            with pytest.raises(BrokenExecutor):
                future.result(timeout=WAIT)
        with pytest.raises(BrokenExecutor):
            executor.submit(add, 1)


def test_manager_proxies_travel_and_workers_get_the_main_sys_path(start_method: str) -> None:
    with multiprocessing.Manager() as manager, taskfarm.Executor(2) as executor:
        shared = manager.dict()
        for i in range(4):
            executor.submit(put, shared, f"k{i}", i).result(timeout=WAIT)
        assert dict(shared) == {f"k{i}": i for i in range(4)}
        assert executor.submit(sys_path).result(timeout=WAIT) == sys.path


def test_max_tasks_per_child_replaces_the_worker(start_method: str) -> None:
    with taskfarm.Executor(1, max_tasks_per_child=2) as executor:
        pids = [executor.submit(pid).result(timeout=WAIT) for _ in range(6)]
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4] == pids[5]


def test_timeout_and_retries_of_the_farm() -> None:
    with taskfarm.Executor(1, timeout=0.5) as executor:
        started = time.monotonic()
        with pytest.raises(taskfarm.TaskCancelledError, match="timeout"):
            executor.submit(nap, 30).result(timeout=WAIT)
        assert time.monotonic() - started < 10
        assert executor.submit(add, 1).result(timeout=WAIT) == 1


def test_on_error_raise_breaks_the_executor_at_the_first_failure() -> None:
    with taskfarm.Executor(1, on_error="raise") as executor:
        failing = executor.submit(divide, 1, 0)
        with pytest.raises(ZeroDivisionError):
            failing.result(timeout=WAIT)
        with pytest.raises(BrokenExecutor, match="on_error='raise'"):
            executor.submit(add, 1)


@pytest.mark.parametrize("context", ["fork", "forkserver", "spawn"])
def test_multiprocessing_contexts(context: str) -> None:
    with taskfarm.Executor(1, mp_context=multiprocessing.get_context(context)) as executor:
        assert executor.submit(add, 1, 2).result(timeout=WAIT) == 3


def test_bad_arguments_to_the_executor() -> None:
    for number in (0, -1):
        with pytest.raises(ValueError, match="max_workers must be greater than 0"):
            taskfarm.Executor(number)
    with pytest.raises(ValueError, match="max_tasks_per_child"):
        taskfarm.Executor(1, max_tasks_per_child=0)
    with pytest.raises(ValueError, match="disagree"):
        taskfarm.Executor(1, mp_context="spawn", start_method="fork")
    with pytest.raises(TypeError, match="Manager"):
        taskfarm.Executor(1, initializer=print, initargs=(threading.Lock(),))


def test_a_dead_boss_fails_pending_futures_and_later_submits(gate: Gate,
                                                            mailbox: Mailbox) -> None:
    executor = taskfarm.Executor(1)
    running = executor.submit(wait_at, gate, mailbox)
    mailbox.read(1, timeout=WAIT)
    boss = next(p for p in psutil.Process().children() if "taskfarm._boss" in p.cmdline())
    boss.kill()
    with pytest.raises(BrokenExecutor, match="died"):
        running.result(timeout=WAIT)
    with pytest.raises(BrokenExecutor):
        executor.submit(add, 1)
    executor.shutdown(wait=True)


def test_a_future_of_the_executor_has_every_field_of_a_standard_future() -> None:
    """CallFuture sets Future's fields itself (executor_future._OWN_INIT): none missing,
    whatever this Python's Future has."""
    from taskfarm._main.executor_future import CallFuture

    with taskfarm.Executor(1) as executor:
        future = executor.submit(abs, -1)
        assert isinstance(future, CallFuture)
        assert set(vars(Future())) <= set(vars(future))
        assert future.result(WAIT) == 1
