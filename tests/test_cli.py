"""The ``taskfarm`` command, run as users run it (``python -m taskfarm`` in a subprocess):
``report`` on journals made by real farms (and on a 100,000-row one), its errors, and
``run`` on TOML job files: exit statuses, resume without redoing, bad job files named.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

import taskfarm
from taskfarm._main.journal import _COLUMNS, _INSERT, _SCHEMA
from taskfarm._report.summary import format_summary, read_summary

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 120   # seconds, for every command run here


class CliFlaky(taskfarm.Worker):
    """Fails for every x that is 3 mod 4."""

    cli_x: int

    def task(self) -> int:
        if self.cli_x % 4 == 3:
            raise ValueError(f"bad input {self.cli_x}")
        return self.cli_x


class CliSquare(taskfarm.Worker):
    """Never fails."""

    cli_y: int

    def task(self) -> int:
        return self.cli_y ** 2


def taskfarm_command(*args: str | Path, cwd: Path | None = None,
                     code: str | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m taskfarm ARGS`` (or ``python -c CODE ARGS``), with this checkout's
    taskfarm first on the path."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    start = ["-c", code] if code is not None else ["-m", "taskfarm"]
    return subprocess.run([sys.executable, *start, *map(str, args)], capture_output=True,
                          text=True, timeout=TIMEOUT, cwd=cwd, env=env)


@pytest.fixture(scope="module")
def journal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A journal of two runs: 12 CliFlaky tasks (3 fail), then 5 CliSquare tasks."""
    path = tmp_path_factory.mktemp("journal") / "campaign.db"
    taskfarm.batch_main({"name": "flaky_[cli_x]"}, {"cli_x": list(range(12))},
                        worker=CliFlaky, journal=path, on_error="continue",
                        print_report=None, progress=False)
    taskfarm.batch_main({"name": "square_[cli_y]"}, {"cli_y": list(range(5))},
                        worker=CliSquare, journal=path, on_error="continue",
                        print_report=None, progress=False)
    return path


def _rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(path)) as db:
        return db.execute(sql).fetchall()


# ---- taskfarm report -----------------------------------------------------------------

def test_report_prints_counts_classes_runs_and_each_failure(journal: Path) -> None:
    done = taskfarm_command("report", journal)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"journal {journal}: 17 tasks, 14 done, 3 failed" in out
    assert "failures (3: 3 builtins.ValueError)" in out
    for x in (3, 7, 11):
        assert f"--- flaky_{x}: failed (CliFlaky, run 1)" in out
        assert f"builtins.ValueError: bad input {x}" in out
        assert f'instructions: {{"cli_x": {x}, "name": "flaky_{x}"}}' in out
        assert f"| ValueError: bad input {x}" in out       # the traceback's last line
    assert out.count('raise ValueError(f"bad input {self.cli_x}")') == 3
    classes = {line.split()[0]: line.split() for line in out.splitlines()
               if line.startswith("  Cli")}
    assert classes["CliFlaky"][1:4] == ["12", "9", "12"]     # tasks, done, timed
    assert classes["CliSquare"][1:4] == ["5", "5", "5"]
    runs = [line.split() for line in out.splitlines() if line.startswith(("  1 ", "  2 "))]
    assert [(r[0], r[5]) for r in runs] == [("1", "12"), ("2", "5")]   # run, tasks


def test_report_figures_match_the_rows(journal: Path) -> None:
    summary = read_summary(journal)
    rows = _rows(journal, "SELECT worker, status, started, ended, peak_rss FROM tasks")
    assert summary.counts == {"done": 14, "failed": 3} and summary.total == len(rows)
    for figures in summary.classes:
        mine = [r for r in rows if r[0] == figures.worker]
        durations = [r[3] - r[2] for r in mine]
        assert figures.tasks == figures.timed == len(mine)
        assert figures.total == pytest.approx(sum(durations))
        assert figures.longest == pytest.approx(max(durations))
        assert figures.mean == pytest.approx(sum(durations) / len(durations))
        assert figures.peak_rss == max(r[4] for r in mine)
    assert sorted(f.name for f in summary.failures) == ["flaky_11", "flaky_3", "flaky_7"]
    for failure in summary.failures:
        head = failure.head().splitlines()
        assert head[-1] == f"ValueError: {failure.reason.split(': ')[-1]}"
        assert len(head) <= 9 and failure.why == failure.reason
    assert [r.tasks for r in summary.runs] == [12, 5]


