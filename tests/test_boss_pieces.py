"""Unit tests of the boss's owned pieces, without any process: Deadlines (on a fake
clock), Lifecycle, Prefetch, ErrorPolicy, Batches and the task bookkeeping
(Task, TaskBook). Each test runs in milliseconds and never sleeps.

Checks: deadlines run in time order and never early, and poll()'s wait is the nearest
one clamped to MAX_WAIT_MS; every lifecycle transition of the table in
taskfarm._boss.lifecycle, with final states that never change; the prefetch depth
follows the pace of tasks and queued tasks are asked back once; retries follow
``retries``/``retry_on``/``retry_memory`` and fail-fast stops only on a failing ending;
a batch's common blob lives until its last task ends; a terminal task state never
changes.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import cast

import pytest

from schedulers import MaxThreadsScheduler
from taskfarm._boss import error_policy
from taskfarm._boss.backend import Slot
from taskfarm._boss.batches import Batches
from taskfarm._boss.deadlines import MAX_WAIT_MS, Deadlines
from taskfarm._boss.error_policy import ErrorPolicy
from taskfarm._boss.lifecycle import FarmState, Lifecycle
from taskfarm._boss.prefetch import MAX_DEPTH, Prefetch
from taskfarm._boss.tasks import Task, TaskBook, TaskState
from taskfarm._common.messages import AddTasks, Outcome, Signal, TaskSpec, WorkerClassSpec
from taskfarm._common.processes import ExitInfo
from taskfarm._common.status import ReportStatus, TaskStatus


class FakeClock:
    """A monotonic clock that moves only when told."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _task(tid: int, **instructions: object) -> Task:
    return Task(tid, class_key=0, batch_id=0, view={"name": f"t{tid}", **instructions})


# ---- Deadlines ----------------------------------------------------------------------

def _recorder(log: list[str], name: str) -> Callable[[], None]:
    return lambda: log.append(name)


def test_deadlines_run_in_time_order_and_never_early() -> None:
    clock = FakeClock(0.0)
    deadlines = Deadlines(clock)
    log: list[str] = []
    for name, delay in (("five", 5.0), ("one", 1.0), ("three-a", 3.0), ("three-b", 3.0)):
        deadlines.after(delay, _recorder(log, name))
    assert len(deadlines) == 4
    assert deadlines.run_due() == 0 and log == []
    clock.now = 0.999
    assert deadlines.run_due() == 0 and log == []
    clock.now = 1.0    # due exactly now: it runs
    assert deadlines.run_due() == 1 and log == ["one"]
    clock.now = 4.0
    assert deadlines.run_due() == 2 and log == ["one", "three-a", "three-b"]  # ties: set order
    clock.now = 100.0
    assert deadlines.run_due() == 1 and log[-1] == "five" and len(deadlines) == 0


def test_a_deadline_is_counted_from_when_it_is_set() -> None:
    clock = FakeClock(50.0)
    deadlines = Deadlines(clock)
    log: list[str] = []
    deadlines.after(2.0, _recorder(log, "first"))
    clock.now = 51.0
    deadlines.after(0.5, _recorder(log, "second"))   # due at 51.5, before the first
    clock.now = 51.5
    assert deadlines.run_due() == 1 and log == ["second"]
    clock.now = 52.0
    assert deadlines.run_due() == 1 and log == ["second", "first"]


def test_an_action_setting_a_later_deadline_does_not_run_it_at_once() -> None:
    clock = FakeClock(0.0)
    deadlines = Deadlines(clock)
    log: list[str] = []
    deadlines.after(1.0, lambda: deadlines.after(1.0, _recorder(log, "later")))
    clock.now = 1.0
    assert deadlines.run_due() == 1 and log == [] and len(deadlines) == 1
    assert deadlines.wait_ms() == pytest.approx(1000.0)
    clock.now = 2.0
    assert deadlines.run_due() == 1 and log == ["later"]


