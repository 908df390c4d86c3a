"""Every message that crosses a process boundary, and how it travels. Used by all three
kinds of process (main, boss, worker).

Messages are immutable named values. They are ``NamedTuple`` rather than frozen
dataclasses because they sit on the hot path of every task: a NamedTuple pickles and
unpickles in half the time of a frozen slotted dataclass (about 3 µs against 6 µs
each way for a task message), and that is a quarter of the per-task budget.

Each message goes out as one frame of pickle protocol 5. Large ``bytes`` values
inside a message (a big result, a big common instruction blob) are wrapped in a
``PickleBuffer`` and sent as frames of their own after the header, so they are never
copied into the header pickle: a 500 MB result is written from the buffer it lives in.

User values (instructions, results, exceptions) are never pickled by this module: the
side that owns them turns them into ``bytes`` blobs first (with cloudpickle where
plain pickle fails), so the boss forwards results without unpickling user classes.
"""

from __future__ import annotations

import enum
import pickle
import struct
from multiprocessing.connection import Connection
from typing import Any, NamedTuple

# A bytes value at least this large travels as a frame of its own.
OUT_OF_BAND_MIN = 1 << 20
_COUNT = struct.Struct("!I")


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
    start_method: str       # "fork" or "spawn" for worker processes
    verbose: bool
    name: str


class WorkerClassSpec(NamedTuple):
    """A Worker class the boss may need to ship to worker processes."""

    key: int
    qualname: str
    blob: bytes             # cloudpickled class; the boss never unpickles it
    isolated: bool


class TaskSpec(NamedTuple):
    """One instruction set, checked and matched in the main program."""

    tid: int
    class_key: int
    view: dict[str, Any]    # name, builtins, individual values, simple common values


class AddTasks(NamedTuple):
    """A batch of instruction sets sharing one ``common_instructions``."""

    batch_id: int
    classes: tuple[WorkerClassSpec, ...]
    common_blob: bytes
    tasks: tuple[TaskSpec, ...]


class Control(NamedTuple):
    """A control signal; ``seq`` numbers SEND_REPORT requests."""

    signal: Signal
    seq: int = 0


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


# ---- worker -> boss, boss -> main ---------------------------------------------------

class Outcome(NamedTuple):
    """How one task ended. Made by the worker (done/failed) or by the boss (killed,
    cancelled), forwarded to the main program as it is."""

    tid: int
    status: str                 # a TaskStatus value
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


# ---- boss -> main -------------------------------------------------------------------

class Outcomes(NamedTuple):
    """Outcomes made since the last flush, in the order they were made."""

    outcomes: tuple[Outcome, ...]


class Snapshot(NamedTuple):
    """Reply to SEND_REPORT: every outcome made before it has already been sent."""

    seq: int
    state: str                              # "running" or "halted"
    running: tuple[tuple[int, int | None, int | None, float], ...]  # tid, pid, ticket, started


class Goodbye(NamedTuple):
    """The boss's last message: why it exits, and which tasks never ran."""

    status: str                 # a ReportStatus value: finished, stopped, failed
    reason: str
    pending: tuple[int, ...]


# ---- framing ------------------------------------------------------------------------

def dumps(msg: Any) -> list[bytes | pickle.PickleBuffer]:
    """Frames of one message: a count-prefixed header, then out-of-band buffers."""
    buffers: list[pickle.PickleBuffer] = []
    head = pickle.dumps(msg, protocol=5, buffer_callback=buffers.append)
    return [_COUNT.pack(len(buffers)) + head, *buffers]


def single_frame(body: bytes) -> bytes:
    """The frame of a message pickled by its sender (no out-of-band buffers)."""
    return _COUNT.pack(0) + body


def send(conn: Connection, msg: Any) -> None:
    """Send one message; large blobs inside it are written without a copy."""
    for frame in dumps(msg):
        conn.send_bytes(frame)


def recv(conn: Connection) -> Any:
    """Receive one message sent by :func:`send`. Raises EOFError at end of stream."""
    head = conn.recv_bytes()
    (count,) = _COUNT.unpack_from(head)
    buffers = [conn.recv_bytes() for _ in range(count)]
    return pickle.loads(memoryview(head)[_COUNT.size:], buffers=buffers)


def blob(data: bytes) -> bytes | pickle.PickleBuffer:
    """Mark a large blob for out-of-band transfer (small ones stay inline)."""
    return pickle.PickleBuffer(data) if len(data) >= OUT_OF_BAND_MIN else data
