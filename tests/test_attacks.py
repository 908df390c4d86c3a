"""Attacks on the farm's promises, each a case that once broke: descriptors above
1023, one Boss used from several threads, misbehaving schedulers, timeouts too large
for poll(), a task that forks, a fork of the main program that exits, a SystemExit
raised by a task, and a boss that dies under as_completed. Real processes, no mocks."""

from __future__ import annotations

import io
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import psutil
import pytest
from workers import Add, Blocker, Gate, Mailbox

import taskfarm
from schedulers import BaseScheduler, MaxThreadsScheduler
from schedulers.base import Instructions, Launch, RunReport

WAIT = 60


class Forker(taskfarm.Worker):
    """Forks in its task, and both copies return."""

    forks: int

    def task(self) -> int:
        os.fork()
        return self.forks


class ExitsZero(taskfarm.Worker):
    """Raises SystemExit(0) in its task."""

    exit_code: int

    def task(self) -> None:
        raise SystemExit(self.exit_code)


class _Exits:
    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (_exit_on_load, (os.getpid(),))


def _exit_on_load(pid: int) -> None:
    if os.getpid() != pid:  # only where it is unpickled, never where it was made
        raise SystemExit(3)


class ExitingResult(taskfarm.Worker):
    """Returns a value whose unpickling raises SystemExit in the main program."""

    exiting: int

    def task(self) -> Any:
        return _Exits() if self.exiting else self.exiting


class Padded(taskfarm.Worker):
    """Carries a large value it does not use."""

    padded: int
    pad: bytes

    def task(self) -> int:
        return self.padded


