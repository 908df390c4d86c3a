"""Entry point of the boss process: ``python -m taskfarm._boss CONTROL_FD REPORT_FD
PARENT_PID`` (started by :class:`taskfarm.Boss`, never by hand). Reads the
configuration, runs the loop (:mod:`taskfarm._boss.loop`), says goodbye, and releases
every worker, whatever happened.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback

from taskfarm._boss.launcher import default_native_threads
from taskfarm._boss.loop import BossLoop, ParentGone
from taskfarm._common.logs import LEVEL_VARIABLE, forward_from
from taskfarm._common.messages import Configure, Goodbye, Notice, NoticeKind
from taskfarm._common.processes import (
    CAPTURE_VARIABLE,
    SEED_VARIABLE,
    TAKE_BACK_SIGNAL,
    flush_std_streams,
    unlink_shared,
)
from taskfarm._common.status import ReportStatus
from taskfarm._common.wire import Channel, unexpected


def main(argv: list[str]) -> int:
    """Entry point: ``python -m taskfarm._boss CONTROL_FD REPORT_FD PARENT_PID``."""
    control_fd, report_fd, parent_pid = (int(a) for a in argv)
    for fd in (control_fd, report_fd):   # a worker it spawns must not hold them
        os.set_inheritable(fd, False)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main program decides on Ctrl-C
    # Workers inherit it blocked, and let it in once they handle it (_worker/queue.py).
    signal.pthread_sigmask(signal.SIG_BLOCK, {TAKE_BACK_SIGNAL})
    control = Channel(control_fd)
    reports = Channel(report_fd)
    try:
        parent_fd = os.pidfd_open(parent_pid)
    except ProcessLookupError:
        return 0
    if os.getppid() != parent_pid:
        return 0
    try:
        config = control.recv()
    except (EOFError, OSError):
        return 0
    if not isinstance(config, Configure):
        raise unexpected(config, "the boss (first message)")
    sys.path[:] = config.sys_path
    _worker_environment(config)
    loop = BossLoop(control, reports, parent_fd, config)
    notices = loop.endings.notices
    forward_from(lambda fields: notices.append(
        Notice(-1, NoticeKind.LOG, {**fields, "taskfarm_source": "boss"})), config.log_level)
    default_native_threads(loop.scheduler)
    linger = parent_gone = shut = False
    try:
        goodbye = loop.run()
        linger = goodbye.reason.startswith("STOP_LISTENING")
        if not linger:
            # Every worker process ends (its teardown_process hooks run) before the
            # goodbye: the main program's final report means the farm is over.
            loop.backend.shutdown(False)
            shut = True
        loop.send(goodbye)
    except ParentGone:
        parent_gone = True
    except BaseException:
        text = traceback.format_exc()
        try:
            loop.send(Goodbye(ReportStatus.FAILED.value, f"the boss crashed:\n{text}", ()))
        except BaseException:
            print(text, file=sys.stderr)
    finally:
        if not shut:
            loop.backend.shutdown(linger)
        if parent_gone:  # nobody else is left to remove them
            unlink_shared(loop.shared)
    return 0


def _worker_environment(config: Configure) -> None:
    """What every worker process reads at its start, through the environment it
    inherits (under fork and spawn alike): the levels it forwards log records from,
    the run seed, whether every task's output is captured."""
    os.environ[LEVEL_VARIABLE] = str(config.task_log_level)
    for name, value in ((SEED_VARIABLE, config.seed),
                        (CAPTURE_VARIABLE, "1" if config.capture_output else None)):
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = str(value)


if __name__ == "__main__":
    code = main(sys.argv[1:])
    # Every worker is reaped and the goodbye sent: nothing is left for the
    # interpreter's own end to do but tear down its modules, which would keep the
    # main program's close() waiting for milliseconds.
    flush_std_streams()
    os._exit(code)
