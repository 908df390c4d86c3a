"""How a task ends when its worker process ends without reporting it, in the boss
process: killed (a signal, an exit code: the likely cause said), timed out, cancelled
(by ``Boss.cancel``, STOP_RIGHTNOW or fail-fast) — each named with why.
"""

from __future__ import annotations

import logging

from taskfarm._boss.backend import Slot
from taskfarm._boss.tasks import Task
from taskfarm._common.messages import Outcome
from taskfarm._common.processes import ExitInfo
from taskfarm._common.status import TaskStatus

_LOG = logging.getLogger("taskfarm.boss")


def exit_outcome(current: Task, slot: Slot, info: ExitInfo, now: float, likely_cause: str,
                 cancel_why: str) -> Outcome:
    """The ending of ``current``, the task ``slot`` ran when its process ended."""
    ticket = current.instructions.get("scheduler_ticket")
    doom = slot.doom
    if doom is None:
        _LOG.warning("task %r: worker process %d %s without reporting%s", current.name,
                     slot.pid, info.describe(), likely_cause)
        return Outcome.by_boss(
            current.tid, TaskStatus.KILLED,
            f"worker process {slot.pid} {info.describe()} without reporting{likely_cause}",
            error_type="taskfarm.WorkerKilledError", ended=now, pid=slot.pid, ticket=ticket,
            started=current.started, exit_info=info)
    if doom.tid != current.tid:  # cancelling: it started, and ends with the rest
        return Outcome.by_boss(current.tid, TaskStatus.CANCELLED, cancel_why, ended=now,
                               pid=slot.pid, ticket=ticket, started=current.started)
    if doom.status is TaskStatus.TIMEOUT:
        ran = now - (current.started or now)
        _LOG.warning("task %r %s: stopped after %.1f s (%s)", current.name, doom.why, ran,
                     info.describe())
        return Outcome.by_boss(
            current.tid, doom.status, f"{doom.why}: stopped after {ran:.1f} s "
            f"({info.describe()})", ended=now, pid=slot.pid, ticket=ticket,
            started=current.started, exit_info=info)
    return Outcome.by_boss(current.tid, doom.status, doom.why, ended=now, pid=slot.pid,
                           ticket=ticket, started=current.started)
