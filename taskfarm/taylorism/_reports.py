"""taskfarm reports in taylorism's shape, in the main program.

A taylorism report is a dict::

    {'workers_report': [{'name': ..., 'report': <what _task returned>}, ...],
     'status': 'finished' | 'interim' | 'pending',
     'pending': [<instruction sets not launched>]}          # with status 'pending'

in the order the tasks ended. A task that raised has ``'report'`` set to its
exception and ``'traceback'`` to the formatted lines. taylorism had no report for a
task whose process died or was stopped; here one that was killed or timed out is
listed with a taskfarm ``WorkerKilledError`` or ``TaskCancelledError`` as its
``'report'`` (a cancelled one, stopped on purpose, is left out as in taylorism).

Outcomes are decoded once per task (:class:`Decoded`), so the report values a caller
gets are the same objects from one report to the next.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from taskfarm import Report, TaskCancelledError, TaskReport, TaskStatus, WorkerKilledError
from taskfarm.taylorism._outcome import Failure, decode_done, decode_failure
from taskfarm.taylorism._relay import TaylorismTaskError

__all__ = ["Decoded", "as_dict"]


class Decoded:
    """Each task's report value or Failure, decoded once."""

    def __init__(self) -> None:
        self._values: dict[str, Any] = {}

    def value(self, task: TaskReport) -> Any:
        if task.name not in self._values:
            self._values[task.name] = decode_done(task.result)
        return self._values[task.name]

    def failure(self, task: TaskReport) -> Failure:
        found = self._values.get(task.name)
        if isinstance(found, Failure):
            return found
        exc = task.exception
        if isinstance(exc, TaylorismTaskError):
            failure = decode_failure(exc.outcome, task.name)
        elif exc is not None:   # failed outside the call (taskfarm's own error)
            failure = Failure(exc, (task.traceback or "").splitlines(keepends=True))
        elif task.status is TaskStatus.KILLED:
            failure = Failure(WorkerKilledError(
                f"task {task.name!r} was killed: {task.reason}", task.name, task.exitcode,
                task.signal_name, task.pid), [])
        else:
            failure = Failure(TaskCancelledError(
                f"task {task.name!r} ended {task.status}: {task.reason}", task.name), [])
        self._values[task.name] = failure
        return failure


def as_dict(report: Report, status: str, decoded: Decoded,
            originals: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The taylorism report of ``report``; ``originals`` maps task names to the
    instruction sets they were given as (for ``'pending'``)."""
    entries: list[dict[str, Any]] = []
    for task in report.tasks:
        if task.status is TaskStatus.DONE:
            entries.append({"name": task.name, "report": decoded.value(task)})
        elif task.status is not TaskStatus.CANCELLED:
            failure = decoded.failure(task)
            entries.append({"name": task.name, "report": failure.exception,
                            "traceback": failure.traceback})
    result: dict[str, Any] = {"workers_report": entries, "status": status}
    if report.pending:
        result["pending"] = [dict(originals.get(p.get("name", ""), p)) for p in report.pending]
    return result
