"""The exceptions taskfarm raises, grouped by how the caller reacts.

::

    TaskfarmError
    ├── InstructionError (ValueError)      bad instructions: fix the call that gave them
    │   ├── InstructionTypeError (TypeError)   instructions that are not dicts / lists
    │   ├── NoMatchingWorkerError               no Worker class accepts an instruction set
    │   └── AmbiguousWorkerError                more than one Worker class accepts it
    ├── BossStateError (RuntimeError)      a call the boss cannot take in its state
    │   └── BossDiedError                       the boss process died without saying goodbye
    ├── SchedulerError (RuntimeError)      the scheduler misbehaved: the run ended
    ├── SharedSpaceError (OSError)         a SharedArray does not fit in /dev/shm
    └── TaskError (RuntimeError)           a task ended badly under fail-fast
        ├── RemoteTaskError                     its exception could not travel: type name and text
        ├── WorkerKilledError                   its process died without reporting
        └── TaskCancelledError                  it was cancelled or timed out

Misuse of the API (the first two branches) is raised at the call that made it, in the
main program, before anything reaches a process; work already running is unaffected.
A task's own exception is re-raised with its own type by ``Boss.wait_till_finished``;
only when it cannot be rebuilt does a ``RemoteTaskError`` stand in for it.
"""

from __future__ import annotations

import errno
from typing import Any

__all__ = [
    "AmbiguousWorkerError",
    "BossDiedError",
    "BossStateError",
    "InstructionError",
    "InstructionTypeError",
    "NoMatchingWorkerError",
    "RemoteTaskError",
    "SchedulerError",
    "SharedSpaceError",
    "TaskCancelledError",
    "TaskError",
    "TaskfarmError",
    "WorkerKilledError",
]


class TaskfarmError(Exception):
    """Base class of every exception taskfarm raises itself."""


class InstructionError(TaskfarmError, ValueError):
    """Instructions given to ``set_instructions`` (or ``run_as_server``/``batch_main``)
    are invalid: mismatched lengths, unknown keys, wrong types, values outside the
    allowed set, duplicate task names. Nothing of that call was sent to the boss."""


class InstructionTypeError(InstructionError, TypeError):
    """Instructions are not of the expected container type (dict of lists)."""


class NoMatchingWorkerError(InstructionError):
    """No Worker class accepts an instruction set; the message says why each
    candidate class rejected it."""


class AmbiguousWorkerError(InstructionError):
    """Several Worker classes accept an instruction set; pass ``worker=`` to choose."""


class BossStateError(TaskfarmError, RuntimeError):
    """The boss cannot take this call in its state: instructions after ``end()``,
    any call after the boss has exited."""


class BossDiedError(BossStateError):
    """The boss process died without saying goodbye (killed, crashed).

    Attributes:
        pid: the boss process id.
        exitcode: its exit code, or None when a signal ended it.
        signal_name: the name of the signal that ended it, or None.
    """

    def __init__(self, message: str, pid: int | None = None, exitcode: int | None = None,
                 signal_name: str | None = None) -> None:
        super().__init__(message)
        self.pid = pid
        self.exitcode = exitcode
        self.signal_name = signal_name


class SchedulerError(TaskfarmError, RuntimeError):
    """The scheduler raised, or returned something other than pending instruction sets
    from ``launchable``: the boss ended the run (running tasks ``cancelled``, the rest
    pending) and says which scheduler and what it did. Fix the scheduler."""


class SharedSpaceError(TaskfarmError, OSError):
    """A SharedArray does not fit in the free space of /dev/shm (``errno`` ENOSPC).

    An ``OSError`` because that is what it is, and what a caller writing files already
    catches: the kernel's "no space left on device" on a file system (tmpfs), with
    ``errno == errno.ENOSPC`` and ``filename`` the shared-memory directory. Not a
    ``MemoryError``: the process's memory is fine and more RAM would not help, only a
    larger /dev/shm (or a smaller array) does; and a ``MemoryError`` is often taken
    as fatal. A ``TaskfarmError`` too, like everything taskfarm raises itself.

    Attributes (besides OSError's): ``needed`` and ``free``, in bytes.
    """

    def __init__(self, message: str, directory: str, needed: int, free: int | None) -> None:
        super().__init__(errno.ENOSPC, message, directory)
        self.needed = needed
        self.free = free

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return type(self), (self.strerror, self.filename, self.needed, self.free)

    def __str__(self) -> str:
        return str(self.strerror)


class TaskError(TaskfarmError, RuntimeError):
    """A task ended badly and the run was fail-fast.

    Attributes:
        task_name: the name of the task.
        traceback_text: the formatted traceback from the worker process, if any.
    """

    def __init__(self, message: str, task_name: str | None = None,
                 traceback_text: str | None = None) -> None:
        super().__init__(message)
        self.task_name = task_name
        self.traceback_text = traceback_text

    def __str__(self) -> str:
        text = super().__str__()
        if self.traceback_text:
            text += "\n\nWorker traceback:\n" + self.traceback_text.rstrip()
        return text


class RemoteTaskError(TaskError):
    """Stands in for a task's exception that could not be pickled or rebuilt in the
    main program. ``type_name`` is the qualified name of the original type."""

    def __init__(self, message: str, task_name: str | None = None,
                 traceback_text: str | None = None, type_name: str | None = None) -> None:
        super().__init__(message, task_name, traceback_text)
        self.type_name = type_name


class WorkerKilledError(TaskError):
    """A task's worker process died without reporting (a signal, ``os._exit``, a
    segfault). ``exitcode`` and ``signal_name`` say how."""

    def __init__(self, message: str, task_name: str | None = None,
                 exitcode: int | None = None, signal_name: str | None = None,
                 pid: int | None = None) -> None:
        super().__init__(message, task_name)
        self.exitcode = exitcode
        self.signal_name = signal_name
        self.pid = pid


class TaskCancelledError(TaskError):
    """A task was cancelled (or timed out) and that ended a fail-fast run."""
