"""Schedulers decide which pending instruction sets a taskfarm boss may launch now.

Each is a policy object with one method, ``launchable(pending_instructions, workers,
report) -> (launchable, not_yet_launchable)``; see :mod:`schedulers.base` for the
contract. They run in the boss process and never touch a process themselves.
"""

from .base import BaseScheduler
from .cpus import available_cpus
from .threads import MaxThreadsScheduler

__all__ = ["BaseScheduler", "MaxThreadsScheduler", "available_cpus"]
