"""What the main program has heard from its boss. Runs in the main program, in the
receiver thread that drains the report pipe and in the threads that read from it.

The receiver thread reads every message the boss sends as soon as it is sent, so the
boss never blocks on a full pipe while the main program is busy elsewhere, and turns
each outcome into a :class:`TaskReport`. It holds no reference to the ``Boss`` handle,
so dropping the handle is enough to end the farm.

A thread that waits for a report (``as_completed``) reads the pipe itself when the
receiver is not in the middle of a message (:meth:`Inbox.pump`): a hand-over from one
thread to another costs more here than a hop between processes (about 120 µs against
50 µs on a 2-core virtual machine), and the one-task round trip has one hop fewer.
Whoever holds ``read_lock`` reads one whole message; SIGINT is held back meanwhile so
that Ctrl-C can never leave half a message read.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import tblib

from taskfarm._common.errors import BossDiedError, RemoteTaskError, WorkerKilledError
from taskfarm._common.messages import Goodbye, Notice, NoticeKind, Outcome, Outcomes, Snapshot
from taskfarm._common.processes import exits_within, signal_name
from taskfarm._common.status import TaskStatus
from taskfarm._common.waiting import readable
from taskfarm._common.wire import Channel, unexpected
from taskfarm._main.events import EventKind, EventStream, TaskEvent
from taskfarm._main.express import ExpressReader
from taskfarm._main.interrupts import sigint_held
from taskfarm._main.ledger import Ledger, TaskRecord
from taskfarm._main.logs import reemit_record
from taskfarm._main.report import TaskReport

_LOG = logging.getLogger("taskfarm")

# How long the receiver thread stays aside after a thread last read for itself.
READ_LEASE = 0.05
# How long it stays aside for a thread counted as reading for itself that has not
# been seen to since: a count left behind by a Ctrl-C at the wrong bytecode (Python
# cannot make the count and its way out one step) costs this delay, never a hang.
STALE_READER = 0.1


class Inbox:
    """Reports, snapshots and the goodbye received from one boss, behind a condition."""

    def __init__(self, conn: Channel, proc: subprocess.Popen[bytes], ledger: Ledger,
                 events: EventStream, express: ExpressReader | None = None) -> None:
        self.conn = conn
        # An executor farm's results written by its workers directly (express.py):
        # read by whichever thread reads the report pipe, drained before the goodbye.
        self.express = express
        self.proc = proc
        self.ledger = ledger
        self.events = events
        self.cond = ledger.cond
        # Called (in whichever thread reads) when a task the boss saw done fails here
        # (its result cannot be unpickled): under fail-fast, the farm must stop.
        self.on_local_failure: Callable[[], None] | None = None
        self.snapshots: dict[int, Snapshot] = {}
        # Values tasks emitted, until their report takes them (keep_reports only);
        # touched only by the thread holding read_lock.
        self.emitted: dict[int, list[Any]] = {}
        self.goodbye: Goodbye | None = None
        self.died: BossDiedError | None = None
        self.read_lock = threading.Lock()  # held by whoever reads a message from ``conn``
        # Threads reading for themselves (see reading()); the receiver steps aside for
        # them, woken out of its poll() by a byte on the wake pipe.
        self.pumping = 0
        self.handled = 0      # messages handled so far, by any thread (see pump())
        self.parked = False   # the receiver is waiting in _step_aside
        self.lease = 0.0      # until when it stays aside after the last such thread left
        self.touched = 0.0    # when such a thread last began to read (STALE_READER)
        self.park = threading.Condition(threading.Lock())
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self.thread = threading.Thread(target=self._run, name="taskfarm-receiver", daemon=True)

    @property
    def closed(self) -> bool:
        """True once the boss has said goodbye or died."""
        return self.goodbye is not None or self.died is not None

    def _run(self) -> None:
        conn, wake = self.conn, self._wake_r
        try:
            while not self.closed:
                self._step_aside()
                if not conn.buffered and not self.closed:
                    ready = readable(self._fds(conn.fd, wake), None)
                    if wake in ready:  # a thread wants to read: step aside
                        os.read(wake, 512)
                        continue
                    if conn.fd not in ready:  # only the express pipe
                        self._drain_express()
                        continue
                with self.read_lock:
                    self._read_one()
        except OSError:
            self._gone()
        except BaseException as exc:  # a bug here must not leave waiters hanging
            self._gone(BossDiedError(f"the main program could not read the boss's messages "
                                     f"({type(exc).__name__}: {exc}); the farm is stopped",
                                     self.proc.pid))
        finally:
            # Only this thread closes the pipes; none is written to as it does (park).
            with self.read_lock, self.park:
                conn.close()
                if self.express is not None:
                    self.express.close()
                os.close(self._wake_w)
                os.close(wake)
                self._wake_w = -1

    def _step_aside(self) -> None:
        """Wait while a thread reads for itself, or read for itself recently (it
        will likely be back soon: waking this thread each time would cost more than
        it saves). After READ_LEASE seconds without one, drain again."""
        with self.park:
            while not self.closed:
                if self.pumping and time.monotonic() - self.touched < STALE_READER:
                    self.parked = True
                    self.park.wait(READ_LEASE)
                    continue
                left = self.lease - time.monotonic()
                if left <= 0:
                    break
                self.parked = True
                self.park.wait(left)
            self.parked = False

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """While in this block the calling thread reads messages itself
        (:meth:`pump`) and the receiver thread steps aside. The park lock is taken
        with Ctrl-C held back, so a Ctrl-C never leaves it held; one as the thread is
        counted in is raised once it is, inside the block that counts it out; one
        just before the count-out leaves a count behind, which delays the receiver
        by STALE_READER at most."""
        counted = False
        try:
            with sigint_held, self.park:
                self.pumping += 1
                counted = True
                self.touched = time.monotonic()
                if not self.parked and self._wake_w >= 0:
                    with contextlib.suppress(OSError):  # full: it is awake already
                        os.write(self._wake_w, b".")
            yield
        finally:
            if counted:  # the lock taken only with Ctrl-C held back: never left held
                with sigint_held, self.park:
                    self.pumping -= 1
                    self.lease = time.monotonic() + READ_LEASE

    def pump(self, timeout: float | None, seen: int) -> bool:
        """Read and handle one message in this thread (inside :meth:`reading`),
        waiting up to ``timeout`` seconds for it. ``seen`` is :attr:`handled` when the
        caller last looked: if another thread has handled a message since, return at
        once so the caller looks again. False when nothing came in time."""
        self.touched = now = time.monotonic()
        deadline = None if timeout is None else now + timeout
        if not self.read_lock.acquire(timeout=-1 if timeout is None else timeout):
            return False  # another thread reads; what it reads is in the reports
        try:
            conn = self.conn
            if self.closed or self.handled != seen:
                return True
            if not conn.buffered:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                ready = readable(self._fds(conn.fd), left)
                if not ready:
                    return False
                if conn.fd not in ready:
                    self._drain_express()
                    return True
            self._receive()
            return True
        finally:
            self.read_lock.release()

    def _fds(self, *fds: int) -> tuple[int, ...]:
        """These descriptors, and the express pipe's while it is open."""
        express = self.express
        return fds if express is None or express.ended else (*fds, express.fd)

    def _drain_express(self) -> None:
        express = self.express
        if express is not None:
            with sigint_held:
                express.drain()

    def _read_one(self) -> None:
        """With ``read_lock`` held: read and handle one message if one is still there
        (another thread may have taken it since the receiver saw it come)."""
        conn = self.conn
        if not self.closed and (conn.buffered or readable((conn.fd,), 0)):
            self._receive()

    def _receive(self) -> None:
        """With ``read_lock`` held and a message there: read and handle it."""
        # Ctrl-C waits until the message is read and handled: neither half a message
        # nor a report read but not yet kept can be lost to it.
        with sigint_held:
            try:
                msg = self.conn.recv()
                try:
                    while isinstance(msg, Outcomes) and self._more():
                        # Outcomes already read are handled as one batch (one journal
                        # commit, one wake-up of the waiters): no wait for any.
                        following = self.conn.recv()
                        if not isinstance(following, Outcomes):
                            self._handle(msg)
                            msg = following
                            break
                        msg = Outcomes(msg.outcomes + following.outcomes,
                                       msg.notices + following.notices)
                except (EOFError, OSError):
                    self._handle(msg)   # what was read whole is kept before the end
                    raise
                self._handle(msg)
            except (EOFError, OSError):
                self._gone()

    def _more(self) -> bool:
        """The start of a next message is already read (no system call to ask)."""
        return self.conn.buffered

    def _handle(self, msg: Any) -> None:
        with self.cond:
            self.handled += 1
        if isinstance(msg, Outcomes):
            records = self.ledger.records
            events = self._notice_events(msg.notices) if msg.notices else []
            outcomes = msg.outcomes
            if self.express is not None:
                # A result a worker wrote directly was written before the boss heard
                # the task end (killed, timed out, stopped after writing): read it first.
                if any(o.status != TaskStatus.DONE for o in outcomes):
                    self._drain_express()
                # A call settled by its express result already (looked up once: the
                # receiver may drain the express pipe meanwhile, without read_lock).
                pairs = [(o, r) for o in outcomes if (r := records.get(o.tid)) is not None]
            else:
                pairs = [(o, records[o.tid]) for o in outcomes]
            outcomes = tuple(o for o, _ in pairs)
            ended = [TaskEvent(EventKind.ENDED, o.tid, r.name, self._report(o, r))
                     for o, r in pairs]
            events.extend(ended)
            if events:
                self.events.publish(events)
            if self.on_local_failure is not None and any(
                    o.status == TaskStatus.DONE and e.report is not None and not e.report.ok
                    for o, e in zip(outcomes, ended, strict=True)):
                self.on_local_failure()
        elif isinstance(msg, Snapshot):
            with self.cond:
                self.snapshots[msg.seq] = msg
                self.cond.notify_all()
        elif isinstance(msg, Goodbye):
            # Every result a worker wrote directly was written before the boss heard
            # of its ending, so before this goodbye: all are read first.
            self._drain_express()
            with self.cond:
                self.goodbye = msg
                self.cond.notify_all()
            with self.park:  # the receiver may be aside: let it end now
                self.park.notify_all()
        else:
            raise unexpected(msg, "the main program")

    def _gone(self, died: BossDiedError | None = None) -> None:
        """The pipe reached its end without a goodbye: the boss died (or ``died`` says
        what else ended the reading)."""
        if self.closed:
            return
        self._drain_express()   # results the workers wrote before the end are kept
        died = died or self._death()
        with self.cond:
            if self.goodbye is None:
                self.died = died
            self.cond.notify_all()
        with self.park:
            self.park.notify_all()

    def _death(self) -> BossDiedError:
        code = self.proc.wait() if exits_within(self.proc.pid, 1.0) else None
        pid = self.proc.pid
        if code is not None and code < 0:
            name = signal_name(-code)
            return BossDiedError(f"the boss process (pid {pid}) was killed by {name}; its "
                                 "workers were stopped with it", pid, None, name)
        return BossDiedError(f"the boss process (pid {pid}) exited unexpectedly (code {code}); "
                             "its workers were stopped with it", pid, code, None)

    def _notice_events(self, notices: tuple[Notice, ...]) -> list[TaskEvent]:
        """Events for the notices of one message; log records are re-emitted here."""
        records = self.ledger.records
        events: list[TaskEvent] = []
        for notice in notices:
            record = records.get(notice.tid)
            if notice.kind == NoticeKind.LOG:
                reemit_record(notice.value, record)
            elif record is None:
                continue
            elif notice.kind == NoticeKind.STARTED:
                pid, slot, started = notice.value
                events.append(TaskEvent(EventKind.STARTED, notice.tid, record.name, pid=pid,
                                        slot=slot, time=started))
            elif notice.kind == NoticeKind.EMITTED:
                value = _unpickle_emitted(notice.value, record.name)
                if self.ledger.keep_reports:
                    self.emitted.setdefault(notice.tid, []).append(value)
                events.append(TaskEvent(EventKind.EMITTED, notice.tid, record.name,
                                        value=value))
        return events

    def _report(self, o: Outcome, record: TaskRecord) -> TaskReport:
        report = TaskReport(record.name, record.worker, record.instructions(),
                            TaskStatus(o.status), None, None, o.traceback, o.pid, o.ticket,
                            o.started, o.ended, o.peak_rss, None, o.exitcode, o.signal_name,
                            o.cpu, list(o.attempts), self.emitted.pop(o.tid, []), o.stdout,
                            o.stderr, o.setup_time, o.cpu_time)
        if o.status == TaskStatus.DONE:
            try:
                report.result = pickle.loads(o.result_blob or b"", buffers=o.result_buffers)
            except BaseException as exc:  # SystemExit from a hostile __reduce__ included
                report.status = TaskStatus.FAILED
                report.exception = RemoteTaskError(
                    f"the result of task {record.name!r} could not be unpickled in the main "
                    f"program: {type(exc).__name__}: {exc}", record.name)
                report.reason = str(report.exception)
        elif o.status == "failed":
            report.exception = _rebuild_exception(o, record.name)
            report.reason = f"{o.error_type}: {o.error_text}"
        elif o.status == "killed":
            report.exception = WorkerKilledError(
                f"task {record.name!r}: {o.error_text}", record.name, o.exitcode,
                o.signal_name, o.pid)
            report.reason = o.error_text
        else:
            report.reason = o.error_text
        report.attempts.append((report.status.value, report.reason or ""))
        return report