@pytest.fixture
def many_fds() -> Iterator[None]:
    """1,100 open descriptors: the farm's pipes get numbers above 1023."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.skip(f"the hard descriptor limit ({hard}) is too low for this test")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2048), hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        yield
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_main_program_with_1100_open_descriptors_runs_a_farm(many_fds: None) -> None:
    with taskfarm.Boss(MaxThreadsScheduler(2), workers=[Add]) as boss:
        assert boss.pid > 0
        boss.set_instructions({}, {"x": list(range(50))})
        boss.make_them_work()
        seen = sorted(r.result for r in boss.as_completed(timeout=WAIT))
        report = boss.wait_till_finished(timeout=WAIT)
    assert seen == list(range(1, 51)) and len(report.tasks) == 50


def test_one_boss_fed_from_four_threads_runs_every_task_once() -> None:
    per_thread = 2500
    with taskfarm.Boss(MaxThreadsScheduler(2), workers=[Add]) as boss:
        boss.make_them_work()
        names: list[list[str]] = [[] for _ in range(4)]
        errors: list[BaseException] = []

        def give(index: int) -> None:
            try:
                for start in range(0, per_thread, 250):
                    xs = list(range(index * per_thread + start, index * per_thread + start + 250))
                    names[index] += boss.set_instructions({}, {"x": xs})
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=give, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT)
        assert not errors and not any(t.is_alive() for t in threads)
        report = boss.wait_till_finished(timeout=WAIT)
    given = [n for chunk in names for n in chunk]
    assert len(given) == len(set(given)) == 4 * per_thread
    assert sorted(t.name for t in report.tasks) == sorted(given)
    assert sorted(t.result for t in report.tasks) == list(range(1, 4 * per_thread + 1))


class _Raising(BaseScheduler):
    def launchable(self, pending_instructions: Sequence[Instructions],
                   workers: Mapping[str, Instructions], report: RunReport | None) -> Launch:
        if workers:  # one task runs: now misbehave
            raise ZeroDivisionError("the scheduler's own bug")
        return list(pending_instructions[:1]), []


class _ReturnsNone(BaseScheduler):
    def launchable(self, pending_instructions: Sequence[Instructions],
                   workers: Mapping[str, Instructions], report: RunReport | None) -> Launch:
        return None  # type: ignore[return-value]


class _ReturnsStrangers(BaseScheduler):
    def launchable(self, pending_instructions: Sequence[Instructions],
                   workers: Mapping[str, Instructions], report: RunReport | None) -> Launch:
        return [{"name": "nobody"}], []


class _ReturnsTwice(BaseScheduler):
    def launchable(self, pending_instructions: Sequence[Instructions],
                   workers: Mapping[str, Instructions], report: RunReport | None) -> Launch:
        first = pending_instructions[0]
        return [first, first], []


def test_a_scheduler_class_instead_of_an_instance_is_refused_at_boss() -> None:
    with pytest.raises(TypeError, match=r"pass an instance, such as MaxThreadsScheduler\(\)"):
        taskfarm.Boss(MaxThreadsScheduler)  # type: ignore[arg-type]


def test_a_scheduler_that_raises_ends_the_run_and_cancels_running_tasks(
        gate: Gate, mailbox: Mailbox) -> None:
    with taskfarm.Boss(_Raising(), workers=[Blocker]) as boss:
        boss.set_instructions({"gate": gate, "mailbox": mailbox}, {"label": ["a", "b"]})
        boss.make_them_work()
        mailbox.read(1)  # the first task runs; the scheduler fails on its next call
        boss.set_instructions({"gate": gate, "mailbox": mailbox, "label": "c"})
        with pytest.raises(taskfarm.SchedulerError, match="ZeroDivisionError: the scheduler's"):
            boss.wait_till_finished(timeout=WAIT)
        report = boss.get_report(interim=False)
    assert [t.status for t in report.tasks] == [taskfarm.TaskStatus.CANCELLED]
    assert "_Raising" in (report.tasks[0].reason or "")
    assert len(report.pending) == 2


@pytest.mark.parametrize("scheduler, message", [
    (_ReturnsNone(), "failed in launchable"),
    (_ReturnsStrangers(), "returned {'name': 'nobody'}"),
    (_ReturnsTwice(), "returned twice"),
], ids=["none", "strangers", "twice"])
def test_a_scheduler_that_returns_nonsense_is_named(scheduler: BaseScheduler,
                                                     message: str) -> None:
    with taskfarm.Boss(scheduler, workers=[Add]) as boss:
        boss.set_instructions({}, {"x": [1, 2]})
        boss.make_them_work()
        with pytest.raises(taskfarm.SchedulerError, match=type(scheduler).__name__) as caught:
            boss.wait_till_finished(timeout=WAIT)
    assert message in str(caught.value)


def test_a_timeout_beyond_what_poll_can_wait_simply_works() -> None:
    report = taskfarm.batch_main({"timeout": 1e10}, {"x": [1, 2]}, worker=Add,
                                 scheduler=MaxThreadsScheduler(2), print_report=None)
    assert sorted(report.results.values()) == [2, 3]


def test_a_task_that_forks_is_reported_once_and_the_farm_goes_on() -> None:
    report = taskfarm.batch_main({}, {"forks": [1, 2, 3, 4]}, worker=Forker,
                                 scheduler=MaxThreadsScheduler(1), print_report=None)
    assert sorted(report.results.values()) == [1, 2, 3, 4]


def test_a_fork_of_the_main_program_that_exits_leaves_the_farm_alone(
        gate: Gate, mailbox: Mailbox) -> None:
    with taskfarm.Boss(MaxThreadsScheduler(1), workers=[Blocker]) as boss:
        boss.set_instructions({"gate": gate, "mailbox": mailbox, "label": "x"})
        boss.make_them_work()
        mailbox.read(1)
        pid = os.fork()
        if pid == 0:  # the child ends as a program does: its exit handlers run
            try:
                raise SystemExit(0)
            finally:
                import atexit
                atexit._run_exitfuncs()
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        gate.release()
        report = boss.wait_till_finished(timeout=WAIT)
    assert [t.status for t in report.tasks] == [taskfarm.TaskStatus.DONE]


def test_a_task_raising_systemexit_0_fails_the_run_as_a_task_error() -> None:
    with pytest.raises(taskfarm.TaskError, match="SystemExit") as caught:
        taskfarm.batch_main({}, {"exit_code": [0]}, worker=ExitsZero, print_report=None)
    assert isinstance(caught.value.__cause__, SystemExit)


def test_a_result_whose_unpickling_raises_systemexit_fails_only_its_task() -> None:
    report = taskfarm.batch_main({}, {"exiting": [1, 0]}, worker=ExitingResult,
                                 on_error="continue", scheduler=MaxThreadsScheduler(1),
                                 print_report=None)
    statuses = {t.name: t.status for t in report.tasks}
    assert sorted(statuses.values()) == ["done", "failed"]
    failed = report.failures[0]
    assert "could not be unpickled in the main program: SystemExit" in (failed.reason or "")


def test_as_completed_raises_when_the_boss_dies(gate: Gate, mailbox: Mailbox) -> None:
    with taskfarm.Boss(MaxThreadsScheduler(1), workers=[Blocker]) as boss:
        boss.set_instructions({"gate": gate, "mailbox": mailbox}, {"label": ["a", "b"]})
        boss.make_them_work()
        mailbox.read(1)
        os.kill(boss.pid, signal.SIGKILL)
        with pytest.raises(taskfarm.BossDiedError, match="SIGKILL"):
            list(boss.as_completed(timeout=WAIT))


class Shadow(taskfarm.Worker):
    """Accepts undeclared keys; declares a default used in name templates."""

    accept_undeclared = True
    shade: int
    run: int = 7


@pytest.mark.parametrize("common, individual, message", [
    ({"timeout": float("nan")}, {"x": [1]}, "timeout must be a positive, finite"),
    ({"timeout": float("inf")}, {"x": [1]}, "timeout must be a positive, finite"),
    ({"memory": float("nan")}, {"x": [1]}, "'memory' must be a finite number"),
    ({"expected_time": float("inf")}, {"x": [1]}, "'expected_time' must be a finite"),
    ({"name": ""}, {"x": [1]}, "non-empty str"),
    ({"retries": 1, "retry_on": [["failed"]]}, {"x": [1]}, "retry_on must list endings"),
    ({"retry_memory": float("nan")}, {"x": [1]}, "retry_memory must be a factor"),
], ids=["nan-timeout", "inf-timeout", "nan-memory", "inf-expected-time", "empty-name",
        "retry-on-list", "nan-retry-memory"])
def test_bad_numbers_and_names_are_refused_at_the_call(
        common: dict[str, Any], individual: dict[str, Any], message: str) -> None:
    with taskfarm.Boss(MaxThreadsScheduler(1), workers=[Add]) as boss:
        with pytest.raises(taskfarm.InstructionError, match=message):
            boss.set_instructions(common, individual)


def test_a_name_template_naming_a_method_is_refused() -> None:
    with taskfarm.Boss(MaxThreadsScheduler(1), workers=[Shadow]) as boss:
        with pytest.raises(taskfarm.InstructionError, match=r"refers to \[task\]"):
            boss.set_instructions({"name": "n_[task]"}, {"shade": [1]})
        assert boss.set_instructions({"name": "n_[run]_[shade]"}, {"shade": [1]}) == ["n_7_1"]


def test_an_undeclared_key_may_not_replace_a_method() -> None:
    with taskfarm.Boss(MaxThreadsScheduler(1), workers=[Shadow]) as boss:
        with pytest.raises(taskfarm.NoMatchingWorkerError, match="'task' would replace"):
            boss.set_instructions({"task": 3}, {"shade": [1]})


@pytest.mark.parametrize("make, message", [
    (lambda: __import__("schedulers").PoliteScheduler(recheck=float("nan")), "recheck"),
    (lambda: __import__("schedulers").MaxMemoryScheduler(max_memory=float("nan")),
     "max_memory"),
    (lambda: __import__("schedulers").MaxMemoryScheduler(max_memory=float("inf")),
     "max_memory"),
], ids=["polite-nan-recheck", "memory-nan", "memory-inf"])
def test_bad_scheduler_numbers_are_refused(make: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def test_a_huge_recheck_period_simply_works() -> None:
    from schedulers import PoliteScheduler

    scheduler = PoliteScheduler(max_threads=1, recheck=1e10, probe=lambda: (0.0, 1.0))
    report = taskfarm.batch_main({}, {"x": [1]}, worker=Add, scheduler=scheduler,
                                 print_report=None)
    assert report.results == {report.tasks[0].name: 2}


def test_ctrl_c_in_the_middle_of_a_frame_never_leaves_half_of_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A real SIGINT raised while set_instructions is halfway through writing its frame
    (the pipe write is slowed to 64 KiB a call, and the signal sent after the third):
    the call is given whole, the KeyboardInterrupt arrives once it is, and the farm
    neither hangs nor loses a task."""
    from taskfarm._common import wire

    writes = 0
    real_write = os.write

    def slow_write(fd: int, data: Any) -> int:
        nonlocal writes
        writes += 1
        if writes == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return real_write(fd, memoryview(data)[:1 << 16])

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with taskfarm.Boss(MaxThreadsScheduler(2), workers=[Padded]) as boss:
            boss.make_them_work()
            monkeypatch.setattr(wire.os, "write", slow_write)
            with pytest.raises(KeyboardInterrupt):
                boss.set_instructions({"pad": b"x" * (1 << 20)}, {"padded": list(range(20))})
            monkeypatch.undo()
            assert writes > 3, "the frame was written in one go: the test proves nothing"
            report = boss.wait_till_finished(timeout=WAIT)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert sorted(t.status for t in report.tasks) == ["done"] * 20


