"""Reports, in the main program: the TaskReports as they come (``as_completed``), an
interim report once the boss has answered SEND_REPORT, and the final report, all
built from the :class:`~taskfarm._main.ledger.Ledger` and what the receiver thread
(:mod:`taskfarm._main.inbox`) has heard. The Boss handle owns one :class:`Reports`
and decides when to ask; this module decides nothing about the farm.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from taskfarm._common.errors import (
    BossDiedError,
    BossStateError,
    SchedulerError,
    TaskCancelledError,
    TaskError,
)
from taskfarm._common.messages import Snapshot
from taskfarm._common.status import ReportStatus, TaskStatus
from taskfarm._main.inbox import Inbox
from taskfarm._main.ledger import Ledger
from taskfarm._main.lifetime import STOPPED_CHECK, boss_stopped
from taskfarm._main.report import Report, TaskReport


class Reports:
    """Reports on one farm (see the module docstring)."""

    def __init__(self, name: str, ledger: Ledger, inbox: Inbox, fail_fast: bool) -> None:
        self.name, self.ledger, self.inbox = name, ledger, inbox
        self.fail_fast = fail_fast

    def as_completed(self, timeout: float | None, halted: Callable[[], bool],
                     ask: Callable[[], int]) -> Iterator[TaskReport]:
        """Each TaskReport once, as its task ends, until every task given so far has
        ended or the boss has exited (see ``Boss.as_completed``). Before waiting while
        ``halted()``, an interim report (``ask()`` sends the request) tells whether any
        task runs: with sets pending and none running the wait would never end, and
        BossStateError says so instead."""
        ledger = self.ledger
        while True:
            with ledger.cond:
                waiting = not ledger.has_report() and not self._all_ended()
            if waiting and halted():
                state = self.now(ask, timeout)   # read after the endings before it
                with ledger.cond:
                    waiting = not ledger.has_report() and not self._all_ended()
                if waiting and state.pending and not state.running:
                    raise BossStateError(f"{self.name} is halted with work pending and "
                                         "none running: call make_them_work() first")
            if waiting:
                self._wait_for_report(timeout)
            with ledger.cond:
                # One at a time: a caller may abandon the generator after any report.
                report = ledger.next_report()
            if report is None:
                if self.inbox.died is not None:  # not the end of the work: the boss died
                    raise self.inbox.died
                return
            yield report

    def _wait_for_report(self, timeout: float | None) -> None:
        """Wait until a report is there to hand out or every task has ended."""
        ledger = self.ledger
        self._read_until(lambda: ledger.has_report() or self._all_ended(), timeout,
                         f"no task of {self.name} ended within {timeout} s")

    def _read_until(self, done: Callable[[], bool], timeout: float | None,
                    why: str) -> None:
        """Read the boss's messages in this thread until ``done()`` (checked under the
        ledger's condition): one thread hand-over fewer than waiting for the receiver,
        which may also be standing aside for a while after a thread read for itself
        (see :mod:`taskfarm._main.inbox`). TimeoutError(``why``) after ``timeout``."""
        inbox, ledger = self.inbox, self.ledger
        deadline = None if timeout is None else time.monotonic() + timeout
        with inbox.reading():
            while True:
                with ledger.cond:
                    if done():
                        return
                    seen = inbox.handled
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                if not inbox.pump(left, seen) and deadline is not None \
                        and time.monotonic() >= deadline:
                    raise TimeoutError(why)

    def _all_ended(self) -> bool:
        return self.inbox.closed or self.ledger.all_ended()

    def now(self, ask: Callable[[], int], timeout: float | None) -> Report:
        """An interim report (``ask()`` sends SEND_REPORT and returns its number); the
        final report if the boss, done, exited as it was asked (its goodbye is heard
        when the request cannot be sent)."""
        try:
            seq = ask()
        except BossStateError:
            if self.inbox.goodbye is None:
                raise
            return self.final(timeout)
        return self.interim(seq, timeout)

    def interim(self, seq: int, timeout: float | None) -> Report:
        """The report answering SEND_REPORT number ``seq`` (already sent): every task
        that ended before the request is in it."""
        inbox, ledger = self.inbox, self.ledger
        def answered() -> bool:
            return seq in inbox.snapshots or inbox.closed

        deadline = None if timeout is None else time.monotonic() + timeout
        with ledger.cond:
            while not answered():
                left = STOPPED_CHECK if deadline is None else min(
                    STOPPED_CHECK, deadline - time.monotonic())
                if left <= 0:
                    raise TimeoutError(f"{self.name} did not answer SEND_REPORT within "
                                       f"{timeout} s")
                if not ledger.cond.wait_for(answered, left) and boss_stopped(inbox.proc.pid):
                    raise BossStateError(
                        f"{self.name}: the boss process (pid {inbox.proc.pid}) is stopped "
                        "(SIGSTOP, or a debugger) and cannot answer: continue it (kill "
                        f"-CONT {inbox.proc.pid}) and ask again")
            snapshot: Snapshot | None = inbox.snapshots.pop(seq, None)
            tasks, reported = ledger.snapshot()
            if snapshot is not None:
                running = {tid for tid, *_ in snapshot.running}
                pending = [r.instructions() for tid, r in ledger.records.items()
                           if tid not in reported and tid not in running]
                names = [ledger.records[t].name for t in running]
        if snapshot is None:
            return self.final(None)
        status = ReportStatus.PENDING if snapshot.state == "halted" and pending \
            else ReportStatus.INTERIM
        return Report(status, tasks, pending, names, holding=snapshot.holding)

    def final(self, timeout: float | None) -> Report:
        """The final report, once the boss has exited (waiting up to ``timeout``)."""
        inbox, ledger = self.inbox, self.ledger
        self._read_until(lambda: inbox.closed, timeout,
                         f"{self.name} did not finish within {timeout} s")
        if inbox.died is not None:
            raise inbox.died
        goodbye = inbox.goodbye
        assert goodbye is not None
        with ledger.cond:
            tasks, reported = ledger.snapshot()
            pending_ids = set(goodbye.pending)
            pending = [ledger.records[t].instructions() for t in sorted(goodbye.pending)]
            running = [r.name for tid, r in ledger.records.items()
                       if tid not in reported and tid not in pending_ids]
        return Report(ReportStatus(goodbye.status), tasks, pending, running, goodbye.reason)

    def failure(self, report: Report, pid: int) -> BaseException | None:
        """What ``wait_till_finished`` raises for a final report: the first failing
        task's own exception (fail-fast), or the boss's own failure; None if the run
        did not fail. Under fail-fast a failure the boss did not see (a result that
        could not be unpickled here) fails the run too."""
        first = self.ledger.first_failure
        if report.status is not ReportStatus.FAILED and not (self.fail_fast and first):
            return None
        goodbye = self.inbox.goodbye
        if goodbye is not None and goodbye.cause == "scheduler":
            return SchedulerError(f"{self.name}: {report.reason}")
        if first is None:  # no task failed: the boss itself did (its reason says why)
            return BossDiedError(f"{self.name} failed: {report.reason}", pid)
        if isinstance(first.exception, Exception):
            return first.exception
        if first.exception is not None:
            # SystemExit or KeyboardInterrupt raised by the task: re-raised as it is, it
            # would end the main program as if it had asked to (a failed batch_main
            # exiting 0). It travels as the cause of a TaskError instead.
            error = TaskError(f"task {first.name!r} raised "
                              f"{type(first.exception).__name__}: {first.exception}",
                              first.name, first.traceback)
            error.__cause__ = first.exception
            return error
        if first.status in (TaskStatus.CANCELLED, TaskStatus.TIMEOUT):
            return TaskCancelledError(f"task {first.name!r} ended {first.status}: "
                                      f"{first.reason}", first.name)
        return TaskError(f"task {first.name!r} ended {first.status}: {first.reason}",
                         first.name, first.traceback)
