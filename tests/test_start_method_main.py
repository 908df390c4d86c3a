"""``start_method="main"``: workers forked from a copy of the main program taken when
the Boss is made. Tasks see the main program's state as it was then; the boss still
manages every worker (deaths, timeouts, stops, the end of the farm), and the copy and
its workers never outlive the farm. Real processes and real signals throughout."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import psutil
import pytest
from workers import Gate, Mailbox

import taskfarm
from schedulers import MaxThreadsScheduler

# Set by the tests before a Boss is made: what a copy of the main program inherits.
STATE: dict[str, Any] = {}
# How long a process that must end is given to do so (seconds).
END_WAIT = 10.0


class Peek(taskfarm.Worker):
    """What the worker process sees of the main program's state."""

    key: str

    def task(self) -> Any:
        return STATE.get(self.key), os.getpid(), os.getppid()


class Counter(taskfarm.Worker):
    """Counts the tasks its process ran: 1 in a fresh process."""

    counter_item: int

    def task(self) -> tuple[int, int]:
        STATE["runs"] = STATE.get("runs", 0) + 1
        return STATE["runs"], os.getpid()


class Die(taskfarm.Worker):
    """SIGKILLs its own process when asked."""

    die: bool

    def task(self) -> int:
        if self.die:
            os.kill(os.getpid(), signal.SIGKILL)
        return os.getpid()


class Hold(taskfarm.Worker):
    """Posts its pid and its parent's, then waits at the gate."""

    gate: Gate
    mailbox: Mailbox

    def task(self) -> None:
        self.mailbox.post(f"{os.getpid()} {os.getppid()}")
        self.gate.wait()


class Noisy(taskfarm.Worker):
    """Prints, and returns its seed."""

    noisy: int

    def task(self) -> int | None:
        print(f"hello from {self.name}")
        return self.seed


@pytest.fixture(autouse=True)
def _fresh_state() -> Any:
    STATE.clear()
    yield
    STATE.clear()


def _run(boss: taskfarm.Boss, common: dict[str, Any], individual: dict[str, list[Any]],
         worker: type[taskfarm.Worker]) -> taskfarm.Report:
    boss.set_instructions(common, individual, worker=worker)
    boss.make_them_work()
    return boss.wait_till_finished()


def _gone(pids: list[int]) -> bool:
    """True once none of these processes runs (they need not be our children)."""
    deadline = time.monotonic() + END_WAIT
    while time.monotonic() < deadline:
        alive = []
        for pid in pids:
            try:
                proc = psutil.Process(pid)
                if proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(proc)
            except psutil.NoSuchProcess:
                pass   # gone between two looks
        if not alive:
            return True
        psutil.wait_procs(alive, timeout=0.2)
    return False


def test_tasks_see_the_main_programs_state_as_it_was_when_the_boss_was_made() -> None:
    session = object()   # not picklable by value in any useful way: only a copy has it
    STATE["session"] = session
    with taskfarm.Boss(start_method="main", scheduler=MaxThreadsScheduler(2)) as boss:
        STATE["later"] = "set after the Boss"
        report = _run(boss, {}, {"key": ["session", "session", "later"]}, Peek)
    seen = {t.name: t.result for t in report.tasks}
    assert [seen[f"Peek-{i}"][0] is not None for i in range(2)] == [True, True]
    assert seen["Peek-2"][0] is None            # the copy is the program as it was
    assert all(pid != os.getpid() for _, pid, _ in seen.values())
    # Under fork, a worker imports this module afresh: the state is not there.
    with taskfarm.Boss(start_method="fork") as boss:
        assert _run(boss, {}, {"key": ["session"]}, Peek).tasks[0].result[0] is None


def test_the_session_object_is_the_main_programs_own() -> None:
    STATE["session"] = session = {"id": id(object())}
    with taskfarm.Boss(start_method="main") as boss:
        (value, _, _), = (t.result for t in _run(boss, {}, {"key": ["session"]}, Peek).tasks)
    assert value == session


def test_a_class_defined_after_the_boss_is_sent_by_value() -> None:
    with taskfarm.Boss(start_method="main") as boss:
        class Late(taskfarm.Worker):
            late_item: int

            def task(self) -> int:
                return self.late_item * 2

        report = _run(boss, {}, {"late_item": [1, 2]}, Late)
    assert sorted(t.result for t in report.tasks) == [2, 4]


def test_isolated_tasks_each_run_in_a_fresh_copy() -> None:
    with taskfarm.Boss(start_method="main", isolated=True,
                       scheduler=MaxThreadsScheduler(2)) as boss:
        report = _run(boss, {}, {"counter_item": list(range(6))}, Counter)
    assert [t.result[0] for t in report.tasks] == [1] * 6
    assert len({t.result[1] for t in report.tasks}) == 6
    assert STATE == {}   # nothing a task did reached the main program


