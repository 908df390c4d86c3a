"""Reports as the main program sees them: one :class:`TaskReport` per task that ended,
gathered in a :class:`Report`. Built in the main program from the outcomes the boss
streams to it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from taskfarm._common.status import ReportStatus, TaskStatus
from taskfarm._main.prepare import short_repr

__all__ = ["Report", "TaskReport"]


@dataclass(slots=True)
class TaskReport:
    """How one task ended.

    ``started``/``ended`` are wall-clock timestamps (``time.time()``); ``peak_rss``
    is the worker process's peak resident memory in bytes when the task ended (per task
    in isolated mode, the process high-water mark in pool mode). ``reason`` says why a
    task was killed or cancelled; ``exitcode``/``signal_name`` say how a killed task's
    process ended; ``cpu`` is the CPU its process was pinned to (binding schedulers).
    ``attempts`` lists every attempt as (ending, why), the last being this one: more
    than one when the task was retried. ``emitted`` holds the values the task gave to
    ``emit()``, in order (every attempt's). ``stdout``/``stderr`` hold its captured
    output (``capture_output``; None when not captured), cut in the middle past a
    bound, with a line saying so. ``setup_time`` is the ``setup_process`` run this
    task waited for (not part of its :attr:`duration`); ``cpu_time`` is the user +
    system seconds its process spent on it. ``resumed`` is True for a report read
    back from the journal (the task was done in an earlier run, or given twice).
    """

    name: str
    worker: str
    instructions: dict[str, Any]
    status: TaskStatus
    result: Any = None
    exception: BaseException | None = None
    traceback: str | None = None
    pid: int | None = None
    ticket: int | None = None
    started: float | None = None
    ended: float | None = None
    peak_rss: int | None = None
    reason: str | None = None
    exitcode: int | None = None
    signal_name: str | None = None
    cpu: int | None = None
    attempts: list[tuple[str, str]] = field(default_factory=list)
    emitted: list[Any] = field(default_factory=list)
    stdout: str | None = None
    stderr: str | None = None
    setup_time: float = 0.0
    cpu_time: float | None = None
    resumed: bool = False

    @property
    def duration(self) -> float | None:
        """Seconds the task ran, or None when it never started."""
        if self.started is None or self.ended is None:
            return None
        return self.ended - self.started

    @property
    def ok(self) -> bool:
        """True when the task is done."""
        return self.status is TaskStatus.DONE

    @property
    def over_memory(self) -> str | None:
        """A warning when the task's process peaked above the ``memory`` it declared
        (schedulers budget with what tasks declare: an under-declared task crowds the
        others out), else None. In pool mode the peak is the process's, over every task
        it ran so far."""
        declared = self.instructions.get("memory") or 0
        if not declared or self.peak_rss is None or self.peak_rss <= declared * 2**20:
            return None
        return (f"task {self.name!r} peaked at {self.peak_rss / 2**20:.0f} MiB, over the "
                f"{declared:g} MiB it declared: declare more")

    def summary(self) -> str:
        """One line: the result, or what went wrong."""
        if self.status is TaskStatus.DONE:
            return _clip(repr(self.result))
        if self.exception is not None:
            return _clip(f"{type(self.exception).__name__}: {self.exception}")
        return _clip(self.reason or "")


@dataclass(slots=True)
class Report:
    """A report on the whole farm: the tasks that ended, and the instruction sets that
    did not run (``pending``: dicts of instructions, in the order they were given).
    ``running`` names the tasks running when an interim report was made, and
    ``holding`` why the scheduler held pending work then, if it says (a load-aware
    scheduler waiting for the machine to calm down)."""

    status: ReportStatus
    tasks: list[TaskReport] = field(default_factory=list)
    pending: list[dict[str, Any]] = field(default_factory=list)
    running: list[str] = field(default_factory=list)
    reason: str = ""
    holding: str = ""

    def __getitem__(self, name: str) -> TaskReport:
        """The TaskReport of the task called ``name``."""
        for task in self.tasks:
            if task.name == name:
                return task
        raise KeyError(name)

    @property
    def results(self) -> dict[str, Any]:
        """Results of the done tasks, by task name."""
        return {t.name: t.result for t in self.tasks if t.status is TaskStatus.DONE}

    @property
    def failures(self) -> list[TaskReport]:
        """The tasks that did not end done."""
        return [t for t in self.tasks if t.status is not TaskStatus.DONE]

    def counts(self) -> dict[str, int]:
        """How many tasks ended in each terminal state (pending ones too)."""
        counts = {str(s): 0 for s in TaskStatus}
        for task in self.tasks:
            counts[str(task.status)] += 1
        counts["pending"] = len(self.pending)
        return counts

    def format(self, max_rows: int = 200) -> str:
        """A readable per-task table, failures with their tracebacks."""
        lines = [f"taskfarm report: {self.status}" + (f" ({self.reason})" if self.reason else "")]
        counts = ", ".join(f"{n} {s}" for s, n in self.counts().items() if n)
        lines.append(f"  {counts or 'no tasks'}")
        if self.holding:
            lines.append(f"  the scheduler holds pending work: {self.holding}")
        rows = [("task", "worker", "status", "time", "pid", "peak MiB", "result / error")]
        for task in self.tasks[:max_rows]:
            rows.append((task.name, task.worker, str(task.status), _seconds(task.duration),
                         str(task.pid or "-"), _mib(task.peak_rss), task.summary()))
        widths = [max(len(r[i]) for r in rows) for i in range(6)]
        for row in rows:
            cells = [c.ljust(w) for c, w in zip(row[:6], widths, strict=True)]
            lines.append("  " + "  ".join(cells) + "  " + row[6])
        if len(self.tasks) > max_rows:
            lines.append(f"  ... {len(self.tasks) - max_rows} more tasks")
        for pending in self.pending[:max_rows]:
            lines.append(f"  pending: {pending.get('name', pending)}")
        warnings = [w for task in self.tasks if (w := task.over_memory)]
        lines.extend(f"  warning: {w}" for w in warnings[:10])
        if len(warnings) > 10:
            lines.append(f"  ... {len(warnings) - 10} more tasks over their declared memory")
        for task in self.failures[:10]:
            if task.traceback:
                shown = ", ".join(f"{k!r}: {short_repr(v, 200)}"
                                  for k, v in task.instructions.items())
                lines.append(f"\n--- {task.name} ({task.status}) instructions: {{{shown}}}")
                lines.append(task.traceback.rstrip())
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


def _clip(text: str, width: int = 70) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[: width - 3] + "..."


def _seconds(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.3f}s" if value < 100 else f"{value:.0f}s"


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.0f}"
