"""A farm described in a TOML job file, for ``taskfarm run JOB.toml``: read and checked
into a :class:`Job` (every mistake is a :class:`JobError` naming the key), then run
with :func:`taskfarm.batch_main`.

A job file::

    worker = "calib:Calibrate"        # module:Class; the job file's folder is importable
    journal = "campaign.sqlite"       # relative to the job file; resume by running again
    on_error = "continue"
    retries = 1

    [common]
    name = "calib_[run]"              # task names must stay the same from run to run
    channels = 128

    [individual]
    run = [101, 102, 103]

    [scheduler]
    class = "MaxThreadsScheduler"     # a name from the schedulers package, or module:Class
    max_threads = 2

``[[scheduler]]`` tables (an array) are combined with ``&``.
"""

from __future__ import annotations

import importlib
import os
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

import schedulers
from taskfarm._common.status import RETRYABLE
from taskfarm._common.worker_class import Worker
from taskfarm._main.entry import batch_main

__all__ = ["Job", "JobError", "load_job", "run_job"]


class JobError(Exception):
    """The job file is missing, is not TOML, or says something that cannot run."""


def _is_int(v: object) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: object) -> TypeGuard[int | float]:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _is_str_list(v: object) -> TypeGuard[list[str]]:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


# Top-level keys passed to batch_main as Boss options: the check and what it wants.
_OPTIONS: dict[str, tuple[Callable[[object], bool], str]] = {
    "name": (lambda v: isinstance(v, str), "a string"),
    "on_error": (lambda v: v in ("raise", "continue"), '"raise" or "continue"'),
    "retries": (lambda v: _is_int(v) and v >= 0, "a non-negative integer"),
    "timeout": (lambda v: _is_number(v) and v > 0, "a positive number of seconds"),
    "retry_on": (lambda v: _is_str_list(v) and set(v) <= set(RETRYABLE),
                 'a list of endings among "failed", "killed", "timeout"'),
    "retry_memory": (lambda v: _is_number(v) and v >= 1, "a number >= 1"),
    "isolated": (lambda v: isinstance(v, bool), "true or false"),
    "memory_limit": (lambda v: isinstance(v, bool), "true or false"),
    "capture_output": (lambda v: isinstance(v, bool), "true or false"),
    "verbose": (lambda v: isinstance(v, bool), "true or false"),
    "seed": (lambda v: _is_int(v) and v >= 0, "a non-negative integer"),
    "max_tasks_per_child": (lambda v: _is_int(v) and v > 0, "a positive integer"),
    "start_method": (lambda v: v in ("fork", "spawn"), '"fork" or "spawn"'),
}
_KEYS = ("worker", "journal", "progress", "common", "individual", "scheduler", *_OPTIONS)


@dataclass(frozen=True, slots=True)
class Job:
    """A checked job: what :func:`run_job` gives ``batch_main``."""

    path: Path
    worker: type[Worker]
    common: dict[str, Any]
    individual: dict[str, list[Any]]
    scheduler: schedulers.BaseScheduler | None
    journal: Path | None
    progress: bool | None
    options: dict[str, Any] = field(default_factory=dict)


