"""A progress display for a farm. Runs in the main program.

:class:`Progress` is an event sink (:mod:`taskfarm._main.events`): it counts the tasks
given (``QUEUED``), running (``STARTED`` and not yet ``ENDED``), done and failed (every
other ending), and shows them in one of two forms:

- on a terminal, a tqdm bar: ended/total, done, failed and running counts, and tqdm's
  estimate of the time left from the average rate so far;
- elsewhere, a plain line such as ``taskfarm: 120/200 done, 3 failed, 2 running, about
  12 s left`` at most every ``interval`` seconds (when events arrive), and a last line
  when it is closed.

It is called in the receiver thread (and in the thread that gives instructions), so it
does little per event and redraws on its own clock. A display must never break the
farm it watches: any error it meets disables it (kept in :attr:`Progress.error`), and
nothing is raised to the caller. The running count is shown only once a ``STARTED``
event has been seen: without start notices it would be a guess.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from taskfarm._common.status import TaskStatus
from taskfarm._main.events import EventKind, TaskEvent

__all__ = ["Progress", "wanted"]

INTERVAL = 5.0   # seconds between two plain lines, by default
REDRAW = 0.2     # seconds between two redraws of the bar: more is flicker, not news
# tqdm's usual bar with the counts before the times: a narrow terminal cuts the end of
# the line, and the counts are what a farm's bar is for.
BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt}{postfix} [{elapsed}<{remaining}, {rate_fmt}]"


def wanted(progress: bool | None, file: TextIO | None = None) -> bool:
    """Whether to show progress: ``progress`` if given, else whether ``file``
    (default: stderr) is a terminal."""
    if progress is not None:
        return progress
    file = file if file is not None else sys.stderr
    try:
        return file is not None and file.isatty()
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


class Progress:
    """An event sink that shows a farm's progress on ``file`` (default: stderr).

    Args:
        file: where to write.
        terminal: draw a tqdm bar (True) or plain lines (False); default: whether
            ``file`` is a terminal.
        interval: seconds between two plain lines.
        clock: the monotonic clock that paces the output (tests pass their own).
    """

    def __init__(self, file: TextIO | None = None, *, terminal: bool | None = None,
                 interval: float = INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._file = file if file is not None else sys.stderr
        self._terminal = wanted(None, self._file) if terminal is None else terminal
        self._interval = interval
        self._clock = clock
        self.total = 0
        self.done = 0
        self.failed = 0
        # tids started and not yet ended; None until the first STARTED event.
        self._running: set[int] | None = None
        self.error: Exception | None = None   # what disabled the display
        self._closed = False
        self._bar: Any = None
        self._lock = threading.Lock()   # on_events and close come from several threads
        self._began = clock()
        self._shown = self._began       # when the last line (or redraw) was written

    @property
    def running(self) -> int | None:
        """Tasks started and not ended, or None when no start notice was seen."""
        return None if self._running is None else len(self._running)

    def on_events(self, events: Sequence[TaskEvent]) -> None:
        """Count a batch of events and redraw if it is time to; never raises."""
        with self._lock:
            if self._closed or self.error is not None:
                return
            try:
                self._count(events)
                self._show(final=False)
            except Exception as exc:  # a display must not break the farm it watches
                self._disable(exc)

    def close(self) -> None:
        """Show the last state and finish the bar or line; safe to call again."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self.error is not None:
                return
            try:
                self._show(final=True)
            except Exception as exc:
                self._disable(exc)

    # ---- counting -----------------------------------------------------------------------

    def _count(self, events: Sequence[TaskEvent]) -> None:
        for event in events:
            kind = event.kind
            if kind is EventKind.ENDED:
                report = event.report
                if report is not None and report.status is TaskStatus.DONE:
                    self.done += 1
                else:
                    self.failed += 1
                if self._running is not None:
                    self._running.discard(event.tid)
            elif kind is EventKind.QUEUED:
                self.total += 1
            elif kind is EventKind.STARTED:
                if self._running is None:
                    self._running = set()
                self._running.add(event.tid)

    # ---- showing ------------------------------------------------------------------------

    def _show(self, final: bool) -> None:
        if not self.total:  # nothing given yet (or ever): nothing to show
            return
        now = self._clock()
        if self._terminal:
            self._draw(now, final)
        elif final or now - self._shown >= self._interval:
            self._file.write(self._line(now, final) + "\n")
            self._file.flush()
            self._shown = now

    def _draw(self, now: float, final: bool) -> None:
        parts = [f"done={self.done}", f"failed={self.failed}"]
        if self._running is not None and not final:
            parts.append(f"running={len(self._running)}")
        bar = self._bar
        if bar is None:
            # smoothing=0: the rate (and so the time left) is the average since the
            # start, steadier than a moving one for tasks that end in bursts.
            import tqdm  # here: importing it costs a program without a bar 20 ms

            width = _fixed_width(self._file)
            bar = self._bar = tqdm.tqdm(
                total=self.total, file=self._file, desc="taskfarm", unit="task",
                bar_format=BAR_FORMAT, postfix=", ".join(parts), smoothing=0, ncols=width,
                nrows=width and 24, dynamic_ncols=width is None, miniters=1, leave=True)
            self._shown = now
        bar.total = self.total
        bar.n = self.done + self.failed
        bar.set_postfix_str(", ".join(parts), refresh=False)
        if final:
            bar.close()   # draws the last state and ends the line
        elif now - self._shown >= REDRAW:
            bar.refresh()
            self._shown = now

    def _line(self, now: float, final: bool) -> str:
        ended = self.done + self.failed
        parts = [f"taskfarm: {self.done}/{self.total} done", f"{self.failed} failed"]
        elapsed = now - self._began
        if final:
            parts.append(f"after {_duration(elapsed)}")
            return ", ".join(parts)
        if self._running is not None:
            parts.append(f"{len(self._running)} running")
        if ended and self.total > ended:
            parts.append(f"about {_duration(elapsed * (self.total - ended) / ended)} left")
        return ", ".join(parts)

    def _disable(self, exc: Exception) -> None:
        self.error = exc
        bar, self._bar = self._bar, None
        if bar is not None:
            with contextlib.suppress(Exception):  # it may fail the same way: no matter
                bar.close()


def _fixed_width(file: TextIO) -> int | None:
    """A width for a terminal that reports none (a pseudo-terminal nobody sized: tqdm
    would draw nothing there), else None: the bar follows the terminal's width."""
    try:
        columns = os.get_terminal_size(file.fileno()).columns
    except (AttributeError, ValueError, OSError):  # not a terminal: tqdm decides
        return None
    return None if columns > 0 else 80


def _duration(seconds: float) -> str:
    """``12 s``, ``7 min``, ``2 h 05 min``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes:02d} min"
