"""The tasks a worker process has been given and not yet started, and the boss's
requests to take some back. Runs in worker processes only.

The boss may queue tasks behind the one a worker runs (prefetch), and take them back
with a ``Skip``: on HALT and STOP, and when another worker idles while they wait. A
worker answers ``Skipped`` for every queued task it will never start, at once and in
any order; a Skip for a task it has already started comes too late and is ignored
(that task reports as usual). Before starting each task the worker reads everything
already in its pipe, so a Skip written before then is always honoured.

A Skip written while a task runs would wait for that task, however long it takes:
so the boss follows it with :data:`TAKE_BACK_SIGNAL`, and while a task runs the
signal's handler reads the pipe and answers there and then. Outside a task the
handler does nothing (the loop reads the pipe itself before the next task); while the
task is sending something itself (``emit()``, a log record), the answer waits for the
end of that frame (:mod:`taskfarm._worker.sender`). The boss keeps the signal blocked
in itself, so its workers start with it blocked and only unblock it once the handler
is in place.
"""

from __future__ import annotations

import signal
from collections import deque
from collections.abc import Callable
from typing import Any

from taskfarm._common.messages import Release, RunTask, Skip, Skipped
from taskfarm._common.processes import TAKE_BACK_SIGNAL
from taskfarm._common.shared_array import detach
from taskfarm._common.wire import Channel, ProtocolError, unexpected
from taskfarm._worker.sender import Sender


class TaskQueue:
    """Tasks read from the boss, in order, and the answers to its take-backs."""

    __slots__ = ("_again", "_error", "_handling", "ahead", "on_drop", "results", "running",
                 "tasks")

    def __init__(self, tasks: Channel, results: Sender) -> None:
        self.tasks, self.results = tasks, results
        self.ahead: deque[RunTask] = deque()
        self.running = False       # a task runs: the signal handler may read the pipe
        self._handling = False     # the handler is reading: a second signal asks again
        self._again = False
        self._error: BaseException | None = None   # met by the handler, raised by next()
        # Called with a task taken back before it started (what it carried for the
        # process, class and common blobs, must be kept).
        self.on_drop: Callable[[RunTask], None] | None = None

    def listen(self) -> None:
        """Install the take-back handler, then let the signal in."""
        signal.signal(TAKE_BACK_SIGNAL, self._on_signal)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {TAKE_BACK_SIGNAL})

    def next(self) -> RunTask:
        """The next task to start, once everything already sent is read and every
        take-back answered. Blocks while there is none; EOFError when the boss has
        closed the pipe."""
        while True:
            if self._error is not None:
                raise self._error
            if not self.ahead:
                self._take(self.tasks.recv())
            self._read_ready()
            if self.ahead:
                return self.ahead.popleft()

    def _read_ready(self) -> None:
        while self.tasks.poll():
            self._take(self.tasks.recv())

    def _take(self, msg: Any) -> None:
        if isinstance(msg, RunTask):
            self.ahead.append(msg)
        elif isinstance(msg, Release):  # SharedArrays no task needs any more
            detach(msg.names)
        elif isinstance(msg, Skip):
            for task in self.ahead:
                if task.tid == msg.tid:
                    self.ahead.remove(task)
                    if self.on_drop is not None:   # its blobs are the process's
                        self.on_drop(task)
                    self.results.send(Skipped(msg.tid))
                    break
            # else: it has started (or ended) already: too late, it reports as usual
        else:
            raise unexpected(msg, "a worker process")

    def _on_signal(self, signum: int, frame: object) -> None:
        if not self.running:
            return
        if self.results.main_sending:  # in the middle of a frame: answer once it is sent
            self.results.deferred = self._answer_now
            return
        self._answer_now()

    def _answer_now(self) -> None:
        if not self.running:
            return
        if self._handling:   # in the middle of reading: read once more when done
            self._again = True
            return
        self._handling = True
        try:
            self._again = True
            while self._again:
                self._again = False
                self._read_ready()
        except (EOFError, OSError, ProtocolError) as exc:
            self._error = exc   # the loop meets it before the next task
        finally:
            self._handling = False
