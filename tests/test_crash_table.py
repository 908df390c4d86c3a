"""The crash table: a task fails at each stage of its life in each way a process can
fail, and the farm must give that task exactly one clear terminal state (failed for an
exception, killed with the signal or exit code for a process death) while the tasks
given after it, in the same call and with the same common instructions, still run and
end done with their own results. When the failure did not kill the worker process,
those later tasks run in that same process: one bad value or one bad task must not
poison a worker for the tasks that follow.

One worker process (``MaxThreadsScheduler(1)``) runs the tasks one after another, the
bomb first; ``on_error="continue"`` lets them all run. A bomb that would go off again
in every process (a common instruction value, ``setup_process``) goes off once only,
so that the tasks after it have a chance (see ``crash_workers``).

Stages x kinds ("x": a cell of the table; "-": does not apply):

    stage                           exception  unpicklable  SIGKILL  os._exit  segfault
    1 instructions pickled (main)       x          x           -        -         -
    2 individual value unpickled        x          -           x        x         x
      (worker)
    2 common value unpickled            x          -           x        x         x
      (worker)
    3 setup_process                     x          x           x        x         x
    4 task()                            x          x           x        x         x
    5 result pickled (worker)           x          x           x        x         x
    6 result unpickled (main)           x          -           -        -         -

- Stage 1 runs in the test's own process: a process death there would kill the test
  runner. Its cells are refused at ``set_instructions`` (``InstructionError``) and
  have a test of their own.
- Stage 2, unpicklable: a value that cannot be pickled never leaves the main program
  (that is stage 1).
- Stage 3 and 4, unpicklable: an exception that carries a lock, so it cannot be
  pickled back to the main program.
- Stage 6: SIGKILL, os._exit and a segfault while the main program unpickles a
  result would kill the test runner; an unpicklable value cannot come back from the
  worker at all (that is stage 5).
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest
from crash_workers import SETUP_BOMB, Crash, ExplodesWhenUnpickled, RaisesWhenPickled, SetupCrash
from workers import Blocker, Gate, Mailbox

import taskfarm
from schedulers import MaxThreadsScheduler

pytestmark = pytest.mark.usefixtures("start_method")

VALUE = 100          # the value instruction of the tasks after the bomb
STEPS = [0, 1, 2, 3]  # the bomb is step 0; the others return VALUE + step
WAIT = 60.0

KILLED_BY_SIGKILL = "killed by SIGKILL"
KILLED_BY_SIGSEGV = "killed by SIGSEGV"
EXITED_3 = "exited with code 3"
NOT_PICKLED = "could not be pickled to send it back"

# (stage, kind, terminal status of the bomb task, fragment of its exception or reason)
CELLS: list[tuple[str, str, str, str]] = [
    ("unpickle_individual", "exception", "failed", "bomb in unpickling in the worker"),
    ("unpickle_individual", "sigkill", "killed", KILLED_BY_SIGKILL),
    ("unpickle_individual", "exit", "killed", EXITED_3),
    ("unpickle_individual", "segfault", "killed", KILLED_BY_SIGSEGV),
    ("unpickle_common", "exception", "failed", "bomb in unpickling in the worker"),
    ("unpickle_common", "sigkill", "killed", KILLED_BY_SIGKILL),
    ("unpickle_common", "exit", "killed", EXITED_3),
    ("unpickle_common", "segfault", "killed", KILLED_BY_SIGSEGV),
    ("setup", "exception", "failed", "CrashBoom: bomb in setup_process"),
    ("setup", "unpicklable", "failed", "bomb in setup_process, carrying a lock"),
    ("setup", "sigkill", "killed", KILLED_BY_SIGKILL),
    ("setup", "exit", "killed", EXITED_3),
    ("setup", "segfault", "killed", KILLED_BY_SIGSEGV),
    ("task", "exception", "failed", "CrashBoom: bomb in task()"),
    ("task", "unpicklable", "failed", "bomb in task(), carrying a lock"),
    ("task", "sigkill", "killed", KILLED_BY_SIGKILL),
    ("task", "exit", "killed", EXITED_3),
    ("task", "segfault", "killed", KILLED_BY_SIGSEGV),
    ("pickle_result", "exception", "failed", f"{NOT_PICKLED}: CrashBoom: bomb in pickling"),
    ("pickle_result", "unpicklable", "failed", f"{NOT_PICKLED}: TypeError: cannot pickle"),
    ("pickle_result", "sigkill", "killed", KILLED_BY_SIGKILL),
    ("pickle_result", "exit", "killed", EXITED_3),
    ("pickle_result", "segfault", "killed", KILLED_BY_SIGSEGV),
    ("unpickle_result", "exception", "failed",
     "could not be unpickled in the main program: CrashBoom: result rebuilt away"),
]

# Cells also run with a fresh process per task (Boss(isolated=True)).
ISOLATED = {("unpickle_individual", "sigkill"), ("unpickle_common", "exception"),
            ("setup", "exit"), ("task", "segfault"), ("pickle_result", "unpicklable"),
            ("unpickle_result", "exception")}

PARAMS = [pytest.param(*cell, False, id=f"{cell[0]}-{cell[1]}") for cell in CELLS] + [
    pytest.param(*cell, True, id=f"isolated-{cell[0]}-{cell[1]}")
    for cell in CELLS if cell[:2] in ISOLATED]


@pytest.mark.parametrize(("stage", "kind", "status", "fragment", "isolated"), PARAMS)
def test_one_bad_task_fails_alone_and_the_tasks_after_it_run(
        stage: str, kind: str, status: str, fragment: str, isolated: bool, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    marker = str(tmp_path / "went-off")  # a bomb given it goes off in one process only
    worker: type[Crash] = Crash
    common: dict[str, object] = {"value": VALUE}
    individual: dict[str, list[object]] = {"step": list(STEPS)}
    rest = len(STEPS) - 1  # the tasks after the bomb
    if stage == "unpickle_individual":
        individual["value"] = [ExplodesWhenUnpickled(kind, VALUE, marker), *[VALUE] * rest]
        del common["value"]
    elif stage == "unpickle_common":
        common["value"] = ExplodesWhenUnpickled(kind, VALUE, marker)
    elif stage == "setup":
        monkeypatch.setenv(SETUP_BOMB, f"{kind} {marker}")  # before the boss starts
        worker = SetupCrash
    else:
        individual["stage"] = [stage, *[""] * rest]
        individual["kind"] = [kind, *[""] * rest]

    with taskfarm.Boss(MaxThreadsScheduler(1), on_error="continue", isolated=isolated) as boss:
        names = boss.set_instructions(common, individual, worker=worker)
        boss.make_them_work()
        report = boss.wait_till_finished(timeout=WAIT)

    assert len(report.tasks) == len(STEPS)
    bomb, *others = (report[name] for name in names)
    assert str(bomb.status) == status, (bomb.status, bomb.reason)
    assert fragment in f"{bomb.exception} {bomb.reason}", (bomb.exception, bomb.reason)
    endings = [(str(t.status), t.reason) for t in others]
    assert endings == [("done", None)] * rest, f"tasks after the bomb: {endings}"
    assert [t.result for t in others] == [VALUE + step for step in STEPS[1:]]
    pids = {t.pid for t in others}
    assert bomb.pid is not None and None not in pids
    if isolated:  # a fresh process for each task
        assert len(pids) == len(others) and bomb.pid not in pids
    elif status == "killed":  # one process took the dead one's place, and kept it
        assert len(pids) == 1 and bomb.pid not in pids
    else:  # the process that saw the failure went on with the tasks after it
        assert pids == {bomb.pid}


# Stage 1: (instruction, kind, fragment of the InstructionError)
PICKLING: list[tuple[str, str, str]] = [
    ("individual", "exception",
     "instructions of task 'Crash-1' cannot be pickled to send to the boss: CrashBoom: "
     "bomb in pickling"),
    ("individual", "unpicklable",
     "instructions of task 'Crash-1' cannot be pickled to send to the boss: TypeError: "
     "cannot pickle '_thread.lock' object"),
    ("common", "exception",
     "common_instructions cannot be pickled to send to the boss: CrashBoom: bomb in pickling"),
    ("common", "unpicklable",
     "common_instructions cannot be pickled to send to the boss: TypeError: "
     "cannot pickle '_thread.lock' object"),
]


@pytest.mark.parametrize(("where", "kind", "fragment"), PICKLING,
                         ids=[f"{p[0]}-{p[1]}" for p in PICKLING])
def test_instructions_that_cannot_be_pickled_are_refused_at_the_call(
        where: str, kind: str, fragment: str, gate: Gate, mailbox: Mailbox) -> None:
    bad = threading.Lock() if kind == "unpicklable" else RaisesWhenPickled()
    common: dict[str, object] = {"value": VALUE}
    individual: dict[str, list[object]] = {"step": list(STEPS)}
    if where == "common":
        common["value"] = bad
    else:
        individual["value"] = [bad, *[VALUE] * (len(STEPS) - 1)]
        del common["value"]

    with taskfarm.Boss(MaxThreadsScheduler(1), on_error="continue") as boss:
        running = boss.set_instructions({"gate": gate, "mailbox": mailbox, "label": "running"},
                                        worker=Blocker)
        boss.make_them_work()
        assert mailbox.read(1)[0].startswith("started running ")
        with pytest.raises(taskfarm.InstructionError, match=re.escape(fragment)):
            boss.set_instructions(common, individual, worker=Crash)
        gate.release()
        names = boss.set_instructions({"value": VALUE}, {"step": list(STEPS)}, worker=Crash)
        report = boss.wait_till_finished(timeout=WAIT)

    assert len(report.tasks) == 1 + len(STEPS)  # nothing of the refused call ran
    first = report[running[0]]
    assert (str(first.status), first.result) == ("done", "running")
    assert [(str(report[n].status), report[n].result) for n in names] == \
        [("done", VALUE + step) for step in STEPS]
