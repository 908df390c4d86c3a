"""Public-API replacements for the CPython tests that cannot run as written against
``taskfarm.Executor`` (each reason is in :data:`cpython_futures.adapter.EXCLUDED`).
Each asserts taskfarm's documented behaviour through the public API only (futures,
``shutdown``, processes as the OS shows them), and keeps the CPython test's name so
that the report pairs them.
"""

from __future__ import annotations

import os
import pickle
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import BrokenExecutor
from concurrent.futures.process import BrokenProcessPool
from types import ModuleType
from typing import Any

import psutil
from test.support.script_helper import assert_python_ok

import taskfarm

WAIT = 30.0


# ---- run in worker processes ---------------------------------------------------------------

def pid_then_sleep(path: str, seconds: float) -> None:
    with open(path, "w") as out:
        out.write(str(os.getpid()))
    time.sleep(seconds)


def acquire(semaphore: Any) -> int:
    semaphore.acquire()
    return os.getpid()


# ---- helpers ------------------------------------------------------------------------------

def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {WAIT} s: {what}")
        time.sleep(0.01)


class Mine:
    """The farm processes and executor threads that appear after this point: the
    test's own executor (``self.executor`` of the mixin runs alongside)."""

    def __init__(self) -> None:
        self.before_pids = {p.pid for p in psutil.Process().children(recursive=True)}
        self.before_threads = set(threading.enumerate())

    def no_process_left(self) -> bool:
        return not [p for p in psutil.Process().children(recursive=True)
                    if p.pid not in self.before_pids and p.is_running()
                    and p.status() != psutil.STATUS_ZOMBIE]

    def no_thread_left(self) -> bool:
        return not [t for t in threading.enumerate() if t not in self.before_threads
                    and t.name in ("taskfarm-executor", "taskfarm-receiver")]


# ---- ProcessPoolExecutorTest ------------------------------------------------------------------

def test_killed_child(self: Any) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "pid")
        victim = self.executor.submit(pid_then_sleep, path, 3)
        _until(lambda: os.path.exists(path) and os.path.getsize(path) > 0, "the pid")
        with open(path) as file:
            os.kill(int(file.read()), signal.SIGTERM)
    self.assertRaises(BrokenProcessPool, victim.result, WAIT)
    self.assertEqual(self.executor.submit(pow, 2, 8).result(WAIT), 256)


def test_saturation(self: Any) -> None:
    manager = self.get_context().Manager()
    try:
        semaphore = manager.Semaphore(0)
        submitted = [self.executor.submit(acquire, semaphore)
                     for _ in range(15 * self.worker_count)]
        _until(lambda: sum(f.running() for f in submitted) == self.worker_count,
               "max_workers calls running")
        time.sleep(0.2)
        self.assertEqual(sum(f.running() for f in submitted), self.worker_count)
        for _ in submitted:
            semaphore.release()
        pids = {f.result(WAIT) for f in submitted}
        self.assertLessEqual(len(pids), self.worker_count)
    finally:
        manager.shutdown()


def test_idle_process_reuse_one(self: Any) -> None:
    pids = {self.executor.submit(os.getpid).result(WAIT) for _ in range(3)}
    self.assertEqual(len(pids), 1)


def test_max_tasks_per_child(self: Any) -> None:
    executor = self.executor_type(1, mp_context=self.get_context(), max_tasks_per_child=3)
    pids = [executor.submit(os.getpid).result(WAIT) for _ in range(4)]
    executor.shutdown()
    self.assertEqual(len(set(pids[:3])), 1)
    self.assertNotEqual(pids[3], pids[0])


# ---- ProcessPoolShutdownTest ---------------------------------------------------------------------

def test_processes_terminate(self: Any) -> None:
    self.executor.shutdown()
    mine = Mine()
    self.executor = self.executor_type(max_workers=5, mp_context=self.get_context())
    manager = self.get_context().Manager()
    try:
        semaphore = manager.Semaphore(0)
        for _ in range(3):
            self.executor.submit(acquire, semaphore)
        for _ in range(3):
            semaphore.release()
        self.executor.shutdown()
    finally:
        manager.shutdown()
    self.assertTrue(mine.no_process_left())


