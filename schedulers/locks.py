"""``ResourceLockScheduler``: tasks that name the same resource (a file, a database,
a GPU) never run at the same time. It generalises a "single open file" rule."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .base import BaseScheduler, Instructions, Launch, RunReport

__all__ = ["ResourceLockScheduler"]


class ResourceLockScheduler(BaseScheduler):
    """Launch a task only when none of its resources is held by a running task (or by
    a task launched in the same decision). Resources are the names in the instruction
    ``key`` (default the built-in ``resources``); a task naming none is always
    launchable, so combine with a limit: ``MaxThreadsScheduler(4) &
    ResourceLockScheduler()``.

    Args:
        key: the instruction that lists a task's resources.
        known: if given, the only resource names allowed; any other is an error when
            the instructions are given.
        window: how many pending sets to look at per decision.
    """

    def __init__(self, key: str = "resources", known: Iterable[str] | None = None,
                 window: int = 256) -> None:
        if not isinstance(key, str) or not key.isidentifier():
            raise ValueError(f"key must be an instruction name, got {key!r}")
        if not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be a positive int, got {window!r}")
        self.key = key
        self.known = frozenset(known) if known is not None else None
        self.window = window

    def resources_of(self, instructions: Mapping[str, Any]) -> frozenset[str]:
        value = instructions.get(self.key) or ()
        return frozenset([value] if isinstance(value, str) else value)

    def check_instructions(self, instructions: Mapping[str, Any]) -> None:
        if self.known is not None:
            unknown = self.resources_of(instructions) - self.known
            if unknown:
                raise ValueError(f"unknown resources {sorted(unknown)}; known: "
                                 f"{sorted(self.known)}")

    def launchable(self, pending_instructions: Sequence[Instructions],
                   workers: Mapping[str, Instructions], report: RunReport | None) -> Launch:
        held: set[str] = set()
        for running in workers.values():
            held |= self.resources_of(running)
        chosen = []
        for instructions in pending_instructions[:self.window]:
            wanted = self.resources_of(instructions)
            if not wanted & held:
                chosen.append(instructions)
                held |= wanted
        return chosen, []
