"""The opt-in memory limit of a task, in its worker process (``Boss(memory_limit=True)``
or a Worker class's ``memory_limit = True``): the task may grow its process by no more
than the ``memory`` (MiB) it declared.

It is an address-space limit (``RLIMIT_AS``) set to the process's size when the task
starts plus what the task declared, and put back when it ends, so a pool worker can
run a limited task after an unlimited one. An allocation past it fails
(``MemoryError``) instead of the machine running out: the task then ends ``killed``,
"over its memory limit". Address space is not resident memory: code that maps much
more than it touches (some allocators, thread stacks) needs a larger declaration. A
cgroup would measure resident memory, but needs a delegated cgroup per worker, which a
login node seldom gives.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Callable

_PAGE = os.sysconf("SC_PAGE_SIZE")


def _address_space() -> int:
    """This process's address-space size in bytes (/proc/self/statm, first field)."""
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[0]) * _PAGE


def impose(mib: float) -> Callable[[], None]:
    """Limit this process to growing by ``mib`` MiB from now; returns what lifts it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _address_space() + int(mib * 2**20)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    return lambda: resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
