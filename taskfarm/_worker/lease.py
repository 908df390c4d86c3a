"""A lease, in the worker process that holds it: a long task of an executor's farm that
runs lone calls the main program writes straight to it (see
:mod:`taskfarm._common.lease`). Runs in worker processes only.

:func:`serve_lease` is the function of the lease's task, called as any call of the
executor (:class:`taskfarm._main.executor_worker.CallWorker`): it runs the first call,
writes its result on the express pipe, then reads the next call from the lease's FIFO,
and so on until the main program ends the lease. It returns (and so ends the lease)
with what cannot go the express way:

- ``None``: the main program ended the lease (or went away); every call's result was
  written on the express pipe.
- ``(number, packed)``: the result of the call ``number``, which does not fit in an
  express frame, or which sent a notice (a log record) that its result must not
  overtake, or which ran when the FIFO could not be opened.

A copy of the process that a call forked, returning from it, returns at once: it
neither answers for the call nor reads the next ones (the worker's loop then ends it).
A call that raises ends the lease with its exception: the lease's task fails as that
call would have, and the main program gives that to the call's future. A worker process
that dies in a call ends the lease as killed, and so fails that call, only.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from taskfarm._common.express import write as write_express
from taskfarm._common.lease import FRAME, LEASED

# Set by the process's serve(): the express pipe, and a count of the notices its tasks
# sent (a log record, an emitted value), read before and after each call.
express_fd: int | None = None
notices: Any = None


def serve_lease(path: str, number: int, fn_blob: bytes, args_blob: bytes) -> Any:
    """Run call ``number`` (its pickled function and arguments), then the calls read
    from the FIFO at ``path``; see the module docstring for what it returns."""
    from taskfarm._main.executor_worker import run_call  # imported by the call already

    fd = _open(path)
    pid = os.getpid()
    buffer = b""
    try:
        while True:
            sent = notices() if notices is not None else 0
            packed = run_call(fn_blob, args_blob)
            if os.getpid() != pid:   # a copy the call forked returned: it says nothing
                return None
            if fd < 0 or express_fd is None or type(packed) is not bytes \
                    or (notices is not None and notices() != sent) \
                    or not write_express(express_fd, LEASED + number, packed):
                return number, packed
            del packed
            while True:   # the next frame (a call, or the end), whole
                if len(buffer) >= FRAME.size:
                    number, fn_size, args_size = FRAME.unpack_from(buffer)
                    end = FRAME.size + fn_size + args_size
                    if number == 0:
                        return None
                    if len(buffer) >= end:
                        fn_blob = buffer[FRAME.size:FRAME.size + fn_size]
                        args_blob = buffer[FRAME.size + fn_size:end]
                        buffer = buffer[end:]
                        break
                data = os.read(fd, 65536)
                if not data:   # the main program closed it without a word: it is gone
                    return None
                buffer += data
    finally:
        if fd >= 0:
            os.close(fd)


def _open(path: str) -> int:
    """The FIFO's read end (blocking reads), or -1 when it is gone: the main program
    ended the lease before it began. Its name is removed at once: nothing is left
    behind in the file system, whatever ends the lease."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return -1
    os.set_blocking(fd, True)
    with contextlib.suppress(OSError):
        os.unlink(path)
    return fd
