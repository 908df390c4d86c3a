"""Unit tests of the message codec and the pipe framing (taskfarm._common.wire and
taskfarm._common.messages), without any farm process.

Checks: every message kind (nested ones included) round-trips through encode/decode
and through a real pipe; an unknown kind is a ProtocolError and ``unexpected`` names
the kind; several messages in one frame come back one by one (``buffered`` between
them); out-of-band buffers arrive intact; a frame arriving in small pieces is
reassembled; EOF before or inside a frame is an EOFError saying which.

No read here can block for ever: a pipe is read only when its bytes are already in
it, or when a thread writes them and closes its end when done (so a failing writer
gives EOF, never a hang), and every thread is joined with a timeout.
"""

from __future__ import annotations

import os
import pickle
import select
import struct
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import cycle
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskfarm._common import wire
from taskfarm._common.messages import (
    AddTasks,
    Cancel,
    Configure,
    Control,
    Goodbye,
    Notice,
    NoticeKind,
    Outcome,
    Outcomes,
    Release,
    RunTask,
    Signal,
    Skip,
    Skipped,
    Snapshot,
    TaskSpec,
    Watch,
    WorkerClassSpec,
)
from taskfarm._common.processes import ExitInfo
from taskfarm._common.status import TaskStatus

JOIN = 10.0      # seconds: a bound on every thread join, never reached unless broken
HEADER = struct.Struct("!II")   # the documented 8-byte frame header: pickle length, buffers


# ---- sample messages ----------------------------------------------------------------

def _done(tid: int, result: Any = b"\x80\x05K\x01.", buffers: tuple[Any, ...] = ()
          ) -> Outcome:
    return Outcome.done(tid, result, buffers, pid=4242, ticket=1, started=10.0,
                        ended=10.5, peak_rss=50_000_000, cpu=3)


def _failed(tid: int) -> Outcome:
    return Outcome.failed(tid, error_type="ValueError", error_text="bad channel 12",
                          traceback="Traceback (most recent call last):\n  ...",
                          error_blob=b"exception and frames", pid=4243, ticket=0,
                          started=11.0, ended=11.25, peak_rss=None)


def _killed(tid: int) -> Outcome:
    return Outcome.by_boss(tid, TaskStatus.KILLED, "killed by SIGKILL", ended=12.0,
                           pid=4244, ticket=2, started=11.5,
                           exit_info=ExitInfo(None, "SIGKILL"))


def _samples() -> list[wire.Message]:
    """One realistic message of every kind the wire knows."""
    spec = WorkerClassSpec(key=1, qualname="Calibrate", blob=b"cloudpickled class",
                           isolated=False, threads=2)
    tasks = (
        TaskSpec(tid=1, class_key=1, view={"name": "calib_101", "run": 101, "memory": 512}),
        TaskSpec(tid=2, class_key=1, view={"name": "calib_102", "run": 102},
                 after=("calib_101",)),
        TaskSpec(tid=3, class_key=1, view={"name": "calib_103", "run": 103},
                 after=("calib_102",), cancelled="calib_102 failed", payload=b"fn"),
    )
    return [
        Configure(sys_path=["/work", "/opt/lib"], scheduler_blob=b"scheduler",
                  on_error="continue", isolated=False, start_method="spawn",
                  verbose=True, name="boss-7"),
        AddTasks(batch_id=4, classes=(spec,), common_blob=b"common instructions",
                 tasks=tasks, shared=("/psm_1234",)),
        Control(Signal.SEND_REPORT, seq=3),
        RunTask(tid=1, class_key=1, batch_id=4,
                instructions={"name": "calib_101", "run": 101, "scheduler_ticket": 0},
                class_blob=b"class", common_blob=b"common", forget=(1, 2),
                settings={"cpu": 0, "nice": 10}, threads=2, payload=None),
        Skip(tid=7),
        Skipped(tid=7),
        _done(1),
        Outcomes((_done(1), _failed(2), _killed(3),
                  Outcome.by_boss(4, TaskStatus.CANCELLED, "calib_102 failed",
                                  ended=13.0)),
                 (Notice(5, NoticeKind.STARTED, (4242, 0, 14.0)),
                  Notice(5, NoticeKind.EMITTED, b"pickled value"),
                  Notice(-1, NoticeKind.LOG, {"name": "calib", "levelno": 30}))),
        Watch(),
        Cancel(tids=(5, 6)),
        Release(names=("/psm_1234",)),
        Notice(5, NoticeKind.EMITTED, b"pickled value"),
        Snapshot(seq=3, state="running", running=((5, 4242, 0, 14.0), (6, None, None, 14.5))),
        Goodbye(status="finished", reason="every task ended", pending=(8, 9)),
    ]


