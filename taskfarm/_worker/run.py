"""Running one task in a worker process: its class and common instructions loaded
(each sent once per process), ``setup_process`` once per class, the task's seed, its
captured output, ``task()`` itself, the ``on_error`` hook, and the Outcome that says
how it ended, with its timing (setup apart from the task) and CPU time. Runs in worker
processes only; the loop around it is :mod:`taskfarm._worker.serve`.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import resource
import signal
import time
import traceback
from typing import Any, NoReturn, TypeVar

# Imported here so that forked workers have it: unpickling a class or function sent
# by value (from __main__) needs it, and so does a result plain pickle cannot take.
from taskfarm._common.by_value import dumps_user
from taskfarm._common.messages import Notice, NoticeKind, Outcome, RunTask
from taskfarm._common.processes import (
    CAPTURE_VARIABLE,
    SEED_VARIABLE,
    THREAD_VARIABLES,
    flush_std_streams,
)
from taskfarm._common.wire import blob
from taskfarm._common.worker_class import Worker
from taskfarm._worker.capture import Capture
from taskfarm._worker.seeding import derive_seed, seed_globals
from taskfarm._worker.sender import Sender

_T = TypeVar("_T")


class StopRequested(BaseException):
    """Raised in a running task when its process is asked to stop (SIGTERM). A
    BaseException, so that ``except Exception`` in a task does not swallow it."""


def stop_requested(signum: int, frame: Any) -> None:
    raise StopRequested("the task is being stopped (SIGTERM)")


def end_by_sigterm() -> NoReturn:
    """End the process as SIGTERM would have, so the boss sees the same ending."""
    flush_std_streams()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)
    os._exit(128 + signal.SIGTERM)  # not reached


def _peak_rss() -> int:
    # ru_maxrss is in KiB on Linux; one cheap system call, no /proc parsing.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class ProcessState:
    """What one worker process keeps between tasks."""

    def __init__(self, sender: Sender) -> None:
        self.pid = os.getpid()
        self.sender = sender
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
        seed = os.environ.get(SEED_VARIABLE, "")
        self.run_seed = int(seed) if seed.isdigit() else None
        if self.run_seed is not None:   # seeding uses numpy: loaded now, not in a task
            import numpy  # noqa: F401
        self.capture_all = os.environ.get(CAPTURE_VARIABLE) == "1"
        self.capture: Capture | None = None
        self.current: int | None = None   # the task running, if any
        self.notices = 0   # sent so far: a task that sent one keeps its result in order

    def emit(self, value: Any) -> None:
        """Worker.emit() in this process: the value goes to the boss at once."""
        tid = self.current
        if tid is None:
            raise RuntimeError("emit() works only while a task runs")
        try:
            data = dumps_user(value)
        except Exception as exc:
            raise TypeError(f"emit() needs a picklable value; {type(value).__qualname__} "
                            f"could not be pickled: {type(exc).__name__}: {exc}") from exc
        self.notices += 1
        self.sender.send(Notice(tid, NoticeKind.EMITTED, data))

    def forward_log(self, fields: dict[str, Any]) -> None:
        """A record logged in this process, for the main program."""
        tid = self.current
        self.notices += 1
        self.sender.send(Notice(-1 if tid is None else tid, NoticeKind.LOG, fields))


def limit_native_threads(threads: int) -> None:
    """Size native thread pools: the environment for pools loaded from now on,
    threadpoolctl for those already loaded. Called only when the size changes."""
    from threadpoolctl import threadpool_limits

    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)
    threadpool_limits(threads)


def apply_settings(state: ProcessState, settings: dict[str, Any]) -> None:
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


def run_task(state: ProcessState, msg: RunTask) -> Outcome:
    """Run one task and say how it ended; never raises."""
    started = time.time()
    ticket = msg.instructions.get("scheduler_ticket")
    setup_time = 0.0
    try:
        cls = _prepare(state, msg)
        if msg.class_key not in state.set_up:
            cls.setup_process()
            state.set_up.add(msg.class_key)
            ready = time.time()
            setup_time, started = ready - started, ready   # not counted in its duration
        worker = _make(state, cls, msg)
        if state.run_seed is not None:   # before the task's clock starts
            if worker.seed is None:
                worker.seed = derive_seed(state.run_seed, worker.name)
            seed_globals(worker.seed)
            started = time.time()
    except StopRequested:  # stopped while loading the class or in setup_process
        end_by_sigterm()
    except BaseException as exc:  # the task's failure is its report, whatever it is
        return _failure(state, msg.tid, ticket, started, exc, setup_time, None)
    capture = state.capture_all or cls.capture_output
    if capture:
        if state.capture is None:
            state.capture = Capture()
        state.capture.start()
    state.current = msg.tid
    cpu_started = time.process_time()
    try:
        try:
            result = worker.task()
        except StopRequested:
            try:
                worker.on_stop()
            finally:
                end_by_sigterm()
        except BaseException as exc:
            _on_error(worker, exc)
            raise
    except BaseException as exc:
        outcome = _failure(state, msg.tid, ticket, started, exc, setup_time,
                           time.process_time() - cpu_started)
    else:
        outcome = _done(state, msg.tid, ticket, started, result, setup_time,
                        time.process_time() - cpu_started)
    finally:
        state.current = None
    if capture:
        assert state.capture is not None
        out, err = state.capture.stop()
        outcome = outcome._replace(stdout=out, stderr=err)
    return outcome


def _prepare(state: ProcessState, msg: RunTask) -> type[Worker]:
    """Apply the process settings the task asks for, and load its class and common
    instructions (sent once per process)."""
    if msg.settings:
        apply_settings(state, msg.settings)
    wanted = msg.threads or state.default_threads
    if wanted is not None and wanted != state.threads:
        limit_native_threads(wanted)
        state.threads = wanted
    keep_blobs(state, msg)
    cls = state.classes.get(msg.class_key) or _load(state.classes, state.blobs, "class",
                                                    msg.class_key)
    if msg.batch_id not in state.commons:
        _load(state.commons, state.blobs, "common", msg.batch_id)
    return cls


def keep_blobs(state: ProcessState, msg: RunTask) -> None:
    """What a task message carries for the process rather than for the task: the
    common batches to drop, and the class and common blobs sent once per process. Also
    applied to a task taken back before it started: the boss counts them as received."""
    for batch in msg.forget:
        state.commons.pop(batch, None)
        state.blobs.pop(("common", batch), None)
    if msg.class_blob is not None and msg.class_key not in state.classes:
        state.blobs["class", msg.class_key] = msg.class_blob
    if msg.common_blob is not None and msg.batch_id not in state.commons:
        state.blobs["common", msg.batch_id] = msg.common_blob


def _make(state: ProcessState, cls: type[Worker], msg: RunTask) -> Worker:
    """The Worker instance of one task, its instructions as attributes."""
    if cls.__init__ is Worker.__init__:  # the fast way: no keyword call
        worker = cls.__new__(cls)
        attributes = worker.__dict__
        attributes.update(state.commons[msg.batch_id])
        attributes.update(msg.instructions)
        if msg.payload is not None:
            attributes.update(pickle.loads(msg.payload))
        return worker
    # A class of its own __init__ gets the instructions as keywords.
    payload = pickle.loads(msg.payload) if msg.payload is not None else {}
    return cls(**{**state.commons[msg.batch_id], **msg.instructions, **payload})


def _on_error(worker: Worker, exc: BaseException) -> None:
    """The Worker's on_error hook; an error it raises is noted on the task's."""
    if type(worker).on_error is Worker.on_error:
        return
    try:
        worker.on_error(exc)
    except StopRequested:
        raise
    except BaseException as hook_exc:
        hook_text = "".join(traceback.format_exception(hook_exc))
        with contextlib.suppress(Exception):
            exc.add_note(f"{type(worker).__qualname__}.on_error() raised in turn:\n"
                         f"{hook_text}")


def _done(state: ProcessState, tid: int, ticket: int | None, started: float, result: Any,
          setup_time: float, cpu_time: float) -> Outcome:
    ended = time.time()
    buffers: list[pickle.PickleBuffer] = []
    try:
        result_blob = dumps_user(result, buffers)
    except BaseException as exc:
        return Outcome.failed(
            tid, error_type="taskfarm.RemoteTaskError",
            error_text=f"the result ({type(result).__qualname__}) could not be pickled to "
                       f"send it back: {type(exc).__name__}: {exc}",
            pid=state.pid, ticket=ticket, started=started, ended=ended, peak_rss=_peak_rss(),
            cpu=state.cpu, setup_time=setup_time, cpu_time=cpu_time)
    return Outcome.done(tid, blob(result_blob), tuple(buffers) if buffers else (),
                        pid=state.pid, ticket=ticket, started=started, ended=ended,
                        peak_rss=_peak_rss(), cpu=state.cpu, setup_time=setup_time,
                        cpu_time=cpu_time)


def _load(into: dict[int, _T], blobs: dict[tuple[str, int], bytes], kind: str,
          key: int) -> _T:
    """Unpickle a class or common instructions received earlier; the blob is dropped
    only once that succeeded."""
    value: _T = pickle.loads(blobs[kind, key])
    into[key] = value
    del blobs[kind, key]
    return value


def _failure(state: ProcessState, tid: int, ticket: int | None, started: float,
             exc: BaseException, setup_time: float, cpu_time: float | None) -> Outcome:
    ended = time.time()
    type_name, message, text, error_blob = describe(exc)
    return Outcome.failed(tid, error_type=type_name, error_text=message, traceback=text,
                          error_blob=error_blob, pid=state.pid, ticket=ticket,
                          started=started, ended=ended, peak_rss=_peak_rss(), cpu=state.cpu,
                          setup_time=setup_time, cpu_time=cpu_time)


def describe(exc: BaseException) -> tuple[str, str, str, bytes | None]:
    """How an exception raised in a task travels: its type's qualified name, its text,
    its formatted traceback, and the pickled (exception, tblib traceback dict) that
    rebuilds it with its frames in the main program (None if it cannot be pickled)."""
    text = "".join(traceback.format_exception(exc))
    type_name = f"{type(exc).__module__}.{type(exc).__qualname__}"
    try:
        message = str(exc)
    except BaseException:
        message = f"<{type_name} whose str() failed>"
    error_blob: bytes | None
    try:
        import tblib  # here: only a failure needs it

        error_blob = dumps_user((exc, tblib.Traceback(exc.__traceback__).as_dict()))
        pickle.loads(error_blob)  # an exception whose constructor takes odd arguments fails here
    except BaseException:
        error_blob = None
    return type_name, message, text, error_blob
