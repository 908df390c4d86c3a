"""The boss process: the event loop between the main program and the workers. Runs
in the boss subprocess only (``python -m taskfarm._boss``).

::

      main program                    boss process                    worker processes
    ┌──────────────┐  control pipe  ┌────────────────┐  task pipe   ┌──────────────┐
    │ Boss handle  │ ─────────────> │   BossLoop     │ ───────────> │ serve()      │
    │ (_main)      │                │  poll+dispatch │              │ Worker.task  │
    │ receiver     │ <───────────── │  owns pieces ↓ │ <─────────── │              │
    │ thread       │  report pipe   └────────────────┘  result pipe └──────────────┘
    └──────────────┘                                     + pidfd (sentinel)

*Main program.* Checks and matches instruction sets, sends them and control signals
down the control pipe; a receiver thread turns the outcomes streaming up the report
pipe into TaskReports.

*Boss.* Blocks in one ``poll()`` over the control pipe, the main program's pidfd, and
the descriptors of the backend's slots (each worker's result pipe and pidfd): no
fixed polling interval, so a finished task or a dead worker is handled the moment it
happens; its only timeout is the nearest deadline. After each wake-up it launches
what the scheduler allows and flushes the outcomes made so far to the main program
in one message. The loop itself only polls and dispatches; the state lives in the
pieces it owns, each testable without processes:

``Lifecycle`` (the farm's state, guarded), ``TaskBook``, ``Dependencies``,
``Batches``, ``Deadlines``, ``Prefetch``, ``ErrorPolicy``, ``Launcher`` (asks the
scheduler, starts tasks), ``Endings`` (records endings) and a ``Backend`` (where tasks
run); ``docs/architecture.md`` says which owns what.

*Workers.* Run task after task (pool mode) or one task each (isolated mode), and send
one outcome per task. A worker that dies without one is seen through its pidfd; its
task ends 'killed' with the signal or exit code named, and its slot is refilled.

The boss dies with the main program: its control pipe reaches EOF and the main
program's pidfd becomes readable, whichever comes first; it then stops every worker.
"""

from __future__ import annotations

import pickle
import select
import time
from collections.abc import Callable
from typing import Any

from taskfarm._boss.backend import Backend, Doom, Slot
from taskfarm._boss.batches import Batches
from taskfarm._boss.cancels import Cancels
from taskfarm._boss.deadlines import Clock, Deadlines
from taskfarm._boss.dependencies import Dependencies
from taskfarm._boss.endings import Endings
from taskfarm._boss.error_policy import ErrorPolicy
from taskfarm._boss.exits import exit_outcome
from taskfarm._boss.launcher import Launcher
from taskfarm._boss.lifecycle import FarmState, Lifecycle
from taskfarm._boss.local import LocalBackend
from taskfarm._boss.prefetch import Prefetch
from taskfarm._boss.started import StartedNotices
from taskfarm._boss.stopping import Stopping
from taskfarm._boss.tasks import Task, TaskBook, TaskState
from taskfarm._common.errors import SchedulerError
from taskfarm._common.messages import (
    AddTasks,
    Cancel,
    Configure,
    Control,
    Goodbye,
    Notice,
    Outcome,
    Outcomes,
    Release,
    Signal,
    Skipped,
    Snapshot,
    Watch,
)
from taskfarm._common.processes import ExitInfo
from taskfarm._common.status import TaskStatus
from taskfarm._common.wire import Channel, Message, unexpected

_READ = select.POLLIN | select.POLLHUP | select.POLLERR


def make_backend(config: Configure, watcher: Any, events: Any,
                 deadlines: Deadlines) -> Backend[Any]:
    """The backend the configuration names: local processes, or a Dask cluster."""
    if config.backend is None:
        return LocalBackend(config.start_method, watcher, events, deadlines, config.main_copy,
                            config.express_fd)
    kind, options = config.backend
    if kind == "dask":
        from taskfarm._boss.dask_backend import DaskSlots

        return DaskSlots(options, watcher, events, deadlines)
    raise ValueError(f"unknown backend {kind!r}")


class ParentGone(Exception):
    """The main program is gone: stop everything, say nothing."""


