"""The options a Boss is made with, checked in the main program before any process
starts (a bad option is a ValueError or TypeError at the call that gave it), and the
configuration the boss process receives from them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from schedulers import BaseScheduler, MaxThreadsScheduler
from taskfarm._common import by_value
from taskfarm._common.errors import InstructionError
from taskfarm._common.messages import Configure
from taskfarm._common.processes import START_METHODS
from taskfarm._main.logs import forwarded_levels
from taskfarm._main.policies import check_policies

if TYPE_CHECKING:
    from taskfarm._main.journal import Journal


def run_policies(timeout: float | None, retries: int, retry_on: Sequence[str] | None,
                 retry_memory: float) -> dict[str, Any]:
    """The run-level policies that differ from the defaults, checked."""
    policies = {"timeout": timeout, "retries": retries or None,
                "retry_on": tuple(retry_on) if retry_on is not None else None,
                "retry_memory": retry_memory if retry_memory != 1.0 else None}
    policies = {k: v for k, v in policies.items() if v is not None}
    try:
        check_policies(policies, "Boss")
    except InstructionError as exc:
        raise ValueError(str(exc)) from None
    return policies


def checked_scheduler(scheduler: Any) -> Any:
    """The scheduler to use (default: one task per CPU this process may use)."""
    if scheduler is None:
        return MaxThreadsScheduler()
    if isinstance(scheduler, type):
        raise TypeError(f"scheduler={scheduler.__name__} is a class: pass an instance, "
                        f"such as {scheduler.__name__}()")
    if not callable(getattr(scheduler, "launchable", None)):
        raise TypeError(f"scheduler {scheduler!r} has no launchable() method; "
                        "subclass schedulers.BaseScheduler")
    return scheduler


def instruction_check(scheduler: Any) -> Any:
    """The scheduler's check_instructions, when it checks anything (only then does it
    cost a call per instruction set)."""
    checks = getattr(type(scheduler), "check_instructions", None)
    if checks in (None, BaseScheduler.check_instructions):
        return None
    return scheduler.check_instructions


def configuration(scheduler: Any, name: str, *, on_error: str, isolated: bool,
                  start_method: str | None, verbose: bool, memory_limit: bool,
                  seed: int | None, capture_output: bool,
                  max_tasks_per_child: int | None, started_notices: bool,
                  backend: Any = None) -> Configure:
    """Check the process-level options; the boss's configuration made of them."""
    if on_error not in ("raise", "continue"):
        raise ValueError(f"on_error must be 'raise' or 'continue', not {on_error!r}")
    if start_method is None:
        start_method = os.environ.get("TASKFARM_START_METHOD") or "fork"
    if start_method not in START_METHODS:
        raise ValueError(f"start_method must be one of {START_METHODS}, not {start_method!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ValueError(f"seed must be a non-negative integer, not {seed!r}")
    if max_tasks_per_child is not None and (
            isinstance(max_tasks_per_child, bool) or not isinstance(max_tasks_per_child, int)
            or max_tasks_per_child < 1):
        raise ValueError("max_tasks_per_child must be a positive integer or None, not "
                         f"{max_tasks_per_child!r}")
    where = None
    if backend is not None and start_method == "main":
        raise ValueError("start_method='main' forks worker processes on this machine: "
                         "it does not go with a backend")
    if backend is not None:
        check = getattr(backend, "check_farm", None)
        if callable(check):   # what does not cross machines is refused here
            check(scheduler, isolated=isolated)
        describe = getattr(backend, "boss_configuration", None)
        if not callable(describe):
            raise TypeError(f"backend={backend!r} is not a taskfarm backend (such as "
                            "taskfarm.DaskBackend())")
        where = describe()
    log_level, task_log_level = forwarded_levels()
    return Configure(list(sys.path), by_value.dumps(scheduler), on_error, isolated,
                     start_method, verbose, name, bool(memory_limit), log_level,
                     task_log_level, seed, bool(capture_output), max_tasks_per_child,
                     started_notices, where)


def open_journal(path: str | os.PathLike[str] | None) -> Journal | None:
    """The journal at ``path`` (None: none); sqlite3 and the rest are imported only by
    the programs that use one."""
    if path is None:
        return None
    from taskfarm._main.journal import Journal

    return Journal(path)