def _kind(msg: object) -> str:
    return type(msg).__name__


SAMPLES = _samples()


def test_the_samples_cover_every_kind() -> None:
    assert {type(m) for m in SAMPLES} == set(wire._KINDS)


def _assert_same(got: object, sent: object) -> None:
    """Equal, of the same kind, and nested messages rebuilt as their own kind."""
    assert type(got) is type(sent)
    assert got == sent
    if isinstance(sent, AddTasks):
        assert isinstance(got, AddTasks)
        assert [type(t) for t in got.tasks] == [TaskSpec] * len(sent.tasks)
        assert [type(c) for c in got.classes] == [WorkerClassSpec] * len(sent.classes)
    if isinstance(sent, Outcomes):
        assert isinstance(got, Outcomes)
        assert [type(o) for o in got.outcomes] == [Outcome] * len(sent.outcomes)
        assert [type(n) for n in got.notices] == [Notice] * len(sent.notices)


# ---- pipes --------------------------------------------------------------------------

@pytest.fixture
def pipe() -> Iterator[tuple[wire.Channel, wire.Channel]]:
    """(read end, write end) of a fresh pipe; both closed after the test."""
    r, w = os.pipe()
    reader, writer = wire.Channel(r), wire.Channel(w)
    yield reader, writer
    reader.close()
    writer.close()


def _in_thread(work: Callable[[], None], then_close: wire.Channel) -> threading.Thread:
    """Run ``work`` in a thread that closes ``then_close`` (a write end) when done,
    whatever happens, so a reader waiting on it always wakes."""
    def run() -> None:
        try:
            work()
        finally:
            then_close.close()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _join(thread: threading.Thread) -> None:
    thread.join(JOIN)
    assert not thread.is_alive(), "writer thread did not finish"


