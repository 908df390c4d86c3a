"""The Worker class of the chaos run (``test_chaos.py``).

Its required instruction ``chaos_log`` is its own, so no other module's instruction
sets can match it. Every run of a task first appends the task's name to the
``chaos_log`` file in one ``write`` on an ``O_APPEND`` descriptor (atomic for a short
line), so the test can count how many times each task ran, then ends as
``chaos_how`` says.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Literal

import taskfarm


class ChaosBoom(Exception):
    """What a ``raise`` task raises."""


class ChaosTask(taskfarm.Worker):
    """Logs its run, then: ``ok`` works ``chaos_spin`` seconds and returns its name;
    ``shared`` returns the sum of the SharedArray it was given; ``raise`` raises
    ChaosBoom; ``hang`` blocks until a signal ends it (its timeout's SIGTERM, or a
    SIGKILL)."""

    chaos_log: str
    chaos_how: Literal["ok", "shared", "raise", "hang"] = "ok"
    chaos_data: object = None
    chaos_spin: float = 0.0

    def task(self) -> object:
        fd = os.open(self.chaos_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{self.name}\n".encode())
        finally:
            os.close(fd)
        how = self.chaos_how
        if how == "raise":
            raise ChaosBoom(self.name)
        if how == "hang":
            while True:  # any signal wakes pause(); only SIGTERM (StopRequested) or
                signal.pause()  # SIGKILL ends the task
        if how == "shared":
            return float(self.chaos_data.sum())  # type: ignore[attr-defined]
        end = time.perf_counter() + self.chaos_spin
        while time.perf_counter() < end:  # work, so that a SIGKILL may land in the middle
            pass
        return self.name