class BossLoop:
    """The boss's event loop over the pieces it owns; see the module docstring."""

    def __init__(self, control: Channel, reports: Channel, parent_fd: int,
                 config: Configure, clock: Clock = time.monotonic) -> None:
        self.control, self.reports = control, reports
        self.config = config
        self.scheduler = pickle.loads(config.scheduler_blob)
        self.lifecycle = Lifecycle()
        self.book = TaskBook()
        self.deps = Dependencies()
        self.batches = Batches()
        self.deadlines = Deadlines(clock)
        self.prefetch = Prefetch(bool(getattr(self.scheduler, "prefetch", False)))
        self.policy = ErrorPolicy(fail_fast=config.on_error == "raise")
        self.shared: set[str] = set()   # SharedArray segments, removed if the parent dies
        self._poller = select.poll()
        self._handlers: dict[int, Callable[[int], None]] = {}
        # Seen through the Backend interface only. Its slot type is the backend's own
        # (the loop gets slots from it and hands them back, never makes one): Any, as
        # in the Launcher, stands for "whichever type this backend's slots have".
        self.backend: Backend[Any] = make_backend(config, self, self, self.deadlines)
        self.launcher = Launcher(self.scheduler, self.book, self.batches, self.backend,
                                 self.prefetch, self.deadlines, self._began,
                                 config.isolated, config.memory_limit,
                                 config.max_tasks_per_child)
        self.started = StartedNotices(self.deadlines, config.started_notices)
        self.endings = Endings(self.book, self.batches, self.deps, self.policy,
                               self.lifecycle, self._fail_fast, self.started)
        self.cancels = Cancels(self.book, self.deps, self.endings, self.prefetch,
                               self.backend, self._stop_slot)
        self.stopping = Stopping(self.backend, self.book, self.prefetch, self.launcher,
                                 self.cancels, self._stop_slot)
        self._cancel_why = ""   # what running tasks are told while CANCELLING
        self._cause = ""        # what ended the run, when not a task (Goodbye.cause)
        self._on_message: dict[type[Any], Callable[[Any], None]] = {
            AddTasks: self._add_tasks, Control: self._on_signal, Cancel: self._on_cancel,
            Watch: self._on_watch, Release: self._on_release}
        self.watch(control.fileno(), self._on_control)
        self.watch(parent_fd, self._on_parent_gone)

    # ---- the loop -----------------------------------------------------------------------

    def run(self) -> Goodbye:
        """Serve until the farm's state is final; returns the goodbye to send."""
        if self.control.buffered:  # messages that came in with Configure
            self._on_control(self.control.fd)
        lifecycle = self.lifecycle
        while True:
            if lifecycle.launching:
                try:
                    self.launcher.launch()
                except SchedulerError as exc:  # running tasks are cancelled, with why
                    self._cause = "scheduler"
                    self._cancel(FarmState.FAILED, str(exc), f"the run ended: {exc}")
            if lifecycle.state is FarmState.CANCELLING:
                self.stopping.stop_busy_slots(self._cancel_why)
            self._check_done()
            self._flush()
            if lifecycle.state.final:
                break
            for fd, _ in self._poller.poll(self.deadlines.wait_ms()):
                handler = self._handlers.get(fd)
                if handler is not None:
                    handler(fd)
            self.deadlines.run_due()
        pending = (*(t.tid for t in self.book.pending.tasks()), *self.deps.blocked)
        return Goodbye(lifecycle.report_status.value, lifecycle.reason, pending, self._cause)

    def watch(self, fd: int, handler: Callable[[int], None]) -> None:
        """Call ``handler(fd)`` when ``fd`` is readable (the backend's Watcher)."""
        self._poller.register(fd, _READ)
        self._handlers[fd] = handler

    def unwatch(self, fd: int) -> None:
        if self._handlers.pop(fd, None) is not None:
            self._poller.unregister(fd)

    def _check_done(self) -> None:
        lifecycle = self.lifecycle
        if self.book.running or lifecycle.state.final:
            return
        if lifecycle.state is FarmState.CANCELLING:
            lifecycle.end(FarmState.STOPPED, "")   # the outcome decided when cancelling
        elif lifecycle.state is FarmState.STOPPING:
            lifecycle.end(FarmState.STOPPED, "STOP: running tasks finished, nothing more launched")
        elif lifecycle.ending and not self.book.pending and not self.deps.blocked:
            lifecycle.end(FarmState.FINISHED, "every instruction set ran")

    # ---- the main program ---------------------------------------------------------------

    def _on_control(self, fd: int) -> None:
        # Several messages may come in one read: handle every one already buffered,
        # since poll() cannot see them.
        while True:
            try:
                msg: Message = self.control.recv()
            except (EOFError, OSError):
                if self.lifecycle.state is not FarmState.CANCELLING:
                    raise ParentGone from None
                # The main program closed its end after STOP_RIGHTNOW and is reading the
                # report pipe until the goodbye: finish stopping, then say it.
                self.unwatch(fd)
                return
            handler = self._on_message.get(type(msg))
            if handler is None:
                raise unexpected(msg, "the boss (from the main program)")
            handler(msg)
            if not self.control.buffered or self.lifecycle.state.final:
                return

    def _on_parent_gone(self, fd: int) -> None:
        raise ParentGone

    def _add_tasks(self, msg: AddTasks) -> None:
        self.launcher.finishing(msg.ended)   # results the main program has (express.py)
        self.shared.update(msg.shared)
        self.batches.add(msg)
        for spec in msg.tasks:
            task = Task(spec.tid, spec.class_key, msg.batch_id, spec.view,
                        self.batches.classes[spec.class_key].qualname)
            task.payload = spec.payload
            reason = spec.cancelled or self.deps.add(task, spec.after)
            if reason is None:
                self.book.add(task)
            elif reason:
                self.endings.cancel_unstarted(task, reason)
            # "": it waits for its prerequisites in self.deps

    def _on_cancel(self, msg: Cancel) -> None:
        self.cancels.cancel(msg.tids)

    def _on_release(self, msg: Release) -> None:
        """SharedArrays no task needs: forget them; workers unmap them."""
        self.shared.difference_update(msg.names)
        self.backend.release(msg.names)

    def _on_watch(self, msg: Watch) -> None:
        self.started.watch(msg.started, msg.hold)

    def _on_signal(self, msg: Control) -> None:
        sig = msg.signal
        if sig in (Signal.HALT, Signal.RESUME, Signal.END):
            self.lifecycle.signal(sig)
            if sig is Signal.HALT:
                self.launcher.take_back_queued()
        elif sig is Signal.SEND_REPORT:
            self._flush()
            running = tuple((t.tid, t.worker.pid if t.worker else None,
                             t.instructions.get("scheduler_ticket"), t.started or 0.0)
                            for t in self.book.running.values()
                            if t.state is TaskState.RUNNING)
            self.send(Snapshot(msg.seq, "halted" if self.lifecycle.halted else "running",
                               running, str(getattr(self.scheduler, "holding", None) or "")))
        elif sig is Signal.STOP:
            self.lifecycle.stop()
            self.launcher.take_back_queued()
        elif sig is Signal.STOP_LISTENING:
            self.stopping.leave_to_workers()
            self.lifecycle.end(FarmState.STOPPED, "STOP_LISTENING: running tasks were left "
                                                  "to finish alone")
        elif sig is Signal.STOP_RIGHTNOW:
            self._cancel(FarmState.STOPPED, "STOP_RIGHTNOW: running tasks were terminated",
                         "STOP_RIGHTNOW")
        else:
            raise unexpected(msg, f"the boss (signal {sig!r})")

    # ---- the backend's events -----------------------------------------------------------

    def on_messages(self, slot: Slot, msgs: list[Outcome | Skipped | Notice]) -> None:
        """Outcomes (and answers to take-backs, and notices) a slot sent, in order."""
        book, prefetch = self.book, self.prefetch
        for msg in msgs:
            if isinstance(msg, Notice):  # emitted values, log records: forwarded
                self.endings.notices.append(msg)
                continue
            if isinstance(msg, Skipped):  # a queued task it will never start, any order
                self._skipped(slot, msg.tid)
                continue
            if not slot.tasks or slot.tasks[0].tid != msg.tid:
                continue  # a slot reports its tasks in order; anything else is ignored
            task = slot.tasks.popleft()
            # The task queued behind started as this outcome was sent; say so before
            # it is finished, which may stop the slot (fail-fast).
            self._next_began(slot)
            prefetch.skipping.discard(task.tid)
            if msg.started is not None:
                prefetch.learn(msg.ended - msg.started)
            if task.state is TaskState.QUEUED:  # asked back too late: it had started
                book.begin(task, msg.started or time.time())
                self.cancels.asked_back.discard(task.tid)
                self._say_started(task)
            slot.ran += 1
            self.endings.finish(task, msg)
        if not slot.tasks:
            if self.launcher.used_up(slot):
                self.backend.retire(slot)
            else:
                self.backend.idle(slot)
            if not book.pending and prefetch.enabled:
                self.launcher.rebalance()
        elif slot.doom is None and not slot.isolated and prefetch.wants_more(slot):
            prefetch.unfed.add(slot)

    def _skipped(self, slot: Slot, tid: int) -> None:
        """A slot will never start this queued task: it is pending again."""
        for index, task in enumerate(slot.tasks):
            if task.tid == tid:
                del slot.tasks[index]
                self.stopping.put_back(task)
                if index == 0:
                    self._next_began(slot)
                return

    def _next_began(self, slot: Slot) -> None:
        """The slot moved on to the task queued first. One being taken back holds the
        slot as if running until its Skip says whether it started (TaskBook.occupy)."""
        task = slot.tasks[0] if slot.tasks else None
        if task is not None and task.state is TaskState.QUEUED:
            if task.tid in self.prefetch.skipping:
                self.book.occupy(task)
            else:
                self.book.begin(task, time.time())
                self._began(task)

    def on_exit(self, slot: Slot, info: ExitInfo) -> None:
        """A slot's process ended; every outcome it wrote was delivered first."""
        self.prefetch.unfed.discard(slot)
        if not slot.tasks:
            return
        current = slot.tasks.popleft()
        self.stopping.requeue_queued(slot)   # queued behind: never started
        doom = slot.doom
        if doom is not None and doom.tid != current.tid and self.lifecycle.open:
            self.book.requeue(current)  # hit by the signal meant for the task before it
            return
        now = time.time()
        if current.state is TaskState.QUEUED:
            self.book.begin(current, now)
        self.endings.finish(current, exit_outcome(current, slot, info, now,
                                                  self.policy.likely_cause(info),
                                                  self._cancel_why))

    # ---- deadlines and stopping ---------------------------------------------------------

    def _began(self, task: Task) -> None:
        """A task started running: its timeout, if it has one, starts now. The entry
        number tells this run of the task from a later one (a retry, a requeue)."""
        self._say_started(task)
        timeout = task.instructions.get("timeout")
        if timeout:
            entry = task.entry
            self.deadlines.after(timeout, lambda: self._time_out(task, entry, timeout))

    def _say_started(self, task: Task) -> None:
        slot = task.worker
        if self.started.enabled and slot is not None:
            self.started.say(task.tid, slot.pid, slot.number, task.started)

    def _time_out(self, task: Task, entry: int, timeout: float) -> None:
        slot = task.worker
        if task.state is TaskState.RUNNING and task.entry == entry and slot is not None \
                and slot.doom is None:
            self._stop_slot(slot, Doom(task.tid, TaskStatus.TIMEOUT,
                                       f"ran past its timeout of {timeout:g} s"))

    def _stop_slot(self, slot: Slot, doom: Doom) -> None:
        """Stop a slot's process without blocking: its task ends as ``doom`` says when
        the process is gone (see processes.begin_termination)."""
        slot.doom = doom
        self.prefetch.unfed.discard(slot)
        self.backend.stop(slot)

    def _fail_fast(self, why: str) -> None:
        self._cancel(FarmState.FAILED, why, f"fail-fast: {why}")

    def _cancel(self, outcome: FarmState, reason: str, why: str) -> None:
        """STOP_RIGHTNOW or fail-fast: decide the outcome; the loop stops busy slots."""
        if self.lifecycle.state is not FarmState.CANCELLING:
            self.lifecycle.cancel(outcome, reason)
            self._cancel_why = why

    # ---- the main program, outbound ----------------------------------------------------

    def _flush(self) -> None:
        if self.lifecycle.state.final:  # nothing stays held past the run's end
            self.started.release(everything=True)
        outbox, notices = self.endings.outbox, self.endings.notices
        if outbox or notices:
            self.send(Outcomes(tuple(outbox), tuple(notices)))
            del outbox[:], notices[:]

    def send(self, msg: Message) -> None:
        try:
            self.reports.send(msg)
        except OSError:
            raise ParentGone from None

