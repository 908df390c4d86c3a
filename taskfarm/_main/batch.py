"""One ``set_instructions`` call, prepared in one pass in the main program: checked,
expanded and matched (:mod:`taskfarm._main.prepare`), per-task policies resolved
(:mod:`taskfarm._main.policies`), checked by the scheduler, dependencies resolved
(:mod:`taskfarm._main.dependencies`), simple values split from the payloads only a
worker unpickles, and encoded into the frames sent to the boss. Each stage is an
error at the call that gave the instructions; the result is an immutable value, and
nothing is sent or recorded until it exists.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from taskfarm._common import by_value
from taskfarm._common.errors import InstructionError
from taskfarm._common.messages import AddTasks, TaskSpec, WorkerClassSpec
from taskfarm._common.shared_array import SharedArray, shared_in
from taskfarm._common.wire import dumps
from taskfarm._common.worker_class import Worker
from taskfarm._main.dependencies import resolve_dependencies
from taskfarm._main.ledger import TaskRecord
from taskfarm._main.main_copy import class_by_reference
from taskfarm._main.policies import (
    _policy_base,
    check_policies,
    resolve_policies,
    worker_threads,
)
from taskfarm._main.prepare import PreparedTask, prepare, split_simple
from taskfarm._main.report import TaskReport

if TYPE_CHECKING:
    from taskfarm._main.journal import Journal

CHUNK = 5000  # instruction sets per message: keeps the boss responsive to signals


@dataclass(frozen=True, slots=True)
class Rules:
    """What a Boss applies to every call: the Worker classes it may match (None: every
    one defined), its run-level policies, and its scheduler's check (None: it has
    none)."""

    candidates: tuple[type[Worker], ...] | None
    policies: Mapping[str, Any]
    check: Callable[[Mapping[str, Any]], None] | None
    scheduler: str   # the scheduler's repr, for messages
    journal: Journal | None = None   # names recorded done there are not run again
    no_shared: str | None = None     # why SharedArrays are refused (a remote backend)
    by_reference: bool = False       # classes go by name to the main program's copy


@dataclass(frozen=True, slots=True)
class Batch:
    """A prepared call: the frames to send, and what the main program records."""

    names: tuple[str, ...]                       # the tasks created, in order
    records: tuple[tuple[int, TaskRecord], ...]
    frames: tuple[bytes, ...]                    # AddTasks messages, pickled
    class_keys: Mapping[type[Worker], int]       # every class key, new ones included
    shared: tuple[SharedArray, ...]              # arrays the boss must keep alive
    # Sets recorded done in the journal: not sent, their reports read back from it.
    resumed: tuple[tuple[int, TaskReport], ...] = ()


def prepare_batch(common: Any, individual: Any, worker: type[Worker] | str | None,
                  rules: Rules, names: Mapping[str, int], statuses: Mapping[int, str],
                  first_tid: int, batch_id: int,
                  class_keys: Mapping[type[Worker], int]) -> Batch:
    """Prepare one call (see the module docstring); raises InstructionError."""
    matched = prepare(common if common is not None else {},
                      individual if individual is not None else {}, worker=worker,
                      candidates=rules.candidates, taken_names=names, first_tid=first_tid,
                      dedupe=rules.journal is not None)
    resolve_policies(matched, rules.policies)
    journal = rules.journal
    resumed: list[tuple[PreparedTask, TaskReport]] = []
    if journal is not None:
        from taskfarm._main.resume import journal_filter, recorded

        resumed = journal_filter(matched, journal)
        names, statuses = recorded(names, statuses, journal,
                                   {task.name: task.tid for task, _ in resumed})
    if rules.check is not None:
        for task in matched.tasks:
            try:
                rules.check(task.view)
            except InstructionError:
                raise
            except ValueError as exc:
                raise InstructionError(f"task {task.name!r} can never run under "
                                       f"{rules.scheduler}: {exc}") from exc
    waits = resolve_dependencies(matched, names, statuses)
    keys = dict(class_keys)
    new_classes = []
    for cls in dict.fromkeys(t.worker for t in matched.tasks):  # first-seen order
        if cls not in keys:
            keys[cls] = len(keys)
            blob = dumps_instructions("Worker class", cls)
            if rules.by_reference:
                blob = class_by_reference(cls, blob)
            new_classes.append(WorkerClassSpec(keys[cls], cls.__qualname__, blob,
                                               bool(cls.isolated), worker_threads(cls),
                                               bool(cls.memory_limit),
                                               bool(cls.capture_output)))
    common_blob = dumps_instructions("common_instructions", matched.common)
    specs = []
    for task, (after, cancelled) in zip(matched.tasks, waits, strict=True):
        view, extra = split_simple(task.view, matched.own_keys)
        payload = dumps_instructions(f"instructions of task {task.name!r}", extra) \
            if extra else None
        specs.append(TaskSpec(task.tid, keys[task.worker], view, after, cancelled, payload))
    shared = shared_in(matched.common.values())
    for key in matched.own_keys:
        shared += shared_in(t.view[key] for t in matched.tasks)
    shared = list({s.name: s for s in shared}.values())
    if shared and rules.no_shared:
        raise InstructionError(rules.no_shared)
    for array in shared:
        if array.closed:
            raise InstructionError(f"{array!r} is closed (its segment is removed): share "
                                   "an array that is not closed")
    shared_names = tuple(s.name for s in shared)
    frames = tuple(
        dumps(AddTasks(batch_id, tuple(new_classes) if start == 0 else (),
                       common_blob if start == 0 else b"", tuple(specs[start:start + CHUNK]),
                       shared_names if start == 0 else ()))
        for start in range(0, len(specs), CHUNK))
    records = [(t.tid, TaskRecord(t.name, t.worker.__qualname__, t.view, matched.common))
               for t in (*matched.tasks, *(task for task, _ in resumed))]
    return Batch(tuple(matched.given), tuple(records), frames, keys, tuple(shared),
                 tuple((task.tid, report) for task, report in resumed))


# Values plain pickle sends by value whatever module defines the caller. A subclass
# (of str, say) from ``__main__`` would be pickled by reference, hence the exact types.
_PLAIN_TYPES = frozenset({str, int, float, bool, bytes, type(None)})


def dumps_instructions(what: str, value: Any) -> bytes:
    """Pickle instruction values for a worker process: with plain pickle when they are
    all plain (ten times faster on small values), else with cloudpickle, which sends
    functions and classes of ``__main__`` by value."""
    if isinstance(value, dict) and all(type(v) in _PLAIN_TYPES for v in value.values()):
        return pickle.dumps(value, protocol=5)
    try:
        blob: bytes = by_value.dumps(value, protocol=5)
    except Exception as exc:
        raise InstructionError(f"{what} cannot be pickled to send to the boss: "
                               f"{type(exc).__name__}: {exc}") from exc
    return blob


def call_policies(worker: type[Worker], rules: Rules) -> dict[str, Any]:
    """The policies :func:`prepare_calls` puts in each view (the run's: an executor's
    Worker class sets none, its common instructions neither), checked."""
    policies = _policy_base(worker, {}, rules.policies)
    check_policies(policies, f"calls of {worker.__qualname__}")
    return policies


def prepare_calls(worker: type[Worker], policies: Mapping[str, Any], fn_blob: bytes,
                  names: Sequence[str], blobs: Sequence[bytes], rules: Rules,
                  ended: tuple[int, ...], taken: Mapping[str, int],
                  statuses: Mapping[int, str], first_tid: int, batch_id: int,
                  class_keys: Mapping[type[Worker], int]) -> Batch:
    """The fast path of :class:`taskfarm.Executor` (its feeder, in
    :mod:`taskfarm._main.executor_farm`): what :func:`prepare_batch` makes of
    ``set_instructions({"fn": fn_blob}, {"name": names, "args": blobs}, worker)``,
    without the general matching and checking, which these calls never need: one
    Worker class, already given once through ``set_instructions`` (its class key is
    known), names the executor made unique, values already pickled to bytes, no
    dependencies, no SharedArrays, no journal (``rules.journal`` is None). The
    scheduler's check applies as it does there, and ``policies`` (from
    :func:`call_policies`) are the run's; ``ended`` goes to the boss with the first
    frame (``AddTasks.ended``). About a tenth of the cost per call."""
    key = class_keys[worker]
    common = {"fn": fn_blob}
    new = tuple.__new__
    specs: list[TaskSpec] = []
    records: list[tuple[int, TaskRecord]] = []
    qualname = worker.__qualname__
    tid = first_tid
    for name, blob in zip(names, blobs, strict=True):
        view = {"name": name, "args": blob, **policies} if policies else \
            {"name": name, "args": blob}
        if len(blob) <= _INLINE:
            specs.append(new(TaskSpec, (tid, key, view, (), None, None)))
        else:  # as split_simple does: a large value travels as the task's payload
            spec_view = {k: v for k, v in view.items() if k != "args"}
            specs.append(new(TaskSpec, (tid, key, spec_view, (), None,
                                        pickle.dumps({"args": blob}, protocol=5))))
        if rules.check is not None:
            _scheduler_check(rules, name, view)
        records.append((tid, TaskRecord(name, qualname, view, common)))
        tid += 1
    common_blob = pickle.dumps(common, protocol=5)
    frames = tuple(dumps(AddTasks(batch_id, (), common_blob if start == 0 else b"",
                                  tuple(specs[start:start + CHUNK]), (),
                                  ended if start == 0 else ()))
                   for start in range(0, len(specs), CHUNK))
    return Batch(tuple(names), tuple(records), frames, class_keys, ())


# A bytes value up to this size travels in the task's view (prepare._is_simple).
_INLINE = 4096


def _scheduler_check(rules: Rules, name: str, view: Mapping[str, Any]) -> None:
    """The scheduler's check of one instruction set, as prepare_batch applies it."""
    assert rules.check is not None
    try:
        rules.check(view)
    except InstructionError:
        raise
    except ValueError as exc:
        raise InstructionError(f"task {name!r} can never run under {rules.scheduler}: "
                               f"{exc}") from exc
