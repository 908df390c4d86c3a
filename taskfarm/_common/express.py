"""Express results: a worker process of an executor's farm writes the result of a call
that ended done straight to the main program, instead of through the boss. The frame
format, and the worker's write; the main program's reader is
:class:`taskfarm._main.express.ExpressReader`.

Why: a tiny call's round trip crosses processes four times through the boss (main
program, boss, worker, boss, main program); its result crossing back directly saves
the boss's second turn, which is most of what separated a lone call's round trip from
ProcessPoolExecutor's. The boss still hears of the ending (the worker's outcome,
without the result, marked ``expressed``): it schedules, counts and retires as
before, and sends the main program nothing for that task.

One pipe serves every worker process of a farm. A frame is written in one
``os.write`` of at most ``PIPE_BUF`` bytes on a non-blocking pipe, which POSIX makes
all-or-nothing: frames never interleave, a worker killed mid-write cannot leave half
a frame, and a full pipe (a main program not reading) fails the write at once rather
than blocking the worker. Whatever does not fit in one frame, or cannot be written
now, takes the usual way through the boss.
"""

from __future__ import annotations

import os
import select
import struct

# A frame: the blob's length and the task's id, then the pickled result.
HEADER = struct.Struct("<IQ")
# The largest result blob one frame carries (a write of PIPE_BUF bytes is atomic).
LIMIT = select.PIPE_BUF - HEADER.size


def write(fd: int, tid: int, blob: bytes) -> bool:
    """Write a done task's pickled result to the main program; False if it must go
    through the boss instead (too large, the pipe full, the main program gone)."""
    if len(blob) > LIMIT:
        return False
    try:
        os.write(fd, HEADER.pack(len(blob), tid) + blob)
    except OSError:  # EAGAIN: nothing was written; EPIPE: nobody reads any more
        return False
    return True


def frames(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """The whole frames at the start of ``data`` as (task id, blob), and what is left
    of a frame not whole yet."""
    found: list[tuple[int, bytes]] = []
    start, size, end = 0, HEADER.size, len(data)
    while end - start >= size:
        length, tid = HEADER.unpack_from(data, start)
        if end - start - size < length:
            break
        found.append((tid, data[start + size:start + size + length]))
        start += size + length
    return found, data[start:]