def load_job(path: str | os.PathLike[str]) -> Job:
    """Read and check the job file at ``path``. Puts its folder first on ``sys.path``
    (the worker and the scheduler may live in modules beside it) and imports them.

    Raises:
        JobError: the file is missing or not TOML, a key is missing, unknown or of the
            wrong type, or the worker or scheduler cannot be imported or made.
    """
    where = Path(path)
    try:
        data = tomllib.loads(where.read_text(encoding="utf-8"))
    except OSError as exc:
        raise JobError(f"cannot read the job file {where}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise JobError(f"{where} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - set(_KEYS))
    if unknown:
        raise JobError(f"{where}: unknown key {unknown[0]!r}; a job file knows "
                       f"{', '.join(sorted(_KEYS))}")
    if "worker" not in data:
        raise JobError(f'{where}: the key "worker" is missing: name the Worker class to '
                       'run, as "module:Class" (a module beside the job file imports)')
    folder = str(where.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    options = {}
    for key, (check, wanted) in _OPTIONS.items():
        if key in data:
            if not check(data[key]):
                raise JobError(f"{where}: {key!r} must be {wanted}, not {data[key]!r}")
            options[key] = data[key]
    progress = data.get("progress")
    if progress is not None and not isinstance(progress, bool):
        raise JobError(f"{where}: 'progress' must be true or false, not {progress!r}")
    journal = data.get("journal")
    if journal is not None and not (isinstance(journal, str) and journal):
        raise JobError(f"{where}: 'journal' must be a file name, not {journal!r}")
    common = _table(where, data, "common")
    individual = _individual(where, data)
    if journal is not None:
        _check_names(where, common, individual)
    return Job(where, _worker(where, data["worker"]), common, individual,
               _scheduler(where, data.get("scheduler")),
               where.parent / journal if journal is not None else None, progress, options)


def _table(where: Path, data: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise JobError(f"{where}: {key!r} must be a table ([{key}]), not {value!r}")
    return dict(value)


def _individual(where: Path, data: Mapping[str, Any]) -> dict[str, list[Any]]:
    individual = _table(where, data, "individual")
    lengths = {}
    for key, values in individual.items():
        if not isinstance(values, list):
            raise JobError(f"{where}: [individual] {key} must be a list (one value per "
                           f"task), not {values!r}")
        lengths[key] = len(values)
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{k} has {n}" for k, n in lengths.items())
        raise JobError(f"{where}: the [individual] lists must have one length ({shown})")
    return individual


def _check_names(where: Path, common: Mapping[str, Any],
                 individual: Mapping[str, list[Any]]) -> None:
    """With a journal, a task is known by its name from run to run: the names must be
    given, and differ from task to task."""
    if "name" in individual:
        return
    name = common.get("name")
    if not isinstance(name, str):
        raise JobError(f'{where}: with a journal, give the tasks names that stay the same '
                       'from run to run: a template in [common] such as name = "calib_[run]" '
                       "(each [key] is replaced by the task's value), or [individual] name")
    count = max((len(v) for v in individual.values()), default=1)
    if count > 1 and "[" not in name:
        raise JobError(f"{where}: [common] name {name!r} would be the same for all {count} "
                       'tasks (with a journal they would run once): make it a template '
                       'such as "calib_[run]"')


def _import(where: Path, key: str, spec: object) -> Any:
    """The object named ``module:attribute`` (``key`` names it in errors)."""
    if not isinstance(spec, str) or spec.count(":") != 1:
        raise JobError(f'{where}: {key} must be "module:Class" (an import path), '
                       f"not {spec!r}")
    module_name, _, attribute = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise JobError(f"{where}: {key} = {spec!r}: no module named {exc.name!r} (the job "
                       f"file's folder {where.resolve().parent} is searched first)") from None
    except Exception as exc:
        raise JobError(f"{where}: {key} = {spec!r}: importing {module_name} raised "
                       f"{type(exc).__name__}: {exc}") from None
    value = module
    for part in attribute.split("."):
        if not hasattr(value, part):
            raise JobError(f"{where}: {key} = {spec!r}: module {module_name} has no "
                           f"{attribute!r}")
        value = getattr(value, part)
    return value


def _worker(where: Path, spec: object) -> type[Worker]:
    cls = _import(where, "worker", spec)
    if not (isinstance(cls, type) and issubclass(cls, Worker)):
        raise JobError(f"{where}: worker = {spec!r} is not a taskfarm.Worker subclass")
    return cls


def _scheduler(where: Path, table: object) -> schedulers.BaseScheduler | None:
    if table is None:
        return None
    tables = table if isinstance(table, list) else [table]
    made: list[schedulers.BaseScheduler] = []
    for item in tables:
        if not isinstance(item, dict) or "class" not in item:
            raise JobError(f'{where}: [scheduler] needs a "class" key: a name from the '
                           f"schedulers package ({', '.join(_scheduler_names())}) or "
                           '"module:Class"')
        arguments = {k: v for k, v in item.items() if k != "class"}
        made.append(_make_scheduler(where, item["class"], arguments))
    combined = made[0]
    for other in made[1:]:
        combined = combined & other
    return combined


def _scheduler_names() -> list[str]:
    return [n for n in schedulers.__all__ if isinstance(getattr(schedulers, n), type)
            and issubclass(getattr(schedulers, n), schedulers.BaseScheduler)
            and n not in ("AllOf", "BaseScheduler")]


def _make_scheduler(where: Path, name: object,
                    arguments: dict[str, Any]) -> schedulers.BaseScheduler:
    if isinstance(name, str) and ":" not in name:
        if name not in _scheduler_names():
            raise JobError(f"{where}: [scheduler] class = {name!r} is not a scheduler; "
                           f"the schedulers package has {', '.join(_scheduler_names())} "
                           '(or give "module:Class")')
        cls = getattr(schedulers, name)
    else:
        cls = _import(where, "[scheduler] class", name)
        if not (isinstance(cls, type) and issubclass(cls, schedulers.BaseScheduler)):
            raise JobError(f"{where}: [scheduler] class = {name!r} is not a "
                           "schedulers.BaseScheduler subclass")
    try:
        scheduler: schedulers.BaseScheduler = cls(**arguments)
    except (TypeError, ValueError) as exc:
        raise JobError(f"{where}: [scheduler] {cls.__name__}({_arguments(arguments)}): "
                       f"{exc}") from None
    return scheduler


def _arguments(arguments: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in arguments.items())


def run_job(job: Job) -> bool:
    """Run ``job`` with ``batch_main`` (its report printed); True when every task is
    done. A fail-fast run's first failure, an InstructionError or a Ctrl-C propagate
    as from ``batch_main``."""
    options = dict(job.options)
    if job.journal is not None:
        options["journal"] = job.journal
    report = batch_main(job.common, job.individual or None, scheduler=job.scheduler,
                        worker=job.worker, progress=job.progress, **options)
    return not report.pending and all(task.ok for task in report.tasks)