class Lonely(taskfarm.Worker):
    """An isolated class: each task in a fresh process, forked by its zygote."""

    isolated = True
    lone: int

    def task(self) -> int:
        return self.lone


def _zygote_of(boss: taskfarm.Boss) -> psutil.Process:
    """The boss's only child once an isolated task has run: the class's zygote (its
    workers are the zygote's children)."""
    children = psutil.Process(boss.pid).children()
    assert len(children) == 1, children
    return children[0]


@pytest.mark.parametrize("fault", [signal.SIGKILL, signal.SIGSTOP], ids=["killed", "stopped"])
def test_a_zygote_fault_costs_no_task(fault: signal.Signals) -> None:
    with taskfarm.Boss(MaxThreadsScheduler(2), workers=[Lonely], start_method="fork") as boss:
        boss.set_instructions({}, {"lone": [0]})
        boss.make_them_work()
        assert next(boss.as_completed(timeout=WAIT)).ok
        zygote = _zygote_of(boss)
        zygote.send_signal(fault)
        try:
            boss.set_instructions({}, {"lone": [1, 2, 3, 4]})
            # A stopped zygote is given up on after Zygote.ANSWER_PATIENCE (2 s), once:
            # well within this bound, where it used to stall the boss 30 s per task.
            report = boss.wait_till_finished(timeout=15)
        finally:
            if fault == signal.SIGSTOP and zygote.is_running():
                zygote.send_signal(signal.SIGCONT)
    assert sorted(t.result for t in report.tasks) == [0, 1, 2, 3, 4]
    assert all(t.ok for t in report.tasks)


