"""Logging, in the main program: the levels a farm forwards (read from the program's
configuration when a Boss starts), the records the boss and the workers forward,
re-emitted through the program's own loggers, and ``verbose=True`` (INFO on stderr).

Records a task logs are re-emitted through ``taskfarm.task.<its logger's name>`` with
the attributes ``task`` (the task's name), ``worker_class`` and ``worker_pid``; the
boss's own records (launches, retries, timeouts, kills, what a scheduler holds)
through their logger, under ``taskfarm``. taskfarm never adds a handler, except the
one ``verbose=True`` asks for.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any

from taskfarm._common.logs import reemit

if TYPE_CHECKING:
    from taskfarm._main.ledger import TaskRecord

TASK_LOGGER = "taskfarm.task"


def forwarded_levels() -> tuple[int, int]:
    """The levels from which the boss and the workers forward records: the lowest the
    program enables now for ``taskfarm`` or one of its loggers (``taskfarm.boss``...),
    and for ``taskfarm.task`` or one of its loggers."""
    loggers = [name for name in logging.root.manager.loggerDict
               if name.startswith("taskfarm.")]
    tasks = [TASK_LOGGER, *(n for n in loggers if n.startswith(f"{TASK_LOGGER}."))]
    farm = ["taskfarm", *(n for n in loggers if n not in tasks)]
    return (min(logging.getLogger(n).getEffectiveLevel() for n in farm),
            min(logging.getLogger(n).getEffectiveLevel() for n in tasks))


def reemit_record(fields: dict[str, Any], record: TaskRecord | None) -> None:
    """Re-emit a record a worker or the boss forwarded (``record``: the task it was
    logged in, None outside a task)."""
    name = str(fields.get("name") or "root")
    if fields.get("taskfarm_source") == "boss":
        reemit(fields, name if name.startswith("taskfarm") else f"taskfarm.boss.{name}", {})
        return
    extra = {"worker_pid": fields.get("process"), "task_logger": name}
    if record is not None:
        extra.update(task=record.name, worker_class=record.worker)
    reemit(fields, f"{TASK_LOGGER}.{name}", extra)


class _VerboseHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler ``verbose=True`` adds (once) to the ``taskfarm`` logger; it writes
    to whatever ``sys.stderr`` is when a record comes."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


_verbose = {"users": 0, "level": logging.NOTSET}   # Bosses made with verbose=True, alive


def log_verbosely() -> tuple[int, int]:
    """``verbose=True``: the farm's INFO records (and its tasks') on stderr, whatever
    the program's own configuration, for as long as a Boss made so is open (see
    :func:`quiet_again`). Returns the levels forwarded from now (forwarded_levels)."""
    logger = logging.getLogger("taskfarm")
    if not _verbose["users"]:
        handler = _VerboseHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[%(name)s] %(levelname)s %(message)s"))
        logger.addHandler(handler)
        _verbose["level"] = logger.level
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)
    _verbose["users"] += 1
    return forwarded_levels()


def quiet_again() -> None:
    """A Boss made with ``verbose=True`` closed: the last one takes the handler away
    and gives the ``taskfarm`` logger its level back."""
    _verbose["users"] -= 1
    if _verbose["users"] <= 0:
        _verbose["users"] = 0
        logger = logging.getLogger("taskfarm")
        for handler in [h for h in logger.handlers if isinstance(h, _VerboseHandler)]:
            logger.removeHandler(handler)
        logger.setLevel(_verbose["level"])
