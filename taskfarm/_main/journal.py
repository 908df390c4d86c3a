"""The journal: an SQLite database recording every task's ending, so that a campaign
resumes after its driver dies and an at-least-once consumer deduplicates its input.
Runs in the main program (and in ``taskfarm report``, which reads it).

Recording. The journal is a *durable* sink of the task event stream
(:mod:`taskfarm._main.events`): each batch of endings is committed in one transaction
before any other sink — the ledger, hence ``as_completed`` and the reports — sees it,
so a caller that acknowledges a task on receiving its report never acknowledges
something that is not stored. SQLite runs in WAL mode with ``synchronous=NORMAL``: a
commit survives the death of the program (any signal), not a crash of the machine.
A task that ended but was not yet committed when the program died runs again on
resume: execution is at least once, recording exactly once (a row per task name; an
ending recorded later replaces an earlier one that was not ``done``).

Resume. A name recorded ``done`` is not run again: its report comes back from the
journal (``TaskReport.resumed``). Names recorded in any other state run again.
Instructions are compared on their simple values (numbers, strings, booleans, None
and lists, tuples and dicts of them; other values — arrays, functions, objects — by
type only), leaving out how the task runs (timeout, retries, retry_on, retry_memory,
after, memory, expected_time, resources): a name recorded done under other
instructions is an InstructionError at the call that gives it, since its recorded
result would not be the result of what is asked now.

Results larger than :data:`INLINE_MAX` bytes pickled live in files in the directory
``<journal>.results`` beside the database, referenced by their row, and are removed
when their row is replaced.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import socket
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import tblib

from taskfarm._common import by_value
from taskfarm._common.errors import InstructionError, RemoteTaskError
from taskfarm._common.status import TaskStatus
from taskfarm._main.events import EventKind, TaskEvent
from taskfarm._main.report import TaskReport

INLINE_MAX = 1 << 20   # a pickled result larger than this goes to a file

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY, started REAL, pid INTEGER, host TEXT, argv TEXT);
CREATE TABLE IF NOT EXISTS tasks (
    name TEXT PRIMARY KEY, run INTEGER, worker TEXT, instructions TEXT,
    fingerprint TEXT, status TEXT, result BLOB, result_file TEXT, error BLOB,
    error_type TEXT, reason TEXT, traceback TEXT, pid INTEGER, slot INTEGER,
    started REAL, ended REAL, setup_time REAL, cpu_time REAL, peak_rss INTEGER,
    exitcode INTEGER, signal_name TEXT, attempts TEXT, emitted BLOB, stdout TEXT,
    stderr TEXT, recorded REAL);
"""
_COLUMNS = ("name", "run", "worker", "instructions", "fingerprint", "status", "result",
            "result_file", "error", "error_type", "reason", "traceback", "pid", "slot",
            "started", "ended", "setup_time", "cpu_time", "peak_rss", "exitcode",
            "signal_name", "attempts", "emitted", "stdout", "stderr", "recorded")
_INSERT = (f"INSERT OR REPLACE INTO tasks ({', '.join(_COLUMNS)}) "
           f"VALUES ({', '.join('?' * len(_COLUMNS))})")
_SIMPLE = (str, int, float, bool, type(None))


# How a task runs, not what it computes: left out of the comparison, so that a
# campaign resumes with a longer timeout, more retries or other scheduling hints.
EXECUTION_KEYS = frozenset({"timeout", "retries", "retry_on", "retry_memory", "after",
                            "memory", "expected_time", "resources", "scheduler_ticket"})


def canonical(instructions: Mapping[str, Any]) -> str:
    """The instructions as comparable text: simple values by value, others by type,
    without the EXECUTION_KEYS."""
    what = {k: v for k, v in instructions.items() if k not in EXECUTION_KEYS}
    try:  # the usual case, in C: plain values (tuples become lists), others by type
        return json.dumps(what, sort_keys=True, default=_by_type)
    except (TypeError, ValueError):  # keys json does not take, a cycle
        return json.dumps({k: _simple(v) for k, v in sorted(what.items())}, default=str)


def _by_type(value: Any) -> str:
    return f"<{type(value).__module__}.{type(value).__qualname__}>"


def _simple(v: Any) -> Any:
    if isinstance(v, _SIMPLE):
        return v
    if isinstance(v, (list, tuple)):
        return [_simple(x) for x in v]
    if isinstance(v, dict) and all(isinstance(k, str) for k in v):
        return {k: _simple(x) for k, x in sorted(v.items())}
    return _by_type(v)


