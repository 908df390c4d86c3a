"""Process mechanics shared by the main program and the boss: starting a child that
dies with its parent, naming how a process ended, and the one termination policy
(SIGTERM, a grace period, SIGKILL, reap) with its timing constants. Knows nothing of
tasks or schedulers.

The termination policy has two forms over the same steps and constants:
:func:`begin_termination` for the boss loop, which must never block (SIGTERM now,
SIGKILL scheduled, the reaping left to the process's sentinel), and :func:`terminate`
for the exit paths, where waiting is the point.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple, NoReturn, TypeVar

from taskfarm._common.waiting import readable

# How long a process gets between SIGTERM and SIGKILL when it is stopped on purpose.
TERMINATE_GRACE = 1.0
# How long the main program waits for the boss to exit on its own at close().
BOSS_EXIT_WAIT = 2.0

_PR_SET_PDEATHSIG = 1

# Sent by the boss to a worker after writing a Skip for a task queued behind the one
# it runs, so that the worker answers while that task still runs (see
# taskfarm._worker.queue). A task must not install a handler of its own for it.
TAKE_BACK_SIGNAL = signal.SIGUSR2

# Where SharedArray segments live, and how their names start (see taskfarm._common.shared_array).
SHM_DIR = "/dev/shm"
SHM_PREFIX = "taskfarm-"


def unlink_shared(names: Iterable[str]) -> None:
    """Remove SharedArray segments by name; one already gone is fine."""
    for name in names:
        if name.startswith(SHM_PREFIX) and "/" not in name:
            try:
                os.unlink(os.path.join(SHM_DIR, name))
            except FileNotFoundError:
                pass


# The variables native thread pools read when they start (OpenMP, OpenBLAS, MKL, ...).
# How worker processes are started (see taskfarm._boss.local).
START_METHODS = ("fork", "spawn", "main")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")

# Set by the boss for its worker processes (they inherit it under fork and spawn alike):
# the run seed (absent: no seeding), and "1" when every task's output is captured.
SEED_VARIABLE = "TASKFARM_SEED"
CAPTURE_VARIABLE = "TASKFARM_CAPTURE"


def flush_std_streams() -> None:
    """Flush stdout and stderr: before a fork (anything buffered would be written
    twice, once by each process) and before ``os._exit``."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, ValueError, OSError):
            pass


def end_forked_child(body: Callable[[], object]) -> NoReturn:
    """In a freshly forked child: run ``body``, then leave without ever returning to
    the parent's code (no ``finally`` of the parent's, no atexit hook, no second
    flush of its buffers): exit 0 when ``body`` returned, 1 when it raised (its
    traceback printed on stderr first)."""
    code = 1
    try:
        body()
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        flush_std_streams()
        os._exit(code)


def close_all_but(*keep: int) -> None:
    """Close every descriptor above stderr except ``keep``: a worker must hold no end
    of the boss's pipes, or the main program would never see them close."""
    low = 3
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, os.sysconf("SC_OPEN_MAX"))


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask Linux to send ``sig`` to this process when its parent thread ends.

    Only safe when the parent is single-threaded (the boss is), since the signal
    follows the thread that forked, not the process.
    """
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the pipe EOF fallback still works
        pass


class ExitInfo(NamedTuple):
    """How a process ended: an exit code, or the signal that killed it."""

    exitcode: int | None
    signal_name: str | None
    why: str = ""   # how it ended, where no exit status says it (a lost Dask worker)

    @classmethod
    def from_wait_status(cls, status: int) -> ExitInfo:
        """Decode a status from ``os.waitpid``."""
        if os.WIFSIGNALED(status):
            return cls(None, signal_name(os.WTERMSIG(status)))
        return cls(os.waitstatus_to_exitcode(status), None)

    def describe(self) -> str:
        """'killed by SIGKILL' or 'exited with code 3' (or why, when known)."""
        if self.why:
            return self.why
        if self.signal_name is not None:
            return f"killed by {self.signal_name}"
        if self.exitcode is None:
            return "ended (how is unknown: the process that reaped it is gone)"
        return f"exited with code {self.exitcode}"


def oom_kills() -> int | None:
    """How many processes the kernel's out-of-memory killer has killed since boot
    (``oom_kill`` in /proc/vmstat, memory-cgroup kills included); None if unknown."""
    try:
        with open("/proc/vmstat", "rb") as vmstat:
            for line in vmstat:
                if line.startswith(b"oom_kill "):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def signal_name(number: int) -> str:
    """SIGKILL for 9; 'signal N' for numbers Python does not name."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def reap(pid: int, block: bool = True) -> ExitInfo | None:
    """Collect a child's exit status (None if it is still running and not ``block``)."""
    try:
        done, status = os.waitpid(pid, 0 if block else os.WNOHANG)
    except ChildProcessError:
        return ExitInfo(None, None)
    if done == 0:
        return None
    return ExitInfo.from_wait_status(status)