class Parent(taskfarm.Worker):
    """Starts a long child process, says its pid, then ends as told."""

    how: Literal["return", "hang", "exit"]
    mailbox: Mailbox

    def task(self) -> int:
        child = subprocess.Popen(["sleep", "300"])
        self.mailbox.post(f"child {child.pid}")
        if self.how == "hang":
            threading.Event().wait()
        if self.how == "exit":
            os._exit(3)
        return child.pid


@pytest.mark.parametrize("how, options", [
    ("return", {}), ("hang", {"timeout": 0.5}), ("exit", {"on_error": "continue"}),
], ids=["end-of-farm", "timeout", "worker-died"])
def test_processes_a_task_starts_end_with_it(how: str, options: dict[str, Any],
                                             mailbox: Mailbox) -> None:
    common: dict[str, Any] = {"mailbox": mailbox}
    if "timeout" in options:
        common["timeout"] = options.pop("timeout")
        options["on_error"] = "continue"
    report = taskfarm.batch_main(common, {"how": [how]}, worker=Parent,
                                 print_report=None, **options)
    child = int(mailbox.read(1)[0].split()[1])
    expected = {"return": "done", "hang": "timeout", "exit": "killed"}[how]
    assert report.tasks[0].status == expected
    try:
        _, alive = psutil.wait_procs([psutil.Process(child)], timeout=5)
    except psutil.NoSuchProcess:
        alive = []
    assert not alive, "the task's child outlived it"


