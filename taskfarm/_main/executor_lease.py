"""Leases, in the main program: the executor's side of a lone call given straight to a
worker process (see :mod:`taskfarm._common.lease` for why, and
:mod:`taskfarm._worker.lease` for the worker's side). Runs in the main program:
:class:`Leases` under the lock of the executor's
:class:`~taskfarm._main.executor_farm.Calls`, :func:`came_back` and
:func:`lease_ended` in the thread that reads the boss's messages (its sink).

A program that submits one call at a time, waiting for each (``submit(...).result()``
in a loop), gives its second such call to the boss as a lease: the lease's task runs
that call first, then the calls the main program writes to the lease's FIFO, each
submitted while nothing else is in flight. The lease holds one worker process the
whole time, so it ends as soon as anything else goes to the boss: a call submitted
while another is in flight (queued for the feeder), a ``map``, ``shutdown``, an
executor that breaks. Ending it is writing its end on the FIFO, behind the call
written before, if any; the lease's task then returns, and its worker process is the
boss's again.

Every call of a lease ends in exactly one state:

- its result comes on the express pipe (``LEASED`` + its number);
- or the lease's task ends with it: the call's result (too large for the express
  pipe), its exception (the task fails as the call would have), or the worker
  process's death (the task, and so that call, ends killed).

A call is written to the lease only once the lease's first call has come back on the
express pipe (the worker reads the FIFO from then on) and while no other call is in
flight: the FIFO never holds more than one call, which is marked running as it is
written (the worker is waiting for it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import tempfile
from typing import TYPE_CHECKING

from taskfarm._common.errors import RemoteTaskError
from taskfarm._common.lease import END, FRAME, LIMIT
from taskfarm._common.status import TaskStatus
from taskfarm._main.executor_outcome import expressed, unpacked
from taskfarm._main.interrupts import sigint_held
from taskfarm._main.report import TaskReport

if TYPE_CHECKING:
    from taskfarm._main.executor_farm import Calls

# The lone calls in a row (each submitted while nothing else was in flight) after
# which the next one opens a lease: a program that waits for each call before the next.
LEASE_AFTER = 2


class Lease:
    """One lease: its FIFO's write end, the name of its task (that of its first call),
    and the call given to it whose result has not come."""

    __slots__ = ("blobs", "ending", "fd", "name", "outstanding", "path", "usable")

    def __init__(self, name: str, path: str, fd: int) -> None:
        self.name, self.path, self.fd = name, path, fd
        self.outstanding: str | None = name
        self.blobs: tuple[bytes, bytes] | None = None   # the outstanding call's, if written
        self.usable = False   # its first call came back by express: the worker reads the FIFO
        self.ending = False   # its end is written

    def write(self, number: int, fn_blob: bytes, args_blob: bytes) -> bool:
        """Write a call on the FIFO; False if it cannot be (too large: the boss takes it)."""
        frame = FRAME.pack(number, len(fn_blob), len(args_blob))
        if len(frame) + len(fn_blob) + len(args_blob) > LIMIT or self.fd < 0:
            return False
        try:
            os.write(self.fd, b"".join((frame, fn_blob, args_blob)))
        except OSError:
            return False
        self.blobs = fn_blob, args_blob
        return True

    def end(self) -> None:
        """Write the lease's end (behind any call written before) and remove the FIFO's
        name: the worker, if it opened it, reads to the end; if not, it finds no FIFO.
        The write end stays open until the lease's task ends (see :meth:`unread`)."""
        if self.ending or self.fd < 0:
            return
        with sigint_held:   # both, or neither: a worker waiting for its end, or the name left
            self.ending = True
            with contextlib.suppress(OSError):
                os.write(self.fd, END)
            with contextlib.suppress(OSError):
                os.unlink(self.path)

    def unread(self) -> bool:
        """Once the lease's task has ended: whether the outstanding call is still in the
        FIFO, never read (so never started: the boss may run it). Closes the FIFO."""
        if self.fd < 0:
            return False
        data = b""
        with contextlib.suppress(OSError):   # EAGAIN: empty
            data = os.read(self.fd, 65536)
        self.close()
        if len(data) < FRAME.size or self.outstanding is None:
            return False
        return f"call-{FRAME.unpack_from(data)[0]}" == self.outstanding

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)


