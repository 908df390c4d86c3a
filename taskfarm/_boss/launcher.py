"""Launching, in the boss process: asking the scheduler what may start, handing tasks
to slots of the backend, keeping busy slots fed (prefetch) and taking queued tasks
back. The scheduler is asked here and nowhere else.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from taskfarm._boss.backend import Backend, NoCapacity, Slot
from taskfarm._boss.batches import Batches
from taskfarm._boss.deadlines import Deadlines
from taskfarm._boss.prefetch import MAX_PACE, Prefetch
from taskfarm._boss.tasks import InstructionSet, Task, TaskBook
from taskfarm._common.errors import SchedulerError
from taskfarm._common.messages import SETTING_KEYS, RunTask
from taskfarm._common.processes import THREAD_VARIABLES
from taskfarm._common.system import available_cpus

_LOG = logging.getLogger("taskfarm.boss")


class Launcher:
    """Starts what the scheduler allows on the backend's slots."""

    def __init__(self, scheduler: Any, book: TaskBook, batches: Batches,
                 backend: Backend[Any], prefetch: Prefetch, deadlines: Deadlines,
                 began: Callable[[Task], None], isolated: bool,
                 memory_limit: bool = False, max_tasks_per_child: int | None = None) -> None:
        self.scheduler = scheduler
        self.book, self.batches, self.backend = book, batches, backend
        self.prefetch, self.deadlines = prefetch, deadlines
        self._began = began          # a task started running (its timeout starts)
        self._isolated = isolated    # every class runs isolated
        self._max_tasks = max_tasks_per_child   # a pool process is replaced after so many
        self._memory_limit = memory_limit   # every class's tasks are held to their memory
        self._recheck_after = getattr(scheduler, "recheck_after", None)
        self._rebalance_due = False  # a rebalance is scheduled
        self._full = False           # no worker process could be started: said once
        self._finishing: list[tuple[Slot, int]] = []   # see finishing()

    def finishing(self, tids: tuple[int, ...]) -> None:
        """The main program has these tasks' results (their workers wrote them to it
        directly: taskfarm/_common/express.py), and their outcomes may not have come
        here yet: until the next launch, a task that would need a new process goes
        behind one of them instead, on a worker that is done with it. Without this a
        program that submits its next call as soon as it has the last one's result
        could start a process per call, its worker's outcome a few microseconds late.
        A task tried again is not one of them: its result came from an earlier
        attempt's worker, and the attempt running now is not finishing."""
        running = self.book.running
        for tid in tids:
            task = running.get(tid)
            if task is not None and task.worker is not None and not task.attempts:
                self._finishing.append((task.worker, tid))

    def _finished_slot(self, isolated: bool) -> Slot | None:
        """A slot whose only task the main program has seen end (see finishing)."""
        while self._finishing and not isolated:
            slot, tid = self._finishing.pop()
            if len(slot.tasks) == 1 and slot.tasks[0].tid == tid and slot.doom is None \
                    and not slot.isolated and (self._max_tasks is None
                                               or slot.ran + 1 < self._max_tasks):
                return slot
        return None

    def launch(self) -> None:
        """Start every pending task the scheduler allows now, refill busy slots, and
        write it all (one write per slot)."""
        book = self.book
        self.deadlines.recheck(None)
        if not book.pending:
            self._finishing.clear()
            return
        full = None
        for task in self._ask(book.running_view):
            try:
                self.start(task, None)
            except NoCapacity as exc:  # it stays pending; go on with the slots there are
                full = exc
                break
        self._finishing.clear()
        if self.prefetch.worthwhile:
            self._refill()
        self.backend.flush()
        if book.pending and self._recheck_after is not None:
            self.deadlines.recheck(self._recheck_after())
        if full is not None:
            self._no_capacity(full)

    def _no_capacity(self, why: NoCapacity) -> None:
        """Say so once per episode; with no task running, try again a second later
        (a running one's end would otherwise be the next chance)."""
        if not self._full:
            _LOG.warning("running with the worker processes there are: %s", why)
        self._full = True
        if not self.book.running:
            self.deadlines.recheck(1.0)

    def _refill(self) -> None:
        """Queue tasks behind the one each unfed busy slot runs (see
        :mod:`taskfarm._boss.prefetch`). The scheduler is asked for each, as if the
        slot's current task had ended."""
        book, prefetch = self.book, self.prefetch
        depth = prefetch.depth
        while prefetch.unfed and book.pending:
            slot = prefetch.unfed.pop()
            if not slot.tasks or slot.doom is not None:
                continue
            current = slot.tasks[0].name
            others = {k: v for k, v in book.running_view.items() if k != current}
            room = depth + 1
            if self._max_tasks is not None:  # never queue past the process's last task
                room = min(room, self._max_tasks - slot.ran)
            while len(slot.tasks) < room and book.pending:
                chosen = self._ask(others, first_only=True)
                if not chosen:
                    break
                self.start(chosen[0], slot)

    def _ask(self, workers: Mapping[str, InstructionSet],
             first_only: bool = False) -> list[Task]:
        """The pending tasks the scheduler allows now (the first only, if asked).
        Anything else than a pair whose first item lists pending sets, each once, is
        a SchedulerError naming the scheduler and what it did."""
        book = self.book
        try:
            chosen, _ = self.scheduler.launchable(book.pending, workers, book.stats)
            items = list(chosen[:1] if first_only else chosen)
        except Exception as exc:
            raise SchedulerError(f"scheduler {self.scheduler!r} failed in launchable(): "
                                 f"{type(exc).__name__}: {exc}") from exc
        tasks: list[Task] = []
        seen: set[int] = set()
        for item in items:
            task = book.lookup(item) if isinstance(item, Mapping) else None
            if task is None or task.tid in seen:
                raise SchedulerError(
                    f"scheduler {self.scheduler!r} returned {_short(item)} from "
                    "launchable(), which is not a pending instruction set (or was "
                    "returned twice): return items of pending_instructions")
            tasks.append(task)
            seen.add(task.tid)
        return tasks

    def start(self, task: Task, behind: Slot | None) -> None:
        """Hand ``task`` to an idle (or new) slot, or queue it ``behind`` the task a
        busy slot runs."""
        spec = self.batches.classes[task.class_key]
        isolated = spec.isolated or self._isolated
        if behind is None and self._finishing:
            behind = self._finished_slot(isolated)
        slot = behind if behind is not None else self.backend.acquire(spec, isolated)
        self._full = False
        self.book.launch(task, behind is not None, time.time())
        slot.tasks.append(task)
        task.worker = slot
        if behind is None:
            self._began(task)
            if not slot.isolated:
                self.prefetch.unfed.add(slot)
        batch = task.batch_id
        forget = tuple(b for b in slot.commons if b not in self.batches)
        instructions = dict(task.instructions)
        settings = {key[9:]: instructions.pop(key) for key in SETTING_KEYS
                    if key in instructions} or None
        if (spec.memory_limit or self._memory_limit) and instructions.get("memory"):
            settings = {**(settings or {}), "memory_limit": instructions["memory"]}
        # If the slot is gone by the time this is written, its end says so and the
        # task ends 'killed'.
        self.backend.give(slot, RunTask(
            task.tid, task.class_key, batch, instructions,
            None if task.class_key in slot.classes else spec.blob,
            None if batch in slot.commons else self.batches.common(batch),
            forget, settings, spec.threads, task.payload))
        if _LOG.isEnabledFor(logging.INFO):
            _LOG.info("%s task %r on worker process %d",
                      "queued" if behind is not None else "launched", task.name, slot.pid)

    def used_up(self, slot: Slot) -> bool:
        """True when a pool slot has run its ``max_tasks_per_child``: it is replaced."""
        return self._max_tasks is not None and slot.ran >= self._max_tasks

    def rebalance(self) -> None:
        """A slot idles and nothing is pending: take back the tasks queued behind a
        task that has run longer than ``MAX_PACE`` (they come back pending and start
        on the idle slot), so that no worker idles while a task waits behind a long or
        hung one. Behind a younger task, look again ``MAX_PACE`` later: tiny tasks
        finish sooner than a take-back would take."""
        if self._rebalance_due:
            return
        slots = list(self.backend.slots())
        if self.book.pending or not any(not s.tasks and s.doom is None and not s.isolated
                                        for s in slots):
            return
        now, late, young = time.time(), [], False
        for slot in slots:
            if len(slot.tasks) > 1 and slot.doom is None:
                started = slot.tasks[0].started
                if started is not None and now - started > MAX_PACE:
                    late.append(slot)
                else:
                    young = True
        if late:
            self.take_back_queued(late)
        if young:
            self._rebalance_due = True
            self.deadlines.after(MAX_PACE, self._rebalance_later)

    def _rebalance_later(self) -> None:
        self._rebalance_due = False
        self.rebalance()

    def take_back_queued(self, slots: list[Slot] | None = None) -> None:
        """HALT, STOP (every slot), or a rebalance (the ``slots`` given): ask the
        slots not to start the tasks queued behind their current one (those that had
        not started come back as pending)."""
        busy = [slot for slot in (self.backend.slots() if slots is None else slots)
                if len(slot.tasks) > 1]
        for slot, tid in self.prefetch.queued_to_take_back(busy):
            self.backend.take_back(slot, tid)
        self.backend.flush()


def _short(value: object) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"a {type(value).__name__}"
    return text if len(text) <= 80 else text[:77] + "..."


def default_native_threads(scheduler: Any) -> None:
    """Give each worker its share of the CPUs for native thread pools: with N workers
    on C CPUs, C // N threads each (at least 1), through the environment the workers
    inherit, so pools are sized right when a task first loads them. A variable the
    user set is left alone; a Worker class's ``threads`` overrides it per task."""
    cpus = available_cpus()
    slots = getattr(scheduler, "max_threads", None) or cpus
    share = max(1, cpus // max(1, slots))
    for name in THREAD_VARIABLES:
        os.environ.setdefault(name, str(share))
