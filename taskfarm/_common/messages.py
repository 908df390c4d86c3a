"""Every message that crosses a process boundary. Used by all three kinds of process
(main, boss, worker); how they travel is :mod:`taskfarm._common.wire`.

Messages are immutable named values. They are ``NamedTuple`` rather than frozen
dataclasses because they sit on the hot path of every task: a NamedTuple pickles and
unpickles in half the time of a frozen slotted dataclass (about 3 µs against 6 µs
each way for a task message), and that is a quarter of the per-task budget.

User values (instructions, results, exceptions) are never pickled by this module: the
side that owns them turns them into ``bytes`` blobs first (with cloudpickle where
plain pickle fails), so the boss forwards results without unpickling user classes.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, NamedTuple

from taskfarm._common.processes import ExitInfo
from taskfarm._common.status import TaskStatus

if TYPE_CHECKING:
    from pickle import PickleBuffer


class Signal(enum.Enum):
    """The control signals the main program sends to the boss (see DESIGN)."""

    HALT = "halt"                    # launch nothing new until RESUME
    RESUME = "resume"                # launch again
    SEND_REPORT = "send_report"      # send an interim report now
    END = "end"                      # no more instructions: finish everything, exit
    STOP = "stop"                    # launch nothing more, let running tasks finish, exit
    STOP_LISTENING = "stop_listening"  # exit the loop now; running tasks finish alone
    STOP_RIGHTNOW = "stop_rightnow"  # terminate running tasks now, exit


# ---- main -> boss -------------------------------------------------------------------

class Configure(NamedTuple):
    """First message: how this boss runs."""

    sys_path: list[str]
    scheduler_blob: bytes
    on_error: str           # "raise" or "continue"
    isolated: bool          # a fresh process per task for every class
    start_method: str       # "fork", "spawn" or "main" for worker processes
    verbose: bool
    name: str
    memory_limit: bool = False  # every task may not grow past the memory it declares
    log_level: int = 30     # the main program's level for the "taskfarm" logger
    task_log_level: int = 30  # ... and for "taskfarm.task" (records tasks log)
    seed: int | None = None   # the run seed: each task gets one derived from it
    capture_output: bool = False  # every task's stdout and stderr travel in its report
    max_tasks_per_child: int | None = None  # a pool process is replaced after so many
    started_notices: bool = False  # say when each task starts (see Watch)
    # Where tasks run: None (local processes) or (kind, options), e.g. ("dask", {...}).
    backend: tuple[str, dict[str, Any]] | None = None
    # start_method "main": the boss's descriptor of its socket to the main program's copy
    main_copy: int | None = None
    # An executor's farm: the boss's descriptor of the pipe its worker processes write
    # done calls' results to, straight to the main program (see express.py)
    express_fd: int | None = None


class WorkerClassSpec(NamedTuple):
    """A Worker class the boss may need to ship to worker processes."""

    key: int
    qualname: str
    blob: bytes             # cloudpickled class; the boss never unpickles it
    isolated: bool
    threads: int | None = None  # native thread pools of its tasks (None: the default share)
    memory_limit: bool = False  # its tasks may not grow past the memory they declare
    capture_output: bool = False  # its tasks' stdout and stderr travel in their reports


class TaskSpec(NamedTuple):
    """One instruction set, checked and matched in the main program."""

    tid: int
    class_key: int
    view: dict[str, Any]    # name, builtins, individual values, simple common values
    after: tuple[str, ...] = ()      # prerequisites not known to have ended
    cancelled: str | None = None     # why it must not run (a prerequisite failed)
    # Its individual values that are not simple (functions, arrays, objects),
    # cloudpickled in the main program and unpickled only in the worker: the boss
    # never holds user objects, so every message it handles pickles plainly.
    payload: bytes | None = None


class AddTasks(NamedTuple):
    """A batch of instruction sets sharing one ``common_instructions``."""

    batch_id: int
    classes: tuple[WorkerClassSpec, ...]
    common_blob: bytes
    tasks: tuple[TaskSpec, ...]
    shared: tuple[str, ...] = ()    # SharedArray segments the boss now owns
    # Tasks whose results reached the main program straight from their workers
    # (express.py), perhaps before the boss heard of their ending: a busy worker
    # among these is as good as idle for the tasks given here (Launcher.finishing).
    ended: tuple[int, ...] = ()


class Control(NamedTuple):
    """A control signal; ``seq`` numbers SEND_REPORT requests."""

    signal: Signal
    seq: int = 0


class Watch(NamedTuple):
    """From now on, send a STARTED notice for each task a worker starts (someone in
    the main program reads them: ``Boss.events()``, an Executor, a progress bar),
    holding each ``hold`` seconds and dropping it if the task ends first (its ENDED
    says it started: see _boss/started.py)."""

    started: bool = True
    hold: float = 0.0


class Release(NamedTuple):
    """SharedArray segments no task given so far still needs: the boss forgets them,
    and its worker processes unmap them (main -> boss -> workers)."""

    names: tuple[str, ...]


class Cancel(NamedTuple):
    """Cancel these tasks: pending ones end 'cancelled' at once, running ones are
    stopped as for a timeout and end 'cancelled'; ended ones are left as they are."""

    tids: tuple[int, ...]


# ---- boss -> worker -----------------------------------------------------------------

class RunTask(NamedTuple):
    """Run one task. Class and common blobs ride along the first time a process
    needs them; ``forget`` lists common batches the process may drop."""

    tid: int
    class_key: int
    batch_id: int
    instructions: dict[str, Any]
    class_blob: bytes | None
    common_blob: bytes | None
    forget: tuple[int, ...]
    settings: dict[str, Any] | None = None  # process settings a scheduler asked for
    threads: int | None = None              # the Worker class's own native thread limit
    payload: bytes | None = None            # the task's non-simple values (see TaskSpec)


# Keys a scheduler may set in an instruction set to ask for process settings; the boss
# moves them out of the instructions into RunTask.settings (without the prefix).
SETTING_KEYS = ("taskfarm_cpu", "taskfarm_nice")


class Skip(NamedTuple):
    """Take back a queued task: if it has not started, the worker does not start it
    and answers :class:`Skipped` (the task goes back to pending)."""

    tid: int


# ---- worker -> boss -----------------------------------------------------------------

class Skipped(NamedTuple):
    """The answer to a :class:`Skip` that came in time: the task was not started."""

    tid: int


# ---- worker -> boss -> main ---------------------------------------------------------

class NoticeKind(enum.IntEnum):
    """What a :class:`Notice` says."""

    STARTED = 1   # value: (pid, slot number, time.time()); made by the boss
    EMITTED = 2   # value: the pickled value a task gave to ``emit()``
    LOG = 3       # value: a log record's attributes (dict); tid -1 outside any task


class Notice(NamedTuple):
    """Something about a task, short of its ending: forwarded to the main program in
    the order it happened, ahead of the task's Outcome."""

    tid: int
    kind: int        # a NoticeKind (a plain int on the wire)
    value: Any


