"""The Dask backend against a real ``LocalCluster`` (worker processes, 2 workers of one
thread each): results, failures with their own type, a killed task process, a timeout,
a retry, a lost Dask worker, dependencies, isolated tasks, what is refused, and no
process left behind (the autouse ``no_leaks`` fixture, and a cluster of one's own)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from multiprocessing import resource_tracker
from pathlib import Path

import psutil
import pytest

distributed = pytest.importorskip(
    "distributed", reason="the Dask backend needs dask.distributed: pip install "
                          "'taskfarm[dask]'")

from workers import Add, Flaky, Gate, Misbehave, Stuck, UsesShared, WorkerBoom  # noqa: E402

import taskfarm  # noqa: E402
from schedulers import MaxThreadsScheduler, PoliteScheduler  # noqa: E402

TWO = MaxThreadsScheduler(2)


class Where(taskfarm.Worker):
    """Its process, and that process's parent (the Dask worker hosting it)."""

    item: int

    def task(self) -> tuple[int, int, int]:
        self.emit(self.item)
        return self.item, os.getpid(), os.getppid()


class KillsItsDaskWorker(taskfarm.Worker):
    """Kills the Dask worker that hosts its process (and so its process too)."""

    def task(self) -> None:
        os.kill(os.getppid(), signal.SIGKILL)
        time.sleep(60)


@pytest.fixture(scope="module", autouse=True)
def _resource_tracker() -> Iterator[None]:
    # A LocalCluster starts multiprocessing's resource tracker, a process that lives as
    # long as the program: started before any test, it is not one a test leaves
    # behind; stopped after the last, it is not one this module leaves to the others.
    tracker = resource_tracker._resource_tracker
    running = tracker._pid is not None
    tracker.ensure_running()
    yield
    if not running:
        tracker._stop()


@pytest.fixture
def backend() -> Iterator[taskfarm.DaskBackend]:
    with taskfarm.DaskBackend(n_workers=2, dashboard_address=":0") as made:
        yield made


def hosted() -> dict[int, int]:
    """The taskfarm processes Dask workers host among this test's descendants: pid ->
    the pid of the Dask worker hosting it."""
    found = {}
    for proc in psutil.Process().children(recursive=True):
        try:
            if "taskfarm._worker" in proc.cmdline():
                found[proc.pid] = proc.ppid()
        except psutil.NoSuchProcess:
            pass
    return found


def test_results_names_and_emitted_values_come_back(backend: taskfarm.DaskBackend) -> None:
    with taskfarm.Boss(TWO, backend=backend, workers=[Where]) as boss:
        names = boss.set_instructions({"name": "where_[item]"}, {"item": list(range(40))})
        boss.make_them_work()
        assert len(list(boss.as_completed(timeout=60))) == 40
        dask_workers = set(hosted().values())
        boss.end()
        report = boss.wait_till_finished(timeout=60)
    assert names == [f"where_{i}" for i in range(40)]
    assert [report[f"where_{i}"].result[0] for i in range(40)] == list(range(40))
    assert all(t.emitted == [t.result[0]] for t in report.tasks)   # with its outcome
    # Each task ran in a process hosted by one of the two Dask workers.
    assert len(dask_workers) == 2 and {t.result[2] for t in report.tasks} <= dask_workers
    assert {t.pid for t in report.tasks} == {t.result[1] for t in report.tasks}


def test_a_raising_task_is_re_raised_with_its_type_and_frames(
        backend: taskfarm.DaskBackend) -> None:
    with pytest.raises(WorkerBoom, match="boom 7") as caught:
        taskfarm.batch_main({"how": "raise", "tag": 7}, worker=Misbehave, scheduler=TWO,
                            backend=backend, print_report=None)
    assert any(entry.name == "raise_boom" for entry in caught.traceback)   # its frames