def test_wait_ms_is_the_nearest_of_the_heap_and_the_recheck() -> None:
    clock = FakeClock(10.0)
    deadlines = Deadlines(clock)
    assert deadlines.wait_ms() is None                   # nothing due: poll() waits on fds
    deadlines.after(2.0, lambda: None)
    assert deadlines.wait_ms() == pytest.approx(2000.0)
    deadlines.recheck(0.5)
    assert deadlines.wait_ms() == pytest.approx(500.0)   # the recheck is nearer
    deadlines.recheck(5.0)                               # replaces the previous one
    assert deadlines.wait_ms() == pytest.approx(2000.0)  # the heap is nearer
    clock.now = 11.5
    assert deadlines.wait_ms() == pytest.approx(500.0)   # counted from now
    clock.now = 13.0
    assert deadlines.wait_ms() == 0.0                    # overdue: never negative
    deadlines.recheck(-3.0)
    assert deadlines.recheck_at == 13.0


def test_recheck_none_clears_it() -> None:
    clock = FakeClock()
    deadlines = Deadlines(clock)
    deadlines.recheck(1.0)
    assert deadlines.wait_ms() == pytest.approx(1000.0)
    deadlines.recheck(None)
    assert deadlines.recheck_at is None and deadlines.wait_ms() is None
    deadlines.after(3.0, lambda: None)
    deadlines.recheck(0.1)
    deadlines.recheck(None)
    assert deadlines.wait_ms() == pytest.approx(3000.0)


@pytest.mark.parametrize("via", ["after", "recheck"])
def test_a_far_deadline_is_clamped_to_what_poll_takes(via: str) -> None:
    ten_years = 10 * 365.25 * 86400.0
    deadlines = Deadlines(FakeClock())
    if via == "after":
        deadlines.after(ten_years, lambda: None)
    else:
        deadlines.recheck(ten_years)
    wait = deadlines.wait_ms()
    assert wait == MAX_WAIT_MS
    assert wait is not None and math.ceil(wait) < 2**31 - 1   # a C int for poll()


# ---- Lifecycle ----------------------------------------------------------------------

OPEN = [FarmState.HALTED, FarmState.RUNNING, FarmState.ENDING_HALTED, FarmState.ENDING]
FINAL = [FarmState.FINISHED, FarmState.STOPPED, FarmState.FAILED]


def _reach(state: FarmState) -> Lifecycle:
    """A lifecycle brought to ``state`` through allowed transitions only."""
    life = Lifecycle()
    path: dict[FarmState, Callable[[], None]] = {
        FarmState.HALTED: lambda: None,
        FarmState.RUNNING: lambda: life.signal(Signal.RESUME),
        FarmState.ENDING_HALTED: lambda: life.signal(Signal.END),
        FarmState.ENDING: lambda: (life.signal(Signal.RESUME), life.signal(Signal.END)),
        FarmState.STOPPING: life.stop,
        FarmState.CANCELLING: lambda: life.cancel(FarmState.STOPPED, "stop right now"),
        FarmState.FINISHED: lambda: (life.signal(Signal.RESUME), life.signal(Signal.END),
                                     life.end(FarmState.FINISHED, "all done")),
        FarmState.STOPPED: lambda: life.end(FarmState.STOPPED, "stop listening"),
        FarmState.FAILED: lambda: life.end(FarmState.FAILED, "crash"),
    }
    path[state]()
    assert life.state is state
    return life


def test_the_boss_starts_halted() -> None:
    life = Lifecycle()
    assert life.state is FarmState.HALTED and life.outcome is None and life.reason == ""
    assert life.open and life.halted and not life.launching and not life.ending