def test_report_limits_the_failures_shown(journal: Path) -> None:
    done = taskfarm_command("report", journal, "--max-failures", "1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("--- flaky_") == 1
    assert "... and 2 more failures (--max-failures 0 shows all)" in done.stdout


@pytest.mark.parametrize("kind", ["missing", "text", "other database", "folder"])
def test_report_of_what_is_not_a_journal_is_a_clear_error(tmp_path: Path,
                                                          kind: str) -> None:
    path = tmp_path / "j.db"
    if kind == "text":
        path.write_text("not a database\n" * 100)
    elif kind == "other database":
        with closing(sqlite3.connect(path)) as db:
            db.execute("CREATE TABLE things (x)")
    elif kind == "folder":
        path.mkdir()
    done = taskfarm_command("report", path)
    assert done.returncode == 2
    assert done.stderr.startswith(f"taskfarm report: {path}")
    assert "Traceback" not in done.stderr and done.stdout == ""
    if kind == "other database":   # reading did not change it (no WAL switch)
        assert _rows(path, "PRAGMA journal_mode") == [("delete",)]


def test_a_journal_with_no_task_yet_reads_as_empty(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    with closing(sqlite3.connect(path)) as db:
        db.executescript(_SCHEMA)
    done = taskfarm_command("report", path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"journal {path}: 0 tasks\n") and "runs (0):" in done.stdout


def test_html_without_the_report_extra_names_the_install(journal: Path,
                                                         tmp_path: Path) -> None:
    hide = ("import sys; sys.modules['matplotlib'] = None; from taskfarm.cli import main;"
            " raise SystemExit(main(sys.argv[1:]))")
    done = taskfarm_command("report", journal, "--html", tmp_path / "r.html", code=hide)
    assert done.returncode == 2
    assert 'pip install "taskfarm[report]"' in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "r.html").exists()


@pytest.fixture(scope="module")
def big_journal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """100,000 tasks inserted with the journal's own schema and statement: three Worker
    classes, one task in 50 failed, one in 1,000 killed, one in 2,000 never started."""
    path = tmp_path_factory.mktemp("big") / "big.db"
    with closing(sqlite3.connect(path)) as db:
        db.executescript(_SCHEMA)
        db.execute("INSERT INTO runs (started, pid, host, argv) VALUES (1e9, 1, 'h', '[]')")
        db.executemany(_INSERT, (_big_row(i) for i in range(100_000)))
        db.commit()
    return path


def _big_row(i: int) -> tuple[Any, ...]:
    status = ("killed" if i % 1000 == 7 else "failed" if i % 50 == 1
              else "cancelled" if i % 2000 == 3 else "done")
    started = None if status == "cancelled" else 1e9 + i * 0.01
    duration = 0.001 * (i % 100)
    values: dict[str, Any] = dict.fromkeys(_COLUMNS)
    values.update(
        name=f"t{i}", run=1, worker=f"W{i % 3}", status=status, slot=i % 8, pid=100 + i % 8,
        instructions=json.dumps({"i": i, "name": f"t{i}"}), started=started,
        ended=None if started is None else started + duration, peak_rss=(i % 500) << 20,
        error_type="builtins.ValueError" if status == "failed" else None,
        reason=f"builtins.ValueError: bad {i}" if status == "failed" else
        "killed by SIGKILL" if status == "killed" else None,
        traceback=f"Traceback (most recent call last):\nValueError: bad {i}\n"
        if status == "failed" else None, result=b"\x80\x05K\x01." if status == "done"
        else None, recorded=1e9 + i)
    return tuple(values[c] for c in _COLUMNS)


def test_a_100000_task_journal_is_summarised_correctly(big_journal: Path) -> None:
    summary = read_summary(big_journal)
    rows = [_big_row(i) for i in range(100_000)]
    status, started, ended, peak = (_COLUMNS.index(c) for c in
                                    ("status", "started", "ended", "peak_rss"))
    expected: dict[str, int] = {}
    for row in rows:
        expected[str(row[status])] = expected.get(str(row[status]), 0) + 1
    assert summary.counts == {s: expected[s] for s in ("done", "failed", "killed",
                                                       "cancelled")}
    assert summary.total == 100_000
    assert summary.failures_total == 100_000 - expected["done"]
    assert len(summary.failures) == 20 and summary.failures[0].name == "t1"
    for figures in summary.classes:
        mine = [r for r in rows if r[2] == figures.worker]
        timed = [r[ended] - r[started] for r in mine if r[started] is not None]
        assert (figures.tasks, figures.timed) == (len(mine), len(timed))
        assert figures.total == pytest.approx(sum(timed))
        assert figures.longest == pytest.approx(max(timed))
        assert figures.peak_rss == max(r[peak] for r in mine)
    assert dict(summary.error_types) == {"builtins.ValueError": expected["failed"],
                                         "killed": expected["killed"],
                                         "cancelled": expected["cancelled"]}
    text = format_summary(summary)
    assert "journal " in text and ": 100,000 tasks, " in text
    assert f"... and {summary.failures_total - 20:,} more failures" in text
    done = taskfarm_command("report", big_journal)
    assert done.returncode == 0, done.stderr
    assert done.stdout == text + "\n"


# ---- taskfarm run --------------------------------------------------------------------

WORKER_MODULE = textwrap.dedent('''
    import os

    import taskfarm


    class JobStep(taskfarm.Worker):
        """Appends its name to a side file; fails while the file ``broken`` exists
        beside the side file, for step 3."""

        step: int
        side: str
        scale: int = 1

        def task(self) -> int:
            with open(self.side, "a") as out:
                out.write(self.name + "\\n")
            if self.step == 3 and os.path.exists(
                    os.path.join(os.path.dirname(self.side), "broken")):
                raise RuntimeError("step 3 is broken")
            return self.step * self.scale
''')


@pytest.fixture
def job(tmp_path: Path) -> Iterator[Path]:
    """A job folder with a worker module and a job file; ``broken`` is there."""
    folder = tmp_path / "campaign"
    folder.mkdir()
    (folder / "steps.py").write_text(WORKER_MODULE)
    (folder / "broken").write_text("")
    (folder / "job.toml").write_text(textwrap.dedent(f'''
        worker = "steps:JobStep"
        journal = "campaign.sqlite"
        on_error = "continue"
        name = "campaign"
        retries = 0
        progress = false

        [common]
        name = "step_[step]"
        side = "{folder / 'side.txt'}"
        scale = 10

        [individual]
        step = [1, 2, 3, 4, 5]

        [scheduler]
        class = "MaxThreadsScheduler"
        max_threads = 2
    '''))
    yield folder / "job.toml"


def _side(job: Path) -> list[str]:
    side = job.parent / "side.txt"
    return sorted(side.read_text().split()) if side.exists() else []


def test_run_then_resume_runs_only_what_is_not_done(job: Path, tmp_path: Path) -> None:
    first = taskfarm_command("run", job, cwd=tmp_path)   # another folder: paths hold
    assert first.returncode == 1, first.stderr
    assert "4 done, 1 failed" in first.stdout and "step 3 is broken" in first.stdout
    assert "some tasks are not done" in first.stderr
    assert _side(job) == ["step_1", "step_2", "step_3", "step_4", "step_5"]
    assert (job.parent / "campaign.sqlite").exists()      # beside the job file

    (job.parent / "broken").unlink()
    second = taskfarm_command("run", job, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert _side(job) == ["step_1", "step_2", "step_3", "step_3", "step_4", "step_5"]

    third = taskfarm_command("run", job, cwd=tmp_path)   # all recorded done: none runs
    assert third.returncode == 0, third.stderr
    assert "5 done" in third.stdout
    assert _side(job) == ["step_1", "step_2", "step_3", "step_3", "step_4", "step_5"]

    report = taskfarm_command("report", job.parent / "campaign.sqlite")
    assert "5 tasks, 5 done" in report.stdout and "runs (3):" in report.stdout
    assert _rows(job.parent / "campaign.sqlite",
                 "SELECT name, run FROM tasks WHERE name = 'step_3'") == [("step_3", 2)]


def test_run_fail_fast_stops_at_the_first_failure(job: Path) -> None:
    job.write_text(job.read_text().replace('on_error = "continue"\n', ""))
    done = taskfarm_command("run", job)
    assert done.returncode == 1
    assert "stopped at the first failure (RuntimeError: step 3 is broken)" in done.stderr


BAD_JOBS = [  # (what is replaced, by what, what the message must say)
    ('worker = "steps:JobStep"\n', "", '"worker" is missing'),
    ("steps:JobStep", "nowhere:JobStep", "no module named 'nowhere'"),
    ("steps:JobStep", "steps:NoSuchStep", "module steps has no 'NoSuchStep'"),
    ("steps:JobStep", "steps.JobStep", 'worker must be "module:Class"'),
    ("steps:JobStep", "os:path", "is not a taskfarm.Worker subclass"),
    ('class = "MaxThreadsScheduler"', 'class = "FastestScheduler"',
     "'FastestScheduler' is not a scheduler"),
    ('class = "MaxThreadsScheduler"', 'class = "steps:JobStep"',
     "is not a schedulers.BaseScheduler subclass"),
    ("max_threads = 2", "threads = 2", "unexpected keyword argument 'threads'"),
    ('class = "MaxThreadsScheduler"\n', "", '[scheduler] needs a "class" key'),
    ("retries = 0", "retries = -1", "'retries' must be a non-negative integer"),
    ('on_error = "continue"', 'on_error = "ignore"', "'on_error' must be"),
    ("progress = false", "progress = 1", "'progress' must be true or false"),
    ("retries = 0", "retry = 0", "unknown key 'retry'"),
    ("step = [1, 2, 3, 4, 5]", "step = [1, 2]\nother = [1]",
     "one length (step has 2, other has 1)"),
    ('name = "step_[step]"', 'name = "step"', "would be the same for all 5 tasks"),
    ('name = "step_[step]"\n', "", "give the tasks names that stay the same"),
    ("scale = 10", 'scale = "ten"', "'scale' must be int"),
    ("[individual]", "[individual", "is not valid TOML"),
]


@pytest.mark.parametrize(("old", "new", "message"), BAD_JOBS,
                         ids=[b[2][:40] for b in BAD_JOBS])
def test_a_bad_job_file_is_an_error_naming_the_key(job: Path, old: str, new: str,
                                                   message: str) -> None:
    text = job.read_text()
    assert old in text
    job.write_text(text.replace(old, new, 1))
    done = taskfarm_command("run", job)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert message in done.stderr and done.stderr.startswith("taskfarm run: ")
    assert "Traceback" not in done.stderr
    assert not (job.parent / "side.txt").exists()      # nothing ran


def test_a_missing_job_file_is_an_error(tmp_path: Path) -> None:
    done = taskfarm_command("run", tmp_path / "nope.toml")
    assert done.returncode == 2
    assert "cannot read the job file" in done.stderr and "Traceback" not in done.stderr


def test_usage_errors_exit_2() -> None:
    assert taskfarm_command().returncode == 2
    assert taskfarm_command("report").returncode == 2
    assert taskfarm_command("report", "j.db", "--max-failures", "-1").returncode == 2
    helped = taskfarm_command("--help")
    assert helped.returncode == 0 and "report" in helped.stdout and "run" in helped.stdout