def test_context_manager_shutdown(self: Any) -> None:
    mine = Mine()
    with self.executor_type(max_workers=5, mp_context=self.get_context()) as executor:
        self.assertEqual(list(executor.map(abs, range(-5, 5))),
                         [5, 4, 3, 2, 1, 0, 1, 2, 3, 4])
    self.assertTrue(mine.no_process_left())
    self.assertTrue(mine.no_thread_left())


def test_del_shutdown(self: Any) -> None:
    mine = Mine()
    executor = self.executor_type(max_workers=5, mp_context=self.get_context())
    results = executor.map(abs, range(-5, 5))
    del executor
    self.assertEqual(list(results), [abs(v) for v in range(-5, 5)])
    _until(mine.no_thread_left, "the executor's threads end")
    _until(mine.no_process_left, "the farm's processes end")


def test_shutdown_no_wait(self: Any) -> None:
    mine = Mine()
    executor = self.executor_type(max_workers=5, mp_context=self.get_context())
    results = executor.map(abs, range(-5, 5))
    executor.shutdown(wait=False)
    self.assertEqual(list(results), [abs(v) for v in range(-5, 5)])
    _until(mine.no_thread_left, "the executor's threads end")
    _until(mine.no_process_left, "the farm's processes end")


def test_cancel_futures(self: Any) -> None:
    submitted = [self.executor.submit(time.sleep, .1) for _ in range(50)]
    _until(lambda: any(f.running() or f.done() for f in submitted), "a call started")
    self.executor.shutdown(cancel_futures=True)
    cancelled = [f for f in submitted if f.cancelled()]
    self.assertGreater(len(cancelled), 20)
    others = [f for f in submitted if not f.cancelled()]
    self.assertGreater(len(others), 0)
    for future in others:
        self.assertTrue(future.done())
        self.assertIsNone(future.exception())


def _script(self: Any, cpython: ModuleType, body: str) -> tuple[bytes, bytes]:
    from .adapter import python_path

    _, out, err = assert_python_ok("-c", body.format(context=self.ctx),
                                   PYTHONPATH=python_path(cpython))
    return out, err


def interpreter_shutdown(cpython: ModuleType) -> Callable[[Any], None]:
    def test_interpreter_shutdown(self: Any) -> None:
        out, err = _script(self, cpython, """if 1:
            from multiprocessing import get_context
            from taskfarm import Executor
            from test_concurrent_futures import sleep_and_print
            if __name__ == "__main__":
                t = Executor(5, mp_context=get_context({context!r}))
                t.submit(sleep_and_print, 1.0, "apple")
            """)
        self.assertFalse(err)
        self.assertEqual(out.strip(), b"apple")
    return test_interpreter_shutdown


def submit_after_interpreter_shutdown(cpython: ModuleType) -> Callable[[Any], None]:
    def test_submit_after_interpreter_shutdown(self: Any) -> None:
        from .adapter import python_path

        _, out, err = assert_python_ok("-c", f"""if 1:
            import atexit
            @atexit.register
            def run_last():
                try:
                    t.submit(id, None)
                except RuntimeError:
                    print("runtime-error")
                    raise
            from multiprocessing import get_context
            from taskfarm import Executor
            if __name__ == "__main__":
                t = Executor(5, mp_context=get_context({self.ctx!r}))
                t.submit(id, 42).result()
            """, PYTHONPATH=python_path(cpython))
        self.assertIn("RuntimeError: cannot schedule new futures", err.decode())
        self.assertEqual(out.strip(), b"runtime-error")
    return test_submit_after_interpreter_shutdown


def hang_gh83386(cpython: ModuleType) -> Callable[[Any], None]:
    def test_hang_gh83386(self: Any) -> None:
        out, err = _script(self, cpython, """if True:
            from multiprocessing import get_context
            from taskfarm import Executor
            from test_concurrent_futures import sleep_and_print
            if __name__ == "__main__":
                t = Executor(max_workers=3, mp_context=get_context({context!r}))
                t.submit(sleep_and_print, 1.0, "apple")
                t.shutdown(wait=False)
            """)
        self.assertFalse(err)
        self.assertEqual(out.strip(), b"apple")
    return test_hang_gh83386


