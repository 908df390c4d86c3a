"""Starting and ending the boss process, in the main program: the environment it
starts with, the fail-fast stop for a failure only the main program saw, and what a
Boss handle's finalizer does when the farm is closed or dropped. None of it holds a
reference to the handle, so dropping the handle is enough to end the farm.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
from typing import Any

from taskfarm._common.messages import Control, Signal
from taskfarm._common.processes import BOSS_EXIT_WAIT
from taskfarm._common.wire import Channel, dumps
from taskfarm._main.inbox import Inbox


def stop_right_now(control: Channel, lock: threading.Lock) -> None:
    """Fail-fast for a failure only the main program saw: STOP_RIGHTNOW, if the boss
    still listens. Holds no reference to the Boss handle (see main_inbox)."""
    with lock:
        if not control.closed:
            with contextlib.suppress(OSError):
                control.send_pickled(dumps(Control(Signal.STOP_RIGHTNOW)))


def close_farm(proc: subprocess.Popen[bytes], control: Channel, inbox: Inbox,
           lock: threading.Lock, shared: dict[str, Any], owner: int) -> None:
    """Stop the boss if it still runs, wait for it, release the pipes, and let go of
    the SharedArrays given to it (each is removed once nothing else holds it). In a
    process forked from the main program (``os.fork()``) that exits, nothing is done:
    the farm is its parent's, and a STOP_RIGHTNOW down the inherited pipe would stop
    the parent's running tasks."""
    if os.getpid() != owner:
        return
    with lock:
        if not control.closed:
            if not inbox.closed:
                with contextlib.suppress(OSError):
                    control.send_pickled(dumps(Control(Signal.STOP_RIGHTNOW)))
            control.close()  # EOF: the boss stops everything even if the signal was lost
    lingering = inbox.goodbye is not None and inbox.goodbye.reason.startswith("STOP_LISTENING")
    if not lingering:
        try:
            proc.wait(BOSS_EXIT_WAIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if threading.current_thread() is not inbox.thread and inbox.thread.ident is not None:
        inbox.thread.join(BOSS_EXIT_WAIT)
    if not lingering:
        shared.clear()


def boss_environment() -> dict[str, str]:
    env = dict(os.environ)
    # The boss must import taskfarm from where this program imported it.
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join([package_root, *filter(None, [env.get("PYTHONPATH")])])
    return env
