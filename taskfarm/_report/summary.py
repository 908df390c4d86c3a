"""A journal read back as a summary: counts by state, figures per Worker class, the
runs that recorded it and the failures with their tracebacks.

Everything but the failures shown comes from one ``GROUP BY`` scan of the ``tasks``
table, so a journal of 100,000 tasks reads in a fraction of a second: no result is
unpickled and no row is turned into a Python object unless it is shown. The reads
happen in one transaction, so a journal that a running farm is writing to is read as
one consistent snapshot (WAL readers never block its writer).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from taskfarm._common.status import TaskStatus

__all__ = ["ClassFigures", "Failure", "JournalError", "Run", "Summary", "format_summary",
           "open_journal", "read_summary", "summarise"]

TRACEBACK_LINES = 8      # the head of a traceback shown in the text summary: its last lines
INSTRUCTIONS_WIDTH = 300  # characters of a failure's instructions shown in the text summary
STATES = tuple(s.value for s in TaskStatus)


class JournalError(Exception):
    """The file is missing or is not a taskfarm journal."""


@dataclass(frozen=True, slots=True)
class ClassFigures:
    """What the tasks of one Worker class took. ``timed`` counts the tasks with a start
    and an end (the durations are theirs); ``peak_rss`` is the largest process peak, in
    bytes, over all of them (None when none was measured)."""

    worker: str
    tasks: int
    done: int
    timed: int
    total: float
    longest: float | None
    peak_rss: int | None

    @property
    def mean(self) -> float | None:
        """The mean duration in seconds, or None when no task was timed."""
        return self.total / self.timed if self.timed else None


@dataclass(frozen=True, slots=True)
class Run:
    """One run of a program on the journal (table ``runs``), and how many of the tasks
    now recorded it recorded (a later run replaces a row it records again)."""

    id: int
    started: float | None
    pid: int | None
    host: str | None
    argv: tuple[str, ...]
    tasks: int

    @property
    def command(self) -> str:
        """The command line, its program by name only (``python -m pkg`` for a
        package's ``__main__.py``)."""
        if not self.argv:
            return "-"
        program = os.path.basename(self.argv[0])
        if program == "__main__.py":
            program = f"python -m {os.path.basename(os.path.dirname(self.argv[0]))}"
        return " ".join([program, *self.argv[1:]])


@dataclass(frozen=True, slots=True)
class Failure:
    """A task recorded in a state other than done, with its full traceback text."""

    name: str
    run: int | None
    worker: str | None
    status: str
    error_type: str | None
    reason: str | None
    traceback: str | None
    instructions: str | None
    started: float | None
    ended: float | None
    attempts: int = 1

    @property
    def why(self) -> str:
        """The error type and its reason in one line (the reason alone when it names
        the type already)."""
        reason = (self.reason or "").strip()
        if self.error_type and not reason.startswith(self.error_type):
            return f"{self.error_type}: {reason}" if reason else self.error_type
        return reason or "(no reason recorded)"

    def head(self, lines: int = TRACEBACK_LINES) -> str:
        """The last ``lines`` lines of the traceback (where it was raised), or ''."""
        text = (self.traceback or "").rstrip().splitlines()
        if len(text) <= lines:
            return "\n".join(text)
        return "\n".join(["...", *text[-lines:]])


@dataclass(frozen=True, slots=True)
class Summary:
    """A journal in figures. ``failures`` holds the first failures recorded (at most
    what was asked), ``failures_total`` how many there are."""

    path: str
    counts: dict[str, int]
    classes: tuple[ClassFigures, ...]
    runs: tuple[Run, ...]
    failures: tuple[Failure, ...]
    failures_total: int
    error_types: tuple[tuple[str, int], ...]
    first_start: float | None
    last_end: float | None
    read_seconds: float = field(default=0.0, compare=False)

    @property
    def total(self) -> int:
        """How many tasks the journal records."""
        return sum(self.counts.values())


@contextlib.contextmanager
def open_journal(path: str | os.PathLike[str]) -> Iterator[sqlite3.Connection]:
    """The journal at ``path``, open inside one read transaction; closed on exit.

    Raises:
        JournalError: no such file, or not a taskfarm journal.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        what = "is not a file" if os.path.exists(path) else "does not exist"
        raise JournalError(f"{path} {what}: give the path of a taskfarm journal "
                           "(the journal= file of a run)")
    try:
        # Not journal.connect: reading must not change the file (a database that is not
        # a journal would be switched to WAL mode); mode=rw never creates one.
        db = sqlite3.connect(f"file:{urllib.parse.quote(path)}?mode=rw", uri=True,
                             isolation_level=None)
    except sqlite3.Error as exc:
        raise JournalError(f"{path}: cannot open it ({exc})") from None
    try:
        db.execute("PRAGMA busy_timeout=10000")   # a writer checkpointing: wait for it
        tables = {name for (name,) in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"tasks", "runs"} <= tables:
            raise JournalError(f"{path} is an SQLite database but not a taskfarm journal "
                               "(it has no tasks and runs tables)")
        db.execute("BEGIN")     # one snapshot for every read
        try:
            yield db
        finally:
            db.execute("ROLLBACK")
    except sqlite3.Error as exc:
        raise JournalError(f"{path} is not a readable taskfarm journal ({exc})") from None
    finally:
        db.close()


def read_summary(path: str | os.PathLike[str], max_failures: int | None = 20) -> Summary:
    """Read the journal at ``path`` into a :class:`Summary`, with the first
    ``max_failures`` failures in full (None: all of them).

    Raises:
        JournalError: no such file, or not a taskfarm journal.
    """
    with open_journal(path) as db:
        return summarise(db, os.fspath(path), max_failures)


def summarise(db: sqlite3.Connection, path: str, max_failures: int | None) -> Summary:
    """The :class:`Summary` of the journal open as ``db`` (see :func:`open_journal`)."""
    clock = time.perf_counter()
    counts: dict[str, int] = {}
    per_run: dict[int | None, int] = {}
    classes: dict[str, _Tally] = {}
    starts: list[float] = []
    ends: list[float] = []
    for (run, worker, status, n, timed, total, longest, peak, start,
         end) in db.execute(
            "SELECT run, worker, status, COUNT(*), COUNT(ended - started),"
            " TOTAL(ended - started), MAX(ended - started), MAX(peak_rss), MIN(started),"
            " MAX(ended) FROM tasks GROUP BY run, worker, status"):
        status = status or "?"
        counts[status] = counts.get(status, 0) + n
        per_run[run] = per_run.get(run, 0) + n
        classes.setdefault(worker or "?", _Tally()).add(
            n, status == TaskStatus.DONE.value, timed, total, longest, peak)
        starts += [start] if start is not None else []
        ends += [end] if end is not None else []
    ordered = {s: counts.pop(s) for s in STATES if s in counts}
    ordered.update(sorted(counts.items()))
    failures_total = sum(n for s, n in ordered.items() if s != TaskStatus.DONE.value)
    return Summary(
        path, ordered, tuple(t.figures(w) for w, t in sorted(classes.items())),
        _runs(db, per_run), _failures(db, max_failures) if failures_total else (),
        failures_total, _error_types(db) if failures_total else (),
        min(starts, default=None), max(ends, default=None), time.perf_counter() - clock)


@dataclass(slots=True)
class _Tally:
    """The figures of one Worker class, added up group by group."""

    tasks: int = 0
    done: int = 0
    timed: int = 0
    total: float = 0.0
    longest: float | None = None
    peak_rss: int | None = None

    def add(self, n: int, done: bool, timed: int, total: float, longest: float | None,
            peak: int | None) -> None:
        self.tasks += n
        self.done += n if done else 0
        self.timed += timed
        self.total += total
        if longest is not None and (self.longest is None or longest > self.longest):
            self.longest = longest
        if peak is not None and (self.peak_rss is None or peak > self.peak_rss):
            self.peak_rss = peak

    def figures(self, worker: str) -> ClassFigures:
        return ClassFigures(worker, self.tasks, self.done, self.timed, self.total,
                            self.longest, self.peak_rss)


def _runs(db: sqlite3.Connection, per_run: dict[int | None, int]) -> tuple[Run, ...]:
    runs = []
    for run_id, started, pid, host, argv in db.execute(
            "SELECT id, started, pid, host, argv FROM runs ORDER BY id"):
        try:
            words = tuple(str(w) for w in json.loads(argv or "[]"))
        except (ValueError, TypeError):
            words = (str(argv),)
        runs.append(Run(run_id, started, pid, host, words, per_run.get(run_id, 0)))
    return tuple(runs)


def _failures(db: sqlite3.Connection, limit: int | None) -> tuple[Failure, ...]:
    # In recording order (rowid: a row recorded again gets a new one), which stops
    # reading at the limit instead of sorting every failure.
    rows = db.execute(
        "SELECT name, run, worker, status, error_type, reason, traceback, instructions,"
        " started, ended, attempts FROM tasks WHERE status != 'done' ORDER BY rowid"
        " LIMIT ?", (-1 if limit is None else limit,))
    return tuple(Failure(name, run, worker, status, error_type, reason, traceback,
                         instructions, started, ended, _count_attempts(attempts))
                 for (name, run, worker, status, error_type, reason, traceback, instructions,
                      started, ended, attempts) in rows)


def _count_attempts(text: str | None) -> int:
    try:
        attempts = json.loads(text or "[]")
    except ValueError:
        return 1
    return max(1, len(attempts)) if isinstance(attempts, list) else 1


def _error_types(db: sqlite3.Connection) -> tuple[tuple[str, int], ...]:
    return tuple(db.execute(
        "SELECT COALESCE(error_type, status), COUNT(*) FROM tasks WHERE status != 'done'"
        " GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 10").fetchall())


# ---- text ------------------------------------------------------------------------------

def format_summary(summary: Summary, traceback_lines: int = TRACEBACK_LINES,
                   max_failures: int | None = None) -> str:
    """The summary as text for a terminal, with its first ``max_failures`` failures
    (None: every failure it holds)."""
    counts = ", ".join(f"{n:,} {s}" for s, n in summary.counts.items())
    lines = [f"journal {summary.path}: {summary.total:,} tasks" + (f", {counts}" if counts
                                                                   else "")]
    if summary.first_start is not None and summary.last_end is not None:
        lines.append(f"  first start {when(summary.first_start)}, last end "
                     f"{when(summary.last_end)} "
                     f"({seconds(summary.last_end - summary.first_start)} between them)")
    lines += ["", f"runs ({len(summary.runs)}):"]
    lines += _table([("run", "started", "pid", "host", "tasks", "command")] + [
        (str(r.id), when(r.started), str(r.pid or "-"), r.host or "-", f"{r.tasks:,}",
         clip(r.command, 60)) for r in summary.runs[-20:]])
    if len(summary.runs) > 20:
        lines.append(f"  ... and {len(summary.runs) - 20} earlier runs")
    lines += ["", "by Worker class (durations of the tasks that started and ended):"]
    lines += _table([("worker", "tasks", "done", "timed", "total", "mean", "max",
                      "peak MiB")] + [
        (c.worker, f"{c.tasks:,}", f"{c.done:,}", f"{c.timed:,}",
         seconds(c.total if c.timed else None), seconds(c.mean), seconds(c.longest),
         mib(c.peak_rss)) for c in summary.classes])
    if summary.failures_total:
        kinds = ", ".join(f"{n:,} {kind}" for kind, n in summary.error_types)
        lines += ["", f"failures ({summary.failures_total:,}: {kinds}):"]
        shown = summary.failures[:max_failures]
        for failure in shown:
            lines += _failure(failure, traceback_lines)
        hidden = summary.failures_total - len(shown)
        if hidden:
            lines += ["", f"... and {hidden:,} more failures (--max-failures 0 shows all)"]
    return "\n".join(lines)


def _failure(failure: Failure, traceback_lines: int) -> list[str]:
    where = ", ".join(p for p in (
        failure.worker, f"run {failure.run}" if failure.run is not None else "",
        f"{failure.attempts} attempts" if failure.attempts > 1 else "") if p)
    lines = ["", f"--- {failure.name}: {failure.status} ({where})",
             f"  {clip(failure.why, 300)}",
             f"  instructions: {clip(failure.instructions or '-', INSTRUCTIONS_WIDTH)}"]
    head = failure.head(traceback_lines)
    lines += [f"  | {line}" for line in head.splitlines()]
    return lines


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            for row in rows]


def when(stamp: float | None) -> str:
    """A timestamp as local date and time, or '-'."""
    if stamp is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


def seconds(value: float | None) -> str:
    """A duration for people: '-', '850 µs', '12.3 ms', '4.56 s', '2 h 05 min'."""
    if value is None:
        return "-"
    if value < 1e-3:
        return f"{value * 1e6:.0f} µs"
    if value < 1:
        return f"{value * 1e3:.1f} ms"
    if value < 600:
        return f"{value:.2f} s"
    minutes = round(value / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def mib(value: int | None) -> str:
    """Bytes as MiB, or '-'."""
    return "-" if value is None else f"{value / 2**20:,.0f}"


def clip(text: str, width: int) -> str:
    """``text`` on one line, cut to ``width`` characters with '...'."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."