# ---- ExecutorDeadlockTest --------------------------------------------------------------------

def crash(error: type[BaseException], bomb: str, *, result: bool) -> Callable[[Any], None]:
    def check(self: Any) -> None:
        cpython = __import__("test_concurrent_futures")
        cls = getattr(cpython, bomb)
        if result:
            self._check_crash(error, cpython._return_instance, cls, ignore_stderr=True)
        else:
            self._check_crash(error, id, cls())
    return check


def test_shutdown_deadlock_pickle(self: Any) -> None:
    cpython = __import__("test_concurrent_futures")
    self.executor.shutdown(wait=True)
    mine = Mine()
    with self.executor_type(max_workers=2, mp_context=self.get_context()) as executor:
        self.executor = executor
        executor.submit(id, 42).result(WAIT)
        submitted = executor.submit(id, cpython.ErrorAtPickle())
        executor.shutdown(wait=False)
        with self.assertRaises(pickle.PicklingError):
            submitted.result(WAIT)
    _until(mine.no_thread_left, "the executor's threads end")


# ---- FailingInitializerMixin -----------------------------------------------------------------

def failing_initializer_set_up(cpython: ModuleType) -> Callable[[Any], None]:
    def setUp(self: Any) -> None:
        self.manager = self.get_context().Manager()
        self.log_queue = self.manager.Queue()
        self.executor_kwargs = {"initializer": cpython.init_fail,
                                "initargs": (self.log_queue,)}
        cpython.ExecutorMixin.setUp(self)
    return setUp


def failing_initializer_tear_down(self: Any) -> None:  # unittest's tearDown
    try:
        super(type(self), self).tearDown()
    finally:
        self.manager.shutdown()
        self.manager = self.log_queue = self.executor_kwargs = None  # their connections


def test_initializer(self: Any) -> None:
    with self._assert_logged("ValueError: error in initializer"):
        submitted = self.executor.submit(os.getpid)
        with self.assertRaises(BrokenExecutor):
            submitted.result(WAIT)
        with self.assertRaises(BrokenExecutor):  # at once, no waiting for a flag
            self.executor.submit(os.getpid)


def for_mixin(name: str, cpython: ModuleType) -> dict[str, Any]:
    """The replacement methods for one CPython mixin."""
    if name == "ProcessPoolExecutorTest":
        return {"test_killed_child": test_killed_child, "test_saturation": test_saturation,
                "test_idle_process_reuse_one": test_idle_process_reuse_one,
                "test_max_tasks_per_child": test_max_tasks_per_child}
    if name == "ProcessPoolShutdownTest":
        return {"test_processes_terminate": test_processes_terminate,
                "test_context_manager_shutdown": test_context_manager_shutdown,
                "test_del_shutdown": test_del_shutdown,
                "test_shutdown_no_wait": test_shutdown_no_wait,
                "test_interpreter_shutdown": interpreter_shutdown(cpython),
                "test_submit_after_interpreter_shutdown":
                    submit_after_interpreter_shutdown(cpython),
                "test_cancel_futures": test_cancel_futures,
                "test_hang_gh83386": hang_gh83386(cpython)}
    if name == "ExecutorDeadlockTest":
        return {"test_exit_at_task_unpickle": crash(SystemExit, "ExitAtUnpickle",
                                                    result=False),
                "test_error_at_task_unpickle": crash(pickle.UnpicklingError,
                                                     "ErrorAtUnpickle", result=False),
                "test_error_during_result_unpickle_in_result_handler":
                    crash(taskfarm.RemoteTaskError, "ErrorAtUnpickle", result=True),
                "test_exit_during_result_unpickle_in_result_handler":
                    crash(taskfarm.RemoteTaskError, "ExitAtUnpickle", result=True),
                "test_shutdown_deadlock_pickle": test_shutdown_deadlock_pickle}
    if name == "FailingInitializerMixin":
        return {"setUp": failing_initializer_set_up(cpython),
                "tearDown": failing_initializer_tear_down,
                "test_initializer": test_initializer}
    return {}

