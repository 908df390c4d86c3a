"""The farm end to end with real processes: running, streaming, reuse, isolation."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from workers import Add, Blocker, CountingSetup, Gate, Mailbox, Scale

import taskfarm
from schedulers import MaxThreadsScheduler

pytestmark = pytest.mark.usefixtures("start_method")


def test_batch_main_runs_every_set_and_prints_the_report(capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    report = taskfarm.batch_main({}, {"x": list(range(20))}, worker=Add)
    assert report.status is taskfarm.ReportStatus.FINISHED
    assert sorted(report.results.values()) == list(range(1, 21))
    task = report["Add-3"]
    assert task.ok and task.result == 4 and task.worker == "Add"
    assert task.instructions == {"x": 3, "name": "Add-3"}
    assert (task.pid != os.getpid() and task.ticket in (0, 1, None)) or task.ticket >= 0
    assert task.started <= task.ended and task.duration >= 0 and task.peak_rss > 0
    out = capsys.readouterr().out
    assert "taskfarm report: finished" in out and "Add-19" in out and "20 done" in out


def test_workers_are_reused_and_setup_runs_once_per_process() -> None:
    report = taskfarm.batch_main({}, {"item": list(range(30))}, worker=CountingSetup,
                                 scheduler=MaxThreadsScheduler(2), print_report=None)
    pids = {t.result[0] for t in report.tasks}
    assert 1 <= len(pids) <= 2  # two slots, reused task after task
    assert {t.result[1] for t in report.tasks} == {1}  # setup_process ran once per process


def test_isolated_mode_gives_each_task_a_fresh_process() -> None:
    report = taskfarm.batch_main({}, {"item": list(range(6))}, worker=CountingSetup,
                                 isolated=True, print_report=None)
    assert len({t.result[0] for t in report.tasks}) == 6

    class Lonely(CountingSetup):
        isolated = True

    report = taskfarm.batch_main({}, {"item": list(range(4))}, worker=Lonely,
                                 print_report=None)
    assert len({t.result[0] for t in report.tasks}) == 4


def test_spawn_start_method() -> None:
    report = taskfarm.batch_main({}, {"x": [1, 2, 3]}, worker=Add, start_method="spawn",
                                 print_report=None)
    assert sorted(report.results.values()) == [2, 3, 4]


def test_boss_starts_halted_and_reports_pending(tmp_path: Path) -> None:
    with taskfarm.Boss(workers=[Add]) as boss:
        boss.set_instructions({}, {"x": [1, 2]})
        report = boss.get_report(interim=True)
        assert report.status is taskfarm.ReportStatus.PENDING
        assert [p["x"] for p in report.pending] == [1, 2] and report.tasks == []
        with pytest.raises(taskfarm.BossStateError, match="halted with work pending"):
            boss.wait_till_finished()
        boss.make_them_work()
        final = boss.wait_till_finished()
    assert final.status is taskfarm.ReportStatus.FINISHED and len(final.tasks) == 2


def test_run_as_server_streams_reports_while_the_farm_runs(gate: Gate, mailbox: Mailbox) -> None:
    boss = taskfarm.run_as_server({"gate": gate, "mailbox": mailbox},
                                  {"label": ["a", "b"]}, scheduler=MaxThreadsScheduler(2),
                                  worker=Blocker)
    with boss:
        mailbox.read(2)
        gate.release(1)
        first = next(boss.as_completed(timeout=30))
        assert first.result in ("a", "b") and first.ok
        # The farm keeps going while we consume; more instructions can come in.
        boss.set_instructions({"gate": gate, "mailbox": mailbox}, {"label": ["c"]},
                              worker=Blocker)
        gate.release(2)
        rest = sorted(r.result for r in boss.as_completed(timeout=30))
        assert sorted([first.result, *rest]) == ["a", "b", "c"]
        assert list(boss.as_completed(timeout=30)) == []  # each report is yielded once
        final = boss.wait_till_finished(timeout=30)
    assert len(final.tasks) == 3


def test_common_instructions_travel_once_and_can_be_big() -> None:
    import numpy as np

    data = np.arange(2_000_000, dtype=np.float64)  # 16 MB, sent once per process

    class SumSlice(taskfarm.Worker):
        data: np.ndarray
        start: int

        def task(self) -> float:
            return float(self.data[self.start:self.start + 10].sum())

    report = taskfarm.batch_main({"data": data}, {"start": [0, 10, 20]}, worker=SumSlice,
                                 print_report=None)
    assert [report[f"SumSlice-{i}"].result for i in range(3)] == [45.0, 145.0, 245.0]


def test_big_result_comes_back_intact() -> None:
    class Big(taskfarm.Worker):
        size: int

        def task(self) -> bytes:
            return bytes(range(256)) * (self.size // 256)

    report = taskfarm.batch_main({}, {"size": [8 << 20]}, worker=Big, print_report=None)
    assert report.tasks[0].result == bytes(range(256)) * (32768)


def test_worker_class_defined_in_main_travels_by_value(tmp_path: Path) -> None:
    script = tmp_path / "farm.py"
    script.write_text(textwrap.dedent("""
        import taskfarm

        class Triple(taskfarm.Worker):
            x: int
            def task(self):
                return helper(self.x)

        def helper(x):
            return 3 * x

        if __name__ == "__main__":
            report = taskfarm.batch_main({}, {"x": [1, 2]}, print_report=None)
            print(sorted(report.results.values()))
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[3, 6]"


