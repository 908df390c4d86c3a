"""The ``Boss`` handle: the main program's side of a farm. Runs in the main program.

It starts the boss subprocess, checks and matches instructions before sending them
(bad input is an error at the call that gave it), sends control signals, and answers
from what its receiver thread (:mod:`taskfarm._main.inbox`) has heard. See
:mod:`taskfarm._boss.loop` for the picture of all three processes.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal

from schedulers import BaseScheduler
from taskfarm._common.errors import BossDiedError, BossStateError
from taskfarm._common.messages import Cancel, Configure, Control, Signal, Watch
from taskfarm._common.wire import Message, dumps
from taskfarm._common.worker_class import Worker
from taskfarm._main import interrupts
from taskfarm._main.batch import Batch, Rules, prepare_batch
from taskfarm._main.event_queue import iterate
from taskfarm._main.events import EventKind, EventStream, TaskEvent
from taskfarm._main.giving import give
from taskfarm._main.interrupts import sigint_held
from taskfarm._main.ledger import Ledger
from taskfarm._main.lifetime import close_farm, raise_if_gone, start_boss, stop_right_now
from taskfarm._main.logs import log_verbosely, quiet_again
from taskfarm._main.options import (
    checked_scheduler,
    configuration,
    instruction_check,
    open_journal,
    run_policies,
)
from taskfarm._main.prepare import resolve_worker
from taskfarm._main.report import Report, TaskReport
from taskfarm._main.reports import Reports
from taskfarm._main.shared_keeper import SharedKeeper

_COUNTER = itertools.count(1)


class Boss:
    """A farm: a boss subprocess and its worker processes.

    The boss starts halted: it accepts instructions but launches nothing until
    :meth:`make_them_work`. Use it as a context manager to be sure every process is
    gone when the block ends.

    Args:
        scheduler: decides what is launchable (default ``MaxThreadsScheduler(0)``: one
            task per CPU this process may use).
        name: a name for messages and reports.
        verbose: log the farm's INFO records (launches, retries, what a scheduler holds)
            and its tasks' on stderr; else the program's logging decides (docs/events.md).
        on_error: ``"raise"`` (fail-fast: the first failure stops the others and
            :meth:`wait_till_finished` re-raises it) or ``"continue"`` (keep going,
            record every failure).
        isolated: run every task in a fresh process (also settable per Worker class).
        start_method: ``"fork"`` (workers forked from the small boss), ``"spawn"``
            (fresh interpreters) or ``"main"`` (forked from a copy of this program
            taken now, so tasks see its state; see docs/architecture.md). Default:
            ``TASKFARM_START_METHOD`` if set, else ``"fork"``.
        workers: restrict matching to these Worker classes (default: every Worker
            subclass defined).
        timeout, retries, retry_on, retry_memory: per-task policies for the whole run,
            used where neither the instruction set nor the Worker class sets them
            (see :class:`Worker`).
        keep_reports: keep every TaskReport for :meth:`get_report` (default). False,
            for a service that runs for weeks: a task is forgotten once
            :meth:`as_completed` has yielded its report (its name may then be given
            again, and ``after`` can no longer name it), so memory stays flat.
        journal: an SQLite file recording every task's ending; a name recorded done
            there is not run again, its report read back (see docs/journal.md).
        backend: where tasks run: None (processes of this machine) or a
            ``taskfarm.DaskBackend`` (a Dask cluster; see docs/scaling.md).
        memory_limit: a task that tries to grow past the ``memory`` (MiB) it declares
            ends ``killed``, "over its memory limit" (also per Worker class).
        seed: a non-negative integer: each task gets ``self.seed`` derived from it
            and its name, and ``random`` and ``numpy.random`` are seeded from that
            before it runs (see :attr:`Worker.rng`). None: nothing is seeded.
        capture_output: every task's stdout and stderr travel in its report (also
            per Worker class).
        max_tasks_per_child: a pool worker process is replaced after so many tasks.
    """

    _express = False  # workers write results straight here (taskfarm.Executor's farm)

    def __init__(self, scheduler: BaseScheduler | None = None, name: str | None = None,
                 verbose: bool = False,
                 on_error: Literal["raise", "continue"] = "raise", isolated: bool = False,
                 start_method: str | None = None,
                 workers: Sequence[type[Worker] | str] | None = None,
                 timeout: float | None = None, retries: int = 0,
                 retry_on: Sequence[str] | None = None, retry_memory: float = 1.0,
                 keep_reports: bool = True, memory_limit: bool = False,
                 seed: int | None = None, capture_output: bool = False,
                 max_tasks_per_child: int | None = None,
                 journal: str | os.PathLike[str] | None = None, backend: Any = None) -> None:
        self._policies = run_policies(timeout, retries, retry_on, retry_memory)
        self.scheduler = scheduler = checked_scheduler(scheduler)
        self.name = name or f"boss-{next(_COUNTER)}"
        config = configuration(scheduler, self.name, on_error=on_error, isolated=isolated,
                               start_method=start_method, verbose=verbose,
                               memory_limit=memory_limit, seed=seed,
                               capture_output=capture_output,
                               max_tasks_per_child=max_tasks_per_child,
                               started_notices=journal is not None, backend=backend)
        if verbose:  # until this Boss closes (its finalizer, or the failed start below)
            farm_level, task_level = log_verbosely()
            config = config._replace(log_level=farm_level, task_log_level=task_level)
        self.on_error = on_error
        self._backend = backend
        candidates = tuple(resolve_worker(w) for w in workers) if workers is not None else None
        self._journal = open_journal(journal)
        self._rules = Rules(candidates, self._policies, instruction_check(scheduler),
                            repr(scheduler), self._journal,
                            getattr(backend, "shared_refusal", None),
                            config.start_method == "main")
        self._ledger = Ledger(keep_reports)
        self._events = EventStream()
        if self._journal is not None:  # before any other sink: see journal.py
            self._events.subscribe(self._journal, durable=True)
        self._events.subscribe(self._ledger)
        self._watching = config.started_notices   # STARTED notices (the journal's slots)
        self._class_keys: Mapping[type[Worker], int] = {}
        self._next_batch = 0
        self._seq = itertools.count(1)
        # Held by a set_instructions call: calls from several threads go one at a time.
        self._give_lock = threading.Lock()
        self._send_lock = threading.Lock()   # one frame at a time on the control pipe
        self._halted = True
        self._ended = False      # END sent (or a stop): no more instructions
        self._deaf = False       # make_them_work(stop_listening=True): no more signals

        # Started with Ctrl-C held back: either the boss process is started and owned
        # by a finalizer that ends it, or nothing is (interrupts.py).
        interrupts.install()
        try:
            with sigint_held:
                self._start_boss(config)
        except BaseException:  # Ctrl-C included: end what was started, then re-raise
            if hasattr(self, "_finalizer"):
                self.close()
            elif verbose:
                quiet_again()
            raise

    def _start_boss(self, config: Configure) -> None:
        self._proc, self._control, self._inbox, config = start_boss(
            self.name, self._ledger, self._events, config, self._express)
        if config.on_error == "raise":
            self._inbox.on_local_failure = functools.partial(stop_right_now, self._control,
                                                             self._send_lock)
        self._reports = Reports(self.name, self._ledger, self._inbox,
                                fail_fast=config.on_error == "raise")
        # SharedArrays given to this farm: held while a task that received them runs.
        self._keeper = SharedKeeper()
        self._events.subscribe(self._keeper)
        self._finalizer = weakref.finalize(self, close_farm, self._proc, self._control,
                                           self._inbox, self._send_lock, self._keeper.arrays,
                                           os.getpid(), self._journal, self._backend,
                                           config.verbose)
        self._inbox.thread.start()
        self._send(config)

    # ---- instructions -----------------------------------------------------------------

    def set_instructions(self, common_instructions: Mapping[str, Any] | None = None,
                         individual_instructions: Mapping[str, Sequence[Any]] | None = None,
                         worker: type[Worker] | str | None = None) -> list[str]:
        """Give instruction sets: ``common_instructions`` shared by all, expanded over
        ``individual_instructions`` (a dict of equal-length lists, one element per set).

        Each set is checked and matched to a Worker class here (or to ``worker``); any
        error raises an :class:`InstructionError` and nothing of this call is sent.
        Returns the names of the tasks created, in order.
        """
        return self._give(functools.partial(prepare_batch, common_instructions,
                                            individual_instructions, worker, self._rules))

    def _give(self, prepare: Callable[..., Batch]) -> list[str]:
        """Give the call ``prepare(names, statuses, first_tid, batch_id, class_keys)`` makes."""
        with self._give_lock:
            self._check_open("give instructions")
            if self._ended:
                raise BossStateError(f"{self.name}: no instructions after end() or a stop")
            ledger = self._ledger
            # The live dicts, only looked up (the receiver thread may add to them).
            batch = prepare(ledger.names, ledger.statuses, ledger.next_tid,
                            self._next_batch, self._class_keys)
            if not batch.names:
                return []
            # Everything pickled: from here on nothing can fail because of the input,
            # and a Ctrl-C waits until the call has been given whole (interrupts.py).
            with self._send_lock, sigint_held:
                self._check_open("give instructions")
                give(batch, self._next_batch, self._control, ledger, self._keeper,
                     self._events, functools.partial(self._commit, batch),
                     lambda: raise_if_gone(self._inbox, self.name, "give instructions", True))
            self._events.publish([TaskEvent(EventKind.QUEUED, tid, record.name)
                                  for tid, record in batch.records])
            if batch.resumed:  # read back from the journal: they end at once
                self._events.publish([TaskEvent(EventKind.ENDED, tid, report.name, report)
                                      for tid, report in batch.resumed])
            return list(batch.names)

    def _commit(self, batch: Batch) -> None:
        """What a call that reached the boss leaves in the handle."""
        self._class_keys = batch.class_keys
        self._next_batch += 1

    # ---- control signals --------------------------------------------------------------

    def make_them_work(self, terminate: bool = False, stop_listening: bool = False) -> None:
        """Launch work (RESUME). ``terminate``: no more instructions will come, and the
        boss exits when all is done (END). ``stop_listening``: the same, and the boss
        takes no further signal; the main program can only wait for the end."""
        self._signal(Signal.RESUME)
        self._halted = False
        if terminate or stop_listening:
            self.end()
        if stop_listening:
            self._deaf = True

    def halt(self) -> None:
        """Launch nothing new until :meth:`make_them_work` (HALT); running tasks go on."""
        self._signal(Signal.HALT)
        self._halted = True

    def stop_them_working(self) -> None:
        """Stop the workers now, as in taylorism: :meth:`stop_right_now`."""
        self.stop_right_now()

    def send_report_request(self) -> int:
        """Ask for an interim report (SEND_REPORT); returns its number."""
        seq = next(self._seq)
        self._signal(Signal.SEND_REPORT, seq)
        return seq

    def end(self) -> None:
        """No more instructions (END): the boss finishes all pending work, then exits."""
        self._check_open("send END")
        if not self._ended:
            self._signal(Signal.END)
            self._ended = True

    def stop(self) -> None:
        """Launch nothing more, let running tasks finish, exit (STOP)."""
        self._signal(Signal.STOP)
        self._ended = True

    def stop_listening(self) -> None:
        """The boss exits its loop now; running tasks finish alone (STOP_LISTENING)."""
        self._signal(Signal.STOP_LISTENING)
        self._ended = True

    def stop_right_now(self) -> None:
        """Terminate running tasks now ('cancelled') and exit (STOP_RIGHTNOW)."""
        self._signal(Signal.STOP_RIGHTNOW)
        self._ended = True

    def _signal(self, sig: Signal, seq: int = 0) -> None:
        self._check_open(f"send {sig.name}")
        if self._deaf:
            raise BossStateError(f"{self.name} no longer listens (make_them_work("
                                 "stop_listening=True)); wait_till_finished() is all that is left")
        self._send(Control(sig, seq))

    def _send(self, msg: Message) -> None:
        frame = dumps(msg)
        with self._send_lock, sigint_held:
            self._check_open("send to the boss")
            try:
                self._control.send_pickled(frame)
            except OSError:
                raise_if_gone(self._inbox, self.name, "send to the boss", True)

    def _check_open(self, doing: str) -> None:
        raise_if_gone(self._inbox, self.name, doing)
        if self._control.closed:
            raise BossStateError(f"cannot {doing}: {self.name} is closed")

    # ---- reports ------------------------------------------------------------------------

    def as_completed(self, timeout: float | None = None) -> Iterator[TaskReport]:
        """Yield each TaskReport as its task ends, while the farm runs: once across
        all calls (a service can call this every stride and see only what is new);
        every report also stays in :meth:`get_report`, unless ``keep_reports=False``.
        Stops when every task given so far has ended or the boss has exited.
        ``timeout`` bounds the wait for each next report (TimeoutError); halted with
        sets pending and none running, it raises BossStateError rather than wait."""
        return self._reports.as_completed(timeout, lambda: self._halted and not self._ended,
                                          self.send_report_request)

    def events(self, timeout: float | None = None) -> Iterator[TaskEvent]:
        """Every task event from this call on, in order for each task: ``QUEUED``
        (given), ``STARTED`` (with ``pid`` and ``slot``), ``EMITTED`` (``value``, what
        the task gave to ``emit()``) and ``ENDED`` (``report``).

        Subscribes at once (call it before giving instructions to see all of their
        events); several iterators and :meth:`as_completed` each see all of their
        items. Ends once tasks were given and all have ended, or the boss exited;
        ``timeout`` bounds the wait for each next event (TimeoutError).
        """
        self._watch_started()
        return iterate(self._events, self._ledger, self._inbox, timeout)

    def cancel(self, *names: str) -> list[str]:
        """Cancel tasks by name: one not started ends ``cancelled`` at once, a running
        one is stopped as for a timeout and ends ``cancelled``, one that ended keeps
        its ending. Returns the names not ended; KeyError for a name never given."""
        ledger = self._ledger
        with ledger.cond:
            unknown = [n for n in names if n not in ledger.names]
            if unknown:
                raise KeyError(f"{self.name} has no task named {unknown[0]!r}")
            tids = [ledger.names[n] for n in names]
            alive = [tid for tid in dict.fromkeys(tids) if tid not in ledger.statuses]
            alive_names = [ledger.records[tid].name for tid in alive]
        if alive:
            self._send(Cancel(tuple(alive)))
        return alive_names

    def _watch_started(self, hold: float = 0.0) -> None:
        """Have the boss send STARTED notices from now on, each held ``hold`` seconds
        (dropped if its task ends first). A boss that has exited starts nothing more."""
        if not self._watching and not self._inbox.closed:
            self._watching = True
            with contextlib.suppress(BossStateError, BossDiedError):
                self._send(Watch(True, hold))

    def get_report(self, interim: bool = True, timeout: float | None = None) -> Report:
        """A report on the farm. ``interim=True``: now, while it works (SEND_REPORT;
        every task that ended before the request is in it). ``interim=False``: the final
        report, waiting for the boss to exit (only after :meth:`end` or a stop)."""
        if not interim or self._inbox.closed:
            if not self._inbox.closed and not self._ended:
                raise BossStateError(f"{self.name} will not exit on its own: call end() or a "
                                     "stop first, or ask for get_report(interim=True)")
            return self._reports.final(timeout)
        return self._reports.now(self.send_report_request, timeout)

    def wait_till_finished(self, timeout: float | None = None) -> Report:
        """No more instructions: let the boss finish (END, if no stop was asked), wait
        for it to exit and return the final report.

        Raises, under fail-fast, the first failing task's own exception (with the
        worker's traceback), a WorkerKilledError, or a TaskCancelledError; raises
        BossDiedError if the boss died; BossStateError if the boss is halted with sets
        not started (it would never finish; running ones are waited for).
        """
        if not self._inbox.closed:
            with self._ledger.cond:
                unfinished = not self._ledger.all_ended()
            if self._halted and not self._ended and unfinished and \
                    self._reports.interim(self.send_report_request(), timeout).pending:
                raise BossStateError(f"{self.name} is halted with work pending: call "
                                     "make_them_work() first")
            if not self._ended and not self._deaf:
                self.end()
        report = self._reports.final(timeout)
        failure = self._reports.failure(report, self.pid)
        if failure is not None:
            raise failure
        return report

    # ---- lifetime ---------------------------------------------------------------------

    @property
    def pid(self) -> int:
        """The boss process id."""
        return self._proc.pid

    @property
    def finished(self) -> bool:
        """True once the boss has exited (or died)."""
        return self._inbox.closed

    def close(self) -> None:
        """Stop everything still running (STOP_RIGHTNOW) and wait for the boss to exit.
        Safe to call more than once; called by ``with`` and when the handle is dropped."""
        with sigint_held:  # a Ctrl-C now is delivered once everything is stopped
            self._finalizer()

    def __enter__(self) -> Boss:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "finished" if self.finished else "halted" if self._halted else "working"
        return f"<Boss {self.name} pid={self.pid} {state} tasks={len(self._ledger.records)}>"
