"""No orphans: whatever happens to the main program or the boss, every process of the
farm is gone within 2 seconds."""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from workers import Blocker, Gate, Mailbox

import taskfarm
from schedulers import MaxThreadsScheduler

GONE_WITHIN = 2.0
TESTS = Path(__file__).parent

SCRIPT = textwrap.dedent("""
    import os, sys, signal, time
    # A runner started with SIGINT ignored (nohup, a background job) passes that on:
    # this program needs Ctrl-C to raise KeyboardInterrupt, as in a terminal.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.path.insert(0, {tests!r})
    import taskfarm
    from schedulers import MaxThreadsScheduler
    from workers import Blocker, Gate, Mailbox

    gate, mailbox = Gate.__new__(Gate), Mailbox.__new__(Mailbox)
    gate.path, mailbox.path, mailbox._buffer = sys.argv[1], sys.argv[2], b""
    how = sys.argv[3]
    common = {{"gate": gate, "mailbox": mailbox}}
    individual = {{"label": ["a", "b", "c"]}}
    if how == "batch":
        print(os.getpid(), flush=True)
        taskfarm.batch_main(common, individual, scheduler=MaxThreadsScheduler(2), worker=Blocker)
    else:
        boss = taskfarm.run_as_server(common, individual, scheduler=MaxThreadsScheduler(2),
                                      worker=Blocker)
        print(boss.pid, flush=True)
        # "wait": killed here by the test; "exit": ends without closing its boss
        sys.stdin.readline()
""")


def _run(tmp_path: Path, gate: Gate, mailbox: Mailbox,
         how: str) -> tuple[subprocess.Popen[str], int]:
    script = tmp_path / "main.py"
    script.write_text(SCRIPT.format(tests=str(TESTS)))
    proc = subprocess.Popen([sys.executable, str(script), gate.path, mailbox.path, how],
                            stdout=subprocess.PIPE, stdin=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    first = int(proc.stdout.readline())
    return proc, first


@contextlib.contextmanager
def _reaped(proc: subprocess.Popen[str]) -> Iterator[None]:
    """Run the block; whatever happens in it (a failing assertion included), end with
    the program and every process of its session gone."""
    try:
        yield
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=10)


def _worker_pids(mailbox: Mailbox, count: int = 2) -> list[int]:
    return [int(line.split()[2]) for line in mailbox.read(count)]


def _assert_gone(pids: list[int]) -> None:
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=GONE_WITHIN)
    alive = [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"still alive after {GONE_WITHIN} s: {alive}"


def test_main_program_killed_by_sigkill(tmp_path: Path, gate: Gate, mailbox: Mailbox) -> None:
    proc, boss_pid = _run(tmp_path, gate, mailbox, "wait")
    with _reaped(proc):
        workers = _worker_pids(mailbox)
        proc.kill()
    _assert_gone([boss_pid, *workers])


def test_main_program_ends_without_closing_its_boss(tmp_path: Path, gate: Gate,
                                                    mailbox: Mailbox) -> None:
    proc, boss_pid = _run(tmp_path, gate, mailbox, "exit")
    with _reaped(proc):
        workers = _worker_pids(mailbox)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.wait(timeout=10) == 0
    _assert_gone([boss_pid, *workers])


def test_ctrl_c_during_batch_main_leaves_no_process(tmp_path: Path, gate: Gate,
                                                    mailbox: Mailbox) -> None:
    proc, main_pid = _run(tmp_path, gate, mailbox, "batch")
    with _reaped(proc):
        workers = _worker_pids(mailbox)
        family = [p.pid for p in psutil.Process(main_pid).children(recursive=True)]
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal does: the whole process group
        out, _ = proc.communicate(timeout=10)
        assert proc.returncode in (130, -signal.SIGINT)
        assert "taskfarm report: stopped" in out  # the partial report
    _assert_gone([*family, *workers])


def test_sigterm_during_batch_main_exits_143_after_the_partial_report(
        tmp_path: Path, gate: Gate, mailbox: Mailbox) -> None:
    proc, main_pid = _run(tmp_path, gate, mailbox, "batch")
    with _reaped(proc):
        workers = _worker_pids(mailbox)
        family = [p.pid for p in psutil.Process(main_pid).children(recursive=True)]
        os.kill(main_pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
        assert proc.returncode == 143
        assert "taskfarm report: stopped" in out and "pending" in out
    _assert_gone([*family, *workers])


def test_dropping_the_boss_handle_ends_the_farm(gate: Gate, mailbox: Mailbox) -> None:
    boss = taskfarm.run_as_server({"gate": gate, "mailbox": mailbox}, {"label": ["a", "b"]},
                                  scheduler=MaxThreadsScheduler(2), worker=Blocker)
    pids = [boss.pid, *_worker_pids(mailbox)]
    del boss
    gc.collect()
    _assert_gone(pids)


def test_boss_killed_is_a_clear_error_and_its_workers_go(gate: Gate, mailbox: Mailbox) -> None:
    with taskfarm.run_as_server({"gate": gate, "mailbox": mailbox}, {"label": ["a", "b"]},
                                scheduler=MaxThreadsScheduler(2), worker=Blocker) as boss:
        workers = _worker_pids(mailbox)
        os.kill(boss.pid, signal.SIGKILL)
        with pytest.raises(taskfarm.BossDiedError, match="killed by SIGKILL") as info:
            boss.wait_till_finished(timeout=10)
        assert info.value.signal_name == "SIGKILL" and info.value.pid == boss.pid
        with pytest.raises(taskfarm.BossDiedError):
            boss.set_instructions({"label": "c", "gate": gate, "mailbox": mailbox})
        _assert_gone(workers)

