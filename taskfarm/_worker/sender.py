"""The worker's end of its result pipe, shared by everything in a worker process that
talks to the boss: the task loop (outcomes), a running task's ``emit()`` and logging
(notices, from any of the task's threads) and the take-back signal handler (answers to
Skips). Runs in worker processes only.

Frames must never interleave: sends are serialized by a lock. The take-back handler
runs in the main thread between two bytecodes, possibly in the middle of a send the
main thread is making: it must not wait for that send (it never ends) nor write in
the middle of it. So while the main thread sends, a signal is only noted, and the
sender runs the handler's work once its frame is written.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from taskfarm._common.wire import Channel, Message


class Sender:
    """Serialized sends on one channel, safe against the take-back handler."""

    __slots__ = ("_lock", "_main", "channel", "deferred", "main_sending")

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self._lock = threading.Lock()
        self._main = threading.main_thread().ident
        self.main_sending = False          # the main thread is inside send()
        # Work a signal handler left for the end of the main thread's send.
        self.deferred: Callable[[], None] | None = None

    def send(self, msg: Message) -> None:
        """Send one message whole, whichever thread calls."""
        if threading.get_ident() != self._main:
            with self._lock:
                self.channel.send(msg)
            return
        self.main_sending = True
        try:
            with self._lock:
                self.channel.send(msg)
        finally:
            self.main_sending = False
            work, self.deferred = self.deferred, None
            if work is not None:
                work()