class Outcome(NamedTuple):
    """How one task ended. Made by the worker (done, failed) or by the boss (killed,
    timeout, cancelled), forwarded to the main program as it is. Made only through the
    named constructors below."""

    tid: int
    status: str                 # a TaskStatus value (a plain str on the wire)
    result_blob: bytes | None   # pickled result, unpickled only in the main program
    error_blob: bytes | None    # pickled (exception, tblib traceback dict)
    error_type: str | None      # qualified name of the exception type
    error_text: str | None      # str() of the exception, or why the task was cut short
    traceback: str | None       # formatted traceback text from the worker
    pid: int | None
    ticket: int | None
    started: float | None
    ended: float
    peak_rss: int | None        # bytes, the worker process's high-water mark
    exitcode: int | None = None
    signal_name: str | None = None
    cpu: int | None = None      # the CPU the process was pinned to, if it was
    attempts: tuple[tuple[str, str], ...] = ()  # earlier attempts: (ending, why), boss-made
    # Large buffers of the result (numpy data), out of band: never copied into a pickle.
    result_buffers: tuple[Any, ...] = ()
    setup_time: float = 0.0       # setup_process this task waited for (not in its duration)
    cpu_time: float | None = None  # user + system seconds of the task
    stdout: str | None = None     # captured output (capture_output), bounded
    stderr: str | None = None
    # Done, and its result went straight to the main program (express.py): the boss
    # records the ending and forwards nothing.
    expressed: bool = False

    @classmethod
    def done(cls, tid: int, result_blob: bytes | PickleBuffer, buffers: tuple[Any, ...],
             *, pid: int, ticket: int | None, started: float, ended: float,
             peak_rss: int | None, cpu: int | None, setup_time: float = 0.0,
             cpu_time: float | None = None) -> Outcome:
        """task() returned; ``result_blob`` is its pickled value (a PickleBuffer over it
        when large, so that it travels out of band: see wire.blob)."""
        return tuple.__new__(cls, (tid, _DONE, result_blob, None, None, None, None, pid,
                                   ticket, started, ended, peak_rss, None, None, cpu, (),
                                   buffers, setup_time, cpu_time, None, None, False))

    @classmethod
    def failed(cls, tid: int, *, error_type: str, error_text: str,
               traceback: str | None = None, error_blob: bytes | None = None, pid: int,
               ticket: int | None, started: float | None, ended: float,
               peak_rss: int | None, cpu: int | None = None, setup_time: float = 0.0,
               cpu_time: float | None = None) -> Outcome:
        """task() raised (``error_blob``: the exception and its frames, when it could be
        pickled), or its result could not travel."""
        return tuple.__new__(cls, (tid, _FAILED, None, error_blob, error_type, error_text,
                                   traceback, pid, ticket, started, ended, peak_rss, None,
                                   None, cpu, (), (), setup_time, cpu_time, None, None,
                                   False))

    @classmethod
    def by_boss(cls, tid: int, status: TaskStatus, why: str, *, ended: float,
                pid: int | None = None, ticket: int | None = None,
                started: float | None = None, exit_info: ExitInfo | None = None,
                error_type: str | None = None) -> Outcome:
        """An ending the boss decides: killed, timeout or cancelled, with why."""
        exitcode = exit_info.exitcode if exit_info is not None else None
        signal_name = exit_info.signal_name if exit_info is not None else None
        return tuple.__new__(cls, (tid, status.value, None, None, error_type, why, None, pid,
                                   ticket, started, ended, None, exitcode, signal_name, None,
                                   (), (), 0.0, None, None, None, False))


_DONE, _FAILED = TaskStatus.DONE.value, TaskStatus.FAILED.value


# ---- boss -> main -------------------------------------------------------------------

class Outcomes(NamedTuple):
    """Outcomes made since the last flush, in the order they were made, and the
    notices of the same span (each task's notices come before its outcome, in this
    message or an earlier one: the main program handles notices first)."""

    outcomes: tuple[Outcome, ...]
    notices: tuple[Notice, ...] = ()


class Snapshot(NamedTuple):
    """Reply to SEND_REPORT: every outcome made before it has already been sent."""

    seq: int
    state: str                              # "running" or "halted"
    running: tuple[tuple[int, int | None, int | None, float], ...]  # tid, pid, ticket, started
    holding: str = ""    # why the scheduler holds pending work, if it says (``holding``)


class Goodbye(NamedTuple):
    """The boss's last message: why it exits, and which tasks never ran."""

    status: str                 # a ReportStatus value: finished, stopped, failed
    reason: str
    pending: tuple[int, ...]
    cause: str = ""             # "scheduler" when the scheduler's misbehaviour ended it
