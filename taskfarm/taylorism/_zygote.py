"""Tasks that see the main program's state: a copy of the main program, forked when a
taylorism Boss is made, forks one process per task.

::

    main program ──fork (Boss made)──> zygote ──fork per task──> task process
         │                              ^  (listens on an abstract       │ joins the
         │ taskfarm Boss                │   unix socket)                 │ relay's
         v                              │ connect, send the call         │ process group
    boss ──fork──> relay (taskfarm worker) <──── outcome bytes ──────────┘

taylorism forked its workers from the main program, so they saw what it had set up
when the Boss was made (modules, a session object, configuration, logging). taskfarm
starts its boss as a fresh interpreter, so the layer keeps a copy of the main program
itself: the *zygote*, forked before the taskfarm Boss starts any thread. taskfarm
still does the process management: each task is given to a *relay* (a taskfarm worker
process, :mod:`taskfarm._relay <taskfarm.taylorism._relay>`), which asks the zygote for
a task process and waits for its outcome. The task process joins the relay's process
group, so taskfarm's stop policy (SIGTERM, then SIGKILL, to the group: timeouts,
STOP_RIGHTNOW, fail-fast) reaches it and what it started; it copies the relay's CPU
binding and niceness (set by the scheduler). The zygote watches each relay (a pidfd):
if a relay dies while its task runs (its boss died), the task process and its group
are ended.

The zygote reaps each task process and tells the relay how it ended, so a task
process that dies (SIGKILL, segfault, ``os._exit``) is reported as such. It exits when
the Boss is closed (its lifeline pipe reaches EOF) or the main program ends (its
pidfd). Only processes of the same user may connect (``SO_PEERCRED``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
import select
import signal
import socket
import struct
import uuid
import weakref

from taskfarm.taylorism._outcome import flush_std_streams, run_call

__all__ = ["TaskStopped", "Zygote", "pack_request", "read_frame", "write_frame"]

# Frames on a task's socket: a kind byte and a length, then the payload.
_HEAD = struct.Struct("!cQ")
REQUEST, CALL, OUTCOME, EXIT = b"H", b"C", b"O", b"X"
_REQUEST = struct.Struct("!qq")   # ticket (-1: none), niceness
# How long closing a Boss waits for its zygote to exit before killing it (seconds).
ZYGOTE_EXIT_WAIT = 2.0
# Write ends of the lifelines of this process's zygotes: a later zygote closes them,
# so that it never keeps an earlier one alive.
_LIFELINES: set[int] = set()


class TaskStopped(BaseException):
    """Raised in a task process when it is asked to stop (SIGTERM)."""


def pack_request(ticket: int | None, nice: int, cpus: set[int]) -> bytes:
    """What a relay sends before the call: the task's ticket, the relay's niceness and
    CPUs (set by the scheduler), for the task process to take."""
    return (_REQUEST.pack(-1 if ticket is None else ticket, nice)
            + b",".join(str(c).encode() for c in sorted(cpus)))


def _unpack_request(payload: bytes) -> tuple[int | None, int, set[int]]:
    ticket, nice = _REQUEST.unpack_from(payload)
    cpus = {int(c) for c in payload[_REQUEST.size:].split(b",") if c}
    return (None if ticket < 0 else ticket), nice, cpus


def write_frame(sock: socket.socket, kind: bytes, payload: bytes) -> None:
    sock.sendall(_HEAD.pack(kind, len(payload)))
    if payload:
        sock.sendall(payload)


def read_frame(sock: socket.socket) -> tuple[bytes, bytes] | None:
    """The next frame, or None at EOF (also in the middle of a frame)."""
    head = _read(sock, _HEAD.size)
    if head is None:
        return None
    kind, size = _HEAD.unpack(head)
    payload = _read(sock, size) if size else b""
    return None if payload is None else (kind, payload)


def _read(sock: socket.socket, size: int) -> bytes | None:
    buffer = bytearray(size)
    view, got = memoryview(buffer), 0
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            return None
        got += n
    return bytes(buffer)


class Zygote:
    """A copy of the main program, forked now, that forks the Boss's task processes.
    ``address`` is its socket's (abstract) address; :meth:`close` ends it."""

    def __init__(self) -> None:
        self.address = f"\0taskfarm-taylorism-{os.getpid()}-{uuid.uuid4().hex}"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lifeline_r = lifeline_w = -1
        try:
            listener.bind(self.address)
            listener.listen(256)
            lifeline_r, lifeline_w = os.pipe()
            parent = os.getpid()
            flush_std_streams()
            pid = os.fork()
        except BaseException:
            listener.close()
            for fd in (lifeline_r, lifeline_w):
                if fd >= 0:
                    os.close(fd)
            raise
        if pid == 0:  # the zygote: never returns to the main program's code
            code = 1
            try:
                os.close(lifeline_w)
                for fd in _LIFELINES:
                    with contextlib.suppress(OSError):
                        os.close(fd)
                _serve(listener, lifeline_r, parent)
                code = 0
            finally:
                os._exit(code)
        os.close(lifeline_r)
        listener.close()
        self.pid = pid
        _LIFELINES.add(lifeline_w)
        self._finalizer = weakref.finalize(self, _stop, pid, lifeline_w, os.getpid())

    def close(self) -> None:
        """End the zygote (task processes already forked run on) and reap it."""
        self._finalizer()


def _stop(pid: int, lifeline: int, owner: int) -> None:
    if os.getpid() != owner:  # a copy of the main program: the zygote is not its own
        return
    _LIFELINES.discard(lifeline)
    os.close(lifeline)  # EOF: the zygote exits
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        pidfd = -1
    if pidfd >= 0:
        try:
            if not select.select([pidfd], [], [], ZYGOTE_EXIT_WAIT)[0]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        finally:
            os.close(pidfd)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


