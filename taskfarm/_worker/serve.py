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

import os
import pickle
import resource
import signal
import time
import traceback
from typing import Any, NoReturn, TypeVar

import cloudpickle
import tblib

from taskfarm._common.messages import Outcome, RunTask
from taskfarm._common.processes import (
    THREAD_VARIABLES,
    close_all_but,
    die_with_parent,
    flush_std_streams,
)
from taskfarm._common.status import TaskStatus
from taskfarm._common.wire import Channel, blob
from taskfarm._common.worker_class import Worker
from taskfarm._worker import memory_limit
from taskfarm._worker.queue import TaskQueue

_T = TypeVar("_T")


class StopRequested(BaseException):
    """Raised in a running task when its process is asked to stop (SIGTERM). A
    BaseException, so that ``except Exception`` in a task does not swallow it."""


def _stop_requested(signum: int, frame: Any) -> None:
    raise StopRequested("the task is being stopped (SIGTERM)")


def _end_by_sigterm() -> NoReturn:
    """End the process as SIGTERM would have, so the boss sees the same ending."""
    flush_std_streams()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)
    os._exit(128 + signal.SIGTERM)  # not reached


def dumps_user(value: Any, buffers: list[pickle.PickleBuffer] | None = None) -> bytes:
    """Pickle a user value: plain pickle first (fast), cloudpickle for what it cannot
    do (lambdas, classes from ``__main__``). With ``buffers``, large data that supports
    it (numpy arrays) is left out of the pickle and appended there instead."""
    callback = buffers.append if buffers is not None else None
    try:
        return pickle.dumps(value, protocol=5, buffer_callback=callback)
    except Exception:
        if buffers is not None:
            buffers.clear()
        data: bytes = cloudpickle.dumps(value, protocol=5, buffer_callback=callback)
        return data


