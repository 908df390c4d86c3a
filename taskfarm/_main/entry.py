"""The two ways most programs run a farm. Runs in the main program.

``run_as_server`` starts a Boss, gives it its first instructions and lets it work; the
caller adds instructions, reads reports and must end it. ``batch_main`` runs a set of
instructions to the end, prints the per-task report and returns it; on a failure
(fail-fast), an exception or Ctrl-C it stops every worker and re-raises. Both can show
a progress display (:mod:`taskfarm._main.progress`), subscribed to the Boss's event
stream before the first instruction is given, so that it counts every task.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from taskfarm._common.errors import BossDiedError
from taskfarm._common.worker_class import Worker
from taskfarm._main.handle import Boss
from taskfarm._main.progress import Progress, wanted
from taskfarm._main.report import Report


def run_as_server(common_instructions: Mapping[str, Any] | None = None,
                  individual_instructions: Mapping[str, Sequence[Any]] | None = None,
                  scheduler: Any = None, verbose: bool = False,
                  worker: type[Worker] | str | None = None, progress: bool = False,
                  **boss_options: Any) -> Boss:
    """Start a Boss working on these instructions and return it.

    ``boss_options`` go to :class:`Boss` (``on_error``, ``isolated``, ``name``, ...).
    The instructions are checked before the boss starts any worker; on bad input the
    boss is closed and the error raised here. ``progress=True`` shows the farm's
    progress on stderr (a bar on a terminal, else a line every few seconds) until the
    Boss is dropped or the program exits.
    """
    display = Progress() if progress else None
    boss = _start(common_instructions, individual_instructions, scheduler, verbose, worker,
                  display, boss_options)
    if display is not None:
        weakref.finalize(boss, display.close)
    return boss


def _start(common_instructions: Mapping[str, Any] | None,
           individual_instructions: Mapping[str, Sequence[Any]] | None,
           scheduler: Any, verbose: bool, worker: type[Worker] | str | None,
           display: Progress | None, boss_options: Mapping[str, Any]) -> Boss:
    """Start a Boss, subscribe ``display`` to its events before anything is given (it
    must count every task), give the instructions and let it work. On any error the
    boss is closed (not the display: the caller owns it) and the error raised."""
    boss = Boss(scheduler=scheduler, verbose=verbose, **boss_options)
    try:
        if display is not None:
            boss._events.subscribe(display)
            boss._watch_started()   # start notices: the running count
        if common_instructions or individual_instructions:
            boss.set_instructions(common_instructions, individual_instructions, worker=worker)
        boss.make_them_work()
    except BaseException:
        boss.close()
        raise
    return boss


def batch_main(common_instructions: Mapping[str, Any] | None = None,
               individual_instructions: Mapping[str, Sequence[Any]] | None = None,
               scheduler: Any = None, verbose: bool = False,
               worker: type[Worker] | str | None = None,
               print_report: Callable[[str], Any] | None = print,
               progress: bool | None = None, **boss_options: Any) -> Report:
    """Run the instructions to the end, print the report, return it.

    Fail-fast by default: the first failing task stops the others, the report is
    printed and the task's own exception is re-raised. With ``on_error="continue"``
    every task runs and the report lists each failure. On any exception every worker
    is stopped and the partial report printed before it propagates: Ctrl-C re-raises
    KeyboardInterrupt (exit status 130), SIGTERM exits with 143. ``print_report=None``
    prints nothing.

    ``progress`` shows a progress display on stderr while the farm runs: a bar with
    the done, failed and running counts and the time left on a terminal, else a plain
    line every few seconds. Default: on when stderr is a terminal. It is finished
    before the report is printed.
    """
    display = Progress() if wanted(progress) else None
    previous = _catch_sigterm()  # before any worker starts: no window without it
    try:
        boss = _start(common_instructions, individual_instructions, scheduler, verbose,
                      worker, display, boss_options)
        try:
            report = boss.wait_till_finished()
        except BaseException:
            boss.close()
            if display is not None:
                display.close()  # the bar's line ends before the report begins
            if print_report is not None and boss.finished:
                with contextlib.suppress(BossDiedError):  # a dead boss has no report
                    print_report(boss.get_report(interim=False).format())
                    sys.stdout.flush()
            raise
        finally:
            boss.close()
    except _Terminated:
        raise SystemExit(128 + signal.SIGTERM) from None
    finally:
        if display is not None:
            display.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if print_report is not None:
        print_report(report.format())
        sys.stdout.flush()
    return report


class _Terminated(BaseException):
    """SIGTERM arrived during batch_main."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise _Terminated


def _catch_sigterm() -> Any:
    """Turn SIGTERM into an exception while batch_main runs, so that the farm is
    stopped and the partial report printed before the program exits with 143. Only in
    the main thread, and only if nobody else has a handler for it."""
    if threading.current_thread() is not threading.main_thread():
        return None
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return None
    return signal.signal(signal.SIGTERM, _raise_terminated)
