"""The worker process: receives RunTask messages from the boss on its own pipe, runs
each with a fresh Worker instance, and sends back one Outcome per task. Runs in worker
processes only.

A worker process holds the Worker classes and common instructions it has been sent,
so each crosses the pipe once per process, and calls a class's ``setup_process`` once,
before the first task of that class. It exits when the boss closes its pipe, and dies
with the boss (parent-death signal) if the boss dies first.

SIGINT is ignored: Ctrl-C in a terminal reaches the whole process group, and it is the
main program that decides what to stop. SIGTERM (a timeout, STOP_RIGHTNOW, fail-fast)
raises :class:`StopRequested` in the running task, so its ``finally`` blocks run and
then the Worker's ``on_stop`` hook; the process then ends by SIGTERM as it would have.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
import traceback

from taskfarm._common import worker_class
from taskfarm._common.express import write as write_express
from taskfarm._common.logs import LEVEL_VARIABLE, forward_from, log_to_stderr
from taskfarm._common.messages import Outcome
from taskfarm._common.processes import (
    close_all_but,
    die_with_parent,
    end_forked_child,
    flush_std_streams,
)
from taskfarm._common.status import TaskStatus
from taskfarm._common.wire import Channel
from taskfarm._common.worker_class import Worker
from taskfarm._worker import lease, memory_limit
from taskfarm._worker.queue import TaskQueue
from taskfarm._worker.run import (
    ProcessState,
    StopRequested,
    end_by_sigterm,
    keep_blobs,
    run_task,
    stop_requested,
)
from taskfarm._worker.sender import Sender

_DONE = TaskStatus.DONE.value


def serve(task_conn: Channel, result_conn: Channel,
          preloaded: dict[int, type[Worker]] | None = None, express: int | None = None
          ) -> None:
    """Run tasks until the boss closes the task pipe. A worker forked by a zygote
    (isolated mode) has its class ``preloaded``. ``express``: a pipe to the main
    program for the results of tasks that end done (see :func:`_express`).

    The boss may queue tasks behind the one running (so that the next one starts
    without waiting for the boss) and take them back before they start: see
    :mod:`taskfarm._worker.queue`.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, stop_requested)
    # A program a task starts inherits none of its pipes (a spawned worker got them
    # inheritable, and the express pipe is inheritable in the boss).
    for fd in (task_conn.fd, result_conn.fd, *(() if express is None else (express,))):
        os.set_inheritable(fd, False)
    # A process group of its own: what its tasks start joins it, and the boss ends the
    # group with the worker (a timeout, a stop, its death, the end of the farm).
    os.setpgid(0, 0)
    sender = Sender(result_conn)
    state = ProcessState(sender)
    if preloaded:
        state.classes.update(preloaded)
    worker_class.emitter = state.emit
    level = os.environ.get(LEVEL_VARIABLE, "")
    forward_from(state.forward_log, int(level) if level.isdigit() else logging.WARNING)
    lease.express_fd, lease.notices = express, lambda: state.notices
    queue = TaskQueue(task_conn, sender)
    queue.on_drop = functools.partial(keep_blobs, state)
    queue.listen()
    send = sender.send
    while True:
        try:
            msg = queue.next()
        except (EOFError, OSError):
            _tear_down(state)
            return
        except StopRequested:  # stopped while idle
            end_by_sigterm()
        limit = msg.settings.get("memory_limit") if msg.settings else None
        lift = memory_limit.impose(limit) if limit else None
        queue.running = True
        notices = state.notices
        try:
            outcome = run_task(state, msg)
        finally:
            queue.running = False
            if lift is not None:
                lift()
        if limit and outcome.error_type == "builtins.MemoryError":
            outcome = Outcome.by_boss(
                msg.tid, TaskStatus.KILLED,
                f"over its memory limit: it declared memory={limit:g} MiB and tried to "
                f"grow past it (MemoryError: {outcome.error_text})",
                ended=outcome.ended, pid=state.pid, started=outcome.started,
                ticket=msg.instructions.get("scheduler_ticket"),
                error_type="taskfarm.WorkerKilledError")
        if os.getpid() != state.pid:  # a copy the task forked returned: it says nothing
            flush_std_streams()
            os._exit(0)
        if express is not None and outcome.status == _DONE and state.notices == notices:
            outcome = _express(express, outcome)
        try:
            send(outcome)
        except OSError:
            return
        finally:
            del msg, outcome


def _express(fd: int, outcome: Outcome) -> Outcome:
    """A done outcome whose result goes straight to the main program when it fits in
    one frame (taskfarm/_common/express.py); the boss then gets it without the result.
    Only for a task that sent no notice (a log record, an emitted value): those travel
    through the boss, and its result must not overtake them. Captured output and
    out-of-band buffers take the usual way too."""
    result = outcome.result_blob
    if type(result) is bytes and not outcome.result_buffers and outcome.stdout is None \
            and outcome.stderr is None and write_express(fd, outcome.tid, result):
        return outcome._replace(result_blob=None, expressed=True)
    return outcome


def _tear_down(state: ProcessState) -> None:
    """The process ends normally: each class it set up releases what it took. The
    boss may no longer read this process: records logged now, and an error, are
    printed on its stderr."""
    if state.set_up:
        log_to_stderr()
    for key in sorted(state.set_up):
        cls = state.classes.get(key)
        if cls is None or cls.teardown_process.__func__ is Worker.teardown_process.__func__:  # type: ignore[attr-defined]
            continue
        try:
            cls.teardown_process()
        except StopRequested:
            end_by_sigterm()
        except BaseException:
            text = traceback.format_exc()
            print(f"taskfarm: {cls.__qualname__}.teardown_process() raised in worker process "
                  f"{state.pid}:\n{text}", file=sys.stderr, end="", flush=True)


def run_worker(task_r: int, result_w: int, parent: int,
               preloaded: dict[int, type[Worker]] | None = None,
               express: int | None = None) -> None:
    """In a freshly forked worker process: keep only its pipe ends, die with its
    parent (``parent``, its pid before the fork), serve tasks, then exit without
    returning to the parent's code."""

    def run() -> None:
        close_all_but(task_r, result_w, *(() if express is None else (express,)))
        die_with_parent()
        if os.getppid() != parent:  # it died before the death signal was set: so do we
            return
        serve(Channel(task_r), Channel(result_w), preloaded, express)

    end_forked_child(run)


def main(argv: list[str]) -> None:
    """Entry point for the 'spawn' start method: ``python -m taskfarm._worker
    TASK_FD RESULT_FD BOSS_PID [EXPRESS_FD]``."""
    task_fd, result_fd, boss_pid, *express = (int(a) for a in argv)
    die_with_parent()
    if os.getppid() != boss_pid:  # the boss died before the death signal was set
        return
    serve(Channel(task_fd), Channel(result_fd), None, express[0] if express else None)