def _unpickle_emitted(data: bytes, task_name: str) -> Any:
    """A value a task emitted; one that cannot be unpickled here arrives as the
    RemoteTaskError saying why (and is logged)."""
    try:
        return pickle.loads(data)
    except BaseException as exc:  # SystemExit from a hostile __reduce__ included
        error = RemoteTaskError(f"a value task {task_name!r} emitted could not be "
                                f"unpickled in the main program: {type(exc).__name__}: {exc}",
                                task_name)
        _LOG.warning("%s", error)
        return error


def _rebuild_exception(o: Outcome, task_name: str) -> BaseException:
    return rebuild_exception(o.error_blob, o.error_type, o.error_text, o.traceback,
                             task_name)


def rebuild_exception(error_blob: bytes | None, error_type: str | None,
                      error_text: str | None, traceback: str | None,
                      task_name: str) -> BaseException:
    """The worker's own exception with its frames (from what ``describe`` in
    taskfarm._worker.run made of it), or a RemoteTaskError with its text."""
    if error_blob is not None:
        try:
            exc, tb_dict = pickle.loads(error_blob)
            if isinstance(exc, BaseException):
                return exc.with_traceback(tblib.Traceback.from_dict(tb_dict).as_traceback())
        except Exception:
            pass
    return RemoteTaskError(f"task {task_name!r} raised {error_type}: {error_text}",
                           task_name, traceback, error_type)