def kill_quietly(pid: int, sig: int) -> None:
    """Send a signal to a process that may already be gone."""
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def signal_family(pid: int, sig: int, pidfd: int | None = None) -> None:
    """Send a signal to a worker and to its process group: a worker leads a group of
    its own (see taskfarm._worker.serve), which the processes its tasks start join, so
    they end with it. Called only while ``pid`` is not reaped, so the group id cannot
    belong to anyone else. The worker gets it once: a worker that leads its group
    gets it through the group (a second SIGTERM arriving while the first one's
    StopRequested runs a task's ``finally`` would cut that cleanup short). With its
    ``pidfd``, the worker alone is signalled through it."""
    try:
        leads = os.getpgid(pid) == pid
    except OSError:
        leads = False
    if not leads and pidfd is not None:  # not yet in a group of its own: itself
        with contextlib.suppress(OSError):
            signal.pidfd_send_signal(pidfd, sig)
    elif not leads:
        kill_quietly(pid, sig)
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass  # no such group (yet): the worker alone


def end_descendants(pid: int) -> None:
    """SIGKILL what is left of an ended worker's process group (what its tasks started
    and left running), before the worker is reaped. Waits for the worker itself to
    have exited first (leaving it unreaped): a worker left to finish its task alone
    (STOP_LISTENING) is not cut short."""
    try:
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
    except ChildProcessError:
        pass  # not our child (a zygote's): only its group is ours to end
    _kill_group(pid)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def begin_termination(pid: int, pidfd: int,
                      later: Callable[[float, Callable[[], None]], object]) -> None:
    """Start stopping a child without blocking: SIGTERM now (a task may catch it to
    clean up), and ``later(TERMINATE_GRACE, kill)`` schedules the SIGKILL for one
    that is still there then. The pidfd makes that SIGKILL safe against pid reuse;
    the caller reaps the child when its sentinel fires, and must leave the pidfd open
    until then."""
    signal_family(pid, signal.SIGTERM)

    def kill() -> None:
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        except (ProcessLookupError, PermissionError, OSError):
            pass  # gone (or reaped and its pidfd closed) already
        _kill_group(pid)  # not reaped yet (the caller's promise): the group is its own

    later(TERMINATE_GRACE, kill)  # the caller drops it once the child is reaped


_T = TypeVar("_T")


def still_running(children: Mapping[int, _T], limit: float) -> list[_T]:
    """Wait up to ``limit`` seconds for children (pidfd -> anything) to exit; the
    ones still running then."""
    waiting = dict(children)
    deadline = time.monotonic() + limit
    while waiting:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        for fd in readable(waiting, left):
            waiting.pop(fd)
    return list(waiting.values())


def exits_within(pid: int, limit: float) -> bool:
    """Wait up to ``limit`` seconds for a process to end (through its pidfd: woken the
    instant it does, where ``Popen.wait(timeout)`` polls with growing sleeps); whether
    it has (a process already gone counts)."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return not still_running({pidfd: pid}, limit)
    finally:
        os.close(pidfd)


def terminate(children: Iterable[tuple[int, int]], grace: float = TERMINATE_GRACE,
              reapers: Mapping[int, Callable[[int], ExitInfo]] | None = None
              ) -> dict[int, ExitInfo]:
    """Stop child processes: SIGTERM, wait up to ``grace`` on their pidfds, SIGKILL
    the rest, reap them all. ``children`` are (pid, pidfd) pairs; the pidfds are left
    open for the caller to close. ``reapers`` reap the processes whose parent is not
    this one (workers of a zygote). Returns how each ended."""
    children = list(children)
    for pid, _ in children:
        signal_family(pid, signal.SIGTERM)
    waiting = {fd: pid for pid, fd in children}
    deadline = time.monotonic() + grace
    while waiting:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready = readable(waiting, left)
        for fd in ready:
            waiting.pop(fd)
    for pid in waiting.values():
        kill_quietly(pid, signal.SIGKILL)
    for pid, _ in children:
        end_descendants(pid)
    reapers = reapers or {}
    return {pid: reapers.get(pid, reap)(pid) or ExitInfo(None, None) for pid, _ in children}
