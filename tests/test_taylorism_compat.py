"""The behaviours real taylorism programs depend on, through ``taskfarm.taylorism``:
``run_as_server``/``batch_main``, footprints-declared workers (values, optional,
default, alias, remap, priority, name expansion), the proxy schedulers and their
taskfarm equivalents, the report dicts, the errors taylorism raised,
``stop_them_working`` (STOP_RIGHTNOW) then ``wait_till_finished``, tasks that see the
main program's state (forked from its copy) or run in taskfarm's own processes, a
process per task, ``SharedNumpyArray`` and its lock, and the hangs taylorism had that
this layer does not (a killed task, a boss terminated).

The layer is imported in fixtures, not at module level: importing it adds
``taskfarm.taylorism`` to ``dir(taskfarm)``, which tests/test_public_api.py checks.
"""

from __future__ import annotations

import importlib.util
import os
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

# Looked up, not imported: importing footprints (bronx's logging set-up) is the tests'.
pytestmark = pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("footprints", "bronx")),
    reason="the taylorism layer needs footprints and bronx (the 'taylorism' extra)")

WAIT = 30.0   # seconds: the bound of every wait in these tests


@pytest.fixture
def ty() -> ModuleType:
    import taskfarm.taylorism as taylorism

    return taylorism


@pytest.fixture
def cw() -> ModuleType:
    from taylorism_suite import compat_workers

    compat_workers.SESSION["user"] = None
    return compat_workers


@pytest.fixture
def fpx() -> Any:
    import footprints

    return footprints.proxy


@pytest.fixture
def serve(ty: ModuleType, fpx: Any) -> Iterator[Callable[..., Any]]:
    """``run_as_server`` with a two-thread scheduler by default; every Boss it made
    is closed at the end of the test."""
    made: list[Any] = []

    def start(common: dict[str, Any] | None = None, individual: dict[str, Any] | None = None,
              **options: Any) -> Any:
        options.setdefault("scheduler", fpx.scheduler(limit="threads", max_threads=2))
        boss = ty.run_as_server(common or {}, individual or {}, **options)
        made.append(boss)
        return boss

    yield start
    for boss in made:
        boss.close()
    made.clear()   # what they hold (a SharedArray's mapping) goes with them


def _reports(boss: Any) -> dict[str, Any]:
    report = boss.get_report()
    return {entry["name"]: entry["report"] for entry in report["workers_report"]}


def test_the_layer_has_taylorisms_names(ty: ModuleType) -> None:
    for name in ("Boss", "Worker", "run_as_server", "batch_main", "taylorism_log",
                 "BaseScheduler", "MaxThreadsScheduler"):
        assert getattr(ty, name).__doc__ or name == "taylorism_log"
    assert ty.util.SharedNumpyArray and ty.examples.Sleeper and ty.schedulers.binding_setup
    for name in ("Logarithmer", "Summer", "MatrixProducter", "summer_example"):
        assert hasattr(ty.examples, name)


@pytest.mark.parametrize("fork_from_main", [True, False], ids=["forked", "taskfarm"])
def test_footprints_resolve_each_set_with_footprints_rules(
        serve: Callable[..., Any], cw: ModuleType, fork_from_main: bool) -> None:
    boss = serve({"case": "echo"}, {
        "name": ["plain", "aliased", "remapped", "loud", "expanded_[value]"],
        "value": [1, "2", 3, 4, 5],                      # "2": footprints' type converts
        "color": ["red", "green", "rouge", "green", "red"],
        "loud": [False, False, False, True, False]}, fork_from_main=fork_from_main)
    boss.wait_till_finished()
    got = _reports(boss)
    assert set(got) == {"plain", "aliased", "remapped", "loud", "expanded_5"}
    assert got["aliased"]["value"] == 2 and got["aliased"]["colour"] == "green"
    assert got["remapped"]["colour"] == "red"
    assert got["loud"]["kind"] == "LoudEcho" and got["plain"]["kind"] == "Echo"
    assert boss.get_report()["status"] == "finished"


def test_report_dict_interim_pending_and_final(serve: Callable[..., Any], ty: ModuleType,
                                               fpx: Any) -> None:
    boss = serve({"case": "sleep"}, {"seconds": [0.0, 30.0, 0.0, 0.0], "name": list("abcd")},
                 scheduler=fpx.scheduler(limit="threads", max_threads=2))
    assert boss.get_report(interim=False) is None    # taylorism: no final report yet
    deadline = time.monotonic() + WAIT
    while len(boss.get_report()["workers_report"]) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    interim = boss.get_report()
    assert interim["status"] == "interim"
    assert {e["name"] for e in interim["workers_report"]} == {"a", "c", "d"}
    assert all(isinstance(e["report"], int) for e in interim["workers_report"])
    boss.stop_them_working()
    boss.wait_till_finished()     # taylorism's error path: no BossStateError
    final = boss.get_report()
    assert final["status"] == "finished" and "pending" not in final
    assert [e["name"] for e in final["workers_report"]] == ["a", "c", "d"]  # b was stopped