def test_a_killed_task_process_ends_killed_and_its_dask_worker_goes_on(
        backend: taskfarm.DaskBackend) -> None:
    with taskfarm.Boss(TWO, backend=backend, workers=[Misbehave, Add],
                       on_error="continue") as boss:
        boss.set_instructions({}, {"x": [1, 2]}, worker=Add)
        boss.make_them_work()
        first = list(boss.as_completed(timeout=60))
        before = set(hosted().values())
        boss.set_instructions({"how": "sigkill", "name": "killed"}, worker=Misbehave)
        boss.set_instructions({}, {"x": list(range(10, 20))}, worker=Add)
        list(boss.as_completed(timeout=60))
        after = set(hosted().values())
        boss.end()
        report = boss.wait_till_finished(timeout=60)
    assert len(first) == 2
    killed = report["killed"]
    assert str(killed.status) == "killed" and killed.signal_name == "SIGKILL"
    assert "killed by SIGKILL" in killed.reason
    assert sorted(t.result for t in report.tasks if t.worker == "Add") == \
        [2, 3, *range(11, 21)]
    assert len(before) == 2 and after == before   # the same two Dask worker processes


def test_a_task_past_its_timeout_is_stopped_and_its_dask_worker_goes_on(
        backend: taskfarm.DaskBackend, gate: Gate) -> None:
    with taskfarm.Boss(TWO, backend=backend, workers=[Stuck, Add],
                       on_error="continue") as boss:
        boss.set_instructions({"gate": gate, "timeout": 0.3, "name": "stuck"})
        boss.make_them_work()
        timed_out = next(iter(boss.as_completed(timeout=60)))
        before = set(hosted().values())
        boss.set_instructions({}, {"x": list(range(8))}, worker=Add)
        list(boss.as_completed(timeout=60))
        after = set(hosted().values())
        boss.end()
        report = boss.wait_till_finished(timeout=60)
    assert timed_out.name == "stuck" and str(timed_out.status) == "timeout"
    assert timed_out.signal_name == "SIGTERM" and "timeout of 0.3 s" in timed_out.reason
    assert 0.3 <= (timed_out.duration or 0) < 5
    assert sorted(t.result for t in report.tasks if t.worker == "Add") == list(range(1, 9))
    assert len(before) == 2 and after == before


def test_a_failed_attempt_is_retried_by_taskfarm(backend: taskfarm.DaskBackend,
                                                 tmp_path: Path) -> None:
    report = taskfarm.batch_main({"marks": str(tmp_path), "retries": 1},
                                 {"name": ["a", "b"]}, worker=Flaky, scheduler=TWO,
                                 backend=backend, print_report=None)
    for task in report.tasks:
        assert task.ok and task.result[0] == 2
        assert [a[0] for a in task.attempts] == ["failed", "done"]
        assert "attempt 1" in task.attempts[0][1]


def test_a_lost_dask_worker_ends_its_task_killed_and_the_farm_goes_on(
        backend: taskfarm.DaskBackend) -> None:
    with taskfarm.Boss(TWO, backend=backend, workers=[KillsItsDaskWorker, Add],
                       on_error="continue") as boss:
        boss.set_instructions({"name": "lost"}, worker=KillsItsDaskWorker)
        boss.make_them_work()
        lost = next(iter(boss.as_completed(timeout=60)))
        boss.set_instructions({}, {"x": list(range(6))}, worker=Add)
        boss.end()
        report = boss.wait_till_finished(timeout=60)
    assert lost.name == "lost" and str(lost.status) == "killed"
    assert "lost worker" in lost.reason
    assert isinstance(lost.exception, taskfarm.WorkerKilledError)
    assert sorted(t.result for t in report.tasks if t.worker == "Add") == list(range(1, 7))


def test_dependencies_order_the_tasks(backend: taskfarm.DaskBackend) -> None:
    report = taskfarm.batch_main(
        {}, {"x": [1, 2, 3, 4], "name": ["a", "b", "c", "d"],
             "after": [[], ["a"], ["a", "b"], []]},
        worker=Add, scheduler=TWO, backend=backend, print_report=None)
    assert [report[n].result for n in "abcd"] == [2, 3, 4, 5]
    assert report["b"].started >= report["a"].ended
    assert report["c"].started >= max(report["a"].ended, report["b"].ended)


@pytest.mark.parametrize("options", [{"isolated": True}, {"max_tasks_per_child": 2}],
                         ids=["isolated", "max_tasks_per_child"])