@pytest.mark.parametrize(("start", "sig", "after"), [
    (FarmState.HALTED, Signal.RESUME, FarmState.RUNNING),
    (FarmState.RUNNING, Signal.HALT, FarmState.HALTED),
    (FarmState.HALTED, Signal.END, FarmState.ENDING_HALTED),
    (FarmState.RUNNING, Signal.END, FarmState.ENDING),
    (FarmState.ENDING_HALTED, Signal.RESUME, FarmState.ENDING),
    (FarmState.ENDING, Signal.HALT, FarmState.ENDING_HALTED),
    # signals with no arrow in the table change nothing
    (FarmState.HALTED, Signal.HALT, FarmState.HALTED),
    (FarmState.RUNNING, Signal.RESUME, FarmState.RUNNING),
    (FarmState.ENDING, Signal.END, FarmState.ENDING),
    (FarmState.ENDING, Signal.RESUME, FarmState.ENDING),
    (FarmState.ENDING_HALTED, Signal.END, FarmState.ENDING_HALTED),
    (FarmState.ENDING_HALTED, Signal.HALT, FarmState.ENDING_HALTED),
    (FarmState.RUNNING, Signal.SEND_REPORT, FarmState.RUNNING),
], ids=lambda v: getattr(v, "name", None))
def test_halt_resume_and_end(start: FarmState, sig: Signal, after: FarmState) -> None:
    life = _reach(start)
    life.signal(sig)
    assert life.state is after


@pytest.mark.parametrize(("state", "launching", "halted", "ending"), [
    (FarmState.HALTED, False, True, False),
    (FarmState.RUNNING, True, False, False),
    (FarmState.ENDING_HALTED, False, True, True),
    (FarmState.ENDING, True, False, True),
    (FarmState.STOPPING, False, False, False),
    (FarmState.CANCELLING, False, False, False),
], ids=lambda v: getattr(v, "name", None))
def test_what_each_state_allows(state: FarmState, launching: bool, halted: bool,
                                ending: bool) -> None:
    life = _reach(state)
    assert (life.launching, life.halted, life.ending) == (launching, halted, ending)
    assert life.open is (state in OPEN) and not state.final


def test_end_while_halted_then_resume_is_ending() -> None:
    life = Lifecycle()
    life.signal(Signal.END)
    assert life.state is FarmState.ENDING_HALTED and not life.launching
    life.signal(Signal.RESUME)
    assert life.state is FarmState.ENDING and life.launching
    life.signal(Signal.HALT)      # halting while ending keeps the END
    life.signal(Signal.RESUME)
    assert life.state is FarmState.ENDING


def test_ending_finishes_when_nothing_is_left() -> None:
    life = _reach(FarmState.ENDING)
    life.end(FarmState.FINISHED, "nothing left")
    assert life.state is FarmState.FINISHED and life.reason == "nothing left"
    assert life.report_status is ReportStatus.FINISHED


@pytest.mark.parametrize("start", OPEN, ids=lambda s: s.name)
def test_stop_goes_through_stopping_to_stopped(start: FarmState) -> None:
    life = _reach(start)
    life.stop()
    assert life.state is FarmState.STOPPING
    assert not life.open and not life.launching
    life.signal(Signal.RESUME)    # no signal reopens it
    life.signal(Signal.END)
    assert life.state is FarmState.STOPPING
    life.end(FarmState.STOPPED, "running tasks ended")
    assert life.state is FarmState.STOPPED and life.report_status is ReportStatus.STOPPED


@pytest.mark.parametrize("start", [*OPEN, FarmState.STOPPING], ids=lambda s: s.name)
@pytest.mark.parametrize("decided", [FarmState.STOPPED, FarmState.FAILED],
                         ids=lambda s: s.name)
def test_cancel_then_end_keeps_the_outcome_decided_at_cancel_time(
        start: FarmState, decided: FarmState) -> None:
    life = _reach(start)
    life.cancel(decided, "decided at cancel time")
    assert life.state is FarmState.CANCELLING and not life.open
    life.cancel(FarmState.STOPPED, "a second decision")   # a decision already made stands
    life.stop()                                           # nor does STOP change it
    assert life.state is FarmState.CANCELLING and life.outcome is decided
    life.end(FarmState.FINISHED, "processes gone")
    assert life.state is decided and life.reason == "decided at cancel time"


