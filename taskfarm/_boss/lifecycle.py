"""The farm's lifecycle, in the boss process: one state, changed only through the
transitions allowed here. A final state (finished, stopped, failed) never changes.

::

    HALTED <──HALT/RESUME──> RUNNING            (the boss starts HALTED)
       │ END                    │ END
       v                        v
    ENDING_HALTED <─HALT/RESUME─> ENDING ──nothing left──> FINISHED
    any open state ──STOP──> STOPPING ──running tasks ended──> STOPPED
    any open state ──STOP_RIGHTNOW / fail-fast──> CANCELLING ──processes gone──> STOPPED / FAILED
    any open state ──STOP_LISTENING──> STOPPED;  a crash ──> FAILED

CANCELLING is where the boss waits (without blocking) for the processes it is
stopping: their tasks then end ``cancelled``, unless an outcome came first.
"""

from __future__ import annotations

import enum

from taskfarm._common.messages import Signal
from taskfarm._common.status import ReportStatus


class FarmState(enum.Enum):
    """Where the farm stands; see the module docstring."""

    HALTED = "halted"
    RUNNING = "running"
    ENDING_HALTED = "ending, halted"
    ENDING = "ending"
    STOPPING = "stopping"
    CANCELLING = "cancelling"
    FINISHED = "finished"
    STOPPED = "stopped"
    FAILED = "failed"

    @property
    def final(self) -> bool:
        return self in _FINAL


_FINAL = frozenset({FarmState.FINISHED, FarmState.STOPPED, FarmState.FAILED})
_OPEN = frozenset({FarmState.HALTED, FarmState.RUNNING, FarmState.ENDING_HALTED,
                   FarmState.ENDING})
# What HALT, RESUME and END do in each open state (a signal absent here changes nothing).
_SIGNALS = {
    (FarmState.HALTED, Signal.RESUME): FarmState.RUNNING,
    (FarmState.RUNNING, Signal.HALT): FarmState.HALTED,
    (FarmState.HALTED, Signal.END): FarmState.ENDING_HALTED,
    (FarmState.RUNNING, Signal.END): FarmState.ENDING,
    (FarmState.ENDING_HALTED, Signal.RESUME): FarmState.ENDING,
    (FarmState.ENDING, Signal.HALT): FarmState.ENDING_HALTED,
}
_REPORT_STATUS = {FarmState.FINISHED: ReportStatus.FINISHED,
                  FarmState.STOPPED: ReportStatus.STOPPED, FarmState.FAILED: ReportStatus.FAILED}


class Lifecycle:
    """The farm's state and, once it is decided, how the run ends and why."""

    __slots__ = ("outcome", "reason", "state")

    def __init__(self) -> None:
        self.state = FarmState.HALTED
        self.outcome: FarmState | None = None   # the final state, once decided
        self.reason = ""

    @property
    def launching(self) -> bool:
        """New tasks may start."""
        return self.state is FarmState.RUNNING or self.state is FarmState.ENDING

    @property
    def open(self) -> bool:
        """The run goes on: retries, dependents released, new work accepted."""
        return self.state in _OPEN

    @property
    def halted(self) -> bool:
        return self.state is FarmState.HALTED or self.state is FarmState.ENDING_HALTED

    @property
    def ending(self) -> bool:
        return self.state is FarmState.ENDING or self.state is FarmState.ENDING_HALTED

    @property
    def report_status(self) -> ReportStatus:
        """The final report's status (only once the state is final)."""
        return _REPORT_STATUS[self.state]

    def signal(self, sig: Signal) -> None:
        """HALT, RESUME or END."""
        self.state = _SIGNALS.get((self.state, sig), self.state)

    def stop(self) -> None:
        """STOP: launch nothing more; final once the running tasks have ended."""
        if self.open:
            self._move(FarmState.STOPPING)

    def cancel(self, outcome: FarmState, reason: str) -> None:
        """STOP_RIGHTNOW or fail-fast: final (``outcome``) once the processes being
        stopped are gone. A decision already made stands."""
        if self.open or self.state is FarmState.STOPPING:
            self.outcome, self.reason = outcome, reason
            self._move(FarmState.CANCELLING)

    def end(self, outcome: FarmState, reason: str) -> None:
        """Final now (or, while cancelling, with the outcome decided then)."""
        if self.state is FarmState.CANCELLING and self.outcome is not None:
            outcome, reason = self.outcome, self.reason
        elif self.state.final:
            return
        self.reason = reason
        self._move(outcome)

    def _move(self, state: FarmState) -> None:
        if self.state.final:
            raise RuntimeError(f"the farm is {self.state.value}: it cannot become "
                               f"{state.value}")
        self.state = state
