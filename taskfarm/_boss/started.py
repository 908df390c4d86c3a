"""STARTED notices, in the boss process: the main program learns that a worker started
a task (``Boss.events()``, a progress bar, the journal's slots, an Executor's futures)
once it asked for them (``Watch``).

A notice is sent at once, or, when the watcher asked for a hold (an Executor does),
held that long and dropped if the task ends first: its ENDED says it started, and the
main program treats an ENDED without a STARTED so. For tiny tasks, most of them, that
is one notice less to make, send, read and handle per task, and no message of its own
waking the main program while the worker runs; a task that runs longer than the hold
is said to have started that much later. The clock is the deadlines', so the hold is
tested without waiting.
"""

from __future__ import annotations

from taskfarm._boss.deadlines import Deadlines
from taskfarm._common.messages import Notice, NoticeKind

_STARTED = NoticeKind.STARTED


class StartedNotices:
    """STARTED notices bound for the main program (see the module docstring)."""

    __slots__ = ("_armed", "_deadlines", "_held", "enabled", "hold", "notices")

    def __init__(self, deadlines: Deadlines, enabled: bool) -> None:
        self.enabled = enabled     # someone in the main program reads them
        self.hold = 0.0            # seconds a notice waits for its task's ending
        # The outgoing notices, of every kind (Endings adds the others): flushed with
        # the outcomes, and handled before them in the main program.
        self.notices: list[Notice] = []
        self._deadlines = deadlines
        # Held notices by task id, oldest first, with the time each was made.
        self._held: dict[int, tuple[Notice, float]] = {}
        self._armed = False        # a deadline will release the held notices

    def watch(self, enabled: bool, hold: float) -> None:
        """From now on, send notices (or not), holding each ``hold`` seconds."""
        self.enabled, self.hold = enabled, max(0.0, hold)
        if not enabled or self.hold == 0.0:
            self.release(everything=True)

    def say(self, tid: int, pid: int | None, number: int, started: float | None) -> None:
        """A task started in the process ``pid`` of slot ``number``."""
        notice = Notice(tid, _STARTED, (pid, number, started))
        if self.hold == 0.0:
            self.notices.append(notice)
            return
        self._held[tid] = (notice, self._deadlines.clock())
        if not self._armed:
            self._armed = True
            self._deadlines.after(self.hold, self._on_deadline)

    def ended(self, tid: int) -> None:
        """The task's outcome is made: a notice still held for it is not needed."""
        if self._held:
            self._held.pop(tid, None)

    def release(self, everything: bool = False) -> None:
        """Send the notices held for at least the hold (``everything``: all of them)."""
        held = self._held
        if not held:
            return
        due = self._deadlines.clock() - self.hold
        while held:
            tid = next(iter(held))
            notice, made = held[tid]
            if not everything and made > due:
                break
            del held[tid]
            self.notices.append(notice)

    def _on_deadline(self) -> None:
        self._armed = False
        self.release()
        if self._held:  # the oldest left is due when its own hold is over
            _, made = next(iter(self._held.values()))
            self._armed = True
            self._deadlines.after(max(0.0, made + self.hold - self._deadlines.clock()),
                                  self._on_deadline)