@pytest.mark.parametrize("start", OPEN, ids=lambda s: s.name)
@pytest.mark.parametrize("final", [FarmState.STOPPED, FarmState.FAILED], ids=lambda s: s.name)
def test_stop_listening_or_a_crash_ends_at_once(start: FarmState, final: FarmState) -> None:
    life = _reach(start)
    life.end(final, "why")
    assert life.state is final and life.reason == "why"


@pytest.mark.parametrize("final", FINAL, ids=lambda s: s.name)
def test_a_final_state_never_changes(final: FarmState) -> None:
    life = _reach(final)
    reason = life.reason
    for sig in Signal:
        life.signal(sig)
    life.stop()
    life.cancel(FarmState.FAILED, "too late")
    for other in FINAL:
        life.end(other, "too late")         # a no-op, not an error
    assert life.state is final and life.reason == reason and final.final
    assert not life.open and not life.launching
    for state in FarmState:
        with pytest.raises(RuntimeError, match=final.value):
            life._move(state)
    assert life.state is final


@pytest.mark.parametrize(("final", "status"), [
    (FarmState.FINISHED, ReportStatus.FINISHED),
    (FarmState.STOPPED, ReportStatus.STOPPED),
    (FarmState.FAILED, ReportStatus.FAILED),
], ids=lambda v: getattr(v, "name", None))
def test_report_status_per_final_state(final: FarmState, status: ReportStatus) -> None:
    assert _reach(final).report_status is status


def test_every_state_is_reachable_and_only_three_are_final() -> None:
    assert {s for s in FarmState if s.final} == set(FINAL)
    for state in FarmState:
        _reach(state)


# ---- Prefetch -----------------------------------------------------------------------

class FakeSlot:
    """A busy slot as Prefetch sees it: the task it runs, then those queued behind."""

    def __init__(self, *tids: int) -> None:
        self.tasks: deque[Task] = deque(_task(t) for t in tids)


def _slots(*slots: FakeSlot) -> list[Slot]:
    return cast("list[Slot]", list(slots))


def test_prefetch_starts_one_deep_with_no_pace_known() -> None:
    prefetch = Prefetch(enabled=True)
    assert prefetch.depth == 1 and prefetch.mean_duration == math.inf
    assert not prefetch.unfed and not prefetch.skipping


def test_a_long_task_brings_the_depth_to_one_at_once() -> None:
    prefetch = Prefetch(enabled=True)
    prefetch.learn(1e-6)        # the first pace measured is taken as it is
    assert prefetch.depth == MAX_DEPTH
    prefetch.learn(2.0)         # a longer task: followed at once
    assert prefetch.depth == 1 and prefetch.mean_duration == 2.0


def test_tiny_tasks_grow_the_depth_slowly_up_to_max_depth() -> None:
    prefetch = Prefetch(enabled=True)
    prefetch.learn(1.0)
    depths = []
    for _ in range(400):
        prefetch.learn(1e-6)
        depths.append(prefetch.depth)
    assert depths[:20] == [1] * 20              # slowly: a few tiny tasks change nothing
    assert depths == sorted(depths)             # never shrinks while tasks stay tiny
    assert depths[-1] == MAX_DEPTH and max(depths) == MAX_DEPTH
    first_full = depths.index(MAX_DEPTH)
    assert 50 < first_full < 400
    prefetch.learn(0.01)                        # one task of 10 ms: back to one at once
    assert prefetch.depth == 1


def test_tasks_over_a_millisecond_are_queued_one_at_a_time() -> None:
    prefetch = Prefetch(enabled=True)
    prefetch.learn(0.0011)
    assert prefetch.depth == 1


@pytest.mark.parametrize(("depth", "queued", "wants"), [
    (1, 0, True), (1, 1, False), (32, 16, True), (32, 17, False), (4, 2, True), (4, 3, False),
])
def test_a_slot_wants_more_when_its_queue_is_down_to_half(depth: int, queued: int,
                                                          wants: bool) -> None:
    prefetch = Prefetch(enabled=True)
    prefetch.depth = depth
    slot = FakeSlot(*range(queued + 1))
    assert prefetch.wants_more(_slots(slot)[0]) is wants


