"""Starting and ending the boss process, in the main program: the environment it
starts with, the fail-fast stop for a failure only the main program saw, and what a
Boss handle's finalizer does when the farm is closed or dropped. None of it holds a
reference to the handle, so dropping the handle is enough to end the farm.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from taskfarm._common.errors import BossStateError
from taskfarm._common.messages import Configure, Control, Signal
from taskfarm._common.processes import BOSS_EXIT_WAIT, exits_within
from taskfarm._common.wire import Channel, dumps
from taskfarm._main.events import EventStream
from taskfarm._main.express import ExpressReader
from taskfarm._main.inbox import Inbox
from taskfarm._main.ledger import Ledger
from taskfarm._main.logs import quiet_again
from taskfarm._main.main_copy import start_copy

if TYPE_CHECKING:
    from taskfarm._main.journal import Journal

# How often a wait on the boss checks that it is not stopped (seconds).
STOPPED_CHECK = 1.0


def boss_stopped(pid: int) -> bool:
    """True when the process is stopped (SIGSTOP, a debugger): it reads nothing and
    answers nothing until it is continued."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            state = stat.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state in (b"T", b"t")


def when_full(control: Channel, pid: int, name: str) -> Callable[[bool], None]:
    """What the main program does when the control pipe is full (the boss reads it
    continuously, so only a stopped or very busy boss fills it): wait, and if the boss
    is stopped before any of the message was written, say so instead of hanging. A
    message already begun is never cut: that wait goes on until the boss resumes."""
    poller = select.poll()
    poller.register(control.fd, select.POLLOUT | select.POLLERR)

    def wait(started: bool) -> None:
        while True:
            if not started and boss_stopped(pid):
                raise BossStateError(
                    f"{name}: the boss process (pid {pid}) is stopped (SIGSTOP, or a "
                    "debugger) and cannot take this message; nothing of it was sent: "
                    f"continue it (kill -CONT {pid}) and call again")
            if poller.poll(STOPPED_CHECK * 1000):
                return

    return wait


def stop_right_now(control: Channel, lock: threading.Lock) -> None:
    """Fail-fast for a failure only the main program saw: STOP_RIGHTNOW, if the boss
    still listens. Holds no reference to the Boss handle (see taskfarm._main.inbox).
    Sent from a thread of its own: the thread that found the failure reads the boss's
    messages, and must not wait for the send lock (its holder may be waiting for the
    boss, which may be waiting for the reader)."""

    def send() -> None:
        with lock:
            if not control.closed:
                with contextlib.suppress(OSError, BossStateError):
                    control.send_pickled(dumps(Control(Signal.STOP_RIGHTNOW)))

    threading.Thread(target=send, name="taskfarm-fail-fast", daemon=True).start()


def close_farm(proc: subprocess.Popen[bytes], control: Channel, inbox: Inbox,
           lock: threading.Lock, shared: dict[str, Any], owner: int,
           journal: Journal | None = None, backend: Any = None,
           verbose: bool = False) -> None:
    """Stop the boss if it still runs, wait for it, release the pipes, and let go of
    the SharedArrays given to it (each is removed once nothing else holds it). In a
    process forked from the main program (``os.fork()``) that exits, nothing is done:
    the farm is its parent's, and a STOP_RIGHTNOW down the inherited pipe would stop
    the parent's running tasks. Then the journal is closed, and what the backend
    started for this farm (a Dask cluster) is ended."""
    if os.getpid() != owner:
        return
    with lock:
        if not control.closed:
            control.when_full = None   # a full pipe (a stopped boss): skip, EOF will do
            if not inbox.closed:
                with contextlib.suppress(OSError):
                    control.send_pickled(dumps(Control(Signal.STOP_RIGHTNOW)))
            control.close()  # EOF: the boss stops everything even if the signal was lost
    lingering = inbox.goodbye is not None and inbox.goodbye.reason.startswith("STOP_LISTENING")
    if not lingering:
        if not exits_within(proc.pid, BOSS_EXIT_WAIT):
            proc.kill()
        proc.wait()
    if threading.current_thread() is not inbox.thread and inbox.thread.ident is not None:
        inbox.thread.join(BOSS_EXIT_WAIT)
    if journal is not None and not inbox.thread.is_alive():
        journal.close()   # every ending it will hear of is recorded
    if backend is not None and not lingering:
        backend.close()   # a cluster it started for this farm
    if verbose:
        quiet_again()
    if not lingering:
        shared.clear()


def raise_if_gone(inbox: Inbox, name: str, doing: str, force: bool = False) -> None:
    """Raise why ``doing`` is impossible if the boss is gone: its BossDiedError, or a
    BossStateError saying it exited and why. ``force`` (a write to it just failed):
    wait for the receiver to hear why, and raise in any case."""
    if inbox.died is not None:
        raise inbox.died
    if inbox.goodbye is not None:
        why = inbox.goodbye.reason.splitlines()[0]
        raise BossStateError(f"cannot {doing}: {name} has exited "
                             f"({inbox.goodbye.status}: {why})")
    if force:
        inbox.thread.join(BOSS_EXIT_WAIT)
        raise_if_gone(inbox, name, doing)
        raise BossStateError(f"cannot {doing}: the pipe to {name} is closed")


def start_boss(name: str, ledger: Ledger, events: EventStream, config: Configure,
               express: bool = False
               ) -> tuple[subprocess.Popen[bytes], Channel, Inbox, Configure]:
    """Start the boss process with its two pipes (and, for start_method "main", the
    copy of the main program first: see main_copy.py): its handle, the control
    channel (non-blocking: a stopped boss is an error, not a hang), the inbox that
    reads its reports (its thread not started yet) and the configuration to send it.
    ``express``: a third pipe, which the boss hands to its worker processes for the
    results they write directly (an executor's farm: see _common/express.py).
    Nothing is left behind on failure."""
    copy = start_copy() if config.start_method == "main" else None
    kept: tuple[int, ...] = () if copy is None else (copy.fileno(),)
    config = config._replace(main_copy=kept[0] if kept else None)
    control_r, control_w = os.pipe()
    report_r, report_w = os.pipe()
    express_r, express_w = os.pipe() if express else (-1, -1)
    if express:  # a full pipe fails a worker's write instead of blocking it
        os.set_blocking(express_w, False)
        kept += (express_w,)
        config = config._replace(express_fd=express_w)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "taskfarm._boss", str(control_r), str(report_w),
             str(os.getpid())],
            pass_fds=(control_r, report_w, *kept), stdin=subprocess.DEVNULL,
            env=boss_environment())
    except BaseException:
        os.close(control_w)
        os.close(report_r)
        if express:
            os.close(express_r)
        raise
    finally:
        os.close(control_r)
        os.close(report_w)
        if express:
            os.close(express_w)
        if copy is not None:
            copy.close()   # the boss's now (or nobody's: the copy sees EOF and exits)
    control = Channel(control_w)
    try:
        os.set_blocking(control_w, False)
        control.when_full = when_full(control, proc.pid, name)
        inbox = Inbox(Channel(report_r), proc, ledger, events,
                      ExpressReader(express_r) if express else None)
    except BaseException:  # no finalizer yet: undo the start here
        proc.kill()
        proc.wait()
        control.close()
        os.close(report_r)
        if express:
            os.close(express_r)
        raise
    return proc, control, inbox, config


def boss_environment() -> dict[str, str]:
    env = dict(os.environ)
    # The boss must import taskfarm from where this program imported it.
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join([package_root, *filter(None, [env.get("PYTHONPATH")])])
    return env
