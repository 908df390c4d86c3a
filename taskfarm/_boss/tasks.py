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
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from taskfarm._boss.backend import Slot

__all__ = ["InstructionSet", "PendingQueue", "RunStats", "Task", "TaskBook", "TaskState"]


class TaskState(enum.Enum):
    """A task's lifecycle: PENDING -> (QUEUED ->) RUNNING -> one terminal state, which
    never changes. QUEUED is a task handed to a worker process that is still busy with
    the task before it; it can go back to PENDING if it never started."""

    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    KILLED = "killed"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self not in (TaskState.PENDING, TaskState.QUEUED, TaskState.RUNNING)

    # Members are singletons compared by identity; Enum's own hash is a Python-level
    # call, and the boss hashes states several times per task.
    __hash__ = object.__hash__


_ALLOWED = {
    TaskState.PENDING: {TaskState.QUEUED, TaskState.RUNNING, TaskState.CANCELLED},
    TaskState.QUEUED: {TaskState.RUNNING, TaskState.PENDING, TaskState.CANCELLED},
    TaskState.RUNNING: {TaskState.DONE, TaskState.FAILED, TaskState.KILLED,
                        TaskState.TIMEOUT, TaskState.CANCELLED,
                        TaskState.PENDING},  # a retry, or a task our own signal hit
}


class InstructionSet(dict[str, Any]):
    """The instructions of one task as a scheduler sees them: a dict (name, memory,
    expected_time, scheduler_ticket, the task's own values and simple common values)
    that also knows its task id and ``worker`` (its Worker class's qualified name). A
    scheduler may set ``scheduler_ticket`` in it."""

    __slots__ = ("tid", "worker")

    tid: int
    worker: str


class Task:
    """One task in the boss."""

    __slots__ = ("attempts", "batch_id", "class_key", "entry", "instructions", "payload",
                 "started", "state", "tid", "worker")

    def __init__(self, tid: int, class_key: int, batch_id: int, view: dict[str, Any],
                 worker: str = "") -> None:
        self.tid = tid
        self.class_key = class_key
        self.batch_id = batch_id
        self.instructions = InstructionSet(view)
        self.instructions.tid = tid
        self.instructions.worker = worker
        self.state = TaskState.PENDING
        self.started: float | None = None
        self.worker: Slot | None = None  # the slot (worker process) running it
        self.entry = 0           # which pending-queue entry is its live one
        self.attempts: list[tuple[str, str]] = []  # earlier attempts: (ending, why)
        self.payload: bytes | None = None  # non-simple values, opaque to the boss

    @property
    def name(self) -> str:
        name: str = self.instructions["name"]
        return name

    def move(self, state: TaskState) -> None:
        """Guarded transition: a terminal state never changes."""
        if state not in _ALLOWED.get(self.state, ()):
            raise RuntimeError(f"task {self.name!r} cannot go from {self.state.value} "
                               f"to {state.value}")
        self.state = state


class PendingQueue:
    """Pending instruction sets in the order given, as the read-only sequence a
    scheduler receives. ``pending[:k]`` costs O(k); ``pending[k:]`` is a lazy view.

    Removal is lazy: an entry stays in the deque until it reaches the front, and is
    skipped if its task left PENDING or was pushed again since (a task put back to
    pending gets a new entry; its ``entry`` number says which one is live)."""

    def __init__(self) -> None:
        self._items: deque[tuple[int, Task]] = deque()
        self._live = 0
        self._entries = itertools.count(1)

    def push(self, task: Task) -> None:
        task.entry = next(self._entries)
        self._items.append((task.entry, task))
        self._live += 1

    def push_front(self, task: Task) -> None:
        """A task that went back to pending: it keeps its place ahead of the rest."""
        task.entry = next(self._entries)
        self._items.appendleft((task.entry, task))
        self._live += 1

    def discard(self, task: Task) -> None:
        """Called when ``task`` leaves PENDING; its entry is skipped lazily."""
        self._live -= 1
        items = self._items
        while items and not _live(items[0]):
            items.popleft()

    def __len__(self) -> int:
        return self._live

    def __bool__(self) -> bool:
        return self._live > 0

    def __iter__(self) -> Iterator[InstructionSet]:
        return (item[1].instructions for item in self._items if _live(item))

    def tasks(self) -> Iterator[Task]:
        return (item[1] for item in self._items if _live(item))

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            start, stop, step = index.start or 0, index.stop, index.step
            if stop is None or stop < 0 or start < 0:
                return _LazyTail(self, index)
            if start == 0 and step is None:  # the usual question: the first few
                first: list[InstructionSet] = []
                if stop > 0:
                    for entry, task in self._items:
                        if task.state is _PENDING and task.entry == entry:
                            first.append(task.instructions)
                            if len(first) == stop:
                                break
                return first
            return list(itertools.islice(iter(self), start, stop, step))
        if index < 0:
            index += self._live
        for item in itertools.islice(iter(self), index, None):
            return item
        raise IndexError("pending index out of range")


_PENDING = TaskState.PENDING


def _live(item: tuple[int, Task]) -> bool:
    entry, task = item
    return task.state is _PENDING and task.entry == entry


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
        self.running: dict[int, Task] = {}      # launched: running or queued in a process
        # name -> instructions of the tasks running (not those queued behind them): the
        # ``workers`` argument of launchable().
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

    def launch(self, task: Task, queued: bool, now: float) -> None:
        """A pending task handed to a worker process: running, or queued behind the
        task that process is busy with. Either way the scheduler sees it in
        ``workers`` from now on."""
        task.move(TaskState.QUEUED if queued else TaskState.RUNNING)
        del self.pending_by_tid[task.tid]
        self.pending.discard(task)
        self.running[task.tid] = task
        if not queued:
            task.started = now
            self.running_view[task.name] = task.instructions

    def begin(self, task: Task, now: float) -> None:
        """A queued task has started: the task before it in its process ended."""
        task.move(TaskState.RUNNING)
        task.started = now
        self.running_view[task.name] = task.instructions

    def occupy(self, task: Task) -> None:
        """A queued task whose process moved on to it while it was being taken back:
        whether it started, the worker's answer will say. Until then the scheduler
        counts it among the running (it holds its process, and its ticket), so that
        no launch finds fewer running tasks than busy processes and starts one more
        process; requeue() or finish() takes it out again."""
        self.running_view[task.name] = task.instructions

    def withdraw(self, task: Task) -> None:
        """A pending task that has just ended without running (cancelled) leaves the
        pending queue."""
        del self.pending_by_tid[task.tid]
        self.pending.discard(task)

    def requeue(self, task: Task) -> None:
        """A task goes back to the front of the pending queue: queued but never started,
        to be retried, or hit by a signal meant for the task before it."""
        task.move(TaskState.PENDING)
        task.started = None
        self.running_view.pop(task.name, None)
        del self.running[task.tid]
        task.instructions.pop("scheduler_ticket", None)
        task.worker = None
        self.pending.push_front(task)
        self.pending_by_tid[task.tid] = task

    def finish(self, task: Task, state: TaskState, worker_name: str,
               duration: float | None, peak_rss: int | None) -> None:
        """Move a running (or queued) task to its terminal state and forget it."""
        task.move(state)
        del self.running[task.tid]
        self.running_view.pop(task.name, None)  # absent for a queued task cancelled
        self.stats.record(worker_name, state.value, duration, peak_rss)

    @property
    def idle(self) -> bool:
        return not self.pending and not self.running
