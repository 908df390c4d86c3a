"""Per-task policies (timeout, retries, retry_on, retry_memory) and Worker class
options, resolved and checked in the main program at the call that gives the
instructions: a policy comes from the instruction set, else from the Worker class (a
class attribute of its own), else from the whole run (Boss options).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from taskfarm._common.errors import InstructionError
from taskfarm._common.status import RETRYABLE
from taskfarm._common.worker_class import Worker

if TYPE_CHECKING:
    from taskfarm._main.prepare import PreparedBatch

POLICIES = ("timeout", "retries", "retry_on", "retry_memory")
_NO = object()   # no value given at this level


def resolve_policies(batch: PreparedBatch, run: Mapping[str, Any]) -> None:
    """Put each task's effective timeout, retries, retry_on and retry_memory in its
    view (the most specific source wins), and check them. What common instructions,
    the class and the run give is resolved and checked once per class; only values
    the individual instructions give are checked per task."""
    own = [key for key in POLICIES if key in batch.own_keys]
    bases: dict[type[Worker], dict[str, Any]] = {}
    for task in batch.tasks:
        base = bases.get(task.worker)
        if base is None:
            base = bases[task.worker] = _policy_base(task.worker, batch.common, run)
            check_policies(base, f"task {task.name!r}")
        if base:
            view = task.view
            for key, value in base.items():
                view.setdefault(key, value)
        if own:
            check_policies(task.view, f"task {task.name!r}")


def _policy_base(cls: type[Worker], common: Mapping[str, Any],
                 run: Mapping[str, Any]) -> dict[str, Any]:
    """The policies common instructions, the Worker class or the run give."""
    base: dict[str, Any] = {}
    for key in POLICIES:
        value = common.get(key, _NO)
        if value is _NO:
            value = _class_default(cls, key)
        if value is _NO:
            value = run.get(key, _NO)
        if value is not _NO and value is not None:
            base[key] = value
    return base


def check_policies(values: Mapping[str, Any], where: str) -> None:
    """Raise InstructionError for a timeout that is not a positive finite number
    (NaN and infinity included: None means no timeout), negative retries, an unknown
    retry_on, a retry_memory below 1."""
    timeout = values.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not timeout > 0 or not math.isfinite(timeout)):
        raise InstructionError(f"{where}: timeout must be a positive, finite number of "
                               f"seconds (None: no timeout), got {timeout!r}")
    retries = values.get("retries", 0)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise InstructionError(f"{where}: retries must be an int >= 0, got {retries!r}")
    retry_on = values.get("retry_on", ())
    if isinstance(retry_on, str) or not isinstance(retry_on, (list, tuple, set, frozenset)) \
            or not all(isinstance(e, str) and e in RETRYABLE for e in retry_on):
        raise InstructionError(f"{where}: retry_on must list endings among "
                               f"{sorted(map(str, RETRYABLE))}, got {retry_on!r}")
    factor = values.get("retry_memory", 1.0)
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor >= 1 \
            or not math.isfinite(factor):
        raise InstructionError(f"{where}: retry_memory must be a factor >= 1, got {factor!r}")


def _class_default(cls: type[Worker], key: str) -> Any:
    """The value a Worker subclass gives ``key`` itself, or _NO."""
    for klass in cls.__mro__:
        if klass is Worker:
            return _NO
        if key in klass.__dict__:
            return klass.__dict__[key]
    return _NO


def worker_threads(cls: type[Worker]) -> int | None:
    """A Worker class's ``threads`` option, checked."""
    threads = cls.threads
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                or threads < 1):
        raise InstructionError(f"{cls.__qualname__}.threads must be a positive int or None, "
                               f"not {threads!r}")
    return threads
