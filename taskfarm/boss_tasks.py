"""Task bookkeeping in the boss process: each task's lifecycle, the pending queue the
scheduler reads, the running tasks it sees, and the bounded statistics it may learn
from. Knows nothing of processes or pipes.

Costs stay proportional to the work done, never to the work queued: the pending queue
is a deque whose removals are lazy (a task launched out of order is skipped when the
front reaches it), so taking the first k launchable tasks costs O(k), and finished
tasks are dropped at once so a service running for weeks keeps a flat memory.
"""

from __future__ import annotations

import enum
import itertools
from collections import deque
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["InstructionSet", "PendingQueue", "RunStats", "Task", "TaskBook", "TaskState"]


class TaskState(enum.Enum):
    """A task's lifecycle. PENDING -> RUNNING -> one terminal state, which never changes."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    KILLED = "killed"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self not in (TaskState.PENDING, TaskState.RUNNING)


_ALLOWED = {
    TaskState.PENDING: {TaskState.RUNNING, TaskState.CANCELLED},
    TaskState.RUNNING: {TaskState.DONE, TaskState.FAILED, TaskState.KILLED,
                        TaskState.TIMEOUT, TaskState.CANCELLED},
}


class InstructionSet(dict[str, Any]):
    """The instructions of one task as a scheduler sees them: a dict (name, memory,
    expected_time, scheduler_ticket, the task's own values and simple common values)
    that also knows its task id. A scheduler may set ``scheduler_ticket`` in it."""

    __slots__ = ("tid",)


class Task:
    """One task in the boss."""

    __slots__ = ("batch_id", "class_key", "instructions", "started", "state", "tid", "worker")

    def __init__(self, tid: int, class_key: int, batch_id: int, view: dict[str, Any]) -> None:
        self.tid = tid
        self.class_key = class_key
        self.batch_id = batch_id
        self.instructions = InstructionSet(view)
        self.instructions.tid = tid
        self.state = TaskState.PENDING
        self.started: float | None = None
        self.worker: Any = None  # the worker process running it

    @property
    def name(self) -> str:
        return self.instructions["name"]

    def move(self, state: TaskState) -> None:
        """Guarded transition: a terminal state never changes."""
        if state not in _ALLOWED.get(self.state, ()):
            raise RuntimeError(f"task {self.name!r} cannot go from {self.state.value} "
                               f"to {state.value}")
        self.state = state


class PendingQueue:
    """Pending instruction sets in the order given, as the read-only sequence a
    scheduler receives. ``pending[:k]`` costs O(k); ``pending[k:]`` is a lazy view."""

    def __init__(self) -> None:
        self._items: deque[Task] = deque()
        self._live = 0

    def push(self, task: Task) -> None:
        self._items.append(task)
        self._live += 1

    def discard(self, task: Task) -> None:
        """Called when ``task`` leaves PENDING; its slot is skipped lazily."""
        self._live -= 1
        items = self._items
        while items and items[0].state is not TaskState.PENDING:
            items.popleft()

    def __len__(self) -> int:
        return self._live

    def __bool__(self) -> bool:
        return self._live > 0

    def __iter__(self) -> Iterator[InstructionSet]:
        return (t.instructions for t in self._items if t.state is TaskState.PENDING)

    def tasks(self) -> Iterator[Task]:
        return (t for t in self._items if t.state is TaskState.PENDING)

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            start, stop, step = index.start or 0, index.stop, index.step
            if stop is None or stop < 0 or start < 0:
                return _LazyTail(self, index)
            return list(itertools.islice(iter(self), start, stop, step))
        if index < 0:
            index += self._live
        for item in itertools.islice(iter(self), index, None):
            return item
        raise IndexError("pending index out of range")


class _LazyTail:
    """``pending[k:]``: materialised only if the scheduler really reads it."""

    def __init__(self, queue: PendingQueue, index: slice) -> None:
        self._queue, self._index = queue, index

    def _list(self) -> list[InstructionSet]:
        return list(iter(self._queue))[self._index]

    def __iter__(self) -> Iterator[InstructionSet]:
        return iter(self._list())

    def __len__(self) -> int:
        start = self._index.start or 0
        if self._index.stop is None and self._index.step in (None, 1) and start >= 0:
            return max(0, len(self._queue) - start)
        return len(self._list())

    def __getitem__(self, index: int | slice) -> Any:
        return self._list()[index]


class RunStats:
    """Bounded statistics a scheduler may learn from (the ``report`` argument of
    ``launchable``): counts per terminal state and, per Worker class name, how many
    tasks ended, their largest peak RSS (bytes) and their total run time."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.by_worker: dict[str, dict[str, float]] = {}

    def record(self, worker: str, status: str, duration: float | None,
               peak_rss: int | None) -> None:
        self.counts[status] = self.counts.get(status, 0) + 1
        stats = self.by_worker.setdefault(worker, {"count": 0, "peak_rss": 0, "seconds": 0.0})
        stats["count"] += 1
        if peak_rss:
            stats["peak_rss"] = max(stats["peak_rss"], peak_rss)
        if duration:
            stats["seconds"] += duration


class TaskBook:
    """Every task the boss holds that has not ended, by state."""

    def __init__(self) -> None:
        self.pending = PendingQueue()
        self.running: dict[int, Task] = {}
        # name -> instructions of running tasks: the ``workers`` argument of launchable().
        self.running_view: dict[str, InstructionSet] = {}
        self.pending_by_tid: dict[int, Task] = {}
        self.stats = RunStats()

    def add(self, task: Task) -> None:
        self.pending.push(task)
        self.pending_by_tid[task.tid] = task

    def lookup(self, item: Mapping[str, Any]) -> Task | None:
        """The pending task behind an item a scheduler returned."""
        tid = getattr(item, "tid", None)
        if tid is None:  # a scheduler that copied the dict: find it by name
            name = item.get("name")
            return next((t for t in self.pending.tasks() if t.name == name), None)
        return self.pending_by_tid.get(tid)

    def start(self, task: Task, started: float) -> None:
        task.move(TaskState.RUNNING)
        del self.pending_by_tid[task.tid]
        self.pending.discard(task)
        task.started = started
        self.running[task.tid] = task
        self.running_view[task.name] = task.instructions

    def finish(self, task: Task, state: TaskState, worker_name: str,
               duration: float | None, peak_rss: int | None) -> None:
        """Move a running task to its terminal state and forget it."""
        task.move(state)
        del self.running[task.tid]
        del self.running_view[task.name]
        self.stats.record(worker_name, state.value, duration, peak_rss)

    @property
    def idle(self) -> bool:
        return not self.pending and not self.running