def test_queued_tasks_are_taken_back_once_each() -> None:
    prefetch = Prefetch(enabled=True)
    a, b, c = FakeSlot(1, 2, 3), FakeSlot(4), FakeSlot(5, 6)
    slots = _slots(a, b, c)
    prefetch.unfed.update(slots)
    back = prefetch.queued_to_take_back(slots)
    assert [(slot, tid) for slot, tid in back] == [(a, 2), (a, 3), (c, 6)]  # not running 1, 4, 5
    assert prefetch.skipping == {2, 3, 6} and not prefetch.unfed
    prefetch.unfed.add(slots[0])
    assert prefetch.queued_to_take_back(slots) == []   # each is asked back once
    assert not prefetch.unfed
    a.tasks.append(_task(7))
    assert prefetch.queued_to_take_back(slots) == [(a, 7)]
    prefetch.skipping.discard(3)                        # Skipped(3) came back, say
    assert prefetch.queued_to_take_back(slots) == [(a, 3)]


# ---- ErrorPolicy --------------------------------------------------------------------

def _failed(tid: int = 1) -> Outcome:
    return Outcome.failed(tid, error_type="ValueError", error_text="bad input", pid=10,
                          ticket=0, started=1.0, ended=2.0, peak_rss=None)


def _by_boss(status: TaskStatus, why: str = "why", tid: int = 1) -> Outcome:
    return Outcome.by_boss(tid, status, why, ended=3.0, pid=10,
                           exit_info=ExitInfo(None, "SIGKILL")
                           if status is TaskStatus.KILLED else None)


def test_no_retry_unless_asked() -> None:
    policy = ErrorPolicy(fail_fast=False)
    assert not policy.retries(_task(1), _failed())
    assert not policy.retries(_task(1, retries=0), _by_boss(TaskStatus.TIMEOUT))


def test_retries_honours_the_number_of_retries() -> None:
    policy = ErrorPolicy(fail_fast=False)
    task = _task(1, retries=2)
    outcomes = [_failed(), _by_boss(TaskStatus.KILLED, "killed by SIGKILL"),
                _by_boss(TaskStatus.TIMEOUT, "ran past 5 s")]
    for outcome in outcomes[:2]:
        assert policy.retries(task, outcome)
        policy.prepare_retry(task, outcome)
    assert not policy.retries(task, outcomes[2])   # two retries used
    assert task.attempts == [("failed", "ValueError: bad input"),
                             ("killed", "killed by SIGKILL")]


@pytest.mark.parametrize(("retry_on", "status", "retried"), [
    (None, TaskStatus.FAILED, True),
    (None, TaskStatus.KILLED, True),
    (None, TaskStatus.TIMEOUT, True),
    (None, TaskStatus.CANCELLED, False),
    (("timeout",), TaskStatus.TIMEOUT, True),
    (("timeout",), TaskStatus.FAILED, False),
    (("timeout",), TaskStatus.KILLED, False),
    (("failed", "killed"), TaskStatus.KILLED, True),
    (("failed", "killed"), TaskStatus.TIMEOUT, False),
], ids=str)
def test_retries_honours_retry_on(retry_on: tuple[str, ...] | None, status: TaskStatus,
                                  retried: bool) -> None:
    extra = {} if retry_on is None else {"retry_on": retry_on}
    task = _task(1, retries=3, **extra)
    outcome = _failed() if status is TaskStatus.FAILED else _by_boss(status)
    assert ErrorPolicy(fail_fast=True).retries(task, outcome) is retried


def test_prepare_retry_records_the_attempt_and_multiplies_memory() -> None:
    policy = ErrorPolicy(fail_fast=False)
    task = _task(1, retries=3, memory=1000, retry_memory=1.5)
    policy.prepare_retry(task, _by_boss(TaskStatus.KILLED, "killed by SIGKILL (oom)"))
    assert task.instructions["memory"] == 1500
    policy.prepare_retry(task, _failed())
    assert task.instructions["memory"] == 2250
    assert task.attempts == [("killed", "killed by SIGKILL (oom)"),
                             ("failed", "ValueError: bad input")]


