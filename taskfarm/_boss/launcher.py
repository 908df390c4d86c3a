"""Launching, in the boss process: asking the scheduler what may start, handing tasks
to worker processes, keeping the next task queued in each busy process (prefetch), and
taking queued tasks back. A part of :class:`taskfarm._boss.loop.BossLoop`, which
holds the state these methods share.
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import TYPE_CHECKING, Any

from taskfarm._boss.local import WorkerProcess
from taskfarm._boss.tasks import Task
from taskfarm._common.messages import SETTING_KEYS, RunTask
from taskfarm._common.processes import THREAD_VARIABLES

if TYPE_CHECKING:
    from taskfarm._boss.loop import BossLoop

# Prefetch depth (see Launching._learn_duration): queue at most this much work, in
# seconds at the recent pace, and at most this many tasks, behind a running task.
QUEUE_SECONDS = 0.002
MAX_DEPTH = 32


class Launching:
    """The launching half of the boss loop (see the module docstring)."""

    def _launch(self: BossLoop) -> None:
        book = self.book
        self.recheck_at = None
        if self.halted or self.stopping or not book.pending:
            return
        chosen, _ = self.scheduler.launchable(book.pending, book.running_view, book.stats)
        for item in chosen:
            task = book.lookup(item)
            if task is not None:
                self._start(task, None)
        if self.prefetch:
            self._prefetch()
        for proc in self.given:
            self.pool.send(proc)
        self.given.clear()
        if book.pending and self.recheck_after is not None:
            delay = self.recheck_after()
            if delay is not None:
                self.recheck_at = time.monotonic() + max(0.0, delay)

    def _prefetch(self: BossLoop) -> None:
        """Queue tasks behind the one each busy pool process runs, so that it starts
        the next the moment the current one ends (only with a scheduler that allows
        it, see BaseScheduler.prefetch). The scheduler is asked for each, as if the
        process's current task had ended. How many: see :meth:`_learn_duration`."""
        book = self.book
        depth = self.depth
        while self.unfed and book.pending:
            proc = self.unfed.pop()
            if not proc.tasks or proc.task_conn is None or proc.doomed_by is not None:
                continue
            # The running tasks as they will be once this process's current one ended.
            current = proc.tasks[0].name
            others = {k: v for k, v in book.running_view.items() if k != current}
            while len(proc.tasks) <= depth and book.pending:
                chosen, _ = self.scheduler.launchable(book.pending, others, book.stats)
                task = book.lookup(chosen[0]) if chosen else None
                if task is None:
                    break
                self._start(task, proc)

    def _learn_duration(self: BossLoop, seconds: float) -> None:
        """How deep to queue behind each busy process: enough tasks to cover
        QUEUE_SECONDS of work at the recent pace, at most MAX_DEPTH. Tiny tasks then
        travel many to a write, and their outcomes come back many to a read; tasks of
        a millisecond or more are queued one at a time, as before. The pace follows
        a longer task at once and a shorter one slowly, so that the queue never holds
        much work behind a task that turns out long."""
        mean = self.mean_duration
        mean = seconds if seconds >= mean or mean == math.inf else mean + (seconds - mean) * 0.05
        self.mean_duration = mean
        self.depth = max(1, min(MAX_DEPTH, int(QUEUE_SECONDS / max(mean, 1e-7))))

    def _start(self: BossLoop, task: Task, behind: WorkerProcess | None) -> None:
        """Hand ``task`` to an idle (or new) process, or queue it ``behind`` the task a
        busy process runs."""
        spec = self.classes[task.class_key]
        if behind is None:
            proc = self.pool.take_idle(spec.isolated or self.config.isolated, spec.key, spec.blob)
            if proc.pidfd not in self.fd_owner:  # a new process: watch pipe and sentinel
                for fd, handler in ((proc.result_conn.fileno(), self._on_result),
                                    (proc.pidfd, self._on_exit)):
                    self._watch(fd, handler)
                    self.fd_owner[fd] = proc
        else:
            proc = behind
        self.book.launch(task, behind is not None, time.time())
        if behind is None:
            self._began(task)
        proc.tasks.append(task)
        task.worker = proc
        if behind is None and not proc.isolated:
            self.unfed.add(proc)
        if not proc.outgoing:
            self.given.append(proc)
        batch = task.batch_id
        forget = tuple(b for b in proc.commons if b not in self.commons)
        instructions = dict(task.instructions)
        settings = {key[9:]: instructions.pop(key) for key in SETTING_KEYS
                    if key in instructions} or None
        msg = RunTask(task.tid, task.class_key, batch, instructions,
                      None if task.class_key in proc.classes else spec.blob,
                      None if batch in proc.commons else self.commons[batch][0],
                      forget, settings, spec.threads, task.payload)
        # Written at the end of _launch; if the process is gone by then, its pidfd
        # fires and the task ends 'killed'.
        self.pool.dispatch(proc, msg)
        if self.config.verbose:
            how = "queued" if behind is not None else "launched"
            print(f"[taskfarm boss] {how} {task.name} on pid {proc.pid}", file=sys.stderr)

    def _take_back_queued(self: BossLoop) -> None:
        """HALT, STOP: ask every process to drop the task queued behind its current one
        (if it has not started, it comes back as pending)."""
        for proc in self.pool.procs.values():
            for task in list(proc.tasks)[1:]:
                if task.tid not in self.skipping and proc.task_conn is not None:
                    self.skipping.add(task.tid)
                    self.pool.skip(proc, task.tid)
        self.unfed.clear()


def default_native_threads(scheduler: Any) -> None:
    """Give each worker its share of the CPUs for native thread pools: with N workers
    on C CPUs, C // N threads each (at least 1), through the environment the workers
    inherit, so pools are sized right when a task first loads them. A variable the
    user set is left alone; a Worker class's ``threads`` overrides it per task."""
    from taskfarm._common.system import available_cpus

    cpus = available_cpus()
    slots = getattr(scheduler, "max_threads", None) or cpus
    share = max(1, cpus // max(1, slots))
    for name in THREAD_VARIABLES:
        os.environ.setdefault(name, str(share))
