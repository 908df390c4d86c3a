"""taylorism's ``Boss``, over a taskfarm :class:`~taskfarm.Boss`. Runs in the main program.

Each call maps to the taskfarm one of the same meaning: ``set_instructions`` (sets
resolved by footprints here, then given to taskfarm as :class:`TaylorismTask` tasks),
``make_them_work`` (RESUME), ``stop_them_working`` (STOP_RIGHTNOW, as in taylorism),
``end`` (END), ``wait_till_finished`` and ``get_report`` (reports as taylorism dicts,
:mod:`taskfarm.taylorism._reports`). ``farm`` is the taskfarm Boss itself.

With ``fork_from_main=True`` (the default) tasks run in processes forked from a copy
of the main program taken when the Boss is made (taskfarm's ``start_method="main"``),
so they see what the program had set up then, as taylorism's workers did.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import footprints
from bronx.system import interrupt

import taskfarm
from schedulers import BaseScheduler as NativeScheduler
from taskfarm import BossDiedError, BossStateError, ReportStatus, TaskStatus
from taskfarm.taylorism._log import taylorism_log
from taskfarm.taylorism._matching import TaskSpec, expand, pack_call, resolve
from taskfarm.taylorism._native import VIEW_PREFIX, TaylorismStyle, wants_views
from taskfarm.taylorism._relay import TaylorismTask, TaylorismTaskError
from taskfarm.taylorism._reports import Decoded, as_dict

__all__ = ["Boss", "BossProcess", "as_taskfarm", "quiet_farm_logs"]


def as_taskfarm(scheduler: Any) -> Any:
    """The taskfarm scheduler the boss runs for a taylorism (or taskfarm) one."""
    if hasattr(scheduler, "to_taskfarm"):
        return scheduler.to_taskfarm()
    if isinstance(scheduler, NativeScheduler):
        return scheduler
    if callable(getattr(scheduler, "launchable", None)):
        return TaylorismStyle(scheduler)
    raise TypeError(f"{scheduler!r} is not a scheduler: it has no launchable() method")


def quiet_farm_logs(verbose: bool) -> None:
    """taylorism said nothing of its launches unless verbose, but bronx sets the root
    logger to INFO: unless verbose, or set by the program, the boss's own INFO records
    (a line per launch) stay out (``taskfarm.boss`` at WARNING)."""
    logger = logging.getLogger("taskfarm.boss")
    if not verbose and logger.level == logging.NOTSET:
        logger.setLevel(logging.WARNING)


class BossProcess:
    """``Boss._process`` as taylorism had it (a ``multiprocessing.Process``): the boss
    process, to look at or signal."""

    def __init__(self, farm: taskfarm.Boss) -> None:
        self._farm = farm

    @property
    def pid(self) -> int:
        return self._farm.pid

    def is_alive(self) -> bool:
        return not self.join(0)

    def join(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds for the boss to exit; True once it has."""
        if self._farm.finished:
            return True
        try:
            pidfd = os.pidfd_open(self.pid)
        except ProcessLookupError:
            return True
        try:
            return bool(select.select([pidfd], [], [], timeout)[0])
        finally:
            os.close(pidfd)

    def terminate(self) -> None:
        """SIGTERM to the boss: it dies, its workers with it, and the Boss's next wait
        raises bronx's ``SignalInterruptError``, as in taylorism."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)


class Boss:
    """Orders tasks to workers, as taylorism's Boss (see the module docstring).

    Args:
        scheduler: a taylorism scheduler (``footprints.proxy.scheduler(...)``, default
            ``limit='threads', max_threads=0``: half the CPUs) or a taskfarm one.
        name, verbose, maxlenreport: as in taylorism (``verbose`` logs each report,
            cut at ``maxlenreport`` characters, and taskfarm's launches).
        sharedmemory_common_instructions: instructions given to every set as they are
            (``SharedNumpyArray`` values: the same memory in every task).
        fork_from_main: run each task in a process forked from a copy of this program
            taken now (True, the default: tasks see its modules, objects and logging as
            taylorism's did; not for a program that already runs threads, which a fork
            copies without them), or in taskfarm's worker processes (False: the classes
            must be importable or defined in ``__main__``).
        options: taskfarm ``Boss`` options (``on_error``, ``timeout``, ``retries``,
            ``isolated`` (default: True, a fresh process per task),
            ``memory_limit``, ...).
    """

    control_signals = {
        "HALT": "Suspend ordering workers to work until RESUME.",
        "RESUME": "Resume loop on pending_instructions/workers.",
        "SEND_REPORT": "Send interim report (and continue normally).",
        "END": "Terminate all pending work, then stop listening.",
        "STOP": "Halt pending work, but let workers finish their current work, then stop.",
        "STOP_LISTENING": "Stop listening, while workers continue their current job.",
        "STOP_RIGHTNOW": "Stop workers immediately and stop listening.",
    }

    def __init__(self, scheduler: Any = None, name: str | None = None, verbose: bool = False,
                 maxlenreport: int = 1024,
                 sharedmemory_common_instructions: Mapping[str, Any] | None = None, *,
                 fork_from_main: bool = True, **options: Any) -> None:
        if scheduler is None:
            scheduler = footprints.proxy.scheduler(limit="threads", max_threads=0)
        self._native = as_taskfarm(scheduler)
        self.scheduler, self.name, self.verbose = scheduler, name, verbose
        self.maxlenreport = int(maxlenreport)
        self._shared = dict(sharedmemory_common_instructions or {})
        self._views = wants_views(self._native)
        self._decoded = Decoded()
        self._originals: dict[str, dict[str, Any]] = {}
        self._final: dict[str, Any] | None = None
        self._stopped = False
        self._fail_fast = options.get("on_error", "raise") == "raise"
        self._failure_seen = False
        options.setdefault("isolated", True)
        if fork_from_main:
            options.setdefault("start_method", "main")
        self._by_value = options.get("start_method") != "main"
        quiet_farm_logs(verbose)
        self.farm = taskfarm.Boss(scheduler=self._native, name=name, verbose=verbose,
                                  **options)
        self._process = BossProcess(self.farm)
        self._closer = weakref.finalize(self, self.farm.close)

    # ---- instructions -----------------------------------------------------------------

    def set_instructions(self, common_instructions: Mapping[str, Any] | None = None,
                         individual_instructions: Mapping[str, Sequence[Any]] | None = None,
                         fatal: bool = True) -> None:
        """Give instruction sets: ``common_instructions`` with each position of the
        equal-length lists of ``individual_instructions`` (no individual ones: no set).
        Each set is matched to a Worker class here; a set no class accepts, a name
        given twice or unequal lengths raise at once (an ``AttributeError``,
        ``ValueError``, ``AssertionError``), and with ``fatal`` the work stops too.
        If the farm has already failed, the failing task's exception is raised."""
        try:
            self._raise_if_failed()
            if self.farm.finished:
                taylorism_log.warning("%s has finished: instructions not taken", self.name)
                return
            sets = expand(dict(common_instructions or {}), individual_instructions or {})
            if not sets:
                return
            specs = [resolve({**one, **self._shared}) for one in sets]
            self._give(specs, sets)
        except BaseException:
            if fatal:
                self.stop_them_working()
            raise

    def _give(self, specs: list[TaskSpec], sets: list[dict[str, Any]]) -> None:
        by_value = self._by_value
        columns: dict[str, list[Any]] = {
            "name": [s.name for s in specs],
            "memory": [s.number("memory") for s in specs],
            "expected_time": [s.number("expected_time") for s in specs],
            "taylorism_call": [pack_call(s, by_value) for s in specs],
        }
        task_instructions = getattr(self.scheduler, "task_instructions", None)
        if task_instructions is not None:
            extra = [task_instructions({**one, **spec.attrs})
                     for one, spec in zip(sets, specs, strict=True)]
            for key in {k for e in extra for k in e}:
                columns[key] = [e.get(key) for e in extra]
        if self._views:
            keys = {k for s in specs for k in s.simple_attrs()} - set(columns)
            for key in keys:
                columns[VIEW_PREFIX + key] = [s.simple_attrs().get(key) for s in specs]
        common: dict[str, Any] = {}
        arrays = {id(a): a for s in specs for a in s.shared_arrays()}
        if arrays:
            common["taylorism_shared"] = tuple(arrays.values())
        try:
            self.farm.set_instructions(common, columns, worker=TaylorismTask)
        except BossStateError:
            self._raise_if_failed()
            raise
        for spec, one in zip(specs, sets, strict=True):
            self._originals[spec.name] = one

    def _raise_if_failed(self) -> None:
        """Raise the failing task's exception if the farm has failed (fail-fast)."""
        if self._fail_fast and not self.farm.finished and not self._failure_seen:
            with contextlib.suppress(TimeoutError, BossStateError):
                for task in self.farm.as_completed(timeout=0):
                    if task.status in (TaskStatus.FAILED, TaskStatus.KILLED,
                                       TaskStatus.TIMEOUT):
                        self._failure_seen = True
        if self.farm.finished or self._failure_seen:
            self.wait_till_finished()

    # ---- control ----------------------------------------------------------------------

    def make_them_work(self, terminate: bool = False, stop_listening: bool = False) -> None:
        """Launch work (RESUME). ``stop_listening``: the boss stops listening at once,
        running tasks go on unheard; ``terminate``: no more instructions (END)."""
        self.farm.make_them_work()
        if stop_listening:
            # taylorism's boss launched what it could before it read STOP_LISTENING:
            # once a report has answered, taskfarm's has too.
            self.farm.get_report(interim=True)
            self.farm.stop_listening()
        if terminate:
            self.end()

    def stop_them_working(self) -> None:
        """Stop the workers now (STOP_RIGHTNOW): running tasks are terminated, pending
        ones never start; :meth:`wait_till_finished` then returns."""
        self._stopped = True
        with contextlib.suppress(BossStateError):
            self.farm.stop_right_now()

    def end(self) -> None:
        """No more instructions (END): the boss exits once everything given is done."""
        with contextlib.suppress(BossStateError):
            self.farm.end()

    # ---- reports ----------------------------------------------------------------------

    def get_report(self, interim: bool = True) -> dict[str, Any] | None:
        """The report (a taylorism dict): the final one once the boss has finished,
        else, with ``interim``, the work done so far; else None."""
        if self._final is not None or self.farm.finished:
            return self._final_report()
        if not interim:
            return None
        report = self.farm.get_report(interim=True)
        if report.status not in (ReportStatus.INTERIM, ReportStatus.PENDING):
            return self._final_report()
        return as_dict(report, "interim", self._decoded, self._originals)

    def wait_till_finished(self) -> None:
        """No more instructions: wait until every task given has ended. Raises the
        first failing task's own exception (with its traceback), bronx's
        ``SignalInterruptError`` if the boss process was terminated by a signal, and
        taskfarm's ``BossStateError`` rather than hang when nothing was started
        (:meth:`make_them_work` never called)."""
        try:
            self.farm.wait_till_finished()
        except TaylorismTaskError:
            self._raise_task_failure()
            raise
        except BossDiedError as exc:
            if exc.signal_name is not None:
                raise interrupt.SignalInterruptError(
                    f"the boss process (pid {exc.pid}) was ended by {exc.signal_name}: "
                    f"{exc}") from exc
            raise
        except taskfarm.TaskCancelledError:
            if not self._stopped:
                raise
        self._final_report()

    def _final_report(self) -> dict[str, Any]:
        if self._final is None:
            report = self.farm.get_report(interim=False)
            status = "pending" if report.pending else "finished"
            self._final = as_dict(report, status, self._decoded, self._originals)
            if self.verbose:
                for entry in self._final["workers_report"]:
                    text = str(entry["report"])
                    if len(text) > self.maxlenreport:
                        text = text[:self.maxlenreport] + " ..."
                    taylorism_log.info("%s: %s", entry["name"], text)
        return self._final

    def _raise_task_failure(self) -> None:
        report = self.farm.get_report(interim=False)
        for task in report.tasks:
            if task.status is TaskStatus.FAILED:
                failure = self._decoded.failure(task)
                taylorism_log.error("error encountered with worker %s with traceback:\n%s",
                                    task.name, "".join(failure.traceback))
                self._final_report()
                raise failure.exception

    # ---- lifetime ---------------------------------------------------------------------

    def close(self) -> None:
        """Stop everything still running and end the boss and the main program's copy.
        Called by ``with`` and when the Boss is dropped."""
        self._closer()

    def __enter__(self) -> Boss:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<taylorism Boss {self.name or ''} over {self.farm!r}>"
