"""Isolated mode (a fresh process per task), whose workers come from a zygote that
imported the Worker class once: each task still sees a fresh process, endings are
named as in pool mode, and a class whose import starts threads is forked by the boss
instead (forking a threaded process is unsafe)."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import psutil
import pytest
from test_signals import _blocking_boss, _started
from workers import Gate, Mailbox, Misbehave, Polluter

import taskfarm
from schedulers import MaxThreadsScheduler

pytestmark = pytest.mark.usefixtures("start_method")


def test_isolated_tasks_never_see_each_others_changes() -> None:
    report = taskfarm.batch_main({}, {"item": list(range(8))}, worker=Polluter,
                                 isolated=True, print_report=None)
    assert sorted(t.result[1] for t in report.tasks) == [[i] for i in range(8)]
    assert len({t.result[0] for t in report.tasks}) == 8
    pooled = taskfarm.batch_main({}, {"item": list(range(8))}, worker=Polluter,
                                 scheduler=MaxThreadsScheduler(1), print_report=None)
    assert pooled.tasks[-1].result[1] == list(range(8))  # the same class, reused process


def test_isolated_endings_are_named() -> None:
    report = taskfarm.batch_main({}, {"how": ["sigkill", "exit3", "raise", "ok"]},
                                 worker=Misbehave, isolated=True, on_error="continue",
                                 print_report=None)
    by_how = {t.instructions["how"]: t for t in report.tasks}
    assert by_how["sigkill"].status.value == "killed"
    assert by_how["sigkill"].signal_name == "SIGKILL"
    assert by_how["exit3"].status.value == "killed" and by_how["exit3"].exitcode == 3
    assert by_how["raise"].status.value == "failed"
    assert by_how["ok"].ok


def test_isolated_stop_rightnow_ends_running_tasks(gate: Gate, mailbox: Mailbox) -> None:
    with _blocking_boss(gate, mailbox, ["a", "b", "c"], isolated=True) as boss:
        boss.make_them_work()
        pids = set(_started(mailbox, 2).values())
        boss.stop_right_now()
        report = boss.wait_till_finished(timeout=30)
    assert {t.status.value for t in report.tasks} == {"cancelled"} and len(report.tasks) == 2
    assert [p["name"] for p in report.pending] == ["t_c"]
    assert not any(psutil.pid_exists(pid) for pid in pids)


def test_a_class_whose_import_starts_threads_still_runs_isolated(tmp_path: Path) -> None:
    (tmp_path / "threaded_module.py").write_text(textwrap.dedent('''
        import threading
        import taskfarm

        threading.Thread(target=threading.Event().wait, args=(30,), daemon=True).start()

        class Threaded(taskfarm.Worker):
            item: int

            def task(self) -> int:
                return self.item * 2
    '''))
    before = {p.pid for p in psutil.Process().children()}  # multiprocessing's tracker...
    sys.path.insert(0, str(tmp_path))
    try:
        from threaded_module import Threaded  # type: ignore[import-not-found]

        report = taskfarm.batch_main({}, {"item": [1, 2, 3]}, worker=Threaded,
                                     isolated=True, print_report=None)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("threaded_module", None)
    assert sorted(report.results.values()) == [2, 4, 6]
    assert [p for p in psutil.Process().children() if p.pid not in before] == []
