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
from .worker import Worker

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
