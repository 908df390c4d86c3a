"""What the main program knows of its tasks, in one owner: a record of every task it
gave (name, Worker class, instructions), the terminal status of those that ended,
and their reports in the order they ended. Runs in the main program; the receiver
thread feeds it through the event stream, and the Boss handle's calls read it.

Every read and write happens under :attr:`Ledger.cond`, which is also what a thread
waiting for a report or for the boss's goodbye waits on.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from taskfarm._common.status import ENDINGS_THAT_FAIL
from taskfarm._main.events import EventKind, TaskEvent
from taskfarm._main.report import TaskReport


@dataclass(slots=True)
class TaskRecord:
    """What the main program keeps of a task it gave: enough to report on it."""

    name: str
    worker: str
    view: dict[str, Any]
    common: dict[str, Any]

    def instructions(self) -> dict[str, Any]:
        return {**self.common, **self.view}


class Ledger:
    """Task records, statuses and reports (see the module docstring).

    ``keep_reports=False`` (a service that runs for weeks): a task is forgotten once
    :meth:`next_report` has handed out its report, so memory stays flat.
    """

    def __init__(self, keep_reports: bool = True) -> None:
        self.cond = threading.Condition()
        self.keep_reports = keep_reports
        self.records: dict[int, TaskRecord] = {}
        self.names: dict[str, int] = {}       # task name -> task id
        self.statuses: dict[int, str] = {}    # task id -> terminal status, as reported
        # Every report, or (keep_reports=False) those not handed out yet.
        self.reports: list[TaskReport] | deque[TaskReport] = [] if keep_reports else deque()
        self.first_failure: TaskReport | None = None
        self.next_tid = 0
        self._handed_out = 0                  # reports next_report() has returned

    def add(self, records: Iterable[tuple[int, TaskRecord]]) -> None:
        """Tasks given (already sent to the boss)."""
        with self.cond:
            for tid, record in records:
                self.names[record.name] = tid
                self.records[tid] = record
                self.next_tid = max(self.next_tid, tid + 1)

    def forget(self, tids: Iterable[int]) -> None:
        """Tasks recorded by add() that could not be sent after all."""
        with self.cond:
            for tid in tids:
                record = self.records.pop(tid)
                del self.names[record.name]

    def on_events(self, events: Sequence[TaskEvent]) -> None:
        """The ledger's place in the event stream: keep every ending."""
        ended = [(e.tid, e.report) for e in events
                 if e.kind is EventKind.ENDED and e.report is not None]
        if not ended:
            return
        with self.cond:
            for tid, report in ended:
                self.statuses[tid] = report.status.value
                if self.first_failure is None and report.status in ENDINGS_THAT_FAIL:
                    self.first_failure = report
                self.reports.append(report)
            self.cond.notify_all()

    def all_ended(self) -> bool:
        """Every task given so far has a terminal status (call under ``cond``)."""
        return len(self.statuses) >= len(self.records)

    def has_report(self) -> bool:
        """A report not handed out yet is there (call under ``cond``)."""
        return self._handed_out < len(self.reports)

    def next_report(self) -> TaskReport | None:
        """The next report not handed out yet, once each (call under ``cond``)."""
        if not self.has_report():
            return None
        if self.keep_reports:
            report = self.reports[self._handed_out]
            self._handed_out += 1
            return report
        report = self.reports.popleft()  # type: ignore[union-attr]
        tid = self.names.pop(report.name)
        del self.records[tid], self.statuses[tid]
        return report

    def snapshot(self) -> tuple[list[TaskReport], set[int]]:
        """The reports so far, and the ids of the tasks that ended (call under
        ``cond``)."""
        return list(self.reports), set(self.statuses)
