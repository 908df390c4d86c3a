"""Schedulers decide which pending instruction sets a taskfarm boss may launch now.

Each is a policy object with one method, ``launchable(pending_instructions, workers,
report) -> (launchable, not_yet_launchable)``; see :mod:`schedulers.base` for the
contract. They run in the boss process and never touch a process themselves.
Combine them with ``&``::

    MaxThreadsScheduler(8) & MaxMemoryScheduler(16000) & ResourceLockScheduler()
"""

from taskfarm._common.system import available_cpus, memory_budget_mib, packed_cpus

from .base import AllOf, BaseScheduler
from .load import PoliteScheduler, system_load
from .locks import ResourceLockScheduler
from .memory import LongerFirstScheduler, MaxMemoryScheduler
from .threads import LaxistScheduler, MaxThreadsScheduler

__all__ = [
    "AllOf",
    "BaseScheduler",
    "LaxistScheduler",
    "LongerFirstScheduler",
    "MaxMemoryScheduler",
    "MaxThreadsScheduler",
    "PoliteScheduler",
    "ResourceLockScheduler",
    "available_cpus",
    "memory_budget_mib",
    "packed_cpus",
    "system_load",
]
