"""What a task writes and logs: captured stdout and stderr in its report, and log
records forwarded to the main program's own handlers; the boss's decisions on the
``taskfarm`` logger."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from event_workers import CapturedTalker, Logger, Talker
from workers import Flaky, Gate, Stuck

import taskfarm
from schedulers import MaxThreadsScheduler
from taskfarm._worker.capture import CAPTURE_LIMIT

pytestmark = pytest.mark.usefixtures("start_method")

WAIT = 30.0

# ---- captured output ---------------------------------------------------------------------


def _talk(label: str) -> str:
    """What a Talker writes to stdout, in order."""
    return f"print {label}\nfd {label}\nchild {label}\n"


def test_captured_output_travels_in_the_report_whatever_wrote_it() -> None:
    report = taskfarm.batch_main({}, {"talk_label": ["a", "b", "c"]}, worker=Talker,
                                 capture_output=True, scheduler=MaxThreadsScheduler(1),
                                 print_report=None, progress=False)
    for task in report.tasks:
        label = task.result
        assert task.stdout == _talk(label)   # only its own output: nothing of the others
        assert task.stderr == f"err {label}\n"


def test_a_failed_task_keeps_what_it_wrote() -> None:
    report = taskfarm.batch_main({"talk_label": "gone", "talk_fail": True, "name": "gone"},
                                 worker=Talker, capture_output=True, on_error="continue",
                                 print_report=None, progress=False)
    task = report["gone"]
    assert str(task.status) == "failed"
    assert task.stdout == _talk("gone") and task.stderr == "err gone\n"


def test_a_worker_class_can_capture_on_its_own(capfd: pytest.CaptureFixture[str]) -> None:
    with taskfarm.Boss(MaxThreadsScheduler(1), workers=[Talker, CapturedTalker]) as boss:
        boss.set_instructions({"talk_label": "kept", "name": "kept"}, worker=CapturedTalker)
        boss.set_instructions({"talk_label": "free", "name": "free"}, worker=Talker)
        boss.make_them_work()
        report = boss.wait_till_finished(timeout=WAIT)
    assert report["kept"].stdout == _talk("kept") and report["kept"].stderr == "err kept\n"
    assert report["free"].stdout is None and report["free"].stderr is None
    out, err = capfd.readouterr()   # not captured: it went where the worker writes
    assert _talk("free") in out and "err free" in err
    assert "kept" not in out and "kept" not in err


def test_without_capture_nothing_is_kept() -> None:
    report = taskfarm.batch_main({"talk_label": "plain"}, worker=Talker, print_report=None,
                                 progress=False)
    assert report.tasks[0].stdout is None and report.tasks[0].stderr is None


def test_ten_megabytes_of_output_are_cut_in_the_middle_and_say_so() -> None:
    size = 10 * 2**20
    with taskfarm.Boss(MaxThreadsScheduler(1), workers=[Talker],
                       capture_output=True) as boss:
        boss.set_instructions({"talk_label": "loud", "talk_bytes": size, "name": "loud"})
        boss.set_instructions({"talk_label": "quiet", "name": "quiet", "after": ["loud"]})
        boss.make_them_work()
        report = boss.wait_till_finished(timeout=WAIT)
    loud = report["loud"]
    for text, fd in ((loud.stdout, 1), (loud.stderr, 2)):
        assert text is not None
        assert CAPTURE_LIMIT < len(text.encode()) < CAPTURE_LIMIT + 300
        assert text.endswith(f"TAIL-{fd}\n")
        marker = re.search(r"\[taskfarm: ([\d,]+) bytes of (stdout|stderr) cut here; "
                           r"the task wrote ([\d,]+) bytes", text)
        assert marker is not None and marker[2] == ("stdout" if fd == 1 else "stderr")
        cut, wrote = (int(marker[i].replace(",", "")) for i in (1, 3))
        assert wrote > size and cut == wrote - CAPTURE_LIMIT
    assert loud.stdout is not None and loud.stderr is not None
    assert loud.stdout.startswith(_talk("loud") + "HEAD-1\n")
    assert loud.stderr.startswith("err loud\nHEAD-2\n")
    # The next task of the same process starts from an empty capture.
    assert report["quiet"].pid == loud.pid
    assert report["quiet"].stdout == _talk("quiet") and report["quiet"].stderr == "err quiet\n"


# ---- logging ----------------------------------------------------------------------------


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def collect() -> Iterator[Callable[[str, int], _Collect]]:
    """``collect(logger_name, level)``: a handler on that logger, whose level is set to
    ``level``; handlers and levels of the loggers involved are restored afterwards."""
    touched = ["", "taskfarm", "taskfarm.task", "taskfarm.boss"]
    saved = {name: (logging.getLogger(name).level, list(logging.getLogger(name).handlers))
             for name in touched}
    added: list[tuple[logging.Logger, _Collect]] = []

    def install(name: str, level: int) -> _Collect:
        handler = _Collect()
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(level)
        added.append((logger, handler))
        return handler

    yield install
    for logger, collector in added:
        logger.removeHandler(collector)
    for name, (level, handlers) in saved.items():
        logger = logging.getLogger(name)
        logger.setLevel(level)
        for other in list(logger.handlers):   # verbose=True's, for one
            if other not in handlers:
                logger.removeHandler(other)


def _task_records(handler: _Collect) -> list[logging.LogRecord]:
    return [r for r in handler.records if r.name.startswith("taskfarm.task.")]


def test_a_task_record_reaches_a_handler_of_the_main_program_with_the_task_name(
        collect: Callable[[str, int], _Collect]) -> None:
    handler = collect("taskfarm.task", logging.INFO)   # set before the Boss starts
    report = taskfarm.batch_main({"log_logger": "app.convert"},
                                 {"log_text": ["a", "b"], "name": ["conv-a", "conv-b"]},
                                 worker=Logger, print_report=None, progress=False)
    records = _task_records(handler)
    for name, text in (("conv-a", "a"), ("conv-b", "b")):
        mine = [r for r in records if getattr(r, "task", None) == name]
        assert [r.levelname for r in mine] == ["INFO", "WARNING", "ERROR"]
        info = mine[0]
        pid = report[name].pid
        assert info.getMessage() == f"info {text} from {pid}"
        assert info.name == "taskfarm.task.app.convert"
        assert info.task_logger == "app.convert"           # type: ignore[attr-defined]
        assert info.worker_class == "Logger"               # type: ignore[attr-defined]
        assert info.worker_pid == pid != os.getpid()       # type: ignore[attr-defined]
        assert info.process == pid
        assert "ZeroDivisionError" in (mine[2].exc_text or "")
    assert not [r for r in records if r.levelno < logging.INFO]


def test_a_handler_on_the_root_logger_receives_task_records(
        collect: Callable[[str, int], _Collect]) -> None:
    handler = collect("", logging.INFO)
    taskfarm.batch_main({"log_logger": "rooted", "log_text": "r", "name": "rooted-task"},
                        worker=Logger, print_report=None, progress=False)
    infos = [r for r in _task_records(handler) if r.levelno == logging.INFO]
    assert len(infos) == 1 and infos[0].task == "rooted-task"   # type: ignore[attr-defined]


def test_records_below_the_level_enabled_at_boss_creation_are_not_forwarded(
        collect: Callable[[str, int], _Collect]) -> None:
    handler = collect("taskfarm.task", logging.WARNING)
    with taskfarm.Boss(workers=[Logger]) as boss:
        # Enabled only after the Boss started: a record forwarded anyway would show.
        logging.getLogger("taskfarm.task").setLevel(logging.DEBUG)
        boss.set_instructions({"log_logger": "app.quiet", "log_text": "q", "name": "quiet"})
        boss.make_them_work()
        boss.wait_till_finished(timeout=WAIT)
    assert [r.levelname for r in _task_records(handler)] == ["WARNING", "ERROR"]


def test_a_timeout_is_logged_as_a_warning_by_the_boss(
        collect: Callable[[str, int], _Collect], gate: Gate) -> None:
    handler = collect("taskfarm", logging.WARNING)
    report = taskfarm.batch_main({"gate": gate, "timeout": 0.2, "name": "late"}, worker=Stuck,
                                 on_error="continue", print_report=None, progress=False)
    assert str(report["late"].status) == "timeout"
    warnings = [r for r in handler.records if r.name.startswith("taskfarm.boss")]
    assert warnings and all(r.levelno == logging.WARNING for r in warnings)
    assert any("'late'" in r.getMessage() and "timeout of 0.2 s" in r.getMessage()
               for r in warnings)
    assert not [r for r in handler.records if r.levelno < logging.WARNING]


def test_launches_and_retries_are_logged_at_info(
        collect: Callable[[str, int], _Collect], tmp_path: Path) -> None:
    handler = collect("taskfarm", logging.INFO)
    taskfarm.batch_main({"marks": str(tmp_path), "retries": 1, "name": "again"}, worker=Flaky,
                        print_report=None, progress=False)
    messages = [r.getMessage() for r in handler.records
                if r.name.startswith("taskfarm.boss") and r.levelno == logging.INFO]
    assert any(re.search(r"launched task 'again' on worker process \d+", m) for m in messages)
    assert any("'again'" in m and "trying again" in m for m in messages)


def test_verbose_prints_info_records_on_stderr(
        collect: Callable[[str, int], _Collect], capsys: pytest.CaptureFixture[str]) -> None:
    collect("taskfarm", logging.NOTSET)   # only so that the fixture restores it
    taskfarm.batch_main({"log_logger": "chatty", "log_text": "v", "name": "chatty"},
                        worker=Logger, verbose=True, print_report=None, progress=False)
    err = capsys.readouterr().err
    assert re.search(r"\[taskfarm\.boss\] INFO launched task 'chatty'", err)
    assert "[taskfarm.task.chatty] INFO info v from" in err
    assert "debug v" not in err