def test_functions_and_classes_from_main_travel_as_instruction_values(tmp_path: Path) -> None:
    script = tmp_path / "farm.py"
    script.write_text(textwrap.dedent("""
        import taskfarm

        def double(x):
            return 2 * x

        class Offset:
            def __init__(self, by):
                self.by = by

        class Apply(taskfarm.Worker):
            func: object
            offset: object
            x: int
            def task(self):
                return self.func(self.x) + self.offset.by

        if __name__ == "__main__":
            report = taskfarm.batch_main({"offset": Offset(10)},
                                         {"func": [double, double], "x": [1, 2]},
                                         print_report=None)
            print(sorted(report.results.values()))
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[12, 14]"


def test_a_function_from_main_that_raises_in_a_worker_shows_its_file_and_line(
        tmp_path: Path) -> None:
    script = tmp_path / "farm.py"
    script.write_text(textwrap.dedent("""
        import taskfarm

        def explode(x):
            raise ValueError(x)  # the line that raised

        class Apply(taskfarm.Worker):
            func: object
            x: int
            def task(self):
                return self.func(self.x)

        if __name__ == "__main__":
            report = taskfarm.batch_main({}, {"func": [explode], "x": [1]},
                                         print_report=None, on_error="continue")
            print(report.failures[0].traceback)
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f'File "{script}", line 5, in explode' in done.stdout, done.stdout
    assert f'File "{script}", line 11, in task' in done.stdout, done.stdout
    assert "raise ValueError(x)  # the line that raised" in done.stdout, done.stdout


def test_coerced_values_reach_the_worker() -> None:
    report = taskfarm.batch_main({"factor": 4}, {"value": [1, 2]}, worker=Scale,
                                 print_report=None)
    assert report.results == {"Scale-0": 4.0, "Scale-1": 8.0}
    assert all(type(r) is float for r in report.results.values())


def test_bad_instructions_leave_running_work_alone(gate: Gate, mailbox: Mailbox) -> None:
    with taskfarm.Boss(workers=[Blocker, Add]) as boss:
        boss.set_instructions({"gate": gate, "mailbox": mailbox}, {"label": ["a"]})
        boss.make_them_work()
        mailbox.read(1)
        for common, individual in [({}, {"x": [1, 2], "y": [1]}), ({"x": "nope"}, {}),
                                   ({"label": "a", "gate": gate, "mailbox": mailbox,
                                     "name": "Blocker-0"}, {})]:
            with pytest.raises(taskfarm.InstructionError):
                boss.set_instructions(common, individual)
        assert boss.set_instructions({"x": 41}) == ["Add-1"]
        gate.release(1)
        report = boss.wait_till_finished(timeout=30)
    assert sorted(t.name for t in report.tasks) == ["Add-1", "Blocker-0"]
    assert all(t.ok for t in report.tasks)


def test_undeclared_keys_reach_a_class_that_accepts_them() -> None:
    class Context(taskfarm.Worker):
        accept_undeclared = True
        run: int

        def task(self) -> dict[str, object]:
            return {"run": self.run, "site": self.site, "flags": self.flags}

    report = taskfarm.batch_main({"site": "north", "flags": [1, 2]}, {"run": [5]},
                                 worker=Context, print_report=None)
    assert report.tasks[0].result == {"run": 5, "site": "north", "flags": [1, 2]}


def test_verbose_boss_logs_its_launches(capfd: pytest.CaptureFixture[str]) -> None:
    taskfarm.batch_main({}, {"x": [1, 2]}, worker=Add, verbose=True, print_report=None)
    err = capfd.readouterr().err
    assert "[taskfarm.boss] INFO launched task 'Add-0' on worker process" in err


def test_as_completed_timeout_is_a_timeout_error(gate: Gate, mailbox: Mailbox) -> None:
    with taskfarm.Boss(workers=[Blocker]) as boss:
        boss.set_instructions({"gate": gate, "mailbox": mailbox, "label": "slow"})
        boss.make_them_work()
        mailbox.read(1)
        with pytest.raises(TimeoutError, match="no task of"):
            next(boss.as_completed(timeout=0.2))
        gate.release(1)
        assert next(boss.as_completed(timeout=30)).result == "slow"


def test_a_worker_with_its_own_init_gets_the_instructions() -> None:
    class Prepared(taskfarm.Worker):
        x: int

        def __init__(self, **instructions: object) -> None:
            super().__init__(**instructions)
            self.doubled = 2 * self.x

        def task(self) -> int:
            return self.doubled

    report = taskfarm.batch_main({}, {"x": [4]}, worker=Prepared, print_report=None)
    assert report.tasks[0].result == 8


def test_a_failing_setup_process_fails_its_task_and_is_tried_again() -> None:
    class Flaky(taskfarm.Worker):
        x: int
        attempts = 0

        @classmethod
        def setup_process(cls) -> None:
            cls.attempts += 1
            if cls.attempts == 1:
                raise RuntimeError("model not ready")

        def task(self) -> int:
            return type(self).attempts

    report = taskfarm.batch_main({}, {"x": [1, 2]}, worker=Flaky, on_error="continue",
                                 scheduler=MaxThreadsScheduler(1), print_report=None)
    assert [str(t.status) for t in report.tasks] == ["failed", "done"]
    assert "model not ready" in report.tasks[0].traceback and report.tasks[1].result == 2


def test_keep_reports_false_forgets_what_as_completed_has_yielded() -> None:
    with taskfarm.Boss(MaxThreadsScheduler(2), workers=[Add], keep_reports=False) as boss:
        boss.make_them_work()
        for _ in range(3):
            boss.set_instructions({"name": "again_[x]"}, {"x": list(range(50))})
            assert sorted(r.result for r in boss.as_completed(timeout=30)) == \
                list(range(1, 51))
            # Forgotten: nothing kept, and the same names may be given again.
            assert boss._ledger.records == {} and len(boss._ledger.reports) == 0
        boss.set_instructions({"x": 1, "name": "last"})
        report = boss.wait_till_finished(timeout=30)
    assert [t.name for t in report.tasks] == ["last"]  # not yet yielded: still there
