"""``Boss.cancel``: single tasks cancelled by name, whether pending, queued behind
another in a worker, or running; with real worker processes."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from workers import Add, Blocker, Checkpointing, Gate, Mailbox

import taskfarm
from schedulers import MaxThreadsScheduler
from taskfarm._common.processes import signal_family

pytestmark = pytest.mark.usefixtures("start_method")

WAIT = 30.0


def test_a_task_not_started_ends_cancelled_at_once() -> None:
    with taskfarm.Boss(MaxThreadsScheduler(1), workers=[Add]) as boss:
        boss.set_instructions({}, {"x": [1, 2, 3], "name": ["a", "b", "c"]})
        assert boss.cancel("b") == ["b"]             # the boss is halted: b never ran
        first = next(iter(boss.as_completed(timeout=WAIT)))
        assert first.name == "b" and str(first.status) == "cancelled"
        boss.make_them_work()
        report = boss.wait_till_finished(timeout=WAIT)   # fail-fast, yet no error
    b = report["b"]
    assert "Boss.cancel" in (b.reason or "") and b.pid is None and b.started is None
    assert report.results == {"a": 2, "c": 4}


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def boss_log() -> Iterator[_Collect]:
    """The boss's INFO records (its launches), read from the main program. The boss
    forwards from the level of ``taskfarm``, read when a Boss starts."""
    farm, boss = logging.getLogger("taskfarm"), logging.getLogger("taskfarm.boss")
    level, handler = farm.level, _Collect()
    farm.setLevel(logging.INFO)
    boss.addHandler(handler)
    yield handler
    boss.removeHandler(handler)
    farm.setLevel(level)


def test_a_task_queued_behind_a_running_one_is_taken_back_and_cancelled(
        gate: Gate, mailbox: Mailbox, boss_log: _Collect) -> None:
    with taskfarm.Boss(MaxThreadsScheduler(1), workers=[Blocker, Add]) as boss:
        boss.set_instructions({"x": 1, "name": "warm"})   # a tiny task: prefetch starts
        boss.make_them_work()
        assert next(iter(boss.as_completed(timeout=WAIT))).name == "warm"
        boss.set_instructions({"gate": gate, "mailbox": mailbox},
                              {"label": ["a", "b", "c"], "name": ["a", "b", "c"]})
        assert mailbox.read(1)[0].startswith("started a ")
        assert boss.cancel("b") == ["b"]
        # Its report comes while "a" still holds the only worker.
        first = next(iter(boss.as_completed(timeout=WAIT)))
        assert first.name == "b" and str(first.status) == "cancelled"
        assert "Boss.cancel" in (first.reason or "")
        assert boss.cancel("b") == []                # ended: nothing more to cancel
        gate.release(2)
        report = boss.wait_till_finished(timeout=WAIT)
    assert any(m.startswith("queued task 'b'") for m in boss_log.messages), \
        f"b was not queued in the worker, the case under test: {boss_log.messages}"
    assert report.results == {"warm": 2, "a": "a", "c": "c"}
    assert report["b"].started is None
    assert mailbox.read(1)[0].startswith("started c ")   # b never started
    with pytest.raises(TimeoutError):
        mailbox.read(1, timeout=0.1)


def test_a_running_task_is_stopped_and_cleans_up(gate: Gate, mailbox: Mailbox,
                                                 tmp_path: Path) -> None:
    with taskfarm.Boss(MaxThreadsScheduler(2), workers=[Checkpointing]) as boss:
        boss.set_instructions({"gate": gate, "mailbox": mailbox, "out_dir": str(tmp_path)},
                              {"name": ["victim", "bystander"]})
        boss.make_them_work()
        mailbox.read(2)                               # both run, their finally armed
        assert boss.cancel("victim") == ["victim"]
        first = next(iter(boss.as_completed(timeout=WAIT)))
        assert first.name == "victim"
        gate.release()                               # only now: the victim is gone
        report = boss.wait_till_finished(timeout=WAIT)   # fail-fast: a cancel is no failure
    victim = report["victim"]
    assert str(victim.status) == "cancelled" and "Boss.cancel" in (victim.reason or "")
    assert (tmp_path / "victim.finally").read_text() == "cleaned up"     # StopRequested
    assert (tmp_path / "victim.checkpoint").read_text() == "state saved"  # on_stop
    assert report["bystander"].ok
    assert (tmp_path / "bystander.finally").exists()
    assert not (tmp_path / "bystander.checkpoint").exists()


def test_a_stop_signal_reaches_a_worker_once() -> None:
    """A worker is signalled with the process group it leads (what its tasks started):
    it is in that group, so it must get the signal once. A second SIGTERM arriving
    while the first one's StopRequested runs the task's ``finally`` cut the cleanup
    short (seen once in CI: no ``victim.finally`` above). A real-time signal, which
    queues where SIGTERM merges, counts the deliveries."""
    sig = int(signal.SIGRTMIN)
    code = (f"import os, signal, sys\n"
            f"signal.pthread_sigmask(signal.SIG_BLOCK, {{{sig}}})\n"
            f"os.setpgid(0, 0)\n"
            f"print('ready', flush=True)\n"
            f"sys.stdin.readline()\n"
            f"count = 0\n"
            f"while signal.sigtimedwait({{{sig}}}, 0) is not None:\n"
            f"    count += 1\n"
            f"print(count, flush=True)\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
        signal_family(child.pid, sig)
        out, _ = child.communicate(b"\n", timeout=WAIT)
        assert out.strip() == b"1"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_a_task_that_ended_keeps_its_ending() -> None:
    with taskfarm.Boss(workers=[Add]) as boss:
        boss.set_instructions({"x": 1, "name": "finished"})
        boss.make_them_work()
        assert next(iter(boss.as_completed(timeout=WAIT))).ok
        assert boss.cancel("finished") == []
        report = boss.wait_till_finished(timeout=WAIT)
    assert report["finished"].ok and report["finished"].result == 2


def test_an_unknown_name_is_a_keyerror_and_nothing_is_cancelled() -> None:
    with taskfarm.Boss(workers=[Add]) as boss:
        boss.set_instructions({"x": 1, "name": "known"})
        with pytest.raises(KeyError, match="unknown"):
            boss.cancel("known", "unknown")
        boss.make_them_work()
        report = boss.wait_till_finished(timeout=WAIT)
    assert report["known"].ok


def test_tasks_waiting_on_a_cancelled_task_end_cancelled(gate: Gate,
                                                         mailbox: Mailbox) -> None:
    with taskfarm.Boss(MaxThreadsScheduler(2), workers=[Blocker]) as boss:
        common = {"gate": gate, "mailbox": mailbox}
        boss.set_instructions({**common, "label": "root", "name": "root"})
        boss.set_instructions({**common, "label": "child", "name": "child",
                               "after": ["root"]})
        boss.set_instructions({**common, "label": "grandchild", "name": "grandchild",
                               "after": ["child"]})
        boss.make_them_work()
        assert mailbox.read(1)[0].startswith("started root ")
        assert boss.cancel("root") == ["root"]
        report = boss.wait_till_finished(timeout=WAIT)   # fail-fast, yet no error
    assert {t.name: str(t.status) for t in report.tasks} == \
        {"root": "cancelled", "child": "cancelled", "grandchild": "cancelled"}
    assert report["child"].started is None and report["grandchild"].started is None


def test_a_task_waiting_on_another_can_be_cancelled_alone(gate: Gate,
                                                          mailbox: Mailbox) -> None:
    with taskfarm.Boss(MaxThreadsScheduler(2), workers=[Blocker]) as boss:
        common = {"gate": gate, "mailbox": mailbox}
        boss.set_instructions({**common, "label": "root", "name": "root"})
        boss.set_instructions(common, {"label": ["child", "sibling"],
                                       "name": ["child", "sibling"], "after": [["root"]] * 2})
        boss.make_them_work()
        assert mailbox.read(1)[0].startswith("started root ")
        assert boss.cancel("child") == ["child"]
        first = next(iter(boss.as_completed(timeout=WAIT)))
        assert first.name == "child" and str(first.status) == "cancelled"
        gate.release(2)
        report = boss.wait_till_finished(timeout=WAIT)
    assert report.results == {"root": "root", "sibling": "sibling"}


def test_a_cancelled_task_is_not_retried(gate: Gate, mailbox: Mailbox,
                                         tmp_path: Path) -> None:
    with taskfarm.Boss(MaxThreadsScheduler(1), workers=[Checkpointing]) as boss:
        boss.set_instructions({"gate": gate, "mailbox": mailbox, "out_dir": str(tmp_path),
                               "retries": 2, "name": "once"})
        boss.make_them_work()
        mailbox.read(1)
        assert boss.cancel("once") == ["once"]
        report = boss.wait_till_finished(timeout=WAIT)
    assert str(report["once"].status) == "cancelled"
    assert [ending for ending, _ in report["once"].attempts] == ["cancelled"]
    with pytest.raises(TimeoutError):
        mailbox.read(1, timeout=0.1)   # it never started again