def test_prepare_retry_leaves_memory_alone_without_both_keys() -> None:
    policy = ErrorPolicy(fail_fast=False)
    no_memory = _task(1, retries=1, retry_memory=2.0)
    policy.prepare_retry(no_memory, _failed())
    assert "memory" not in no_memory.instructions
    no_factor = _task(2, retries=1, memory=512)
    policy.prepare_retry(no_factor, _by_boss(TaskStatus.TIMEOUT, ""))
    assert no_factor.instructions["memory"] == 512
    assert no_factor.attempts == [("timeout", "")]


@pytest.mark.parametrize("status", list(TaskStatus), ids=str)
def test_stops_run_only_under_fail_fast_and_only_for_a_failing_ending(
        status: TaskStatus) -> None:
    failing = status in (TaskStatus.FAILED, TaskStatus.KILLED, TaskStatus.TIMEOUT)
    assert ErrorPolicy(fail_fast=True).stops_run(status.value) is failing
    assert ErrorPolicy(fail_fast=False).stops_run(status.value) is False


def test_likely_cause_names_the_oom_killer_only_when_its_count_rose(
        monkeypatch: pytest.MonkeyPatch) -> None:
    counts = iter([3, 3, 4, 4])
    monkeypatch.setattr(error_policy, "oom_kills", lambda: next(counts))
    policy = ErrorPolicy(fail_fast=False)                     # reads 3
    sigkill = ExitInfo(None, "SIGKILL")
    assert policy.likely_cause(sigkill) == ""                 # 3: no rise
    assert "out-of-memory" in policy.likely_cause(sigkill)    # 4: rose
    assert policy.likely_cause(sigkill) == ""                 # 4 again
    assert policy.likely_cause(ExitInfo(None, "SIGSEGV")) == ""
    assert policy.likely_cause(ExitInfo(3, None)) == ""


# ---- Batches ------------------------------------------------------------------------

def _add_tasks(batch_id: int, tids: range, common: bytes = b"common",
               classes: tuple[WorkerClassSpec, ...] = ()) -> AddTasks:
    return AddTasks(batch_id=batch_id, classes=classes, common_blob=common,
                    tasks=tuple(TaskSpec(tid=t, class_key=1, view={"name": f"t{t}"})
                                for t in tids))


def test_a_common_blob_is_released_when_the_last_task_of_its_batch_ends() -> None:
    batches = Batches()
    spec = WorkerClassSpec(key=1, qualname="Calibrate", blob=b"class", isolated=False)
    batches.add(_add_tasks(1, range(3), b"common one", (spec,)))
    batches.add(_add_tasks(2, range(3, 4), b"common two"))
    assert batches.classes == {1: spec}
    assert batches.common(1) == b"common one" and batches.common(2) == b"common two"
    batches.release(1)
    batches.release(1)
    assert 1 in batches and batches.common(1) == b"common one"
    batches.release(1)
    assert 1 not in batches and 2 in batches
    batches.release(2)
    assert 2 not in batches


def test_chunks_of_one_batch_add_up() -> None:
    batches = Batches()
    batches.add(_add_tasks(7, range(0, 4), b"shared"))
    batches.add(_add_tasks(7, range(4, 6), b"shared"))   # the next chunk of batch 7
    for _ in range(5):
        batches.release(7)
        assert 7 in batches and batches.common(7) == b"shared"
    batches.release(7)
    assert 7 not in batches


def test_a_chunk_arriving_after_tasks_ended_keeps_the_blob() -> None:
    batches = Batches()
    batches.add(_add_tasks(3, range(2)))
    batches.release(3)
    batches.add(_add_tasks(3, range(2, 4)))
    for _ in range(2):
        batches.release(3)
    assert 3 in batches
    batches.release(3)
    assert 3 not in batches


# ---- Task and TaskBook --------------------------------------------------------------

TERMINAL = [s for s in TaskState if s.terminal]


