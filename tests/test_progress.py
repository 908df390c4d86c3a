"""The progress display: a tqdm bar on a terminal (seen through a pseudo-terminal), a
plain line every few seconds elsewhere when asked, nothing when off; its pacing runs on
an injected clock, and a display that fails disables itself without touching the farm."""

from __future__ import annotations

import contextlib
import fcntl
import gc
import io
import os
import select
import signal
import struct
import subprocess
import sys
import termios
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from workers import Add

import taskfarm
from taskfarm._main.events import EventKind, TaskEvent
from taskfarm._main.progress import Progress, wanted

TESTS = Path(__file__).parent
RUN_WITHIN = 30.0   # seconds a whole scripted run may take

# argv[1] is the progress argument. "mixed": six tasks, one failing, run to the end;
# "nap": three long tasks that say when they start, for the test to interrupt.
SCRIPT = textwrap.dedent("""
    import signal, sys, time
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
    sys.path.insert(0, {tests!r})
    import taskfarm
    from schedulers import MaxThreadsScheduler
    from workers import Misbehave

    class Nap(taskfarm.Worker):
        nap: float
        def task(self):
            print("started", flush=True)
            time.sleep(self.nap)

    progress = {{"default": None, "on": True, "off": False}}[sys.argv[1]]
    if sys.argv[2] == "mixed":
        taskfarm.batch_main({{}}, {{"how": ["ok", "ok", "raise", "ok", "ok", "ok"]}},
                            worker=Misbehave, on_error="continue",
                            scheduler=MaxThreadsScheduler(2), progress=progress)
    else:
        taskfarm.batch_main({{"nap": 60.0}}, {{"name": ["a", "b", "c"]}}, worker=Nap,
                            scheduler=MaxThreadsScheduler(2), progress=progress)
""")


# ---- real runs in a child program -----------------------------------------------------


