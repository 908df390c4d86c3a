"""taylorism's two ways to run a farm, ``run_as_server`` and ``batch_main``, over the
layer's :class:`~taskfarm.taylorism._boss.Boss`. Run in the main program."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bronx.system import interrupt

from taskfarm.taylorism._boss import Boss

__all__ = ["batch_main", "run_as_server"]


def run_as_server(common_instructions: Mapping[str, Any] | None = None,
                  individual_instructions: Mapping[str, Sequence[Any]] | None = None,
                  scheduler: Any = None, verbose: bool = False, maxlenreport: int = 1024,
                  sharedmemory_common_instructions: Mapping[str, Any] | None = None,
                  **options: Any) -> Boss:
    """Make a Boss, give it these instructions, make it work, and return it. The
    caller may give more instructions, and must end it (``wait_till_finished``, or
    dropping it). On bad instructions the Boss is closed and the error raised here.
    ``options`` go to :class:`Boss` (``fork_from_main``, taskfarm's options)."""
    boss = Boss(scheduler=scheduler, verbose=verbose, maxlenreport=maxlenreport,
                sharedmemory_common_instructions=sharedmemory_common_instructions,
                **options)
    try:
        boss.set_instructions(common_instructions, individual_instructions)
        boss.make_them_work()
    except BaseException:
        boss.close()
        raise
    return boss


def batch_main(common_instructions: Mapping[str, Any] | None = None,
               individual_instructions: Mapping[str, Sequence[Any]] | None = None,
               scheduler: Any = None, verbose: bool = False, maxlenreport: int = 1024,
               print_report: Callable[[Any], Any] = print,
               sharedmemory_common_instructions: Mapping[str, Any] | None = None,
               **options: Any) -> dict[str, Any]:
    """Run the instructions to the end and print each worker's report (a header with
    its name, then ``print_report(report)``); return the report dict. On a failure,
    Ctrl-C or a signal (bronx's ``SignalInterruptError``) the workers are stopped and
    the exception re-raised."""
    boss = run_as_server(common_instructions, individual_instructions, scheduler=scheduler,
                         verbose=verbose, maxlenreport=maxlenreport,
                         sharedmemory_common_instructions=sharedmemory_common_instructions,
                         **options)
    try:
        with interrupt.SignalInterruptHandler(emitlogs=False):
            try:
                boss.wait_till_finished()
                report = boss.get_report()
            except (Exception, KeyboardInterrupt, interrupt.SignalInterruptError):
                boss.stop_them_working()
                with contextlib.suppress(Exception):
                    boss.wait_till_finished()
                raise
    finally:
        boss.close()
    assert report is not None
    for entry in report["workers_report"]:
        header = "WORKER NAME: " + entry["name"]
        print("=" * len(header))
        print(header)
        print("-" * len(header))
        print_report(entry["report"])
    return report
