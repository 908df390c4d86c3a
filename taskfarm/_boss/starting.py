"""Starting one worker process, in the boss process: forked from the boss (the boss is
small and imports nothing of the main program), or spawned as a fresh interpreter
(``python -m taskfarm._worker``). Either way the process gets its two pipe ends and
the boss's pid, so that it dies with the boss.
"""

from __future__ import annotations

import os
import sys

from taskfarm._common.processes import flush_std_streams
from taskfarm._worker import serve as worker_process


def fork_worker(task_r: int, result_w: int, express: int | None = None) -> int:
    """A worker forked from the boss; returns its pid (in the boss). ``express``: the
    pipe it writes done results to, straight to the main program (express.py)."""
    flush_std_streams()
    parent = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    worker_process.run_worker(task_r, result_w, parent, express=express)
    return 0  # not reached


def spawn_worker(task_r: int, result_w: int, express: int | None = None) -> int:
    """A worker started as a fresh interpreter with the boss's sys.path; its pid."""
    for fd in (task_r, result_w) if express is None else (task_r, result_w, express):
        os.set_inheritable(fd, True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    argv = [sys.executable, "-m", "taskfarm._worker", str(task_r), str(result_w),
            str(os.getpid()), *(() if express is None else (str(express),))]
    return os.posix_spawn(sys.executable, argv, env)