FEW_DESCRIPTORS = """
import resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
sys.path.insert(0, {tests!r})
import taskfarm
from schedulers import LaxistScheduler, MaxThreadsScheduler
from workers import Add

for scheduler in (LaxistScheduler(), MaxThreadsScheduler(500)):
    report = taskfarm.batch_main({{}}, {{"x": list(range(300))}}, worker=Add,
                                 scheduler=scheduler, print_report=None)
    print(sorted(report.results.values()) == list(range(1, 301)), flush=True)
"""


def test_a_farm_under_a_tight_descriptor_limit_runs_with_the_workers_it_can_have(
        tmp_path: Path) -> None:
    """``ulimit -n 64`` and a scheduler that would start 300 workers at once: the boss
    starts what its descriptor budget allows, says so once, and every task runs."""
    script = tmp_path / "few.py"
    script.write_text(FEW_DESCRIPTORS.format(tests=str(Path(__file__).parent)))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=WAIT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True"]
    assert "running with the worker processes there are" in done.stderr


def test_a_result_that_cannot_be_unpickled_here_fails_a_fail_fast_run() -> None:
    with pytest.raises(taskfarm.RemoteTaskError, match="could not be unpickled"):
        taskfarm.batch_main({}, {"exiting": [1, 0, 0, 0]}, worker=ExitingResult,
                            scheduler=MaxThreadsScheduler(1), print_report=None)


