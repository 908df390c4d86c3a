"""The one vocabulary of endings, shared by every process: how a task ended
(:class:`TaskStatus`) and where a whole farm stands (:class:`ReportStatus`).

The worker and the boss put a status on the wire as its value (a plain ``str``: an
enum member would cost a class look-up in every pickle); every reader interprets it
through these enums, and since they are ``StrEnum``s a member compares equal to its
value. The boss's task lifecycle (:class:`taskfarm._boss.tasks.TaskState`) ends in
exactly these states.
"""

from __future__ import annotations

import enum

__all__ = ["ENDINGS_THAT_FAIL", "RETRYABLE", "ReportStatus", "TaskStatus"]


class TaskStatus(enum.StrEnum):
    """The terminal state of a task; a task has exactly one, and it never changes."""

    DONE = "done"            # task() returned; ``result`` holds its value
    FAILED = "failed"        # task() raised, or its result could not travel
    KILLED = "killed"        # its process died without reporting (signal or exit code named)
    TIMEOUT = "timeout"      # it ran past its time limit
    CANCELLED = "cancelled"  # stopped on purpose (fail-fast, STOP_RIGHTNOW) before it ended

    def __str__(self) -> str:
        return self.value


class ReportStatus(enum.StrEnum):
    """Where the whole farm stands when a report is made."""

    INTERIM = "interim"      # the boss is working; more will come
    PENDING = "pending"      # the boss is halted with work waiting (make_them_work / RESUME)
    FINISHED = "finished"    # every instruction set given reached a terminal state
    STOPPED = "stopped"      # ended by STOP, STOP_RIGHTNOW or STOP_LISTENING
    FAILED = "failed"        # a fail-fast run ended at its first failure

    def __str__(self) -> str:
        return self.value


# Endings a task is retried after when it asks for retries without saying which; the
# same endings stop a fail-fast run.
RETRYABLE = frozenset({TaskStatus.FAILED, TaskStatus.KILLED, TaskStatus.TIMEOUT})
ENDINGS_THAT_FAIL = RETRYABLE
