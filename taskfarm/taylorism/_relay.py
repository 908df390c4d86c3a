"""The one taskfarm Worker of the layer: it runs a taylorism task for taskfarm.

Every instruction set a taylorism Boss is given becomes one task of
:class:`TaylorismTask`: its ``name``, ``memory`` and ``expected_time`` (what
schedulers read), and ``taylorism_call``, the pickled Worker class and footprint
attributes (:mod:`taskfarm.taylorism._matching`). taskfarm schedules it, times it out,
stops it and reports it as any task; the task runs the call in its worker process —
under ``fork_from_main=True`` (the default) a process forked from the copy of the
main program taken when the Boss was made (taskfarm's ``start_method="main"``), so
the class found by name is the program's own.

The result is an *outcome* (:mod:`taskfarm.taylorism._outcome`), returned as bytes
when the task succeeded and raised inside a :class:`TaylorismTaskError` when it
failed, so that the boss and taskfarm's reports never hold the user's objects and
taskfarm's fail-fast, retries and reports work unchanged. A task process that dies is
reported ``killed`` by taskfarm with the real signal or exit code.
"""

from __future__ import annotations

from typing import Any, ClassVar

from taskfarm import Worker
from taskfarm.taylorism._outcome import failure_summary, is_failure, run_call

__all__ = ["TaylorismTask", "TaylorismTaskError"]


class TaylorismTaskError(Exception):
    """A taylorism task raised. It carries the task's outcome (bytes) to the main
    program, which rebuilds the task's own exception from it; its text is the
    exception's ``Type: message``."""

    def __init__(self, summary: str, outcome: bytes) -> None:
        super().__init__(summary, outcome)
        self.summary, self.outcome = summary, outcome

    def __str__(self) -> str:
        return self.summary


class TaylorismTask(Worker):
    """Runs one taylorism task (see the module docstring). Given every instruction
    set of a taylorism Boss (``worker=TaylorismTask``); the required
    ``taylorism_call`` keeps it out of the matching of any other instruction set."""

    taylorism_call: bytes
    taylorism_shared: tuple[Any, ...] = ()   # SharedArrays: taskfarm keeps them alive
    # Simple footprint attributes ride along as ``fp_<name>`` for taylorism-style
    # schedulers (see taskfarm.taylorism._native); the task itself ignores them.
    accept_undeclared: ClassVar[bool] = True

    def task(self) -> bytes:
        outcome = run_call(self.taylorism_call, self.scheduler_ticket, (_StopTypes.get(),))
        if is_failure(outcome):
            raise TaylorismTaskError(failure_summary(outcome), outcome)
        return outcome


class _StopTypes:
    """taskfarm's StopRequested (raised in a task being stopped), found once."""

    found: ClassVar[type[BaseException] | None] = None

    @classmethod
    def get(cls) -> type[BaseException]:
        if cls.found is None:
            try:
                from taskfarm._worker.run import StopRequested
            except ImportError:  # pragma: no cover - only if taskfarm moves it
                cls.found = KeyboardInterrupt
            else:
                cls.found = StopRequested
        return cls.found
