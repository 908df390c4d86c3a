"""How messages travel: the wire form of each message and the framing of a pipe.
Used by all three kinds of process.

Messages travel over :class:`Channel`s (one direction of a pipe each) as pickle
protocol 5. Large ``bytes`` values inside a message (a big result, big common
instructions) are wrapped in a ``PickleBuffer`` and written after the header from the
memory they live in, and read straight into their final buffer: a 500 MB result is
never copied into a header pickle nor through a small read buffer.

A message kind the receiver does not know is a :class:`ProtocolError`, never dropped.
"""

from __future__ import annotations

import array
import fcntl
import os
import pickle
import select
import struct
import termios
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from taskfarm._common.messages import (
    AddTasks,
    Cancel,
    Configure,
    Control,
    Goodbye,
    Notice,
    Outcome,
    Outcomes,
    Release,
    RunTask,
    Skip,
    Skipped,
    Snapshot,
    TaskSpec,
    Watch,
)

Message = (Configure | AddTasks | Control | RunTask | Skip | Skipped | Outcome | Outcomes
           | Snapshot | Goodbye | Watch | Cancel | Notice | Release)


class ProtocolError(Exception):
    """A message of a kind the receiving process does not take: a bug on the sending
    side, reported with the kind's name rather than dropped."""


# ---- wire form ----------------------------------------------------------------------
#
# On the wire a message is a plain tuple ``(kind, fields)``: pickling a NamedTuple goes
# through its Python-level ``__reduce_ex__`` and names its class in every pickle, which
# costs four times as much as a plain tuple (2.5 µs against 0.7 µs for an Outcome). The
# NamedTuples inside the hot messages (an Outcomes' outcomes, an AddTasks' tasks) travel
# as plain tuples too. The receiver rebuilds each with ``tuple.__new__``, no call.

_KINDS: tuple[type[Any], ...] = (Configure, AddTasks, Control, RunTask, Skip, Skipped,
                                 Outcome, Outcomes, Snapshot, Goodbye, Watch, Cancel, Notice,
                                 Release)
_CODES = {kind: code for code, kind in enumerate(_KINDS)}
# Messages holding tuples of other messages, by field name: kind code -> (position of
# that field, kind of the messages in it) for each such field.
_NESTED: dict[int, tuple[tuple[int, type[Any]], ...]] = {
    _CODES[kind]: tuple((kind._fields.index(field), inner) for field, inner in fields)
    for kind, fields in ((AddTasks, (("tasks", TaskSpec),)),
                         (Outcomes, (("outcomes", Outcome), ("notices", Notice))))}
_new = tuple.__new__


def encode(msg: Message) -> tuple[int, tuple[Any, ...]]:
    """The wire form of a message: (kind code, its fields as a plain tuple)."""
    code = _CODES[type(msg)]
    nested = _NESTED.get(code)
    if nested is None:
        return code, tuple(msg)
    fields: list[Any] = list(msg)
    for at, _ in nested:
        fields[at] = tuple(map(tuple, fields[at]))
    return code, tuple(fields)


def decode(item: tuple[int, tuple[Any, ...]]) -> Message:
    """The message whose wire form is ``item``; ProtocolError for an unknown kind."""
    code, fields = item
    if not 0 <= code < len(_KINDS):
        raise ProtocolError(f"unknown message kind {code!r}")
    nested = _NESTED.get(code)
    if nested is not None:
        rebuilt = list(fields)
        for at, inner in nested:
            if at < len(rebuilt):
                rebuilt[at] = tuple([_new(inner, f) for f in rebuilt[at]])
        fields = tuple(rebuilt)
    message: Message = _new(_KINDS[code], fields)
    return message


def unexpected(msg: object, receiver: str) -> ProtocolError:
    """The error for a message a process does not take (see the module docstring)."""
    return ProtocolError(f"{receiver} received a {type(msg).__name__} message, which it "
                         "does not take")