def _read_to_eof(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def _frame(*msgs: wire.Message) -> bytes:
    """The exact bytes Channel.send_many writes for ``msgs`` (through a real pipe)."""
    r, w = os.pipe()
    writer = wire.Channel(w)
    try:
        thread = _in_thread(lambda: writer.send_many(msgs), writer)
        data = _read_to_eof(r)
        _join(thread)
    finally:
        writer.close()
        os.close(r)
    return data


def _feed(writer: wire.Channel, data: bytes, sizes: Sequence[int]) -> threading.Thread:
    """Write ``data`` in pieces of ``sizes`` (cycled) from a thread, then close."""
    def work() -> None:
        view, pieces = memoryview(data), cycle(sizes)
        while view:
            n = os.write(writer.fd, view[:next(pieces)])
            view = view[n:]
    return _in_thread(work, writer)


# ---- codec --------------------------------------------------------------------------

@pytest.mark.parametrize("msg", SAMPLES, ids=_kind)
def test_every_kind_round_trips_through_encode_and_decode(msg: wire.Message) -> None:
    code, fields = wire.encode(msg)
    assert type(fields) is tuple and wire._KINDS[code] is type(msg)
    _assert_same(wire.decode((code, fields)), msg)


def test_nested_messages_travel_as_plain_tuples() -> None:
    for msg, field in ((SAMPLES[1], 3), (SAMPLES[7], 0)):
        _, fields = wire.encode(msg)
        assert fields[field] and all(type(inner) is tuple for inner in fields[field])


@pytest.mark.parametrize("msg", SAMPLES, ids=_kind)
def test_every_kind_round_trips_through_a_pipe(
        pipe: tuple[wire.Channel, wire.Channel], msg: wire.Message) -> None:
    reader, writer = pipe
    writer.send(msg)   # small: it fits in the pipe, so the write cannot block
    _assert_same(reader.recv(), msg)
    assert not reader.buffered and not reader.poll()


def test_outcome_constructors_fill_their_fields() -> None:
    done, failed, killed = _done(1), _failed(2), _killed(3)
    assert (done.status, done.error_type, done.cpu) == ("done", None, 3)
    assert (failed.status, failed.error_type, failed.result_blob) == ("failed", "ValueError",
                                                                       None)
    assert (killed.status, killed.signal_name, killed.exitcode) == ("killed", "SIGKILL", None)
    assert killed.error_text == "killed by SIGKILL"


@pytest.mark.parametrize("code", [len(wire._KINDS), 99, -1])
def test_an_unknown_kind_is_a_protocol_error(code: int) -> None:
    with pytest.raises(wire.ProtocolError, match="unknown message kind"):
        wire.decode((code, ()))


def test_an_unknown_kind_from_a_pipe_is_a_protocol_error(
        pipe: tuple[wire.Channel, wire.Channel]) -> None:
    reader, writer = pipe
    writer.send_pickled(pickle.dumps([(len(wire._KINDS), (1, 2))], protocol=5))
    with pytest.raises(wire.ProtocolError, match=str(len(wire._KINDS))):
        reader.recv()


def test_unexpected_names_the_message_kind_and_the_receiver() -> None:
    error = wire.unexpected(Skip(3), "the boss")
    assert isinstance(error, wire.ProtocolError)
    assert "Skip" in str(error) and "the boss" in str(error)
    assert "Goodbye" in str(wire.unexpected(SAMPLES[-1], "a worker"))


# ---- framing ------------------------------------------------------------------------

def test_several_messages_in_one_frame_come_back_in_order(
        pipe: tuple[wire.Channel, wire.Channel]) -> None:
    reader, writer = pipe
    sent = [Skip(1), _done(2), Control(Signal.HALT), Skipped(1)]
    writer.send_many(sent)
    for i, msg in enumerate(sent):
        _assert_same(reader.recv(), msg)
        # The rest of the frame is already read: poll() says so, select() could not.
        assert reader.buffered is reader.poll() is (i < len(sent) - 1)
    writer.send_many(sent[:2])
    writer.send(Goodbye("stopped", "asked", ()))
    _assert_same(reader.recv(), sent[0])
    assert reader.buffered
    _assert_same(reader.recv(), sent[1])
    assert reader.buffered   # bytes of the next frame came in the same read
    _assert_same(reader.recv(), Goodbye("stopped", "asked", ()))
    assert not reader.buffered and not reader.poll()


def test_a_frame_header_counts_its_out_of_band_buffers() -> None:
    small = _frame(_done(1, wire.blob(b"r" * 100)))
    length, count = HEADER.unpack(small[:HEADER.size])
    assert count == 0 and len(small) == HEADER.size + length
    big = bytes(wire.OUT_OF_BAND_MIN)
    data = _frame(_done(1, wire.blob(big), (pickle.PickleBuffer(b"b" * 10),)))
    length, count = HEADER.unpack(data[:HEADER.size])
    assert count == 2 and length < 1000   # neither buffer is copied into the pickle
    assert len(data) == HEADER.size + 8 * count + length + len(big) + 10


def test_out_of_band_buffers_arrive_intact(pipe: tuple[wire.Channel, wire.Channel]) -> None:
    reader, writer = pipe
    big = os.urandom(wire.OUT_OF_BAND_MIN + 12345)
    array = np.arange(300_000, dtype=np.float64)
    small = bytearray(b"tail")
    msg = Outcomes((_done(1, wire.blob(big),
                          (pickle.PickleBuffer(array), pickle.PickleBuffer(small))),
                    _failed(2)))
    assert isinstance(wire.blob(big), pickle.PickleBuffer)
    assert wire.blob(b"short") == b"short"    # under the threshold it stays inline
    thread = _in_thread(lambda: writer.send(msg), writer)   # bigger than a pipe holds
    got = reader.recv()
    _join(thread)
    assert isinstance(got, Outcomes) and type(got.outcomes[0]) is Outcome
    done = got.outcomes[0]
    assert bytes(done.result_blob) == big
    first, second = done.result_buffers
    assert np.array_equal(np.frombuffer(first, dtype=np.float64), array)
    assert bytes(second) == b"tail"
    assert got.outcomes[1] == _failed(2)
    with pytest.raises(EOFError):
        reader.recv()   # the thread closed its end


@pytest.mark.parametrize("sizes", [[7], [3, 7], [5, 4096, 1], [65537]],
                         ids=["7-byte", "header-split-3+7", "mixed", "64k+1"])
def test_a_frame_written_in_pieces_is_reassembled(
        pipe: tuple[wire.Channel, wire.Channel], sizes: list[int]) -> None:
    reader, writer = pipe
    sent = [RunTask(tid=1, class_key=1, batch_id=1, instructions={"name": "x", "v": 1},
                    class_blob=b"c" * 300, common_blob=None, forget=()),
            Skip(2), Outcomes((_done(3), _failed(4)))]
    data = _frame(*sent) + _frame(Skipped(2))
    thread = _feed(writer, data, sizes)
    for msg in [*sent, Skipped(2)]:
        _assert_same(reader.recv(), msg)
    with pytest.raises(EOFError, match=r"^channel closed$"):
        reader.recv()
    _join(thread)


@pytest.mark.parametrize("sizes", [[7, 65536, 3, 100_000], [wire.OUT_OF_BAND_MIN // 3]],
                         ids=["mixed", "thirds"])
def test_an_out_of_band_frame_written_in_pieces_is_reassembled(
        pipe: tuple[wire.Channel, wire.Channel], sizes: list[int]) -> None:
    reader, writer = pipe
    big = os.urandom(2 * wire.OUT_OF_BAND_MIN + 1)
    msg = _done(1, wire.blob(big))
    thread = _feed(writer, _frame(msg, Skip(5)), sizes)
    got = reader.recv()
    assert isinstance(got, Outcome) and bytes(got.result_blob) == big
    assert reader.recv() == Skip(5)
    with pytest.raises(EOFError):
        reader.recv()
    _join(thread)


class _Stingy:
    """Stands for the ``os`` module in wire: each read returns at most the next of
    ``sizes`` bytes, so every split of a frame is seen whatever the timing."""

    def __init__(self, sizes: Iterable[int]) -> None:
        self._sizes = cycle(sizes)
        self.reads = 0

    def read(self, fd: int, n: int) -> bytes:
        self.reads += 1
        return os.read(fd, min(n, next(self._sizes)))

    def readv(self, fd: int, buffers: list[memoryview]) -> int:
        self.reads += 1
        return os.readv(fd, [buffers[0][:next(self._sizes)]])

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)


def test_short_reads_split_inside_the_header_are_reassembled(
        pipe: tuple[wire.Channel, wire.Channel], monkeypatch: pytest.MonkeyPatch) -> None:
    reader, writer = pipe
    sent = [Skip(1), _failed(2)]
    data = _frame(*sent)
    os.write(writer.fd, data)   # all of it is in the pipe before the first read
    writer.close()
    stingy = _Stingy([3, 7])    # 3 bytes: the 8-byte header arrives as 3 + 5 (+ 2 more)
    monkeypatch.setattr(wire, "os", stingy)
    for msg in sent:
        _assert_same(reader.recv(), msg)
    assert stingy.reads >= len(data) // 7
    with pytest.raises(EOFError, match=r"^channel closed$"):
        reader.recv()


def test_eof_before_a_frame_is_an_eof_error(pipe: tuple[wire.Channel, wire.Channel]) -> None:
    reader, writer = pipe
    writer.close()
    with pytest.raises(EOFError) as caught:
        reader.recv()
    assert "middle" not in str(caught.value)


@pytest.mark.parametrize("keep", [1, 5, HEADER.size,
                                  HEADER.size + 3, -1],
                         ids=["in-header-1", "in-header-5", "after-header", "in-pickle",
                              "last-byte-missing"])
def test_eof_in_the_middle_of_a_frame_says_so(
        pipe: tuple[wire.Channel, wire.Channel], keep: int) -> None:
    reader, writer = pipe
    data = _frame(Outcomes((_done(1), _failed(2))))
    os.write(writer.fd, data[:keep])
    writer.close()
    with pytest.raises(EOFError, match="in the middle of a message"):
        reader.recv()


def test_eof_in_the_middle_of_an_out_of_band_buffer_says_so(
        pipe: tuple[wire.Channel, wire.Channel]) -> None:
    reader, writer = pipe
    data = _frame(_done(1, wire.blob(bytes(wire.OUT_OF_BAND_MIN))))
    thread = _feed(writer, data[:-100], [1 << 16])
    with pytest.raises(EOFError, match="in the middle of a message"):
        reader.recv()
    _join(thread)


def test_sending_on_a_closed_channel_is_a_broken_pipe(
        pipe: tuple[wire.Channel, wire.Channel]) -> None:
    _, writer = pipe
    writer.close()
    assert writer.closed
    with pytest.raises(BrokenPipeError):
        writer.send(Skip(1))


# ---- property -----------------------------------------------------------------------

_texts = st.text(max_size=40)
_small_messages = st.one_of(
    st.builds(Skip, st.integers(0, 2**40)),
    st.builds(Skipped, st.integers(0, 2**40)),
    st.builds(Control, st.sampled_from(Signal), st.integers(0, 2**31)),
    st.builds(Goodbye, st.sampled_from(["finished", "stopped", "failed"]), _texts,
              st.lists(st.integers(0, 10**6), max_size=5).map(tuple)),
    st.builds(lambda tid, text: _failed(tid)._replace(error_text=text),
              st.integers(0, 2**40), _texts),
    st.builds(lambda tid, blob: _done(tid, blob), st.integers(0, 2**40),
              st.binary(max_size=64)),
    st.builds(lambda tids: Outcomes(tuple(_killed(t) for t in tids)),
              st.lists(st.integers(0, 1000), max_size=4)),
)


@settings(max_examples=60, deadline=None)
@given(msgs=st.lists(_small_messages, min_size=1, max_size=25))
def test_random_small_messages_round_trip_in_one_frame(msgs: list[wire.Message]) -> None:
    r, w = os.pipe()
    reader, writer = wire.Channel(r), wire.Channel(w)
    try:
        writer.send_many(msgs)   # at most a few kB: it fits in the pipe
        writer.close()
        for msg in msgs:
            _assert_same(reader.recv(), msg)
        assert not reader.buffered
        with pytest.raises(EOFError):
            reader.recv()
    finally:
        reader.close()
        writer.close()


def test_select_sees_a_waiting_frame(pipe: tuple[wire.Channel, wire.Channel]) -> None:
    reader, writer = pipe
    assert select.select([reader], [], [], 0)[0] == []
    writer.send(Skip(1))
    assert select.select([reader], [], [], 0)[0] == [reader]   # fileno() is the fd
    assert reader.recv() == Skip(1)


def test_sending_no_message_writes_no_frame(pipe: tuple[wire.Channel, wire.Channel]) -> None:
    reader, writer = pipe
    writer.send_many([])
    writer.send(Skip(7))
    assert reader.recv() == Skip(7) and not reader.buffered