@dataclasses.dataclass(slots=True)
class _Child:
    """A task process the zygote forked: its pid, the connection to its relay (the
    zygote's copy, to say how it ended) and a pidfd of the relay (to end it if the
    relay dies first)."""

    pid: int
    conn: socket.socket
    relay_fd: int


def _serve(listener: socket.socket, lifeline: int, parent: int) -> None:
    """The zygote's loop: fork a task process per connection, reap each and tell its
    relay how it ended, end the task of a relay that died; return when the Boss is
    closed or the main program ends."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C belongs to the main program
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        parent_fd = os.pidfd_open(parent)
    except ProcessLookupError:
        return
    # Objects the copy holds stay out of the collector's sight: a collection in a task
    # process would otherwise touch, and so copy, every page of them.
    gc.freeze()
    poller = select.poll()
    for fd in (listener.fileno(), lifeline, parent_fd):
        poller.register(fd, select.POLLIN)
    children: dict[int, _Child] = {}    # by the pidfd of the task process
    relays: dict[int, int] = {}         # relay pidfd -> pidfd of its task process
    while True:
        ready = [fd for fd, _ in poller.poll()]
        if lifeline in ready or parent_fd in ready:
            return
        # Endings first, then new tasks: a descriptor closed here may be reused by one
        # opened for a new task, and must not be taken for it in this same round.
        for fd in ready:
            if fd in children:
                child = children.pop(fd)
                poller.unregister(fd)
                if child.relay_fd >= 0:
                    poller.unregister(child.relay_fd)
                    del relays[child.relay_fd]
                _reap(fd, child)
            elif fd in relays:   # the relay died while its task runs (its boss died)
                poller.unregister(fd)
                _end_task_of_dead_relay(children[relays.pop(fd)])
                os.close(fd)
        if listener.fileno() in ready:
            forked = _fork_task(listener, [lifeline, parent_fd], children, relays)
            if forked is not None:
                poller.register(forked, select.POLLIN)
                poller.register(children[forked].relay_fd, select.POLLIN)
                relays[children[forked].relay_fd] = forked


def _end_task_of_dead_relay(child: _Child) -> None:
    """End the task process and what it started: the relay's group, once the task
    process has joined it (the relay is dead: nothing else of its is there)."""
    with contextlib.suppress(OSError):
        group = os.getpgid(child.pid)
        if group != os.getpgrp():
            os.killpg(group, signal.SIGKILL)
    with contextlib.suppress(OSError):
        os.kill(child.pid, signal.SIGKILL)
    child.relay_fd = -1


def _fork_task(listener: socket.socket, own_fds: list[int], children: dict[int, _Child],
               relays: dict[int, int]) -> int | None:
    """Accept one relay and fork its task process; returns the process's pidfd."""
    try:
        conn, _ = listener.accept()
    except OSError:
        return None
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    peer, uid, _ = struct.unpack("3i", creds)
    try:
        if uid != os.getuid():
            raise PermissionError(f"a process of user {uid} connected")
        relay_fd = os.pidfd_open(peer)
    except OSError:
        conn.close()
        return None
    flush_std_streams()
    pid = os.fork()
    if pid == 0:  # the task process
        code = 1
        try:
            listener.close()
            for fd in [*own_fds, *children, *relays, relay_fd]:
                with contextlib.suppress(OSError):
                    os.close(fd)
            for other in children.values():
                other.conn.close()
            _task_process(conn, peer)
            code = 0
        finally:
            flush_std_streams()
            os._exit(code)
    pidfd = os.pidfd_open(pid)   # also for a child already ended: it is not reaped yet
    children[pidfd] = _Child(pid, conn, relay_fd)
    return pidfd


def _reap(pidfd: int, child: _Child) -> None:
    """Reap a task process and tell its relay how it ended (a relay that already read
    the outcome has no need of it, so a full socket only loses this notice)."""
    os.close(pidfd)
    if child.relay_fd >= 0:
        os.close(child.relay_fd)
    _, status = os.waitpid(child.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    child.conn.setblocking(False)
    with contextlib.suppress(OSError):
        child.conn.send(_HEAD.pack(EXIT, 8) + struct.pack("!q", code))
    child.conn.close()


def _task_process(conn: socket.socket, relay: int) -> None:
    """In the task process: read the call, join the relay's process group (so that
    taskfarm's stop policy reaches this process and what it starts), take the relay's
    CPU binding and niceness, run the call, send the outcome."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _raise_stopped)
    request, call = read_frame(conn), read_frame(conn)
    if request is None or call is None or request[0] != REQUEST or call[0] != CALL:
        return   # the relay went away before asking
    ticket, nice, cpus = _unpack_request(request[1])
    with contextlib.suppress(OSError):
        os.setpgid(0, os.getpgid(relay))
    with contextlib.suppress(OSError):
        if cpus:
            os.sched_setaffinity(0, cpus)
        if nice > os.getpriority(os.PRIO_PROCESS, 0):
            os.setpriority(os.PRIO_PROCESS, 0, nice)
    try:
        outcome = run_call(call[1], ticket, (TaskStopped,))
    except TaskStopped:
        _die_by_sigterm()
    write_frame(conn, OUTCOME, outcome)


def _raise_stopped(signum: int, frame: object) -> None:
    raise TaskStopped("the task is being stopped (SIGTERM)")


def _die_by_sigterm() -> None:
    flush_std_streams()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)
    os._exit(128 + signal.SIGTERM)