def _peak_rss() -> int:
    # ru_maxrss is in KiB on Linux; one cheap system call, no /proc parsing.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class _State:
    """What one worker process keeps between tasks."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.classes: dict[int, type[Worker]] = {}
        # Blobs received but not yet unpickled: the boss sends each once per process, so
        # a blob whose unpickling failed stays here and is tried again by the next task
        # that needs it (that task fails in turn if it fails again), instead of leaving
        # later tasks to a missing entry.
        self.blobs: dict[tuple[str, int], bytes] = {}
        self.set_up: set[int] = set()
        self.commons: dict[int, dict[str, Any]] = {}
        self.cpu: int | None = None
        # Native thread pools: the boss's default share (from the environment the
        # process inherited) until a Worker class asks for another size.
        share = os.environ.get("OMP_NUM_THREADS", "")
        self.default_threads = int(share) if share.isdigit() else None
        self.threads = self.default_threads
        self.nice = os.getpriority(os.PRIO_PROCESS, 0)


def limit_native_threads(threads: int) -> None:
    """Size native thread pools: the environment for pools loaded from now on,
    threadpoolctl for those already loaded. Called only when the size changes."""
    from threadpoolctl import threadpool_limits

    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)
    threadpool_limits(threads)


def apply_settings(state: _State, settings: dict[str, Any]) -> None:
    """Process settings a scheduler asked for: pin to a CPU, lower the priority (a
    process can raise its niceness, never lower it back without privileges)."""
    cpu = settings.get("cpu")
    if cpu is not None and cpu != state.cpu:
        os.sched_setaffinity(0, {cpu})
        state.cpu = cpu
    nice = settings.get("nice")
    if nice is not None and nice > state.nice:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
        state.nice = nice


def run_task(state: _State, msg: RunTask) -> Outcome:
    """Run one task and say how it ended; never raises."""
    started = time.time()
    ticket = msg.instructions.get("scheduler_ticket")
    try:
        if msg.settings:
            apply_settings(state, msg.settings)
        wanted = msg.threads or state.default_threads
        if wanted is not None and wanted != state.threads:
            limit_native_threads(wanted)
            state.threads = wanted
        for batch in msg.forget:
            state.commons.pop(batch, None)
            state.blobs.pop(("common", batch), None)
        if msg.class_blob is not None:
            state.blobs["class", msg.class_key] = msg.class_blob
        if msg.common_blob is not None:
            state.blobs["common", msg.batch_id] = msg.common_blob
        cls = state.classes.get(msg.class_key) or _load(state.classes, state.blobs, "class",
                                                        msg.class_key)
        if msg.batch_id not in state.commons:
            _load(state.commons, state.blobs, "common", msg.batch_id)
        if msg.class_key not in state.set_up:
            cls.setup_process()
            state.set_up.add(msg.class_key)
        if cls.__init__ is Worker.__init__:  # the fast way: no keyword call
            worker = cls.__new__(cls)
            attributes = worker.__dict__
            attributes.update(state.commons[msg.batch_id])
            attributes.update(msg.instructions)
            if msg.payload is not None:
                attributes.update(pickle.loads(msg.payload))
        else:  # a class of its own __init__ gets the instructions as keywords
            payload = pickle.loads(msg.payload) if msg.payload is not None else {}
            worker = cls(**{**state.commons[msg.batch_id], **msg.instructions, **payload})
        try:
            result = worker.task()
        except StopRequested:
            try:
                worker.on_stop()
            finally:
                _end_by_sigterm()
    except StopRequested:  # stopped while loading the class or in setup_process
        _end_by_sigterm()
    except BaseException as exc:  # the task's failure is its report, whatever it is
        return _failure(state, msg.tid, ticket, started, exc)
    ended = time.time()
    buffers: list[pickle.PickleBuffer] = []
    try:
        result_blob = dumps_user(result, buffers)
    except BaseException as exc:
        return Outcome.failed(
            msg.tid, error_type="taskfarm.RemoteTaskError",
            error_text=f"the result ({type(result).__qualname__}) could not be pickled to "
                       f"send it back: {type(exc).__name__}: {exc}",
            pid=state.pid, ticket=ticket, started=started, ended=ended, peak_rss=_peak_rss(),
            cpu=state.cpu)
    return Outcome.done(msg.tid, blob(result_blob), tuple(buffers) if buffers else (),
                        pid=state.pid, ticket=ticket, started=started, ended=ended,
                        peak_rss=_peak_rss(), cpu=state.cpu)


def _load(into: dict[int, _T], blobs: dict[tuple[str, int], bytes], kind: str,
          key: int) -> _T:
    """Unpickle a class or common instructions received earlier; the blob is dropped
    only once that succeeded."""
    value: _T = pickle.loads(blobs[kind, key])
    into[key] = value
    del blobs[kind, key]
    return value


def _failure(state: _State, tid: int, ticket: int | None, started: float,
             exc: BaseException) -> Outcome:
    ended = time.time()
    text = "".join(traceback.format_exception(exc))
    type_name = f"{type(exc).__module__}.{type(exc).__qualname__}"
    try:
        message = str(exc)
    except BaseException:
        message = f"<{type_name} whose str() failed>"
    error_blob: bytes | None
    try:
        error_blob = dumps_user((exc, tblib.Traceback(exc.__traceback__).as_dict()))
        pickle.loads(error_blob)  # an exception whose constructor takes odd arguments fails here
    except BaseException:
        error_blob = None
    return Outcome.failed(tid, error_type=type_name, error_text=message, traceback=text,
                          error_blob=error_blob, pid=state.pid, ticket=ticket,
                          started=started, ended=ended, peak_rss=_peak_rss(), cpu=state.cpu)


def serve(task_conn: Channel, result_conn: Channel,
          preloaded: dict[int, type[Worker]] | None = None) -> None:
    """Run tasks until the boss closes the task pipe. A worker forked by a zygote
    (isolated mode) has its class ``preloaded``.

    The boss may queue tasks behind the one running (so that the next one starts
    without waiting for the boss) and take them back before they start: see
    :mod:`taskfarm._worker.queue`.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _stop_requested)
    # A process group of its own: what its tasks start joins it, and the boss ends the
    # group with the worker (a timeout, a stop, its death, the end of the farm).
    os.setpgid(0, 0)
    state = _State()
    if preloaded:
        state.classes.update(preloaded)
    queue = TaskQueue(task_conn, result_conn)
    queue.listen()
    send = result_conn.send
    while True:
        try:
            msg = queue.next()
        except (EOFError, OSError):
            return
        except StopRequested:  # stopped while idle
            _end_by_sigterm()
        limit = msg.settings.get("memory_limit") if msg.settings else None
        lift = memory_limit.impose(limit) if limit else None
        queue.running = True
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
        try:
            send(outcome)
        except OSError:
            return
        finally:
            del msg, outcome


def run_worker(task_r: int, result_w: int, parent: int,
               preloaded: dict[int, type[Worker]] | None = None) -> None:
    """In a freshly forked worker process: keep only its two pipe ends, die with its
    parent (``parent``, its pid before the fork), serve tasks, then exit without
    returning to the parent's code."""
    code = 1
    try:
        close_all_but(task_r, result_w)
        die_with_parent()
        if os.getppid() != parent:  # it died before the death signal was set: so do we
            return
        serve(Channel(task_r), Channel(result_w), preloaded)
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        flush_std_streams()
        os._exit(code)


def main(argv: list[str]) -> None:
    """Entry point for the 'spawn' start method: ``python -m taskfarm._worker
    TASK_FD RESULT_FD BOSS_PID``."""
    task_fd, result_fd, boss_pid = (int(a) for a in argv)
    die_with_parent()
    if os.getppid() != boss_pid:  # the boss died before the death signal was set
        return
    serve(Channel(task_fd), Channel(result_fd))

