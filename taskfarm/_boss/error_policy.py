"""The error policy, in the boss process: whether a failed attempt is retried (and
with how much memory), whether an ending stops a fail-fast run, and whether a
SIGKILL is blamed on the out-of-memory killer. Policy only: it never touches a
process.
"""

from __future__ import annotations

from taskfarm._boss.tasks import Task
from taskfarm._common.messages import Outcome
from taskfarm._common.processes import ExitInfo, oom_kills
from taskfarm._common.status import ENDINGS_THAT_FAIL, RETRYABLE, TaskStatus


class ErrorPolicy:
    """Fail-fast or keep-going, retries per task (``retries``, ``retry_on``,
    ``retry_memory`` in its instructions, resolved in the main program), and OOM
    attribution."""

    __slots__ = ("fail_fast", "oom_count")

    def __init__(self, fail_fast: bool) -> None:
        self.fail_fast = fail_fast
        self.oom_count = oom_kills()   # to tell an OOM kill from another SIGKILL

    def retries(self, task: Task, outcome: Outcome) -> bool:
        """Whether this ending gets another attempt."""
        instructions = task.instructions
        return (len(task.attempts) < instructions.get("retries", 0)
                and outcome.status in instructions.get("retry_on", RETRYABLE))

    def prepare_retry(self, task: Task, outcome: Outcome) -> None:
        """Record the attempt that ended, and declare more memory for the next one if
        ``retry_memory`` asks for it."""
        why = (f"{outcome.error_type}: {outcome.error_text}"
               if outcome.status == TaskStatus.FAILED else outcome.error_text or "")
        task.attempts.append((outcome.status, why))
        factor = task.instructions.get("retry_memory", 1.0)
        if factor != 1.0 and task.instructions.get("memory"):
            task.instructions["memory"] *= factor

    def stops_run(self, status: str) -> bool:
        """Whether a task ending so ends a fail-fast run."""
        return self.fail_fast and status in ENDINGS_THAT_FAIL

    def likely_cause(self, info: ExitInfo) -> str:
        """Name the out-of-memory killer when it is the likely cause of a SIGKILL: the
        kernel's count of its kills rose since the boss last looked."""
        if info.signal_name != "SIGKILL":
            return ""
        count = oom_kills()
        rose = count is not None and self.oom_count is not None and count > self.oom_count
        self.oom_count = count
        return (" (likely the out-of-memory killer: the kernel's oom_kill count rose; "
                "give the task more memory or declare more)") if rose else ""