def test_processes_are_replaced_as_asked(backend: taskfarm.DaskBackend,
                                         options: dict[str, object]) -> None:
    report = taskfarm.batch_main({}, {"item": list(range(6))}, worker=Where, scheduler=TWO,
                                 backend=backend, print_report=None, **options)
    runs: dict[int, int] = {}
    for task in report.tasks:
        runs[task.result[1]] = runs.get(task.result[1], 0) + 1
    assert max(runs.values()) == (1 if options.get("isolated") else 2)


def test_fail_fast_stops_the_running_task_and_its_dask_worker_goes_on(
        backend: taskfarm.DaskBackend, gate: Gate) -> None:
    with taskfarm.Boss(TWO, backend=backend, workers=[Stuck, Misbehave]) as boss:
        boss.set_instructions({"gate": gate, "name": "stuck"}, worker=Stuck)
        boss.make_them_work()
        boss.set_instructions({"how": "raise", "name": "boom"}, worker=Misbehave)
        with pytest.raises(WorkerBoom):
            boss.wait_till_finished(timeout=60)
        report = boss.get_report()
    assert str(report["stuck"].status) == "cancelled"
    assert "fail-fast" in report["stuck"].reason


def test_cpu_binding_and_load_readings_are_refused_at_boss(
        backend: taskfarm.DaskBackend) -> None:
    with pytest.raises(ValueError, match="binded=True"):
        taskfarm.Boss(MaxThreadsScheduler(2, binded=True), backend=backend)
    with pytest.raises(ValueError, match="load"):
        taskfarm.Boss(PoliteScheduler(), backend=backend)


def test_a_shared_array_is_refused_at_the_call(backend: taskfarm.DaskBackend) -> None:
    array = taskfarm.SharedArray(shape=(4,))
    try:
        with taskfarm.Boss(TWO, workers=[UsesShared], backend=backend) as boss, \
                pytest.raises(taskfarm.InstructionError, match="SharedArray"):
            boss.set_instructions({"data": array}, {"row": [0]})
    finally:
        array.close()


def test_what_does_not_cross_machines_is_refused_by_check_farm() -> None:
    backend = taskfarm.DaskBackend(address="tcp://127.0.0.1:1")   # never connected here
    backend.check_farm(MaxThreadsScheduler(2))
    with pytest.raises(ValueError, match="binded=True"):
        backend.check_farm(MaxThreadsScheduler(2) & MaxThreadsScheduler(4, binded=True))
    with pytest.raises(ValueError, match="load"):
        backend.check_farm(PoliteScheduler())
    with pytest.raises(ValueError, match="not both"):
        taskfarm.DaskBackend(address="tcp://127.0.0.1:1", cluster=object())
    with pytest.raises(TypeError, match="n_workers"):
        taskfarm.DaskBackend(address="tcp://127.0.0.1:1", n_workers=2)
    with pytest.raises(ValueError, match="processes=True"):
        taskfarm.DaskBackend(processes=False)
    with pytest.raises(ConnectionError, match="no Dask scheduler answers"):
        taskfarm.Boss(backend=backend)   # at the call, before any process starts


def test_a_cluster_given_by_the_caller_outlives_the_farm_and_hosts_nothing_after() -> None:
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster:
        report = taskfarm.batch_main({}, {"x": list(range(5))}, worker=Add, scheduler=TWO,
                                     backend=taskfarm.DaskBackend(cluster=cluster),
                                     print_report=None)
        assert sorted(t.result for t in report.tasks) == [1, 2, 3, 4, 5]
        deadline = time.monotonic() + 10
        while hosted() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not hosted()
        assert len(cluster.scheduler_info["workers"]) == 2


def test_the_example_farm_runs_on_a_local_cluster(tmp_path: Path) -> None:
    example = Path(__file__).parent.parent / "examples" / "calibrate_detector.py"
    done = subprocess.run([sys.executable, str(example), "--dask", "--workers", "2",
                           "--ranges", "4", "--channels", "512", "--quiet"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "taskfarm report: finished" in done.stdout and "4 done" in done.stdout