def test_pool_workers_are_reused() -> None:
    with taskfarm.Boss(start_method="main", scheduler=MaxThreadsScheduler(1)) as boss:
        report = _run(boss, {}, {"counter_item": list(range(4))}, Counter)
    assert sorted(t.result[0] for t in report.tasks) == [1, 2, 3, 4]


def test_a_killed_worker_fails_only_its_task() -> None:
    with taskfarm.Boss(start_method="main", on_error="continue",
                       scheduler=MaxThreadsScheduler(2)) as boss:
        report = _run(boss, {}, {"die": [False, True, False, False]}, Die)
    statuses = {t.name: t.status for t in report.tasks}
    assert statuses == {"Die-0": "done", "Die-1": "killed", "Die-2": "done", "Die-3": "done"}
    killed = next(t for t in report.tasks if t.name == "Die-1")
    assert killed.signal_name == "SIGKILL"


def test_a_timeout_stops_the_task(gate: Gate, mailbox: Mailbox) -> None:
    with taskfarm.Boss(start_method="main", on_error="continue") as boss:
        report = _run(boss, {"gate": gate, "mailbox": mailbox}, {"timeout": [0.5]}, Hold)
    assert report.tasks[0].status == "timeout"
    pid, _ = mailbox.read(1)[0].split()
    assert _gone([int(pid)])


def test_the_copy_and_its_workers_end_with_the_farm() -> None:
    with taskfarm.Boss(start_method="main", scheduler=MaxThreadsScheduler(2)) as boss:
        report = _run(boss, {}, {"key": ["a", "b", "c"]}, Peek)
    copies = {t.result[2] for t in report.tasks}
    workers = [t.result[1] for t in report.tasks]
    assert len(copies) == 1 and os.getpid() not in copies
    assert _gone([*copies, *workers])


def test_a_killed_boss_takes_the_copy_and_its_workers_with_it(gate: Gate,
                                                              mailbox: Mailbox) -> None:
    boss = taskfarm.Boss(start_method="main", scheduler=MaxThreadsScheduler(2))
    try:
        boss.set_instructions({"gate": gate, "mailbox": mailbox}, {"name": ["h1", "h2"]},
                              worker=Hold)
        boss.make_them_work()
        pids = [tuple(map(int, line.split())) for line in mailbox.read(2)]
        os.kill(boss.pid, signal.SIGKILL)
        assert _gone([pid for pid, _ in pids] + [pids[0][1]])
    finally:
        with pytest.raises(taskfarm.BossDiedError):
            boss.wait_till_finished()
        boss.close()


def test_a_killed_copy_fails_the_farm_with_a_clear_error() -> None:
    boss = taskfarm.Boss(start_method="main", isolated=True)
    try:
        boss.set_instructions({}, {"key": ["a"]}, worker=Peek)
        boss.make_them_work()
        first = next(iter(boss.as_completed())).result
        os.kill(first[2], signal.SIGKILL)
        assert _gone([first[2]])
        boss.set_instructions({}, {"key": ["b"]}, worker=Peek)
        with pytest.raises(taskfarm.TaskfarmError, match="copy of the main program"):
            boss.wait_till_finished()
    finally:
        boss.close()


def test_the_main_programs_signal_handlers_do_not_run_in_the_copy(tmp_path: Any) -> None:
    marker = tmp_path / "handled"

    def clean_up(signum: int, frame: object) -> None:   # what a program may do on SIGTERM
        marker.write_text(str(os.getpid()))

    previous = signal.signal(signal.SIGTERM, clean_up)
    try:
        with taskfarm.Boss(start_method="main") as boss:
            boss.set_instructions({}, {"key": ["a"]}, worker=Peek)
            boss.make_them_work()
            copy = next(iter(boss.as_completed(timeout=30))).result[2]   # still serving
            os.kill(copy, signal.SIGTERM)
            assert _gone([copy])
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert not marker.exists()


def test_seed_and_captured_output_reach_the_copys_workers() -> None:
    reports = {}
    for method in ("main", "fork"):
        with taskfarm.Boss(start_method=method, seed=7, capture_output=True) as boss:
            reports[method] = _run(boss, {}, {"noisy": [1]}, Noisy).tasks[0]
    assert reports["main"].result == reports["fork"].result is not None
    assert reports["main"].stdout == "hello from Noisy-0\n"


def test_a_program_running_threads_is_warned() -> None:
    stop = threading.Event()
    waiter = threading.Thread(target=stop.wait, name="busy-thread")
    waiter.start()
    try:
        with pytest.warns(RuntimeWarning, match="busy-thread"):
            boss = taskfarm.Boss(start_method="main")
        boss.close()
    finally:
        stop.set()
        waiter.join()


def test_a_backend_is_refused_at_the_call() -> None:
    with pytest.raises(ValueError, match="start_method='main'"):
        taskfarm.Boss(start_method="main", backend=object())
