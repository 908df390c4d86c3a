"""Prefetch, in the boss process: how many tasks to queue behind the one each busy
slot runs, which slots want more, and which queued tasks have been asked back.

With a scheduler that only counts running tasks (``BaseScheduler.prefetch``), the
boss queues tasks behind the one each busy slot runs, so the slot starts the next the
moment the current one ends, without waiting for the boss; tiny tasks then travel
many to a write and their outcomes come back many to a read. The depth follows the
recent pace of tasks: enough to cover ``QUEUE_SECONDS`` of work, at most
``MAX_DEPTH`` tasks. Tasks longer than a millisecond are queued one at a time.

Prefetch is for tiny tasks, where it matters: nothing is queued until the pace is
known (a first task has ended) and while it is slower than ``MAX_PACE``, since a task
queued behind a long one waits for it while another worker may idle. And when a slot
runs out of work with nothing pending, the tasks queued behind busy slots are taken
back, to start at once on the idle one (see ``BossLoop.on_messages``).
"""

from __future__ import annotations

import math

from taskfarm._boss.backend import Slot

# Queue at most this much work, in seconds at the recent pace, and at most this many
# tasks, behind a running task.
QUEUE_SECONDS = 0.002
MAX_DEPTH = 32
# Queue nothing while tasks take longer than this, on average, at the recent pace.
MAX_PACE = 0.01


class Prefetch:
    """Depth and pace, the slots to refill, and the queued tasks asked back."""

    __slots__ = ("depth", "enabled", "mean_duration", "skipping", "unfed")

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.depth = 1                         # tasks to queue behind a running one
        self.mean_duration = math.inf          # recent pace of tasks (see learn())
        self.unfed: set[Slot] = set()          # busy slots to queue tasks in
        self.skipping: set[int] = set()        # queued tasks asked back, not answered yet

    def learn(self, seconds: float) -> None:
        """A task ran this long. The pace follows a longer task at once and a shorter
        one slowly, so that a queue never holds much work behind a task that turns
        out long."""
        mean = self.mean_duration
        mean = seconds if seconds >= mean or mean == math.inf else mean + (seconds - mean) * 0.05
        self.mean_duration = mean
        self.depth = max(1, min(MAX_DEPTH, int(QUEUE_SECONDS / max(mean, 1e-7))))

    @property
    def worthwhile(self) -> bool:
        """Tasks are known to be tiny: queueing behind a running one pays."""
        return self.enabled and self.mean_duration <= MAX_PACE

    def wants_more(self, slot: Slot) -> bool:
        """A busy slot's queue is down to half its depth: refill it (in batches)."""
        return len(slot.tasks) - 1 <= self.depth // 2

    def queued_to_take_back(self, slots: list[Slot]) -> list[tuple[Slot, int]]:
        """HALT, STOP, or a rebalance with nothing pending: every task queued behind a
        running one in ``slots`` and not yet asked back, marked as asked back; no slot
        is refilled until it reports again."""
        back = []
        for slot in slots:
            for task in list(slot.tasks)[1:]:
                if task.tid not in self.skipping:
                    self.skipping.add(task.tid)
                    back.append((slot, task.tid))
        self.unfed.clear()
        return back
