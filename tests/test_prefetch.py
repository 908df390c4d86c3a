"""Deep prefetch: with tiny tasks the boss queues many tasks behind each running one
and writes them in one go. Taking them back (HALT, STOP) and losing a worker must still
leave every task run exactly once."""

from __future__ import annotations

from pathlib import Path

from workers import Gate, Journal, Mailbox

import taskfarm
from schedulers import MaxThreadsScheduler
from taskfarm._boss.prefetch import MAX_DEPTH, QUEUE_SECONDS, Prefetch

TASKS = 5000


def _runs(tmp_path: Path, name: str) -> int:
    path = tmp_path / name
    return path.read_text().count("\n") if path.exists() else 0


def test_halt_takes_back_deeply_queued_tiny_tasks(tmp_path: Path) -> None:
    with taskfarm.Boss(MaxThreadsScheduler(2), workers=[Journal]) as boss:
        names = boss.set_instructions({"out_dir": str(tmp_path)}, {"spin": [0] * TASKS})
        boss.make_them_work()
        stream = boss.as_completed(timeout=60)
        early = [next(stream) for _ in range(300)]  # the queues are deep by now
        boss.halt()  # HALT: queued tasks come back, running ones end
        boss.get_report()  # the boss has read the HALT and asked the queued ones back
        while boss.get_report().running:
            next(stream)
        ended = len(boss.get_report().tasks)
        assert len(early) <= ended < TASKS, "HALT took nothing back"
        boss.make_them_work()  # RESUME
        final = boss.wait_till_finished(timeout=60)
    assert sorted(t.name for t in final.tasks) == sorted(names)
    assert all(t.ok for t in final.tasks)
    assert [n for n in names if _runs(tmp_path, n) != 1] == []


def test_stop_reports_taken_back_tasks_as_pending(tmp_path: Path) -> None:
    with taskfarm.Boss(MaxThreadsScheduler(2), workers=[Journal]) as boss:
        names = boss.set_instructions({"out_dir": str(tmp_path)}, {"spin": [0] * TASKS})
        boss.make_them_work()
        stream = boss.as_completed(timeout=60)
        for _ in range(300):
            next(stream)
        boss.stop()
        final = boss.wait_till_finished(timeout=60)
    pending = [p["name"] for p in final.pending]
    assert pending, "STOP left nothing pending: the test stopped too late"
    assert sorted([t.name for t in final.tasks] + pending) == sorted(names)
    assert all(t.ok and _runs(tmp_path, t.name) == 1 for t in final.tasks)
    assert all(_runs(tmp_path, name) == 0 for name in pending)


def test_queue_depth_follows_the_pace_of_tasks() -> None:
    prefetch = Prefetch(enabled=True)

    def learn(seconds: float) -> int:
        prefetch.learn(seconds)
        return prefetch.depth

    assert learn(1.0) == 1                         # long tasks: one queued at a time
    depths = [learn(10e-6) for _ in range(400)]    # tiny ones: deeper, up to the cap
    assert depths[0] == 1 and depths[-1] == MAX_DEPTH
    assert learn(0.5) == 1                         # a long one: back to one at once
    assert learn(QUEUE_SECONDS / 4) in (1, 2)      # never more than QUEUE_SECONDS of work


def test_one_task_at_a_time_never_misses_its_report() -> None:
    """The waiting thread reads for itself while the receiver steps aside; a report
    the receiver took just before must still be seen (no wait on a silent pipe)."""
    from workers import Add

    with taskfarm.Boss(MaxThreadsScheduler(2), workers=[Add]) as boss:
        boss.make_them_work()
        for i in range(400):
            boss.set_instructions({}, {"x": [i]})
            report = next(boss.as_completed(timeout=10))
            assert report.result == i + 1


def test_no_task_waits_behind_a_long_one_while_a_worker_idles(gate: Gate,
                                                              mailbox: Mailbox) -> None:
    """A long task first, short ones after, on two workers: the short ones all run on
    the other worker while the long one still blocks (none is queued behind it)."""
    from workers import Add, Blocker

    with taskfarm.Boss(MaxThreadsScheduler(2), workers=[Add, Blocker]) as boss:
        boss.set_instructions({"gate": gate, "mailbox": mailbox, "label": "long"})
        names = boss.set_instructions({}, {"x": [1, 2, 3]})
        boss.make_them_work()
        stream = boss.as_completed(timeout=30)
        done = [next(stream).name for _ in names]   # TimeoutError if one waits behind
        assert sorted(done) == sorted(names)
        gate.release()
        report = boss.wait_till_finished(timeout=30)
    assert all(t.ok for t in report.tasks)


def test_tasks_queued_behind_a_hung_one_are_taken_back(tmp_path: Path, gate: Gate,
                                                       mailbox: Mailbox) -> None:
    """Tiny tasks (so queues are deep) with one that hangs among them: every tiny task
    still runs, exactly once, while the hung one blocks."""
    from workers import Blocker

    with taskfarm.Boss(MaxThreadsScheduler(2), workers=[Journal, Blocker]) as boss:
        first = boss.set_instructions({"out_dir": str(tmp_path)}, {"spin": [0] * 300})
        boss.set_instructions({"gate": gate, "mailbox": mailbox, "label": "hung"})
        last = boss.set_instructions({"out_dir": str(tmp_path)}, {"spin": [0] * 300})
        boss.make_them_work()
        stream = boss.as_completed(timeout=30)
        ended = {next(stream).name for _ in range(len(first) + len(last))}
        assert ended == set(first) | set(last)
        gate.release()
        boss.wait_till_finished(timeout=30)
    assert [n for n in first + last if _runs(tmp_path, n) != 1] == []


class Doubler(taskfarm.Worker):
    """Used by the worker-side take-back test only (through ``worker=``)."""

    doubled: int

    def task(self) -> int:
        return self.doubled * 2


def test_a_task_taken_back_leaves_the_blobs_it_carried_to_its_process() -> None:
    """The boss counts a class and common instructions as received by a process once
    written to it: a task taken back before it started must leave them there, or the
    next task of that batch (sent without them) fails with a KeyError."""
    import os
    import pickle

    import cloudpickle

    from taskfarm._common.messages import RunTask, Skip
    from taskfarm._common.wire import Channel
    from taskfarm._worker.queue import TaskQueue
    from taskfarm._worker.run import ProcessState, keep_blobs, run_task
    from taskfarm._worker.sender import Sender

    task_r, task_w = os.pipe()
    result_r, result_w = os.pipe()
    try:
        to_worker, results = Channel(task_w), Channel(result_r)
        state = ProcessState(Sender(Channel(result_w)))
        queue = TaskQueue(Channel(task_r), state.sender)
        queue.on_drop = lambda msg: keep_blobs(state, msg)
        first = RunTask(1, 0, 7, {"name": "a", "doubled": 1}, cloudpickle.dumps(Doubler),
                        pickle.dumps({}), ())
        second = RunTask(2, 0, 7, {"name": "b", "doubled": 21}, None, None, ())
        to_worker.send_many([first, second, Skip(1)])   # the first is taken back
        started = queue.next()
        assert started.tid == 2 and results.recv().tid == 1   # Skipped(1)
        outcome = run_task(state, started)
        assert outcome.status == "done", outcome.error_text
        assert pickle.loads(outcome.result_blob or b"") == 42
    finally:
        for fd in (task_r, task_w, result_r, result_w):
            os.close(fd)