def test_the_terminal_task_states_are_the_status_vocabulary() -> None:
    assert {s.value for s in TERMINAL} == {s.value for s in TaskStatus}


@pytest.mark.parametrize("terminal", TERMINAL, ids=lambda s: s.name)
def test_a_terminal_task_state_never_changes(terminal: TaskState) -> None:
    task = _task(1)
    task.move(TaskState.RUNNING)
    task.move(terminal)
    for state in TaskState:
        with pytest.raises(RuntimeError, match="cannot go from"):
            task.move(state)
    assert task.state is terminal


@pytest.mark.parametrize(("start", "to"), [
    (TaskState.PENDING, TaskState.DONE),
    (TaskState.PENDING, TaskState.FAILED),
    (TaskState.QUEUED, TaskState.DONE),
    (TaskState.RUNNING, TaskState.QUEUED),
], ids=lambda s: s.name)
def test_a_task_skips_no_state(start: TaskState, to: TaskState) -> None:
    task = _task(1)
    if start is not TaskState.PENDING:
        task.move(start)
    with pytest.raises(RuntimeError):
        task.move(to)
    assert task.state is start


def test_task_book_follows_a_task_to_its_end_and_forgets_it() -> None:
    book = TaskBook()
    first, second = _task(1), _task(2)
    book.add(first)
    book.add(second)
    assert len(book.pending) == 2 and not book.idle
    book.launch(first, queued=False, now=5.0)
    book.launch(second, queued=True, now=5.0)
    assert first.state is TaskState.RUNNING and first.started == 5.0
    assert second.state is TaskState.QUEUED and second.started is None
    assert set(book.running) == {1, 2} and set(book.running_view) == {"t1"}
    book.finish(first, TaskState.DONE, "Add", duration=1.0, peak_rss=100)
    book.begin(second, now=6.0)
    assert set(book.running_view) == {"t2"}
    book.finish(second, TaskState.FAILED, "Add", duration=0.5, peak_rss=300)
    assert book.idle and not book.running and not book.running_view
    assert book.stats.counts == {"done": 1, "failed": 1}
    assert book.stats.by_worker["Add"] == {"count": 2, "peak_rss": 300, "seconds": 1.5}
    with pytest.raises(RuntimeError):
        book.requeue(first)
    assert first.state is TaskState.DONE


def test_a_requeued_task_goes_back_to_the_front() -> None:
    book = TaskBook()
    tasks = [_task(t) for t in range(3)]
    for task in tasks:
        book.add(task)
    book.launch(tasks[0], queued=False, now=1.0)
    tasks[0].instructions["scheduler_ticket"] = 4
    book.requeue(tasks[0])
    assert tasks[0].state is TaskState.PENDING and "scheduler_ticket" not in tasks[0].instructions
    assert [i["name"] for i in book.pending[:3]] == ["t0", "t1", "t2"]
    assert book.lookup(book.pending[0]) is tasks[0]


def test_a_queued_task_being_taken_back_holds_its_slot_for_the_scheduler() -> None:
    """Its process moved on to it while a take-back was on its way: until the answer
    says whether it started, the scheduler counts it as running, so no launch sees a
    free place that no process has (a farm of two once started a third process)."""
    book = TaskBook()
    first, second, third = _task(1), _task(2), _task(3)
    for task in (first, second, third):
        book.add(task)
    book.launch(first, queued=False, now=1.0)
    book.launch(second, queued=True, now=1.0)
    book.finish(first, TaskState.DONE, "Add", duration=1.0, peak_rss=None)
    book.occupy(second)
    assert second.state is TaskState.QUEUED and set(book.running_view) == {"t2"}
    chosen, _ = MaxThreadsScheduler(1).launchable(book.pending, book.running_view, book.stats)
    assert list(chosen) == []
    book.requeue(second)     # the answer: it had not started
    assert not book.running_view
    chosen, _ = MaxThreadsScheduler(1).launchable(book.pending, book.running_view, book.stats)
    assert [i["name"] for i in chosen] == ["t2"]
