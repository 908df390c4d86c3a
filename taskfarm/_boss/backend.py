"""Where tasks run, as the boss loop sees it: one interface between the loop and the
places tasks run, so that the loop never knows whether a task runs in a local
worker process (:mod:`taskfarm._boss.local`) or in a process hosted by a Dask worker
(:mod:`taskfarm._boss.dask_backend`). Runs in the boss process.

A backend hands out *slots* (one place that runs one task at a time, with tasks
queued behind it), writes tasks to them, takes queued tasks back, stops them without
blocking, and reports what happens to them through the loop's :class:`BackendEvents`:
the messages a slot sent (outcomes, skips, notices) and its end. Every descriptor it needs
watched goes into the loop's one ``poll()`` through :class:`Watcher`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import NamedTuple, Protocol, TypeVar

from taskfarm._boss.tasks import Task
from taskfarm._common.messages import Notice, Outcome, RunTask, Skipped, WorkerClassSpec
from taskfarm._common.processes import ExitInfo
from taskfarm._common.status import TaskStatus


class NoCapacity(Exception):
    """Raised by ``Backend.acquire``: no more slot can be had now (the message says
    why). The task stays pending and the farm goes on with the slots it has."""


class Doom(NamedTuple):
    """Why a slot is being stopped: the task the stop is meant for, the ending it gets
    (timeout or cancelled) and why. Another task its process was running by the time
    the signal landed goes back to pending."""

    tid: int
    status: TaskStatus
    why: str


class Slot(Protocol):
    """One place that runs tasks one at a time."""

    pid: int
    isolated: bool
    tasks: deque[Task]          # the task it runs first, then those queued behind it
    doom: Doom | None           # set while it is being stopped
    classes: set[int]           # Worker classes it holds (sent once)
    commons: set[int]           # common-instruction batches it holds (sent once)
    number: int                 # its number among the slots alive (reused once it ends)
    ran: int                    # tasks it has reported (max_tasks_per_child)


class BackendEvents(Protocol):
    """What a backend tells the loop (implemented by the loop)."""

    def on_messages(self, slot: Slot, msgs: list[Outcome | Skipped | Notice]) -> None:
        """Messages a slot sent, in order (read in one go)."""

    def on_exit(self, slot: Slot, info: ExitInfo) -> None:
        """A slot's process ended (after every message it wrote was delivered)."""


class Watcher(Protocol):
    """The loop's poll: a backend watches its descriptors through it."""

    def watch(self, fd: int, handler: Callable[[int], None]) -> None: ...

    def unwatch(self, fd: int) -> None: ...


S = TypeVar("S", bound=Slot)


class Backend(Protocol[S]):
    """Where tasks run (see the module docstring), with slots of type ``S``."""

    def acquire(self, spec: WorkerClassSpec, isolated: bool) -> S:
        """An idle slot that can run this class, or a new one (always new when
        isolated); NoCapacity when no new one can be had now."""

    def give(self, slot: S, msg: RunTask) -> None:
        """Give a task to a slot; written with the others given since, at flush()."""

    def flush(self) -> None:
        """Write every task given since the last flush, one write per slot."""

    def take_back(self, slot: S, tid: int) -> None:
        """Ask a slot not to start a queued task; it answers Skipped if in time."""

    def drain(self, slot: S) -> None:
        """Deliver, without blocking, the messages the slot has already written."""

    def idle(self, slot: S) -> None:
        """The slot has nothing left to run: keep it for the next task, or retire it
        (isolated)."""

    def release(self, names: tuple[str, ...]) -> None:
        """Tell every slot's process to unmap these SharedArray segments."""

    def retire(self, slot: S) -> None:
        """The slot has nothing left to run and must not be reused: its process ends
        normally (its Worker classes' ``teardown_process`` runs)."""

    def stop(self, slot: S) -> None:
        """Begin stopping the slot's process without blocking (its ``doom`` says why);
        its end comes through on_exit."""

    def slots(self) -> Iterable[S]:
        """Every slot alive."""

    def shutdown(self, linger: bool) -> None:
        """At the boss's exit: retire every slot (``linger``: let running tasks
        finish on their own instead of stopping them) and wait for them."""