def dumps(*msgs: Message) -> bytes:
    """The pickle of one frame holding ``msgs`` (for :meth:`Channel.send_pickled`), for
    a sender that pickles ahead of sending. Messages hold only simple values and
    bytes: user objects travel as blobs pickled by their owner."""
    return pickle.dumps([encode(m) for m in msgs], protocol=5)


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

    __slots__ = ("_buf", "_poller", "_ready", "fd", "when_full")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buf = bytearray()
        self._ready: deque[Message] = deque()   # messages of a frame not yet returned
        self._poller: select.poll | None = None   # poll(), never select(): fds >= 1024
        # For a non-blocking write end: called when the pipe is full, with whether part
        # of the frame is already written; it waits until the pipe may take more, or
        # raises (only when nothing of the frame was written: a frame is never cut).
        self.when_full: Callable[[bool], None] | None = None

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

    def send(self, msg: Message) -> None:
        """Send one message; large blobs inside it (see :func:`blob`) are written from
        their own memory, never copied into the header."""
        self.send_many((msg,))

    def send_many(self, msgs: Iterable[Message]) -> None:
        """Send several messages in one frame and one write (one wake-up of the
        reader, one pickle): the boss hands a worker a batch of tasks this way."""
        encoded = [encode(m) for m in msgs]
        if not encoded:  # a frame must hold a message: the reader takes the first
            return
        buffers: list[pickle.PickleBuffer] = []
        head = pickle.dumps(encoded, protocol=5,
                            buffer_callback=buffers.append)
        self.send_pickled(head, [b.raw() for b in buffers])

    def send_pickled(self, head: bytes, buffers: list[memoryview] | None = None) -> None:
        """Send a message its sender pickled itself (with cloudpickle, say)."""
        if self.fd < 0:
            raise BrokenPipeError("channel is closed")
        if not buffers:
            self._write_all((_HEAD.pack(len(head), 0) + head,))
            return
        sizes = b"".join(_SIZE.pack(b.nbytes) for b in buffers)
        self._write_all((_HEAD.pack(len(head), len(buffers)) + sizes + head, *buffers))

    def _write_all(self, parts: tuple[bytes | memoryview, ...]) -> None:
        started = False
        if self.when_full is not None:
            size = sum(map(len, parts))
            # A write of at most PIPE_BUF bytes is all or nothing; a larger one that may
            # not fit could be cut by a full pipe: ask before writing any of it.
            if size > select.PIPE_BUF and _pipe_free(self.fd) < size:
                self.when_full(False)
        for part in parts:
            view = memoryview(part)
            while view:
                try:
                    written = os.write(self.fd, view)
                except BlockingIOError:
                    if self.when_full is None:
                        raise
                    self.when_full(started)
                    continue
                started = True
                view = view[written:]

    def recv(self) -> Message:
        """Receive one message. Raises EOFError when the writer has gone."""
        if self._ready:
            return self._ready.popleft()
        length, count = _HEAD.unpack(self._read(_HEAD.size))
        try:  # a header read: any end from here on cuts a frame short
            sizes = [_SIZE.unpack(self._read(_SIZE.size))[0] for _ in range(count)]
            head = self._read(length)
            buffers = [self._read(size) for size in sizes]
        except EOFError:
            raise EOFError("channel closed in the middle of a message") from None
        items = pickle.loads(head, buffers=buffers)
        if len(items) > 1:
            self._ready.extend(map(decode, items[1:]))
        return decode(items[0])

    def poll(self) -> bool:
        """True when ``recv`` would not block for the start of a message."""
        if self._ready or self._buf:
            return True
        if self._poller is None:  # made once: a worker asks before every task
            self._poller = select.poll()
            self._poller.register(self.fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        return bool(self._poller.poll(0))

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


def _pipe_free(fd: int) -> int:
    """Bytes a pipe's write end can take now without blocking."""
    queued = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, queued)
    return int(fcntl.fcntl(fd, _F_GETPIPE_SZ)) - queued[0]


_F_GETPIPE_SZ = 1032   # Linux fcntl: a pipe's capacity


def blob(data: bytes) -> bytes | pickle.PickleBuffer:
    """Mark a large blob for out-of-band transfer (small ones stay inline)."""
    return pickle.PickleBuffer(data) if len(data) >= OUT_OF_BAND_MIN else data