class Leases:
    """The leases of one executor: the current one, and those whose tasks have not
    ended (an ended lease's task runs until it reads its end)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.current: Lease | None = None
        self.live: dict[str, Lease] = {}
        self._streak = 0   # lone calls in a row

    def mode(self) -> str:
        """How the lone call being submitted goes: ``"lease"`` (written to the current
        lease), ``"open"`` (it opens a lease) or ``""`` (to the boss)."""
        lease = self.current
        if lease is not None:
            if lease.usable and lease.outstanding is None:
                return "lease"
            self.revoke()   # its first call was cancelled: the boss takes this one
            return ""
        if not self.enabled:
            return ""
        self._streak += 1
        return "open" if self._streak >= LEASE_AFTER else ""

    def revoke(self) -> None:
        """Something goes to the boss: the current lease ends (see the module
        docstring), and lone calls are counted afresh."""
        self._streak = 0
        lease, self.current = self.current, None
        if lease is not None:
            lease.end()

    def open(self, name: str) -> str | None:
        """A new lease, whose task is the call ``name``: the path of its FIFO, or None
        if no FIFO can be made (leases are then given up)."""
        try:
            path, fd = _fifo()
        except OSError:
            self.enabled = False
            return None
        lease = self.current = self.live[name] = Lease(name, path, fd)
        return lease.path

    def drop(self, name: str) -> None:
        """The lease whose task is ``name`` will never have it (a Ctrl-C stopped its
        giving): forget it, its FIFO closed and removed."""
        lease = self.live.pop(name, None)
        if lease is not None:
            if self.current is lease:
                self.current = None
            lease.end()
            lease.close()

    def came(self, name: str) -> None:
        """The result of call ``name`` came on the express pipe: the lease it was
        given to, if any, may take the next call."""
        for lease in self.live.values():
            if lease.outstanding == name:
                lease.outstanding = None
                lease.usable = True

    def ended(self, lease: Lease) -> tuple[str | None, tuple[bytes, bytes] | None]:
        """A lease's task ended: forget the lease. The call it still had, if any, and
        that call's blobs if it was never read (the boss is to run it)."""
        if self.live.pop(lease.name, None) is None:   # heard of twice
            return None, None
        if self.current is lease:
            self.current = None
        lease.end()
        unread = lease.unread()
        name, lease.outstanding = lease.outstanding, None
        return name, lease.blobs if unread else None

    def close(self) -> None:
        """The executor's farm is gone: close every lease's FIFO."""
        for lease in self.live.values():
            lease.end()
            lease.close()
        self.live.clear()
        self.current = None


def came_back(calls: Calls, name: str, blob: bytes) -> None:
    """A call given to a lease came back on the express pipe (its packed result): its
    future is settled, and the lease may take the next call. In the thread reading the
    express pipe."""
    with calls.lock:
        calls.leases.came(name)
        future, running = calls.take(name)
    if future is not None:
        calls.settle(future, running, *unpacked(blob, name))


def lease_ended(calls: Calls, lease: Lease, report: TaskReport | bytes) -> None:
    """A lease's task ended, as its report says, or done with its result written on
    the express pipe: settle the call it still had, if any (see the module docstring).
    The results its calls wrote on the express pipe before are read first. In the
    thread reading the boss's messages (or the express pipe)."""
    if not isinstance(report, bytes) and calls.drain_express is not None:
        calls.drain_express()
    with calls.lock:
        name, unread = calls.leases.ended(lease)
        if calls.feeder_waiting:   # it may wait for this lease's end, or give its call
            calls.wake.notify()
        if name is None:
            return
        if unread is not None and name in calls.started:   # never started: see ended()
            calls.regive.append((name, *unread))
            return
        future, running = calls.take(name)
    if future is None:
        return
    if isinstance(report, bytes):
        value, exception = expressed(report, name)
    elif report.status is TaskStatus.DONE:
        value, exception = unpacked(report.result, name)
    else:  # the call's own ending: its exception, its process killed...
        calls.end_call(future, running, dataclasses.replace(report, name=name))
        return
    result = None
    if exception is None:
        if type(value) is tuple and len(value) == 2 and f"call-{value[0]}" == name:
            result, exception = unpacked(value[1], name)
        else:  # pragma: no cover - a lease ends with the call it had, or after it
            exception = RemoteTaskError("the call was lost by its lease", name)
    calls.settle(future, running, result, exception)


def _fifo() -> tuple[str, int]:
    """A new FIFO, only this user's, and its write end (non-blocking; open for reading
    too, so that it opens at once and a worker's open never waits)."""
    directory = tempfile.gettempdir()
    while True:
        path = os.path.join(directory, f"taskfarm-lease-{secrets.token_hex(8)}")
        try:
            os.mkfifo(path, 0o600)
        except FileExistsError:
            continue
        try:
            return path, os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            os.unlink(path)
            raise
