"""What the main program has heard from its boss. Runs in the main program, in the
receiver thread that drains the report pipe and in the threads that read from it.

The receiver thread reads every message the boss sends as soon as it is sent, so the
boss never blocks on a full pipe while the main program is busy elsewhere, and turns
each outcome into a :class:`TaskReport`. It holds no reference to the ``Boss`` handle,
so dropping the handle is enough to end the farm.
"""

from __future__ import annotations

import pickle
import subprocess
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

import tblib

from .errors import BossDiedError, RemoteTaskError, WorkerKilledError
from .processes import signal_name
from .protocol import Channel, Goodbye, Outcome, Outcomes, Snapshot
from .report import TaskReport, TaskStatus


@dataclass(slots=True)
class TaskRecord:
    """What the main program keeps of a task it gave: enough to report on it."""

    name: str
    worker: str
    view: dict[str, Any]
    common: dict[str, Any]

    def instructions(self) -> dict[str, Any]:
        return {**self.common, **self.view}


class Inbox:
    """Reports, snapshots and the goodbye received from one boss, behind a condition."""

    def __init__(self, conn: Channel, proc: subprocess.Popen[bytes],
                 records: dict[int, TaskRecord], keep_reports: bool = True) -> None:
        self.conn = conn
        self.proc = proc
        self.records = records
        self.cond = threading.Condition()
        # Every report, or (keep_reports=False) those as_completed has not yielded yet.
        self.reports: list[TaskReport] | deque[TaskReport] = [] if keep_reports else deque()
        self.statuses: dict[int, str] = {}   # task id -> terminal status, as reported
        self.snapshots: dict[int, Snapshot] = {}
        self.goodbye: Goodbye | None = None
        self.died: BossDiedError | None = None
        self.first_failure: TaskReport | None = None
        self.thread = threading.Thread(target=self._run, name="taskfarm-receiver", daemon=True)

    @property
    def closed(self) -> bool:
        """True once the boss has said goodbye or died."""
        return self.goodbye is not None or self.died is not None

    def _run(self) -> None:
        conn = self.conn
        try:
            while True:
                msg = conn.recv()
                if isinstance(msg, Outcomes):
                    reports = [self._report(o) for o in msg.outcomes]
                    with self.cond:
                        for o, report in zip(msg.outcomes, reports, strict=True):
                            self.statuses[o.tid] = report.status.value
                            if self.first_failure is None and report.status in _FAILURES:
                                self.first_failure = report
                        self.reports.extend(reports)
                        self.cond.notify_all()
                elif isinstance(msg, Snapshot):
                    with self.cond:
                        self.snapshots[msg.seq] = msg
                        self.cond.notify_all()
                elif isinstance(msg, Goodbye):
                    with self.cond:
                        self.goodbye = msg
                        self.cond.notify_all()
        except (EOFError, OSError):
            pass
        finally:
            conn.close()
            with self.cond:
                if self.goodbye is None:
                    self.died = self._death()
                self.cond.notify_all()

    def _death(self) -> BossDiedError:
        try:
            code = self.proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            code = None
        pid = self.proc.pid
        if code is not None and code < 0:
            name = signal_name(-code)
            return BossDiedError(f"the boss process (pid {pid}) was killed by {name}; its "
                                 "workers were stopped with it", pid, None, name)
        return BossDiedError(f"the boss process (pid {pid}) exited unexpectedly (code {code}); "
                             "its workers were stopped with it", pid, code, None)

    def _report(self, o: Outcome) -> TaskReport:
        record = self.records[o.tid]
        report = TaskReport(record.name, record.worker, record.instructions(),
                            TaskStatus(o.status), None, None, o.traceback, o.pid, o.ticket,
                            o.started, o.ended, o.peak_rss, None, o.exitcode, o.signal_name,
                            o.cpu, list(o.attempts))
        if o.status == "done":
            try:
                report.result = pickle.loads(o.result_blob, buffers=o.result_buffers)
            except Exception as exc:
                report.status = TaskStatus.FAILED
                report.exception = RemoteTaskError(
                    f"the result of task {record.name!r} could not be unpickled in the main "
                    f"program: {type(exc).__name__}: {exc}", record.name)
                report.reason = str(report.exception)
        elif o.status == "failed":
            report.exception = _rebuild_exception(o, record.name)
            report.reason = f"{o.error_type}: {o.error_text}"
        elif o.status == "killed":
            report.exception = WorkerKilledError(
                f"task {record.name!r}: {o.error_text}", record.name, o.exitcode,
                o.signal_name, o.pid)
            report.reason = o.error_text
        else:
            report.reason = o.error_text
        report.attempts.append((report.status.value, report.reason or ""))
        return report


_FAILURES = (TaskStatus.FAILED, TaskStatus.KILLED, TaskStatus.TIMEOUT)


def _rebuild_exception(o: Outcome, task_name: str) -> BaseException:
    """The worker's own exception with its frames, or a RemoteTaskError with its text."""
    if o.error_blob is not None:
        try:
            exc, tb_dict = pickle.loads(o.error_blob)
            return exc.with_traceback(tblib.Traceback.from_dict(tb_dict).as_traceback())
        except Exception:
            pass
    return RemoteTaskError(f"task {task_name!r} raised {o.error_type}: {o.error_text}",
                           task_name, o.traceback, o.error_type)
