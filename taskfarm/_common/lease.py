"""Leases: how the main program of an executor's farm gives a lone call straight to a
worker process, without the boss. The frame format, shared by the main program's
writer (:mod:`taskfarm._main.executor_lease`) and the worker's reader
(:mod:`taskfarm._worker.lease`).

Why: a lone call given through the boss crosses three processes on its way out (the
main program, the boss, the worker) and wakes the boss once per call; that turn of
the boss was what kept a one-call round trip above ``ProcessPoolExecutor``'s. A lease
is a long task of the executor's farm, started by the boss like any other: it runs a
first call, then waits on a FIFO of its own for the next calls the main program writes
there, one at a time, and writes each result back on the express pipe
(:mod:`taskfarm._common.express`). The boss sees one task running.

A frame is written in one ``os.write`` of at most ``PIPE_BUF`` bytes, which POSIX makes
all-or-nothing; the main program writes one call, waits for its result, then writes
the next, so the FIFO never holds more than one call and the end of the lease.
"""

from __future__ import annotations

import select
import struct

# A call: its number, then the lengths of the pickled function and arguments; then
# both blobs. Number 0 (and no blobs) ends the lease.
FRAME = struct.Struct("<QII")
END = FRAME.pack(0, 0, 0)
# The largest frame: one write of PIPE_BUF bytes is atomic.
LIMIT = select.PIPE_BUF

# The express pipe names a leased call's result by LEASED + the call's number: the
# boss never gave it a task id (task ids are small).
LEASED = 1 << 62
