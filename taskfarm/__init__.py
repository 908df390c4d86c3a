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

The architecture is drawn in :mod:`taskfarm._boss.loop`; errors are listed in
:mod:`taskfarm._common.errors`.
"""

import importlib as _importlib
import typing as _typing

# The one list of public names, each with the private module that defines it. Names
# are loaded on first use (PEP 562), so that the boss and worker processes, which run
# ``python -m taskfarm._boss`` and ``python -m taskfarm._worker``, never import the
# main program's side of the package.
_PUBLIC = {
    "Accumulator": "_main.cadence",
    "AmbiguousWorkerError": "_common.errors",
    "Boss": "_main.handle",
    "BossDiedError": "_common.errors",
    "BossStateError": "_common.errors",
    "Cadence": "_main.cadence",
    "DaskBackend": "_main.dask_spec",
    "EventKind": "_main.events",
    "Executor": "_main.executor",
    "InstructionError": "_common.errors",
    "InstructionTypeError": "_common.errors",
    "NoMatchingWorkerError": "_common.errors",
    "RemoteTaskError": "_common.errors",
    "Report": "_main.report",
    "ReportStatus": "_common.status",
    "SchedulerError": "_common.errors",
    "SharedArray": "_common.shared_array",
    "SharedSpaceError": "_common.errors",
    "Signal": "_common.messages",
    "TaskCancelledError": "_common.errors",
    "TaskError": "_common.errors",
    "TaskEvent": "_main.events",
    "TaskReport": "_main.report",
    "TaskStatus": "_common.status",
    "TaskfarmError": "_common.errors",
    "Window": "_main.cadence",
    "Worker": "_common.worker_class",
    "WorkerKilledError": "_common.errors",
    "batch_main": "_main.entry",
    "run_as_server": "_main.entry",
}

__all__ = sorted(_PUBLIC)
__version__ = "0.1.0"

if _typing.TYPE_CHECKING:  # the same names, for type checkers (a test keeps both in step)
    from ._common.errors import AmbiguousWorkerError as AmbiguousWorkerError
    from ._common.errors import BossDiedError as BossDiedError
    from ._common.errors import BossStateError as BossStateError
    from ._common.errors import InstructionError as InstructionError
    from ._common.errors import InstructionTypeError as InstructionTypeError
    from ._common.errors import NoMatchingWorkerError as NoMatchingWorkerError
    from ._common.errors import RemoteTaskError as RemoteTaskError
    from ._common.errors import SchedulerError as SchedulerError
    from ._common.errors import SharedSpaceError as SharedSpaceError
    from ._common.errors import TaskCancelledError as TaskCancelledError
    from ._common.errors import TaskError as TaskError
    from ._common.errors import TaskfarmError as TaskfarmError
    from ._common.errors import WorkerKilledError as WorkerKilledError
    from ._common.messages import Signal as Signal
    from ._common.shared_array import SharedArray as SharedArray
    from ._common.status import ReportStatus as ReportStatus
    from ._common.status import TaskStatus as TaskStatus
    from ._common.worker_class import Worker as Worker
    from ._main.cadence import Accumulator as Accumulator
    from ._main.cadence import Cadence as Cadence
    from ._main.cadence import Window as Window
    from ._main.dask_spec import DaskBackend as DaskBackend
    from ._main.entry import batch_main as batch_main
    from ._main.entry import run_as_server as run_as_server
    from ._main.events import EventKind as EventKind
    from ._main.events import TaskEvent as TaskEvent
    from ._main.executor import Executor as Executor
    from ._main.handle import Boss as Boss
    from ._main.report import Report as Report
    from ._main.report import TaskReport as TaskReport


def __getattr__(name: str) -> _typing.Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'taskfarm' has no attribute {name!r}")
    value = getattr(_importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})