@contextlib.contextmanager
def _program(tmp_path: Path, progress: str, stderr: int,
             mode: str = "mixed") -> Iterator[subprocess.Popen[bytes]]:
    """The scripted batch_main in a child program of its own session, its stdout a pipe;
    whatever happens in the block, the session is gone at the end."""
    script = tmp_path / "main.py"
    script.write_text(SCRIPT.format(tests=str(TESTS)))
    proc = subprocess.Popen([sys.executable, str(script), progress, mode],
                            stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=stderr, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()


def _read(fds: Sequence[int], deadline: float, out: dict[int, bytes],
          until: Callable[[dict[int, bytes]], bool] | None = None) -> None:
    """Add to ``out`` what is written to ``fds`` until ``until(out)`` holds, or else
    until each reaches its end (a pseudo-terminal's master side reads EIO once no
    process holds the other side)."""
    open_fds = set(fds)
    while open_fds and not (until and until(out)):
        left = deadline - time.monotonic()
        assert left > 0, f"not done within {RUN_WITHIN} s: {out}"
        ready, _, _ = select.select(list(open_fds), [], [], left)
        for fd in ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the terminal's last writer is gone
                chunk = b""
            if chunk:
                out[fd] = out.get(fd, b"") + chunk
            else:
                open_fds.discard(fd)


def _run_on_terminal(tmp_path: Path, progress: str, columns: int, mode: str = "mixed",
                     interrupt: bool = False) -> tuple[str, str, int]:
    """Run the script with stderr on a pseudo-terminal ``columns`` wide (0: a terminal
    nobody sized, as under a CI runner), with Ctrl-C once two tasks have started if
    ``interrupt``; return its stdout, what the terminal got and its exit status."""
    master, slave = os.openpty()
    try:
        if columns:
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
        try:
            with _program(tmp_path, progress, slave, mode) as proc:
                os.close(slave)
                slave = -1
                assert proc.stdout is not None
                stdout = proc.stdout.fileno()
                deadline = time.monotonic() + RUN_WITHIN
                out = {master: b"", stdout: b""}
                if interrupt:
                    _read([master, stdout], deadline, out,
                          until=lambda out: out[stdout].count(b"started") >= 2)
                    os.killpg(proc.pid, signal.SIGINT)   # as a terminal does
                _read([master, stdout], deadline, out)
                status = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        finally:
            if slave >= 0:
                os.close(slave)
    finally:
        os.close(master)
    return out[stdout].decode(errors="replace"), out[master].decode(errors="replace"), status


def _run_with_stderr_piped(tmp_path: Path, progress: str) -> tuple[str, str]:
    with _program(tmp_path, progress, subprocess.PIPE) as proc:
        out, err = proc.communicate(timeout=RUN_WITHIN)
        assert proc.returncode == 0, err
    return out.decode(), err.decode()


@pytest.mark.parametrize("columns", [100, 0], ids=["sized", "unsized"])
def test_the_bar_is_shown_on_a_terminal_by_default(tmp_path: Path, columns: int) -> None:
    out, terminal, status = _run_on_terminal(tmp_path, "default", columns)
    assert status == 0 and "taskfarm report: finished" in out
    last = terminal.split("\r")[-2]   # the last draw, then the end of its line
    assert "taskfarm: 100%" in last and "6/6" in last, terminal
    assert "done=5, failed=1" in last and "task/s" in last, terminal
    if columns:
        assert max(len(draw.rstrip()) for draw in terminal.split("\r")) <= columns


def test_progress_off_writes_nothing_even_on_a_terminal(tmp_path: Path) -> None:
    out, terminal, status = _run_on_terminal(tmp_path, "off", 100)
    assert status == 0 and "taskfarm report: finished" in out
    assert terminal == ""


def test_ctrl_c_finishes_the_bar_and_prints_the_partial_report(tmp_path: Path) -> None:
    out, terminal, status = _run_on_terminal(tmp_path, "on", 100, "nap", interrupt=True)
    assert status in (130, -signal.SIGINT)
    assert "taskfarm report: stopped" in out
    bar, _, after = terminal.partition("Traceback")   # KeyboardInterrupt's, on stderr
    assert "/3, done=0, failed=" in bar.split("\r")[-2] and bar.endswith("\r\n"), terminal
    assert "KeyboardInterrupt" in after


def test_a_plain_line_when_asked_without_a_terminal(tmp_path: Path) -> None:
    out, err = _run_with_stderr_piped(tmp_path, "on")
    assert "taskfarm report: finished" in out
    lines = err.splitlines(keepends=True)   # the last one, and any a slow run made before
    assert lines[-1].startswith("taskfarm: 5/6 done, 1 failed, after ")
    assert all(line.startswith("taskfarm: ") and line.endswith(" s\n") for line in lines)
    assert "\r" not in err


def test_nothing_by_default_without_a_terminal(tmp_path: Path) -> None:
    out, err = _run_with_stderr_piped(tmp_path, "default")
    assert "taskfarm report: finished" in out
    assert err == ""


def test_run_as_server_shows_progress_until_the_boss_is_dropped(
        capsys: pytest.CaptureFixture[str]) -> None:
    boss = taskfarm.run_as_server({}, {"x": [1, 2, 3]}, worker=Add, progress=True)
    boss.wait_till_finished(timeout=RUN_WITHIN)
    boss.close()
    assert capsys.readouterr().err == ""   # a quick run: no line before the last one
    del boss
    gc.collect()
    assert capsys.readouterr().err.startswith("taskfarm: 3/3 done, 0 failed, after ")


# ---- the display alone, driven by events and a clock -----------------------------------


class Clock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _queued(*tids: int) -> list[TaskEvent]:
    return [TaskEvent(EventKind.QUEUED, tid, f"t{tid}") for tid in tids]


def _started(*tids: int) -> list[TaskEvent]:
    return [TaskEvent(EventKind.STARTED, tid, f"t{tid}") for tid in tids]


def _ended(tid: int, status: taskfarm.TaskStatus = taskfarm.TaskStatus.DONE) -> TaskEvent:
    report = taskfarm.TaskReport(f"t{tid}", "W", {}, status)
    return TaskEvent(EventKind.ENDED, tid, f"t{tid}", report)


def test_plain_lines_come_at_most_every_interval() -> None:
    clock, out = Clock(), io.StringIO()
    progress = Progress(out, terminal=False, interval=5.0, clock=clock)
    progress.on_events(_queued(*range(40)))
    written = []   # when each line was written
    for tid in range(40):   # a task starts every 0.5 s, and the one before it ends
        clock.now += 0.5
        lines = out.getvalue().count("\n")
        progress.on_events(_started(tid) + ([_ended(tid - 1)] if tid else []))
        if out.getvalue().count("\n") > lines:
            written.append(clock.now - 100.0)
    assert written == [5.0, 10.0, 15.0, 20.0]
    lines = out.getvalue().splitlines()
    assert lines[0] == "taskfarm: 9/40 done, 0 failed, 1 running, about 17 s left"
    assert lines[-1] == "taskfarm: 39/40 done, 0 failed, 1 running, about 1 s left"
    progress.close()   # the last line comes whatever the interval
    assert out.getvalue().splitlines()[-1] == "taskfarm: 39/40 done, 0 failed, after 20 s"


def test_the_plain_line_counts_and_estimates_the_time_left() -> None:
    clock, out = Clock(), io.StringIO()
    progress = Progress(out, terminal=False, interval=5.0, clock=clock)
    progress.on_events(_queued(*range(200)))
    progress.on_events(_started(0, 1, 2, 3, 4))
    clock.now += 10.0   # 40 ended in 10 s: 160 more take 40 s
    progress.on_events([*(_ended(tid) for tid in range(100, 137)),
                        *(_ended(tid, taskfarm.TaskStatus.FAILED) for tid in (137, 138, 139)),
                        *_started(5)])
    assert out.getvalue() == "taskfarm: 37/200 done, 3 failed, 6 running, about 40 s left\n"
    assert (progress.done, progress.failed, progress.running) == (37, 3, 6)
    clock.now += 300.0
    progress.close()
    assert out.getvalue().splitlines()[-1] == "taskfarm: 37/200 done, 3 failed, after 5 min"


def test_no_running_count_without_start_notices() -> None:
    clock, out = Clock(), io.StringIO()
    progress = Progress(out, terminal=False, interval=1.0, clock=clock)
    progress.on_events(_queued(1, 2, 3))
    clock.now += 1.0
    progress.on_events([_ended(1)])
    assert progress.running is None
    assert out.getvalue() == "taskfarm: 1/3 done, 0 failed, about 2 s left\n"


@pytest.mark.parametrize("status", [s for s in taskfarm.TaskStatus
                                    if s is not taskfarm.TaskStatus.DONE])
def test_every_ending_but_done_counts_as_failed(status: taskfarm.TaskStatus) -> None:
    progress = Progress(io.StringIO(), terminal=False, clock=Clock())
    progress.on_events([*_queued(1, 2), *_started(1, 2), _ended(1, status), _ended(2)])
    assert (progress.total, progress.done, progress.failed, progress.running) == (2, 1, 1, 0)


def test_the_bar_follows_the_total_and_the_counts() -> None:
    clock, out = Clock(), io.StringIO()
    progress = Progress(out, terminal=True, clock=clock)
    progress.on_events(_queued(1, 2) + _started(1))
    clock.now += 1.0
    progress.on_events([_ended(1), *_queued(3, 4)])   # the total grows as tasks are given
    draws = out.getvalue().split("\r")
    assert "1/4" in draws[-1] and "done=1, failed=0, running=0" in draws[-1]
    progress.close()
    last = out.getvalue().split("\r")[-1]
    assert "1/4" in last and "done=1, failed=0" in last and last.endswith("\n")
    assert "running" not in last   # the last state: nothing is left running


def test_the_bar_is_redrawn_at_most_every_fifth_of_a_second() -> None:
    clock, out = Clock(), io.StringIO()
    progress = Progress(out, terminal=True, clock=clock)
    progress.on_events(_queued(*range(100)))
    for tid in range(100):   # 100 endings in 1 s
        clock.now += 0.01
        progress.on_events([_ended(tid)])
    assert out.getvalue().count("\r") <= 1 + 5
    progress.close()


def test_nothing_is_shown_before_anything_is_given() -> None:
    out = io.StringIO()
    for terminal in (True, False):
        progress = Progress(out, terminal=terminal, clock=Clock())
        progress.on_events(_started(1))
        progress.close()
    assert out.getvalue() == ""


def test_close_is_final_and_safe_to_repeat() -> None:
    clock, out = Clock(), io.StringIO()
    progress = Progress(out, terminal=False, clock=clock)
    progress.on_events(_queued(1))
    progress.close()
    progress.close()
    clock.now += 60.0
    progress.on_events([_ended(1)])
    assert out.getvalue() == "taskfarm: 0/1 done, 0 failed, after 0 s\n"


class BrokenFile(io.StringIO):
    """An output that fails on its first write."""

    def write(self, s: str) -> int:
        raise OSError(28, "No space left on device")


@pytest.mark.parametrize("terminal", [True, False], ids=["bar", "line"])
def test_a_failing_display_disables_itself(terminal: bool) -> None:
    clock = Clock()
    progress = Progress(BrokenFile(), terminal=terminal, interval=0.0, clock=clock)
    progress.on_events(_queued(1, 2))   # the first draw fails: nothing is raised
    assert isinstance(progress.error, OSError)
    clock.now += 1.0
    progress.on_events([_ended(1)])     # ignored from now on
    progress.close()
    assert (progress.total, progress.done) == (2, 0)


def test_progress_defaults_to_whether_stderr_is_a_terminal() -> None:
    master, slave = os.openpty()
    try:
        with open(slave, "w", closefd=False) as terminal:
            assert wanted(None, terminal) and not wanted(False, terminal)
        assert not wanted(None, io.StringIO()) and wanted(True, io.StringIO())
        closed = io.StringIO()
        closed.close()
        assert not wanted(None, closed)
    finally:
        os.close(slave)
        os.close(master)
