"""taskfarm: farm tasks out to worker processes.

A :class:`Boss` runs in its own subprocess; it receives instruction sets (dicts) and
control signals from the main program, asks a scheduler what is launchable, and runs
each set with the :class:`Worker` class whose declared instructions match it, in
worker processes that are reused task after task. Every task ends in exactly one
terminal state, reported as a :class:`TaskReport` the moment it ends.

Quick use::

    import taskfarm

    class Square(taskfarm.Worker):
        x: int
        def task(self):
            return self.x ** 2

    report = taskfarm.batch_main(individual_instructions={"x": [1, 2, 3]})

The architecture is drawn in :mod:`taskfarm.boss_process`; errors are listed in
:mod:`taskfarm.errors`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .errors import (
        AmbiguousWorkerError,
        BossDiedError,
        BossStateError,
        InstructionError,
        InstructionTypeError,
        NoMatchingWorkerError,
        RemoteTaskError,
        TaskCancelledError,
        TaskError,
        TaskfarmError,
        WorkerKilledError,
    )
    from .main_entry import batch_main, run_as_server
    from .main_handle import Boss
    from .protocol import Signal
    from .report import Report, ReportStatus, TaskReport, TaskStatus
    from .shared import SharedArray
    from .worker import Worker

# Public names are loaded on first use (PEP 562), so that the boss and worker
# processes, which run ``python -m taskfarm.<module>``, do not import the main
# program's side of the package.
_WHERE = {
    **dict.fromkeys(["AmbiguousWorkerError", "BossDiedError", "BossStateError",
                     "InstructionError", "InstructionTypeError", "NoMatchingWorkerError",
                     "RemoteTaskError", "TaskCancelledError", "TaskError", "TaskfarmError",
                     "WorkerKilledError"], "errors"),
    "batch_main": "main_entry",
    "run_as_server": "main_entry",
    "Boss": "main_handle",
    "Signal": "protocol",
    **dict.fromkeys(["Report", "ReportStatus", "TaskReport", "TaskStatus"], "report"),
    "SharedArray": "shared",
    "Worker": "worker",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'taskfarm' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])


__version__ = "0.1.0"

__all__ = [
    "AmbiguousWorkerError",
    "Boss",
    "BossDiedError",
    "BossStateError",
    "InstructionError",
    "InstructionTypeError",
    "NoMatchingWorkerError",
    "RemoteTaskError",
    "Report",
    "ReportStatus",
    "SharedArray",
    "Signal",
    "TaskCancelledError",
    "TaskError",
    "TaskReport",
    "TaskStatus",
    "TaskfarmError",
    "Worker",
    "WorkerKilledError",
    "batch_main",
    "run_as_server",
]
