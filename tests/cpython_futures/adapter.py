"""Runs CPython 3.11's ``test_concurrent_futures`` against ``taskfarm.Executor``.

The CPython file is fetched at test time (``fetch.sh``, from Debian's
``libpython3.11-testsuite``) and imported as the top-level module
``test_concurrent_futures`` (its directory on ``sys.path``, so that worker processes
import its functions by reference, as ProcessPoolExecutor's do). Its executor-generic
test classes are rebuilt with ``taskfarm.Executor`` in place of
``ProcessPoolExecutor``, exactly as its own ``create_executor_tests`` builds them:

    (CPython test mixin, TaskfarmMixin for one start method, BaseTestCase)

Every test that cannot run as written is listed in :data:`EXCLUDED` with the reason,
and most are replaced by a public-API test of taskfarm's documented behaviour
(:mod:`cpython_futures.replacements`). Two kinds of reasons:

- the test reads ProcessPoolExecutor's private attributes (``_processes``,
  ``_executor_manager_thread``, ``_call_queue``, ``_mp_context``, ``_broken``);
- it requires ProcessPoolExecutor's behaviour where taskfarm documents another: one
  worker that dies breaks the whole pool there, fails one future here; a task whose
  arguments fail to unpickle in the worker kills the worker there (BrokenProcessPool),
  raises the unpickling error on its own future here; a result that fails to unpickle
  in the main program breaks the pool there, fails its future with a RemoteTaskError
  here; ``max_tasks_per_child`` refuses the fork context there, works under every
  start method here (workers fork from the boss); initializer arguments must be
  picklable here (a ``multiprocessing.Queue`` cannot reach a running process: the
  test uses a ``Manager().Queue()``).
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import subprocess
import sys
import unittest
from pathlib import Path
from types import ModuleType
from typing import Any

import taskfarm

from . import replacements

FETCH = Path(__file__).with_name("fetch.sh")

# The CPython mixins run here, each under every start method of START_METHODS.
MIXINS = ("ProcessPoolExecutorTest", "ProcessPoolShutdownTest", "WaitTests",
          "AsCompletedTests", "ExecutorDeadlockTest", "InitializerMixin",
          "FailingInitializerMixin")

# "forkserver" maps to the farm's fork (workers forked from the small boss process):
# running it again would run the same code path twice.
START_METHODS = ("fork", "spawn")

# Under spawn, only the tests whose outcome can depend on how a worker process starts
# (what reaches it and how it dies: the crash table, initializers, Manager proxies,
# tracebacks): the whole file under both start methods takes twice the suite's minute,
# most of it in fixed sleeps (WaitTests alone sleeps 17 s) that check futures and
# waiting, which a start method does not change.
SPAWN_ONLY_THESE: dict[str, tuple[str, ...] | None] = {
    "ExecutorDeadlockTest": None,     # None: every test
    "InitializerMixin": None,
    "FailingInitializerMixin": None,
    "ProcessPoolExecutorTest": ("test_ressources_gced_in_workers", "test_traceback",
                                "test_killed_child", "test_max_tasks_per_child",
                                "test_submit", "test_submit_keyword"),
    "ProcessPoolShutdownTest": ("test_run_after_shutdown", "test_del_shutdown"),
}
NOT_UNDER_SPAWN = ("runs under fork only (the suite's time budget): what it checks does "
                   "not depend on how a worker process starts")

PRIVATE = "reads ProcessPoolExecutor's private attributes"
EXCLUDED: dict[tuple[str, str], str] = {
    ("ProcessPoolExecutorTest", "test_killed_child"):
        f"{PRIVATE} (_processes) and wants the whole pool broken by one dead worker; "
        "replaced: the dead worker's future alone raises BrokenProcessPool",
    ("ProcessPoolExecutorTest", "test_saturation"):
        f"{PRIVATE} (_processes, _max_workers); replaced: at most max_workers calls "
        "run at once (Future.running())",
    ("ProcessPoolExecutorTest", "test_idle_process_reuse_one"):
        f"{PRIVATE} (_processes); replaced: calls one after another run in one process",
    ("ProcessPoolExecutorTest", "test_idle_process_reuse_multiple"):
        f"{PRIVATE} (_processes); replaced: as test_idle_process_reuse_one",
    ("ProcessPoolExecutorTest", "test_max_tasks_per_child"):
        f"{PRIVATE} (_processes) and wants ValueError under fork; replaced: the worker "
        "is replaced after max_tasks_per_child calls, under fork as under spawn",
    ("ProcessPoolExecutorTest", "test_max_tasks_per_child_defaults_to_spawn_context"):
        f"{PRIVATE} (_mp_context); no replacement: taskfarm forks workers from the boss, "
        "so max_tasks_per_child needs no spawn default",
    ("ProcessPoolShutdownTest", "test_processes_terminate"):
        f"{PRIVATE} (_processes); replaced: shutdown() returns once no process is left",
    ("ProcessPoolShutdownTest", "test_context_manager_shutdown"):
        f"{PRIVATE} (_processes); replaced: no process is left after the with block",
    ("ProcessPoolShutdownTest", "test_del_shutdown"):
        f"{PRIVATE} (_executor_manager_thread, _processes, _call_queue); replaced: "
        "dropping the executor loses no result, and its threads end",
    ("ProcessPoolShutdownTest", "test_shutdown_no_wait"):
        f"{PRIVATE} (as test_del_shutdown); replaced: shutdown(wait=False) loses no "
        "result, and its threads end",
    ("ProcessPoolShutdownTest", "test_interpreter_shutdown"):
        "its script imports the executor class from concurrent.futures by name; "
        "replaced: the same script with taskfarm.Executor",
    ("ProcessPoolShutdownTest", "test_submit_after_interpreter_shutdown"):
        "as test_interpreter_shutdown; replaced likewise",
    ("ProcessPoolShutdownTest", "test_cancel_futures"):
        "wants some calls not cancelled by a shutdown(cancel_futures=True) made at once "
        "after submitting: ProcessPoolExecutor marks calls running as it queues them for "
        "its workers, taskfarm only once a worker starts them, so at that instant every "
        "call may still be cancellable; replaced: the same once a call has started",
    ("ProcessPoolShutdownTest", "test_hang_gh83386"):
        "skipped for ProcessPoolExecutor, and its script imports the executor from "
        "concurrent.futures; replaced: the script with taskfarm.Executor",
    ("ExecutorDeadlockTest", "test_shutdown_deadlock_pickle"):
        f"{PRIVATE} (_executor_manager_thread); replaced: the same check, then the "
        "executor's threads end",
    ("ExecutorDeadlockTest", "test_exit_at_task_unpickle"):
        "wants BrokenProcessPool; replaced: the SystemExit raised while unpickling the "
        "arguments in the worker is that future's exception",
    ("ExecutorDeadlockTest", "test_error_at_task_unpickle"):
        "wants BrokenProcessPool; replaced: the UnpicklingError is that future's",
    ("ExecutorDeadlockTest", "test_error_during_result_unpickle_in_result_handler"):
        "wants BrokenProcessPool; replaced: that future raises taskfarm.RemoteTaskError",
    ("ExecutorDeadlockTest", "test_exit_during_result_unpickle_in_result_handler"):
        "wants BrokenProcessPool; replaced: that future raises taskfarm.RemoteTaskError",
    ("FailingInitializerMixin", "test_initializer"):
        f"{PRIVATE} (_broken) and gives a multiprocessing.Queue to the initializer; "
        "replaced: a Manager().Queue() gets the worker's log, the future raises "
        "BrokenExecutor, and so does the next submit at once",
}


class Unavailable(Exception):
    """The CPython test file cannot be had here (the reason is the message)."""


def fetch() -> Path:
    """The CPython test file, fetched if needed; raises Unavailable with the reason."""
    try:
        done = subprocess.run(["sh", str(FETCH)], capture_output=True, text=True,
                              timeout=300, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Unavailable(f"fetch.sh could not run: {exc}") from exc
    if done.returncode != 0:
        raise Unavailable(done.stderr.strip() or f"fetch.sh exited {done.returncode}")
    return Path(done.stdout.strip().splitlines()[-1])


def load(path: Path) -> ModuleType:
    """Import the fetched file as ``test_concurrent_futures``."""
    directory = str(path.parent)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    return importlib.import_module("test_concurrent_futures")


def build_classes(cpython: ModuleType) -> dict[str, type[unittest.TestCase]]:
    """The test classes to run, by name: CPython's, with taskfarm.Executor."""
    classes: dict[str, type[unittest.TestCase]] = {}
    classes["FutureTests"] = type("FutureTests", (cpython.FutureTests,), {})
    for method in START_METHODS:
        mixin = type(f"Taskfarm{method.title()}Mixin", (cpython.ExecutorMixin,), {
            "executor_type": taskfarm.Executor, "ctx": method,
            "get_context": lambda self: multiprocessing.get_context(self.ctx)})
        for name in MIXINS:
            if method != "fork" and name not in SPAWN_ONLY_THESE:
                continue
            namespace: dict[str, Any] = {}
            for (owner, test), reason in EXCLUDED.items():
                if owner == name:
                    namespace[test] = unittest.skip(reason)(_never)
            namespace.update(replacements.for_mixin(name, cpython))
            chosen = SPAWN_ONLY_THESE.get(name)
            if method != "fork" and chosen is not None:
                for test in dir(getattr(cpython, name)):
                    if test.startswith("test_") and test not in chosen:
                        namespace[test] = unittest.skip(NOT_UNDER_SPAWN)(_never)
            title = f"Taskfarm{method.title()}{_strip(name)}Test"
            classes[title] = type(title, (getattr(cpython, name), mixin,
                                          cpython.BaseTestCase), namespace)
    return classes


def _never(self: unittest.TestCase) -> None:
    raise AssertionError("excluded")  # pragma: no cover - always skipped


def _strip(name: str) -> str:
    for suffix in ("Mixin", "Tests", "Test"):
        if name.endswith(suffix):
            return name[:-len(suffix)]
    return name


def python_path(cpython: ModuleType) -> str:
    """PYTHONPATH for a script that imports the CPython test module and this package."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    extra = [os.path.dirname(cpython.__file__ or ""), here, os.environ.get("PYTHONPATH")]
    return os.pathsep.join(p for p in extra if p)
