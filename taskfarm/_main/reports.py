"""Reports, in the main program: the TaskReports as they come (``as_completed``), a
report on demand (``get_report``), and the end (``wait_till_finished``), built from
what the receiver thread (:mod:`.main_inbox`) has heard. A part of
:class:`taskfarm.Boss`, which holds the state these methods share.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from taskfarm._common.errors import BossDiedError, BossStateError, TaskCancelledError, TaskError
from taskfarm._common.status import ReportStatus, TaskStatus
from taskfarm._main.report import Report, TaskReport

if TYPE_CHECKING:
    from taskfarm._main.handle import Boss


class Reporting:
    """The reporting half of the Boss handle (see the module docstring)."""

    def as_completed(self: Boss, timeout: float | None = None) -> Iterator[TaskReport]:
        """Yield each TaskReport as its task ends, while the farm runs.

        Each report is yielded once across all calls (a service can call this every
        stride and see only what is new); every report also stays in
        :meth:`get_report`, unless the Boss was made with ``keep_reports=False``.
        Stops when every task given so far has ended or the boss has exited.
        ``timeout`` bounds the wait for each next report (TimeoutError).
        """
        inbox = self._inbox
        while True:
            with inbox.cond:
                waiting = self._consumed >= len(inbox.reports) and not self._all_ended()
            if waiting:
                self._wait_for_report(timeout)
            with inbox.cond:
                if self._consumed >= len(inbox.reports):
                    return
                # One at a time: a caller may abandon the generator after any report.
                if self._keep_reports:
                    report = inbox.reports[self._consumed]
                    self._consumed += 1
                else:
                    report = inbox.reports.popleft()
                    tid = self._names.pop(report.name)
                    del self._records[tid], inbox.statuses[tid]
            yield report

    def _wait_for_report(self: Boss, timeout: float | None) -> None:
        """Wait until a report is there to yield or every task has ended, reading the
        boss's messages in this thread (one thread hand-over fewer, see main_inbox)."""
        inbox = self._inbox
        deadline = None if timeout is None else time.monotonic() + timeout
        with inbox.reading():
            while True:
                with inbox.cond:
                    if self._consumed < len(inbox.reports) or self._all_ended():
                        return
                    seen = inbox.handled
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                if not inbox.pump(left, seen) and deadline is not None \
                        and time.monotonic() >= deadline:
                    raise TimeoutError(f"no task of {self.name} ended within {timeout} s")

    def _all_ended(self: Boss) -> bool:
        inbox = self._inbox
        return inbox.closed or len(inbox.statuses) >= len(self._records)

    def get_report(self: Boss, interim: bool = True, timeout: float | None = None) -> Report:
        """A report on the farm. ``interim=True``: now, while it works (SEND_REPORT;
        every task that ended before the request is in it). ``interim=False``: the final
        report, waiting for the boss to exit (only after :meth:`end` or a stop)."""
        inbox = self._inbox
        if not interim or inbox.closed:
            if not inbox.closed and not self._ended:
                raise BossStateError(f"{self.name} will not exit on its own: call end() or a "
                                     "stop first, or ask for get_report(interim=True)")
            self._wait_closed(timeout)
            return self._final_report()
        seq = self.send_report_request()
        with inbox.cond:
            if not inbox.cond.wait_for(lambda: seq in inbox.snapshots or inbox.closed, timeout):
                raise TimeoutError(f"{self.name} did not answer SEND_REPORT within {timeout} s")
            snapshot = inbox.snapshots.pop(seq, None)
            tasks = list(inbox.reports)
            reported = set(inbox.statuses)
        if snapshot is None:
            return self._final_report()
        running = {tid for tid, *_ in snapshot.running}
        pending = [r.instructions() for tid, r in self._records.items()
                   if tid not in reported and tid not in running]
        status = ReportStatus.PENDING if snapshot.state == "halted" and pending \
            else ReportStatus.INTERIM
        return Report(status, tasks, pending, [self._records[t].name for t in running])

    def wait_till_finished(self: Boss, timeout: float | None = None) -> Report:
        """No more instructions: let the boss finish (END, if no stop was asked), wait
        for it to exit and return the final report.

        Raises, under fail-fast, the first failing task's own exception (with the
        worker's traceback), a WorkerKilledError, or a TaskCancelledError; raises
        BossDiedError if the boss died; BossStateError if the boss is halted with work
        pending (it would never finish).
        """
        if not self._inbox.closed:
            if self._halted and not self._ended and len(self._inbox.statuses) < len(self._records):
                raise BossStateError(f"{self.name} is halted with work pending: call "
                                     "make_them_work() first")
            if not self._ended and not self._deaf:
                self.end()
        self._wait_closed(timeout)
        report = self._final_report()
        failure = self._inbox.first_failure
        if report.status is ReportStatus.FAILED:
            if failure is not None:
                raise _task_exception(failure)
            # No task failed: the boss itself did (its reason holds the traceback).
            raise BossDiedError(f"{self.name} failed: {report.reason}", self.pid)
        return report

    def _wait_closed(self: Boss, timeout: float | None) -> None:
        inbox = self._inbox
        with inbox.cond:
            if not inbox.cond.wait_for(lambda: inbox.closed, timeout):
                raise TimeoutError(f"{self.name} did not finish within {timeout} s")
        if inbox.died is not None:
            raise inbox.died

    def _final_report(self: Boss) -> Report:
        inbox = self._inbox
        if inbox.died is not None:
            raise inbox.died
        goodbye = inbox.goodbye
        assert goodbye is not None
        with inbox.cond:
            tasks = list(inbox.reports)
            reported = set(inbox.statuses)
        pending_ids = set(goodbye.pending)
        pending = [self._records[t].instructions() for t in sorted(goodbye.pending)]
        running = [r.name for tid, r in self._records.items()
                   if tid not in reported and tid not in pending_ids]
        return Report(ReportStatus(goodbye.status), tasks, pending, running, goodbye.reason)


def _task_exception(report: TaskReport) -> BaseException:
    if report.exception is not None:
        return report.exception
    if report.status in (TaskStatus.CANCELLED, TaskStatus.TIMEOUT):
        return TaskCancelledError(f"task {report.name!r} ended {report.status}: "
                                  f"{report.reason}", report.name)
    return TaskError(f"task {report.name!r} ended {report.status}: {report.reason}",
                     report.name, report.traceback)