def fingerprint(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def connect(path: str | os.PathLike[str], create: bool) -> sqlite3.Connection:
    """Open the journal at ``path`` (created ``0600`` when ``create``)."""
    path = os.fspath(path)
    if create and not os.path.exists(path):
        os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    elif not os.path.exists(path):
        raise FileNotFoundError(f"no journal at {path}")
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA busy_timeout=10000")
    return db


class Journal:
    """One journal, open for one Boss (see the module docstring)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.results_dir = Path(f"{self.path}.results")
        self._lock = threading.Lock()
        self._db = connect(self.path, create=True)
        self._db.executescript(_SCHEMA)   # its own transaction
        with self._lock, self._transaction():
            cursor = self._db.execute(
                "INSERT INTO runs (started, pid, host, argv) VALUES (?, ?, ?, ?)",
                (time.time(), os.getpid(), socket.gethostname(), json.dumps(sys.argv)))
            self.run = int(cursor.lastrowid or 0)
        self._slots: dict[int, tuple[int | None, int | None]] = {}   # tid -> (pid, slot)
        with self._lock:   # results in files: only then is a replaced row looked at first
            self._files = self._db.execute(
                "SELECT 1 FROM tasks WHERE result_file IS NOT NULL LIMIT 1").fetchone() is not None

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        """Close the database (a later lookup or recording is an error)."""
        with self._lock:
            self._db.close()

    # ---- resuming -----------------------------------------------------------------------

    def done_among(self, names: Sequence[str]) -> set[str]:
        """The names among ``names`` recorded done (one query per 500 names)."""
        found: set[str] = set()
        with self._lock:
            for start in range(0, len(names), 500):
                chunk = list(names[start:start + 500])
                found.update(name for (name,) in self._db.execute(
                    f"SELECT name FROM tasks WHERE status = 'done' AND name IN "
                    f"({', '.join('?' * len(chunk))})", chunk))
        return found

    def recorded_done(self, name: str) -> bool:
        """True when ``name`` is recorded done (after= is satisfied by it)."""
        with self._lock:
            row = self._db.execute("SELECT status FROM tasks WHERE name = ?",
                                   (name,)).fetchone()
        return row is not None and row[0] == TaskStatus.DONE.value

    def resumed_report(self, name: str, worker: str,
                       instructions: dict[str, Any]) -> TaskReport | None:
        """The report of ``name`` if it is recorded done under these instructions; None
        if it is not recorded done; InstructionError if it is, under others."""
        with self._lock:
            row = self._db.execute(
                "SELECT fingerprint, instructions, result, result_file, pid, started, ended,"
                " setup_time, cpu_time, peak_rss, attempts, emitted, stdout, stderr "
                "FROM tasks WHERE name = ? AND status = 'done'", (name,)).fetchone()
        if row is None:
            return None
        text = canonical(instructions)
        if row[0] != fingerprint(text):
            raise InstructionError(
                f"task {name!r} is recorded done in the journal {self.path} under other "
                f"instructions ({row[1]}, now {text}): its recorded result is not the result "
                "of what is asked now; give it another name, or use another journal")
        result = self._load_result(row[2], row[3])
        report = TaskReport(name, worker, instructions, TaskStatus.DONE, result, None, None,
                            row[4], None, row[5], row[6], row[9], None, None, None, None,
                            [tuple(a) for a in json.loads(row[10] or "[]")],
                            pickle.loads(row[11]) if row[11] else [], row[12], row[13],
                            row[7] or 0.0, row[8])
        report.resumed = True
        return report

    def _load_result(self, inline: bytes | None, file: str | None) -> Any:
        if file:
            return pickle.loads((self.results_dir / file).read_bytes())
        return pickle.loads(inline) if inline is not None else None

    # ---- recording (a durable sink of the event stream) ---------------------------------

    def on_events(self, events: Sequence[TaskEvent]) -> None:
        """Commit every ending of the batch at once, before any other sink sees it."""
        rows = []
        for event in events:
            if event.kind is EventKind.STARTED:
                self._slots[event.tid] = (event.pid, event.slot)
            elif event.kind is EventKind.ENDED and event.report is not None:
                pid_slot = self._slots.pop(event.tid, (None, None))
                if not event.report.resumed:
                    rows.append(self._row(event.report, pid_slot[1]))
        if not rows:
            return
        with self._lock:
            replaced = []
            for start in range(0, len(rows) if self._files else 0, 500):  # SQLite's limit
                names = [r[0] for r in rows[start:start + 500]]
                replaced += [file for (file,) in self._db.execute(
                    f"SELECT result_file FROM tasks WHERE result_file IS NOT NULL AND name "
                    f"IN ({', '.join('?' * len(names))})", names)]
            with self._transaction():
                self._db.executemany(_INSERT, rows)
        for file in replaced:
            with contextlib.suppress(FileNotFoundError):
                (self.results_dir / file).unlink()

    def _row(self, report: TaskReport, slot: int | None) -> tuple[Any, ...]:
        text = canonical(report.instructions)
        result = result_file = None
        if report.status is TaskStatus.DONE:
            data = by_value.dumps_user(report.result)
            if len(data) > INLINE_MAX:
                self.results_dir.mkdir(mode=0o700, exist_ok=True)
                self._files = True
                result_file = f"{fingerprint(report.name)}-{self.run}-{time.time_ns()}.pickle"
                (self.results_dir / result_file).write_bytes(data)
            else:
                result = data
        return (report.name, self.run, report.worker, text, fingerprint(text),
                report.status.value, result, result_file, _error_blob(report.exception),
                _error_type(report.exception), report.reason, report.traceback, report.pid,
                slot, report.started, report.ended, report.setup_time, report.cpu_time,
                report.peak_rss, report.exitcode, report.signal_name,
                json.dumps(report.attempts),
                by_value.dumps_user(report.emitted) if report.emitted else None,
                report.stdout, report.stderr, time.time())


def _error_blob(exc: BaseException | None) -> bytes | None:
    if exc is None:
        return None
    try:
        tb = tblib.Traceback(exc.__traceback__).as_dict() if exc.__traceback__ else None
        data = by_value.dumps_user((exc, tb))
        pickle.loads(data)
        return data
    except BaseException:
        return None


def _error_type(exc: BaseException | None) -> str | None:
    return None if exc is None else f"{type(exc).__module__}.{type(exc).__qualname__}"


def load_exception(data: bytes | None, text: str | None, name: str) -> BaseException | None:
    """An exception recorded by the journal, with its frames when they travelled."""
    if data is not None:
        with contextlib.suppress(Exception):
            exc, tb = pickle.loads(data)
            if isinstance(exc, BaseException):
                if tb is not None:
                    exc = exc.with_traceback(tblib.Traceback.from_dict(tb).as_traceback())
                return exc
    return RemoteTaskError(f"task {name!r}: {text}", name) if text else None