def test_stop_them_working_stops_now_and_leaves_the_rest_pending(
        serve: Callable[..., Any], fpx: Any) -> None:
    sets = {"case": ["sleep"] * 3, "seconds": [60.0, 0.0, 0.0], "name": ["long", "x", "y"]}
    boss = serve({}, sets, scheduler=fpx.scheduler(limit="threads", max_threads=1))
    time.sleep(0.3)
    started = time.monotonic()
    boss.stop_them_working()
    boss.wait_till_finished()
    assert time.monotonic() - started < 5
    report = boss.get_report()
    assert report["status"] == "pending" and report["workers_report"] == []
    assert report["pending"] == [{"case": "sleep", "seconds": 0.0, "name": "x"},
                                 {"case": "sleep", "seconds": 0.0, "name": "y"}]


def test_a_task_raising_fails_the_farm_with_its_own_exception(
        serve: Callable[..., Any], cw: ModuleType) -> None:
    boss = serve({}, {"case": ["boom", "sleep"], "seconds": [0.0, 60.0]})
    started = time.monotonic()
    with pytest.raises(cw.CompatError, match="boom") as caught:
        boss.wait_till_finished()
    assert time.monotonic() - started < 10                # the sleeper was stopped
    assert any("_task" in line for line in traceback.format_tb(caught.value.__traceback__))
    entries = boss.get_report()["workers_report"]
    assert [type(e["report"]) for e in entries] == [cw.CompatError]
    assert any("CompatError" in line for line in entries[0]["traceback"])
    with pytest.raises(cw.CompatError):    # giving more to a failed farm says why
        boss.set_instructions({"case": "echo"}, {"value": [1]})


def test_instruction_errors_are_taylorisms_and_raised_when_given(
        serve: Callable[..., Any], ty: ModuleType) -> None:
    with pytest.raises(ValueError, match="alfred"):
        serve({"case": "sleep"}, {"name": ["alfred", "alfred"], "seconds": [60.0, 60.0]})
    with pytest.raises(AttributeError, match="no adequate Worker"):
        serve({"case": "echo"}, {"colour": ["blue"]})
    with pytest.raises(AssertionError):
        serve({"case": "echo"}, {"value": [1, 2], "colour": ["red"]})
    boss = ty.Boss()     # never told to work: taylorism hung here
    try:
        boss.set_instructions({"case": "echo"}, {"value": [1]})
        with pytest.raises(Exception, match="make_them_work"):
            boss.wait_till_finished()
    finally:
        boss.close()


@pytest.mark.parametrize("fork_from_main", [True, False], ids=["forked", "taskfarm"])
def test_tasks_see_the_main_program_as_it_was_when_the_boss_was_made(
        serve: Callable[..., Any], cw: ModuleType, fork_from_main: bool) -> None:
    cw.SESSION["user"] = "set up by the main program"
    boss = serve({"case": "echo"}, {"value": [1, 2]}, fork_from_main=fork_from_main)
    cw.SESSION["user"] = "changed after the Boss was made"
    boss.wait_till_finished()
    seen = {r["user"] for r in _reports(boss).values()}
    assert seen == ({"set up by the main program"} if fork_from_main else {None})


@pytest.mark.parametrize("fork_from_main", [True, False], ids=["forked", "taskfarm"])
def test_each_task_has_a_fresh_process(serve: Callable[..., Any], fpx: Any, cw: ModuleType,
                                       tmp_path: Path, fork_from_main: bool) -> None:
    boss = serve({"case": "chdir", "to": str(tmp_path)}, {"name": ["m1", "m2", "m3"]},
                 scheduler=fpx.scheduler(limit="threads", max_threads=1),
                 fork_from_main=fork_from_main)
    boss.wait_till_finished()
    got = _reports(boss)
    assert {before for before, _ in got.values()} == {os.getcwd()}
    assert {after for _, after in got.values()} == {str(tmp_path)}


