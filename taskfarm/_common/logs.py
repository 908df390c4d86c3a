"""Log records that cross processes. Used by the worker and boss processes (which
forward records) and the main program (which re-emits them).

taskfarm never configures logging handlers. A worker process forwards the records its
tasks log through the standard ``logging`` module, and the boss forwards its own
decisions (on the ``taskfarm`` logger); the main program re-emits each through a
logger of its own — ``taskfarm.task.<logger name>`` for a task's records, the record's
own name for the boss's — so that the application's handlers, formatters and filters
apply. Only the levels the main program enabled when the Boss started are forwarded
(the other records are not even made in the worker).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

# Environment variable, set by the boss from the main program's configuration: the
# level from which worker processes forward their records.
LEVEL_VARIABLE = "TASKFARM_TASK_LOG_LEVEL"

# Record attributes that travel (the rest, ``args`` and ``exc_info`` included, may not
# pickle: the message is formatted and the exception rendered before it leaves).
_FIELDS = ("name", "levelno", "levelname", "pathname", "filename", "module", "lineno",
           "funcName", "created", "msecs", "relativeCreated", "thread", "threadName",
           "process", "processName", "stack_info")
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
_SIMPLE = (str, int, float, bool, type(None))


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """A record's attributes as plain values: the message formatted, the exception
    rendered as text, and the extra attributes that are simple values."""
    fields = {key: getattr(record, key, None) for key in _FIELDS}
    try:
        fields["msg"] = record.getMessage()
    except Exception as exc:  # a bad format string: say so rather than lose the record
        fields["msg"] = f"{record.msg!r} (could not be formatted: {exc})"
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    fields["exc_text"] = record.exc_text
    for key, value in record.__dict__.items():
        if key not in _STANDARD and isinstance(value, _SIMPLE):
            fields[key] = value
    return fields


class ForwardHandler(logging.Handler):
    """Hands every record to ``put`` as plain fields. ``put`` must not log."""

    def __init__(self, put: Callable[[dict[str, Any]], None], level: int) -> None:
        super().__init__(level)
        self._put = put
        self._pid = os.getpid()

    def emit(self, record: logging.LogRecord) -> None:
        if os.getpid() != self._pid:  # a process the task forked: it has no pipe of its own
            return
        try:
            self._put(record_fields(record))
        except Exception:
            self.handleError(record)


def forward_from(put: Callable[[dict[str, Any]], None], level: int) -> ForwardHandler:
    """In a worker or boss process: send every record at ``level`` or above through
    ``put``, instead of any handler this process inherited."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = ForwardHandler(put, level)
    root.addHandler(handler)
    root.setLevel(level)
    return handler


def log_to_stderr() -> None:
    """In a worker process the boss no longer reads (its end): records go to its
    stderr, at the level they were forwarded from, instead of its pipe."""
    import sys

    root = logging.getLogger()
    for forward in [h for h in root.handlers if isinstance(h, ForwardHandler)]:
        root.removeHandler(forward)
    printer = logging.StreamHandler(sys.stderr)
    printer.setFormatter(logging.Formatter("%(levelname)s:%(name)s:%(message)s"))
    root.addHandler(printer)


def reemit(fields: dict[str, Any], logger_name: str, extra: dict[str, Any]) -> None:
    """In the main program: re-emit a forwarded record through ``logger_name``, with
    ``extra`` attributes, if the main program's configuration wants its level."""
    logger = logging.getLogger(logger_name)
    level = fields.get("levelno") or logging.WARNING
    if not logger.isEnabledFor(level):
        return
    record = logging.makeLogRecord({**fields, "args": None, "exc_info": None, **extra})
    record.name = logger_name
    logger.handle(record)
