"""Waiting for descriptors to become readable, with ``poll()``, in every process.

``select()`` is never used: it raises ``ValueError`` for a descriptor of 1024 or more,
and a main program holding a thousand sockets or files is an ordinary service, whose
pipes to the boss then get such numbers.
"""

from __future__ import annotations

import select
from collections.abc import Iterable

_READABLE = select.POLLIN | select.POLLHUP | select.POLLERR
# poll() takes a C int of milliseconds: a longer wait is cut to this and the caller's
# loop waits again.
_MAX_MS = 86_400_000


def readable(fds: Iterable[int], timeout: float | None) -> list[int]:
    """The descriptors among ``fds`` that are readable (or closed at the other end),
    waiting up to ``timeout`` seconds (None: until one is)."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, _READABLE)
    ms = None if timeout is None else min(_MAX_MS, max(0, int(timeout * 1000 + 0.999)))
    return [fd for fd, _ in poller.poll(ms)]
