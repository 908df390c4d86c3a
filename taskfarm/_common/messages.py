"""Every message that crosses a process boundary, and how it travels. Used by all three
kinds of process (main, boss, worker).

Messages are immutable named values. They are ``NamedTuple`` rather than frozen
dataclasses because they sit on the hot path of every task: a NamedTuple pickles and
unpickles in half the time of a frozen slotted dataclass (about 3 µs against 6 µs
each way for a task message), and that is a quarter of the per-task budget.

Messages travel over :class:`Channel`s (one direction of a pipe each) as pickle
protocol 5. Large ``bytes`` values inside a message (a big result, big common
instructions) are wrapped in a ``PickleBuffer`` and written after the header from the
memory they live in, and read straight into their final buffer: a 500 MB result is
never copied into a header pickle nor through a small read buffer.

User values (instructions, results, exceptions) are never pickled by this module: the
side that owns them turns them into ``bytes`` blobs first (with cloudpickle where
plain pickle fails), so the boss forwards results without unpickling user classes.
"""

from __future__ import annotations

import enum
import os
import pickle
import select
import struct
from collections import deque
from typing import Any, NamedTuple


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
    threads: int | None = None  # native thread pools of its tasks (None: the default share)


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
    settings: dict[str, Any] | None = None  # process settings a scheduler asked for
    threads: int | None = None              # the Worker class's own native thread limit
    payload: bytes | None = None            # the task's non-simple values (see TaskSpec)


# Keys a scheduler may set in an instruction set to ask for process settings; the boss
# moves them out of the instructions into RunTask.settings (without the prefix).
SETTING_KEYS = ("taskfarm_cpu", "taskfarm_nice")


class Skip(NamedTuple):
    """Take back a queued task: if it has not started, the worker does not start it
    and answers with a 'skipped' outcome (the task goes back to pending)."""

    tid: int


# ---- worker -> boss, boss -> main ---------------------------------------------------

class Outcome(NamedTuple):
    """How one task ended. Made by the worker (done/failed) or by the boss (killed,
    cancelled), forwarded to the main program as it is."""

    tid: int
    status: str                 # a TaskStatus value, or 'skipped' (worker to boss only)
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


# ---- wire form ----------------------------------------------------------------------
#
# On the wire a message is a plain tuple ``(kind, fields)``: pickling a NamedTuple goes
# through its Python-level ``__reduce_ex__`` and names its class in every pickle, which
# costs four times as much as a plain tuple (2.5 µs against 0.7 µs for an Outcome). The
# NamedTuples inside the hot messages (an Outcomes' outcomes, an AddTasks' tasks) travel
# as plain tuples too. The receiver rebuilds each with ``tuple.__new__``, no call.

_KINDS: tuple[type, ...] = (Configure, AddTasks, Control, RunTask, Skip, Outcome, Outcomes,
                            Snapshot, Goodbye)
_CODES = {kind: code for code, kind in enumerate(_KINDS)}
_ADD_TASKS, _OUTCOMES = _CODES[AddTasks], _CODES[Outcomes]
_new = tuple.__new__


def _plain(msg: Any) -> tuple[int, tuple[Any, ...]]:
    code = _CODES[type(msg)]
    if code == _OUTCOMES:
        return code, (tuple(map(tuple, msg.outcomes)),)
    if code == _ADD_TASKS:
        return code, (*msg[:3], tuple(map(tuple, msg.tasks)), *msg[4:])
    return code, tuple(msg)


def _rebuild(item: tuple[int, tuple[Any, ...]]) -> Any:
    code, fields = item
    if code == _OUTCOMES:
        return Outcomes(tuple([_new(Outcome, o) for o in fields[0]]))
    if code == _ADD_TASKS:
        fields = (*fields[:3], tuple([_new(TaskSpec, t) for t in fields[3]]), *fields[4:])
    return _new(_KINDS[code], fields)


def dumps(*msgs: Any) -> bytes:
    """The pickle of one frame holding ``msgs`` (for :meth:`Channel.send_pickled`), for
    a sender that pickles ahead of sending. Messages hold only simple values and
    bytes: user objects travel as blobs pickled by their owner."""
    return pickle.dumps([_plain(m) for m in msgs], protocol=5)