def test_ctrl_c_as_the_main_thread_starts_reading_for_itself_leaves_the_receiver_reading(
        gate: Gate, mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real SIGINT delivered just as the main thread, about to wait for a report,
    wakes the receiver thread to have it step aside (inbox.py, Inbox.reading): the
    KeyboardInterrupt comes out of the call, and the receiver is not left aside for
    good (it would be, were the Ctrl-C raised between counting the thread in and the
    block that counts it out)."""
    from taskfarm._main import inbox as inbox_module

    sent: list[int] = []
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with taskfarm.Boss(MaxThreadsScheduler(1), workers=[Blocker]) as boss:
            inbox = boss._inbox
            real_write = os.write

            def interrupted_write(fd: int, data: Any) -> int:
                if fd == inbox._wake_w and not sent:
                    sent.append(fd)
                    os.kill(os.getpid(), signal.SIGINT)
                return real_write(fd, data)

            boss.set_instructions({"gate": gate, "mailbox": mailbox}, {"label": ["a"]})
            boss.make_them_work()
            mailbox.read(1, timeout=WAIT)
            monkeypatch.setattr(inbox_module.os, "write", interrupted_write)
            with pytest.raises(KeyboardInterrupt):
                next(boss.as_completed(timeout=WAIT))
            monkeypatch.undo()
            assert sent, "the receiver was not woken: the test proves nothing"
            assert inbox.pumping == 0, "the receiver is left aside for good"
            gate.release(1)
            assert [r.result for r in boss.as_completed(timeout=WAIT)] == ["a"]
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_reading_count_left_behind_delays_the_receiver_and_never_stops_it() -> None:
    """Python cannot make counting a thread out of Inbox.reading one step with its
    way out: a Ctrl-C at the wrong bytecode may leave the count behind. The receiver
    then stands aside only while a reader was seen lately (STALE_READER): an
    executor's futures, which it settles, still end."""
    with taskfarm.Executor(1) as executor:
        inbox = executor._machinery.feeder.boss._inbox
        with inbox.park:
            inbox.pumping += 1      # what such a Ctrl-C leaves, its reader seen lately
            inbox.touched = time.monotonic() + 1.0   # (long enough to see it aside)
        try:
            os.write(inbox._wake_w, b".")   # the receiver looks, and steps aside
            deadline = time.monotonic() + WAIT
            while not inbox.parked and time.monotonic() < deadline:
                time.sleep(0.001)
            assert inbox.parked, "the receiver never stepped aside: the test proves nothing"
            assert executor.submit(pow, 2, 5).result(timeout=WAIT) == 32
        finally:
            with inbox.park:
                inbox.pumping -= 1


def test_ctrl_c_inside_boss_leaves_no_process_and_no_thread(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A real SIGINT while Boss() is starting its boss: KeyboardInterrupt from the
    call, and nothing left behind (the autouse fixture checks processes, descriptors
    and the receiver thread)."""
    from taskfarm._common import wire

    real_write = os.write
    sent = []

    def interrupted_write(fd: int, data: Any) -> int:
        if not sent:  # while the configuration is being sent
            sent.append(fd)
            os.kill(os.getpid(), signal.SIGINT)
        return real_write(fd, data)

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        monkeypatch.setattr(wire.os, "write", interrupted_write)
        with pytest.raises(KeyboardInterrupt):
            taskfarm.Boss(MaxThreadsScheduler(1), workers=[Add])
        monkeypatch.undo()
    finally:
        signal.signal(signal.SIGINT, previous)


class _NoRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


@pytest.mark.parametrize("common, individual, error, message", [
    ({}, {"x": {1, 2}}, taskfarm.InstructionTypeError, r"\['x'\] must be a list"),
    ({"x": 1}, {"y": []}, taskfarm.InstructionError, "only empty lists"),
    ({"shade": 1}, {"f": [io.StringIO()]}, taskfarm.InstructionError, "is an open file"),
    ({"x": "one", "b": _NoRepr()}, {}, taskfarm.NoMatchingWorkerError,
     "_NoRepr whose repr"),
], ids=["set", "empty-lists", "open-file", "repr-raises"])
def test_odd_instruction_values_get_an_instruction_error(
        common: dict[str, Any], individual: dict[str, Any], error: type[Exception],
        message: str) -> None:
    with taskfarm.Boss(MaxThreadsScheduler(1), workers=[Add, Shadow]) as boss:
        with pytest.raises(error, match=message):
            boss.set_instructions(common, individual)


def test_a_report_shows_huge_instruction_values_cut_short() -> None:
    huge = "x" * (20 << 20)
    with pytest.raises(taskfarm.TaskError):
        taskfarm.batch_main({"huge": huge}, {"exit_code": [0]}, worker=ExitsZeroHuge,
                            print_report=None)
    report = taskfarm.batch_main({"huge": huge}, {"exit_code": [1]}, worker=ExitsZeroHuge,
                                 on_error="continue", print_report=None)
    assert len(report.format()) < 10_000


class ExitsZeroHuge(ExitsZero):
    """ExitsZero, carrying a huge value it does not use."""

    huge: str


def test_shared_arrays_are_found_however_deep() -> None:
    from taskfarm._common.shared_array import shared_in

    arrays = [taskfarm.SharedArray(shape=(2,)) for _ in range(3)]
    value = {"a": [arrays[0], {"b": (arrays[1],)}], "c": {arrays[2].name: [[arrays[2]]]}}
    assert {a.name for a in shared_in([value])} == {a.name for a in arrays}


class Greedy(taskfarm.Worker):
    """Uses much more memory than it declares."""

    isolated = True   # a fresh process: its peak is its own
    greedy_mib: int

    def task(self) -> int:
        block = bytearray(self.greedy_mib << 20)
        return len(block)


def test_a_task_over_its_declared_memory_is_named_in_the_report() -> None:
    report = taskfarm.batch_main({"memory": 10}, {"greedy_mib": [120]}, worker=Greedy,
                                 print_report=None)
    warning = report.tasks[0].over_memory
    assert warning is not None and "over the 10 MiB it declared" in warning
    assert f"warning: {warning}" in report.format()


def _busy_machine() -> tuple[float, float]:
    return 1.0, 0.01   # every CPU busy, 1% of memory available


def test_an_interim_report_says_why_the_scheduler_holds_work() -> None:
    from schedulers import PoliteScheduler

    scheduler = PoliteScheduler(max_threads=2, recheck=60, probe=_busy_machine)
    with taskfarm.Boss(scheduler, workers=[Add]) as boss:
        boss.set_instructions({}, {"x": [1, 2]})
        boss.make_them_work()
        boss.get_report()  # the boss has read RESUME and asked the scheduler since
        report = boss.get_report()
        assert report.holding and len(report.pending) == 2
        assert "the scheduler holds pending work" in report.format()
        boss.stop_right_now()


def test_a_stopped_boss_is_an_error_not_a_hang() -> None:
    """A SIGSTOPped boss: get_report() and a call too large for the pipe say so (and
    send nothing); once continued, the farm goes on."""
    with taskfarm.Boss(MaxThreadsScheduler(2), workers=[Padded]) as boss:
        boss.make_them_work()
        os.kill(boss.pid, signal.SIGSTOP)
        try:
            with pytest.raises(taskfarm.BossStateError, match="is stopped"):
                boss.get_report()
            with pytest.raises(taskfarm.BossStateError, match="nothing of it was sent"):
                boss.set_instructions({"pad": b"x" * (1 << 20)}, {"padded": [1]})
        finally:
            os.kill(boss.pid, signal.SIGCONT)
        boss.set_instructions({"pad": b""}, {"padded": [7]})
        report = boss.wait_till_finished(timeout=WAIT)
    assert [t.result for t in report.tasks] == [7]


class Hungry(taskfarm.Worker):
    """Allocates what it is told, under a memory limit of its declaration."""

    memory_limit = True
    hungry_mib: int

    def task(self) -> int:
        block = bytearray(self.hungry_mib << 20)
        return len(block) >> 20


def test_a_memory_limit_ends_a_task_over_it_killed_and_the_worker_goes_on() -> None:
    report = taskfarm.batch_main({"memory": 64}, {"hungry_mib": [400, 8]}, worker=Hungry,
                                 scheduler=MaxThreadsScheduler(1), on_error="continue",
                                 print_report=None)
    greedy, modest = report.tasks
    assert greedy.status == "killed" and "over its memory limit" in (greedy.reason or "")
    assert modest.ok and modest.result == 8 and modest.pid == greedy.pid


def test_a_run_wide_memory_limit_with_retry_memory_succeeds_on_retry() -> None:
    report = taskfarm.batch_main({"memory": 32, "retries": 1, "retry_memory": 16},
                                 {"greedy_mib": [200]}, worker=Greedy, memory_limit=True,
                                 print_report=None)
    task = report.tasks[0]
    assert task.ok and [a[0] for a in task.attempts] == ["killed", "done"]
