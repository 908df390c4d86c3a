"""The ``taskfarm`` command: read a journal back, or run a farm described in a file.

::

    taskfarm report JOURNAL                 # a summary on stdout
    taskfarm report JOURNAL --html FILE     # and one self-contained HTML page
    taskfarm run JOB.toml                   # run (or resume) the farm a job file describes

Also ``python -m taskfarm``. Exit statuses: 0 when all went well (``run``: every task
is done); 1 when ``run`` ended with tasks not done; 2 for a usage error, a journal or
job file that cannot be used, or a missing optional library; 130 after Ctrl-C and 143
after SIGTERM (``run`` stops its workers first).

The work is done in :mod:`taskfarm._report`; this module only parses the command line
and turns errors into messages and exit statuses.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from taskfarm._report.summary import JournalError, format_summary, read_summary

__all__ = ["main"]

EXIT_OK, EXIT_NOT_DONE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
TEXT_FAILURES = 20    # failures shown in full by default in the text summary
EXTRA = 'pip install "taskfarm[report]"'


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command with ``argv`` (default: the program's arguments); returns the
    exit status."""
    args = _parser().parse_args(argv)
    try:
        status: int = args.command(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (taskfarm report J | head): exit quietly, and keep
        # Python from complaining again as it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_NOT_DONE
    return status


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taskfarm", description="Read a taskfarm journal back, or run a farm "
        "described in a TOML job file.")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")
    report = commands.add_parser(
        "report", help="summarise a journal (and write it as an HTML page)",
        description="Summarise a journal: tasks by state, durations and peak memory by "
        "Worker class, the runs that recorded it, and the failures with the end of "
        "their tracebacks.")
    report.add_argument("journal", metavar="JOURNAL", help="the journal= file of a run")
    report.add_argument("--html", metavar="FILE",
                        help="also write one self-contained HTML page (a timeline of the "
                        f"tasks, every failure); needs {EXTRA}")
    report.add_argument("--max-failures", metavar="N", type=_count, default=None,
                        help=f"failures shown in full (default {TEXT_FAILURES} in the "
                        "summary, 1000 in the page; 0: all)")
    report.add_argument("--max-bars", metavar="N", type=_count, default=None,
                        help="tasks drawn on the page's timeline (default 5000; 0: all, "
                        "a heavy page for a large journal)")
    report.set_defaults(command=_report)
    run = commands.add_parser(
        "run", help="run (or resume) the farm a TOML job file describes",
        description="Run the farm a TOML job file describes, with its report printed at "
        "the end. With a journal, running it again resumes: tasks recorded done are not "
        "run again. Exit status 0 when every task is done, 1 otherwise.")
    run.add_argument("job", metavar="JOB.toml", help="the job file (see docs/journal.md)")
    run.set_defaults(command=_run)
    return parser


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def _fail(command: str, message: str, status: int = EXIT_USAGE) -> int:
    print(f"taskfarm {command}: {message}", file=sys.stderr)
    return status


def _report(args: argparse.Namespace) -> int:
    wanted = args.max_failures
    shown = None if wanted == 0 else (TEXT_FAILURES if wanted is None else wanted)
    if args.html is None:
        try:
            summary = read_summary(args.journal, shown)
        except JournalError as exc:
            return _fail("report", str(exc))
        print(format_summary(summary))
        return EXIT_OK
    try:
        from taskfarm._report import html
    except ModuleNotFoundError as exc:
        return _fail("report", f"--html needs {exc.name or 'matplotlib and jinja2'}, which "
                     f"is not installed: {EXTRA}")
    try:
        page = html.write_html(
            args.journal, args.html,
            html.MAX_BARS if args.max_bars is None else (args.max_bars or None),
            html.MAX_FAILURES if wanted is None else (wanted or None))
    except JournalError as exc:
        return _fail("report", str(exc))
    except OSError as exc:
        return _fail("report", f"cannot write {args.html}: {exc.strerror or exc}")
    print(format_summary(page.summary, max_failures=shown))
    drawn = len(page.timeline.bars)
    print(f"\nwrote {args.html}: {drawn:,} tasks on the timeline"
          + (f" (of {page.timeline.timed:,} that ran)" if page.timeline.capped else ""))
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    from taskfarm._common.errors import InstructionError
    from taskfarm._report.job import JobError, load_job, run_job

    try:
        job = load_job(args.job)
    except JobError as exc:
        return _fail("run", str(exc))
    try:
        done = run_job(job)
    except InstructionError as exc:
        return _fail("run", f"{job.path}: the instructions cannot run: {exc}")
    except KeyboardInterrupt:
        return _fail("run", "interrupted: the workers were stopped; run it again to "
                     "resume" if job.journal else "interrupted", EXIT_INTERRUPTED)
    except Exception as exc:   # a fail-fast run re-raises the first task's failure
        return _fail("run", f"stopped at the first failure ({type(exc).__name__}: {exc}); "
                     'on_error = "continue" runs every task', EXIT_NOT_DONE)
    if not done:
        return _fail("run", "some tasks are not done (see the report above)"
                     + ("; run it again to retry them" if job.journal else ""),
                     EXIT_NOT_DONE)
    return EXIT_OK