# ---- framing ------------------------------------------------------------------------
#
# A frame is an 8-byte header (pickle length, number of out-of-band buffers), one
# 8-byte length per buffer, the pickle (a list of messages in wire form), then each
# buffer. With every length known up front, the reader allocates each buffer once and
# reads into it directly.

_HEAD = struct.Struct("!II")      # pickle length, buffer count
_SIZE = struct.Struct("!Q")       # one buffer's length
_READ_CHUNK = 1 << 16
# A bytes value at least this large travels out of band (see blob()).
OUT_OF_BAND_MIN = 1 << 20


class Channel:
    """One end of a pipe carrying framed messages: ``send`` on a write end, ``recv``
    on a read end. Reads are buffered, so a small message costs one system call, and
    several messages may travel in one frame (``send_many``); when some are already
    read, ``buffered`` says so (a ``poll()`` on the descriptor would not see them)."""

    __slots__ = ("_buf", "_ready", "fd")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buf = bytearray()
        self._ready: deque[Any] = deque()   # messages of a frame not yet returned

    def fileno(self) -> int:
        return self.fd

    @property
    def closed(self) -> bool:
        return self.fd < 0

    @property
    def buffered(self) -> bool:
        """True when a next message, or bytes of it, are already read."""
        return bool(self._ready) or bool(self._buf)

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    def send(self, msg: Any) -> None:
        """Send one message; large blobs inside it (see :func:`blob`) are written from
        their own memory, never copied into the header."""
        self.send_many((msg,))

    def send_many(self, msgs: Any) -> None:
        """Send several messages in one frame and one write (one wake-up of the
        reader, one pickle): the boss hands a worker a batch of tasks this way."""
        buffers: list[pickle.PickleBuffer] = []
        head = pickle.dumps([_plain(m) for m in msgs], protocol=5,
                            buffer_callback=buffers.append)
        self.send_pickled(head, [b.raw() for b in buffers])

    def send_pickled(self, head: bytes, buffers: list[memoryview] | None = None) -> None:
        """Send a message its sender pickled itself (with cloudpickle, say)."""
        if self.fd < 0:
            raise BrokenPipeError("channel is closed")
        if not buffers:
            _write_all(self.fd, _HEAD.pack(len(head), 0) + head)
            return
        sizes = b"".join(_SIZE.pack(b.nbytes) for b in buffers)
        _write_all(self.fd, _HEAD.pack(len(head), len(buffers)) + sizes + head)
        for buffer in buffers:
            _write_all(self.fd, buffer)

    def recv(self) -> Any:
        """Receive one message. Raises EOFError when the writer has gone."""
        if self._ready:
            return self._ready.popleft()
        length, count = _HEAD.unpack(self._read(_HEAD.size))
        sizes = [_SIZE.unpack(self._read(_SIZE.size))[0] for _ in range(count)]
        head = self._read(length)
        buffers = [self._read(size) for size in sizes]
        items = pickle.loads(head, buffers=buffers)
        if len(items) > 1:
            self._ready.extend(map(_rebuild, items[1:]))
        return _rebuild(items[0])

    def poll(self) -> bool:
        """True when ``recv`` would not block for the start of a message."""
        if self._ready or self._buf:
            return True
        ready, _, _ = select.select([self.fd], [], [], 0)
        return bool(ready)

    def _read(self, size: int) -> bytes | bytearray:
        buf = self._buf
        if len(buf) >= size:
            data = bytes(buf[:size])
            del buf[:size]
            return data
        if size >= OUT_OF_BAND_MIN:  # read straight into the final buffer
            out = bytearray(size)
            have = len(buf)
            out[:have] = buf
            buf.clear()
            view = memoryview(out)
            while have < size:
                got = os.readv(self.fd, [view[have:]])
                if got == 0:
                    raise EOFError("channel closed in the middle of a message")
                have += got
            return out
        while len(buf) < size:
            chunk = os.read(self.fd, max(_READ_CHUNK, size - len(buf)))
            if not chunk:
                if buf:
                    raise EOFError("channel closed in the middle of a message")
                raise EOFError("channel closed")
            buf += chunk
        data = bytes(buf[:size])
        del buf[:size]
        return data


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def blob(data: bytes) -> bytes | pickle.PickleBuffer:
    """Mark a large blob for out-of-band transfer (small ones stay inline)."""
    return pickle.PickleBuffer(data) if len(data) >= OUT_OF_BAND_MIN else data