def test_a_killed_task_is_reported_not_waited_for(serve: Callable[..., Any],
                                                  ty: ModuleType) -> None:
    import taskfarm

    boss = serve({}, {"case": ["die", "sleep"], "seconds": [0.0, 60.0]})
    started = time.monotonic()
    with pytest.raises(taskfarm.WorkerKilledError) as caught:
        boss.wait_till_finished()
    assert caught.value.signal_name == "SIGKILL"
    assert time.monotonic() - started < 10


def _tasks_of_copy(me: Any) -> list[Any]:
    """The task processes of the copy of this program (start_method "main"), which is
    not a child of this process: a process running this program's command line."""
    import psutil

    command = me.cmdline()
    copies = []
    for proc in psutil.process_iter(["cmdline"]):
        if proc.pid != me.pid and proc.info["cmdline"] == command:
            copies.append(proc)
    return [child for copy in copies for child in copy.children()]


def test_terminating_the_boss_raises_signal_interrupt_and_ends_the_tasks(
        serve: Callable[..., Any], cw: ModuleType) -> None:
    import psutil
    from bronx.system import interrupt

    boss = serve({"case": "sleep"}, {"seconds": [60.0, 60.0]})
    me = psutil.Process()
    deadline = time.monotonic() + WAIT
    tasks: list[psutil.Process] = []
    while len(tasks) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
        tasks = _tasks_of_copy(me)
    assert len(tasks) == 2
    boss._process.terminate()
    with pytest.raises(interrupt.SignalInterruptError, match="SIGTERM"):
        boss.wait_till_finished()
    assert boss._process.join(WAIT) and not boss._process.is_alive()
    _, alive = psutil.wait_procs(tasks, timeout=5)   # the boss died: the copy ends them
    assert not alive


def test_taskfarm_options_pass_through(serve: Callable[..., Any], cw: ModuleType) -> None:
    import taskfarm

    boss = serve({}, {"case": ["sleep", "echo"], "seconds": [60.0, 0.0], "name": ["t", "e"]},
                 timeout=2.0, on_error="continue")   # room for a spawned worker to start
    started = time.monotonic()
    boss.wait_till_finished()
    assert time.monotonic() - started < 10
    got = _reports(boss)
    assert isinstance(got["t"], taskfarm.TaskCancelledError) and got["e"]["value"] == 7
    assert boss.farm.get_report(interim=False)["t"].status == "timeout"


def test_batch_main_prints_each_report_and_returns_the_dict(
        ty: ModuleType, cw: ModuleType, fpx: Any, capsys: pytest.CaptureFixture[str]) -> None:
    printed: list[Any] = []
    report = ty.batch_main({"case": "echo"}, {"name": ["b1", "b2"], "value": [1, 2]},
                           scheduler=fpx.scheduler(limit="threads", max_threads=2),
                           print_report=printed.append)
    out = capsys.readouterr().out
    assert "WORKER NAME: b1" in out and "WORKER NAME: b2" in out
    assert sorted(r["value"] for r in printed) == [1, 2]
    assert report["status"] == "finished" and len(report["workers_report"]) == 2
    with pytest.raises(cw.CompatError):
        ty.batch_main({}, {"case": ["boom", "sleep"], "seconds": [0.0, 60.0]},
                      print_report=printed.append)


def test_proxy_schedulers_have_taylorisms_defaults_and_taskfarms_rules(
        ty: ModuleType, fpx: Any) -> None:
    import schedulers
    from taskfarm.taylorism._native import BronxOrderBinding

    threads = fpx.scheduler(limit="threads", max_threads=0)
    assert isinstance(threads, ty.schedulers.NewMaxThreadsScheduler)
    assert threads.max_threads == max(1, schedulers.available_cpus() // 2)
    native = threads.to_taskfarm()
    assert isinstance(native, schedulers.MaxThreadsScheduler) and native.prefetch
    memory = fpx.scheduler(limit="mem", memory_per_task=1.8).to_taskfarm()
    assert isinstance(memory, schedulers.MaxMemoryScheduler)
    assert memory.memory_per_task == 1.8 and not memory.learn
    both = fpx.scheduler(limit="threads+memory", max_threads=3, max_memory=1000.)
    assert isinstance(both, ty.schedulers.LongerFirstScheduler)
    assert isinstance(both.to_taskfarm(), schedulers.LongerFirstScheduler)
    assert both.to_taskfarm().memory_per_task == 1000.   # the budget: such a task runs alone
    assert isinstance(fpx.scheduler(nosort=True).to_taskfarm(), schedulers.LaxistScheduler)
    single = fpx.scheduler(limit="threads", max_threads=2, singlefile=True)
    assert isinstance(single.to_taskfarm(), schedulers.AllOf)
    assert single.task_instructions({"fileA": "a", "fileB": "b"}) == {"resources": ("a", "b")}
    binded = fpx.scheduler(limit="threads", max_threads=2, binded=True).to_taskfarm()
    assert isinstance(binded, BronxOrderBinding)
    assert list(binded.cpus) == ty.schedulers.bronx_cpu_order()
    legacy = ty.schedulers.MaxThreadsScheduler(max_threads=2)
    assert legacy.max_threads == 2 and isinstance(legacy.to_taskfarm(),
                                                  schedulers.MaxThreadsScheduler)


def test_tickets_and_bronx_order_binding(serve: Callable[..., Any], ty: ModuleType,
                                         fpx: Any) -> None:
    order = ty.schedulers.bronx_cpu_order()
    boss = serve({"case": "echo", "pause": 0.05}, {"value": [1, 2, 3, 4]},
                 scheduler=fpx.scheduler(limit="threads", max_threads=2, binded=True))
    boss.wait_till_finished()
    for got in _reports(boss).values():
        assert got["ticket"] in (0, 1)
        assert got["cpus"] == [order[got["ticket"] % len(order)]]


def test_singlefile_never_runs_two_tasks_on_one_file(serve: Callable[..., Any],
                                                     fpx: Any) -> None:
    boss = serve({"case": "files"}, {"name": ["f1", "f2", "f3"], "fileA": ["a", "a", "b"],
                                     "fileB": ["x", "y", "y"]},
                 scheduler=fpx.scheduler(limit="threads", max_threads=3, singlefile=True))
    boss.wait_till_finished()
    spans = _reports(boss)
    for one, other in (("f1", "f2"), ("f2", "f3")):
        assert spans[one][1] <= spans[other][0] or spans[other][1] <= spans[one][0]


def test_a_scheduler_of_the_programs_own_runs_as_written(serve: Callable[..., Any],
                                                          cw: ModuleType, fpx: Any) -> None:
    scheduler = fpx.scheduler(limit="threads", max_threads=2, backwards=True)
    assert isinstance(scheduler, cw.NamesBackwards)
    boss = serve({"case": "echo"}, {"name": ["n1", "n3", "n2"]}, scheduler=scheduler)
    boss.wait_till_finished()
    got = _reports(boss)
    assert sorted(got, key=lambda n: got[n]["started"]) == ["n3", "n2", "n1"]


@pytest.mark.parametrize("fork_from_main", [True, False], ids=["forked", "taskfarm"])
def test_shared_numpy_array_sums_under_its_lock(ty: ModuleType, fpx: Any,
                                               fork_from_main: bool) -> None:
    import numpy as np

    total = ty.util.SharedNumpyArray(np.zeros((1,), dtype=int))
    boss = ty.run_as_server({"use_lock": True}, {"value": list(range(12))},
                            scheduler=fpx.scheduler(limit="threads", max_threads=4),
                            sharedmemory_common_instructions={"shared_sum": total},
                            fork_from_main=fork_from_main)
    try:
        boss.wait_till_finished()
    finally:
        boss.close()
    assert total[0] == sum(range(12))


def test_shared_numpy_array_lock_reaches_the_tasks_and_masks_travel(
        serve: Callable[..., Any], ty: ModuleType, cw: ModuleType) -> None:
    import numpy as np

    array = ty.util.SharedNumpyArray(np.ma.masked_array([1, 2, 3], mask=[0, 1, 0]))
    assert array.acquire()            # the main program holds the lock...
    try:
        boss = serve({"case": "trylock"}, {"name": ["held"]},
                     sharedmemory_common_instructions={"array": array})
        boss.wait_till_finished()
    finally:
        array.release()
    assert _reports(boss)["held"] == (False, [1, 2, 3], [False, True, False])
    boss = serve({"case": "trylock"}, {"name": ["free"]},     # ...and no longer
                 sharedmemory_common_instructions={"array": array})
    boss.wait_till_finished()
    assert _reports(boss)["free"] == (True, [1, 2, 3], [False, True, False])


def test_make_them_work_stop_listening_lets_running_tasks_finish_unheard(
        serve: Callable[..., Any], ty: ModuleType, fpx: Any) -> None:
    boss = ty.Boss(scheduler=fpx.scheduler(limit="threads", max_threads=1))
    try:
        boss.set_instructions({"case": "sleep"}, {"seconds": [0.2, 0.0], "name": ["r", "p"]})
        boss.make_them_work(stop_listening=True)
        boss.wait_till_finished()
        report = boss.get_report()
        assert report["status"] == "pending"
        assert [p["name"] for p in report["pending"]] == ["p"]
    finally:
        boss.close()
