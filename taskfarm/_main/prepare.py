"""Checking, expanding and matching instruction sets. Runs in the main program, at the
call that gives the instructions, so that bad input is an error there and nothing of
that call reaches the boss.

``common_instructions`` is a dict shared by every set; ``individual_instructions`` is
a dict of equal-length lists, one element per set. When ``individual_instructions``
is empty, the common instructions alone make one instruction set.

Matching is done per batch where it can be (unknown and missing keys depend only on
the keys, which every set of a batch shares) and per set only for values, so its cost
is a few dict look-ups per value.
"""

from __future__ import annotations

import io
import math
import numbers
import re
import sys
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from taskfarm._common.errors import (
    AmbiguousWorkerError,
    InstructionError,
    InstructionTypeError,
    NoMatchingWorkerError,
)
from taskfarm._common.worker_class import Attribute, Worker, declared_attributes, registered_workers

BUILTIN_NUMBERS = ("memory", "expected_time")
_TEMPLATE = re.compile(r"\[([A-Za-z_][A-Za-z0-9_]*)\]")
_SIMPLE = (str, int, float, bool, type(None))
_MAX_SHOWN_CANDIDATES = 12


@dataclass(slots=True)
class PreparedTask:
    """One checked instruction set, ready to be sent."""

    tid: int
    name: str
    worker: type[Worker]
    view: dict[str, Any]   # what the boss and the scheduler see; merged over common


@dataclass(slots=True)
class PreparedBatch:
    """Checked instruction sets sharing one coerced ``common`` dict."""

    common: dict[str, Any]
    simple_common: dict[str, Any]
    tasks: list[PreparedTask]
    own_keys: frozenset[str] = frozenset()   # the individual instructions' keys
    given: list[str] = field(default_factory=list)  # every name, in order


def resolve_worker(worker: type[Worker] | str) -> type[Worker]:
    """The Worker class named by ``worker`` (a class, or a registered class's name)."""
    if isinstance(worker, type):
        if not issubclass(worker, Worker):
            raise InstructionTypeError(f"worker={worker!r} is not a taskfarm.Worker subclass")
        return worker
    if not isinstance(worker, str):
        raise InstructionTypeError(f"worker= must be a Worker class or its name, not {worker!r}")
    found = [cls for cls in registered_workers()
             if worker in (cls.__name__, cls.__qualname__, f"{cls.__module__}.{cls.__qualname__}")]
    if not found:
        raise NoMatchingWorkerError(f"no registered Worker class is named {worker!r}")
    if len(found) > 1:
        names = ", ".join(f"{c.__module__}.{c.__qualname__}" for c in found)
        raise AmbiguousWorkerError(f"several Worker classes are named {worker!r}: {names}; "
                                   "pass the class itself or its full dotted name")
    return found[0]


def prepare(common: Any, individual: Any, *, worker: type[Worker] | str | None,
            candidates: Sequence[type[Worker]] | None, taken_names: Container[str],
            first_tid: int, dedupe: bool = False) -> PreparedBatch:
    """Check, expand and match one ``set_instructions`` call.

    Returns the prepared batch; raises an :class:`InstructionError` (and changes
    nothing, ``taken_names`` included) when anything is wrong. With ``dedupe`` (a
    journal), a set whose name was given already is left out instead (its task runs,
    or ran, once) but listed in ``given``.
    """
    _check_containers(common, individual)
    length = _check_lengths(individual)
    overlap = set(common) & set(individual)
    if overlap:
        raise InstructionError(f"keys given both in common and individual instructions: "
                               f"{sorted(overlap)}")
    if "scheduler_ticket" in common or "scheduler_ticket" in individual:
        raise InstructionError("'scheduler_ticket' is given by the scheduler, not by instructions")
    if length == 0:
        if individual:
            raise InstructionError("individual_instructions has only empty lists: that is no "
                                   "instruction set; give one value per task, or no "
                                   "individual_instructions for one set of common ones")
        if not common:
            return PreparedBatch({}, {}, [])
        length = 1
    keys = set(common) | set(individual)
    classes = ([resolve_worker(worker)] if worker is not None
               else list(candidates) if candidates is not None else registered_workers())
    if not classes:
        raise NoMatchingWorkerError("no Worker class is defined or given to match instructions "
                                    "against: subclass taskfarm.Worker first")
    # Per class, the parts of matching that do not depend on values.
    shape_ok: list[tuple[type[Worker], dict[str, Attribute], dict[str, Any]]] = []
    rejected: dict[type[Worker], str] = {}
    for cls in classes:
        attrs = declared_attributes(cls)
        reason = _check_keys(cls, attrs, keys)
        coerced_common: dict[str, Any] = {}
        if reason is None:
            for key, value in common.items():
                ok, coerced, why = _check_value(attrs.get(key), value)
                if not ok:
                    reason = why
                    break
                coerced_common[key] = coerced
        if reason is None:
            shape_ok.append((cls, attrs, coerced_common))
        else:
            rejected[cls] = reason
    tasks: list[PreparedTask] = []
    given: list[str] = []
    names_here: set[str] = set()
    common_for: dict[type[Worker], dict[str, Any]] = {}
    ind_items = list(individual.items())
    for index in range(length):
        own = {key: values[index] for key, values in ind_items}
        matches: list[tuple[type[Worker], dict[str, Any]]] = []
        why_not = dict(rejected)
        for cls, attrs, coerced_common in shape_ok:
            view, reason = _match_values(attrs, own)
            if reason is None:
                matches.append((cls, view))
                common_for[cls] = coerced_common
            else:
                why_not[cls] = reason
        if not matches:
            raise NoMatchingWorkerError(_no_match_message(index, common, own, why_not))
        if len(matches) > 1:
            names = ", ".join(cls.__qualname__ for cls, _ in matches)
            raise AmbiguousWorkerError(
                f"instruction set #{index} {_show({**common, **own})} matches several Worker "
                f"classes: {names}; pass worker= to choose one, or narrow their declarations")
        cls, view = matches[0]
        tid = first_tid + index
        name = _task_name(cls, tid, {**common_for[cls], **view})
        if name in names_here or name in taken_names:
            if dedupe:
                given.append(name)
                continue
            raise InstructionError(f"duplicate task name {name!r} (instruction set #{index}); "
                                   "task names must be unique within a Boss")
        names_here.add(name)
        given.append(name)
        view["name"] = name
        _check_builtin_numbers(index, {**common_for[cls], **view})
        tasks.append(PreparedTask(tid, name, cls, view))
    used = {task.worker for task in tasks}
    if len(used) > 1:
        # Sets of one call share one coerced common dict; coercion is the same for all
        # classes in practice, and when it is not the first class's values win only if
        # they agree. Refuse the rare mixed case rather than guess.
        commons = {cls: common_for[cls] for cls in used}
        first = next(iter(commons.values()))
        if any(c != first for c in commons.values()):
            raise InstructionError("instruction sets of one call match Worker classes that "
                                   "coerce the common instructions differently; split the call")
    coerced_common = common_for[tasks[0].worker] if tasks else dict(common)
    simple = {k: v for k, v in coerced_common.items() if _is_simple(v)}
    for task in tasks:
        task.view = {**simple, **task.view}
    return PreparedBatch(coerced_common, simple, tasks, frozenset(individual), given)


def _check_containers(common: Any, individual: Any) -> None:
    if not isinstance(common, Mapping):
        raise InstructionTypeError(f"common_instructions must be a dict, not "
                                   f"{type(common).__name__}")
    if not isinstance(individual, Mapping):
        raise InstructionTypeError(f"individual_instructions must be a dict of lists, not "
                                   f"{type(individual).__name__}")
    for where, mapping in (("common", common), ("individual", individual)):
        for key in mapping:
            if not isinstance(key, str) or not key.isidentifier():
                raise InstructionError(f"{where} instruction key {key!r} is not a valid "
                                       "attribute name")
    for where, mapping in (("common", common), ("individual", individual)):
        for key, value in mapping.items():
            for one in (value if where == "individual" and isinstance(value, Sequence)
                        else (value,)):
                if isinstance(one, io.IOBase):
                    raise InstructionError(f"{where} instruction {key!r} is an open file, "
                                           "which cannot travel to a worker process: give "
                                           "its path instead")
    for key, values in individual.items():
        if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Sequence):
            raise InstructionTypeError(f"individual_instructions[{key!r}] must be a list (one "
                                       f"value per task), not {type(values).__name__}")


def _check_lengths(individual: Mapping[str, Sequence[Any]]) -> int:
    lengths = {key: len(values) for key, values in individual.items()}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{k}: {n}" for k, n in lengths.items())
        raise InstructionError(f"individual_instructions lists have different lengths ({shown}); "
                               "give one value per task in every list")
    return next(iter(lengths.values()), 0)


def _check_keys(cls: type[Worker], attrs: Mapping[str, Attribute], keys: set[str]) -> str | None:
    missing = sorted(n for n, a in attrs.items() if a.required and n not in keys and n != "name")
    if missing:
        return f"missing required {', '.join(map(repr, missing))}"
    unknown = sorted(keys - attrs.keys())
    if not cls.accept_undeclared:
        if unknown:
            return f"does not declare {', '.join(map(repr, unknown))}"
        return None
    # An undeclared key becomes an attribute of the task's Worker: one that names a
    # method or another attribute of the class (``task``, ``on_stop``) would replace it.
    shadowing = [key for key in unknown if key.startswith("_") or hasattr(cls, key)]
    if shadowing:
        return (f"undeclared {', '.join(map(repr, shadowing))} would replace the class's "
                "own attribute of that name: rename the instruction")
    return None


def _check_value(attr: Attribute | None, value: Any) -> tuple[bool, Any, str]:
    """(accepted, coerced value, why not) for one value of one attribute."""
    if attr is None:  # undeclared key on a class that accepts them
        return True, value, ""
    if value is None and (attr.optional or attr.default is None):
        return True, value, ""
    if attr.allowed is not None:
        for allowed in attr.allowed:
            if allowed == value and type(allowed) is type(value):
                return True, value, ""
        return False, value, (f"{attr.name!r} must be one of {list(attr.allowed)!r}, "
                              f"got {value!r}")
    types = attr.types
    if not types or (isinstance(value, types) and not _bool_for_number(value, types)):
        return True, value, ""
    coerced = _coerce(value, types)
    if coerced is not _NO:
        return True, coerced, ""
    wanted = " or ".join(t.__name__ for t in types)
    return False, value, (f"{attr.name!r} must be {wanted}, got {type(value).__name__} "
                          f"{_short(value)}")


_NO = object()


def _bool_for_number(value: Any, types: tuple[type, ...]) -> bool:
    """True for a bool offered where a number (not a bool) is declared."""
    return isinstance(value, bool) and bool not in types and (int in types or float in types)


def _coerce(value: Any, types: tuple[type, ...]) -> Any:
    """The safe coercions: integral to int, real to float, number to complex, str to
    Path, list to tuple."""
    if isinstance(value, bool):
        return _NO
    if tuple in types and isinstance(value, list):
        return tuple(value)
    if int in types and isinstance(value, numbers.Integral):
        return int(value)
    if float in types and isinstance(value, numbers.Real):
        return float(value)
    if complex in types and isinstance(value, numbers.Complex):
        return complex(value)
    # A class declaring a path type imported pathlib; no need to import it otherwise.
    pathlib = sys.modules.get("pathlib")
    if pathlib is not None and isinstance(value, str) and any(
            isinstance(t, type) and issubclass(t, pathlib.PurePath) for t in types):
        path_type = next(t for t in types if issubclass(t, pathlib.PurePath))
        return path_type(value)
    return _NO


def _match_values(attrs: Mapping[str, Attribute], own: Mapping[str, Any]
                  ) -> tuple[dict[str, Any], str | None]:
    view: dict[str, Any] = {}
    for key, value in own.items():
        ok, coerced, why = _check_value(attrs.get(key), value)
        if not ok:
            return view, why
        view[key] = coerced
    return view, None


def _task_name(cls: type[Worker], tid: int, values: Mapping[str, Any]) -> str:
    name = values.get("name")
    if name is None:
        return f"{cls.__name__}-{tid}"
    if not isinstance(name, str) or not name:
        raise InstructionError(f"task name must be a non-empty str, got {name!r}")

    def field(match: re.Match[str]) -> str:
        key = match.group(1)
        if key in values:
            return str(values[key])
        attr = declared_attributes(cls).get(key)
        if attr is None or attr.required or attr.default is None:
            raise InstructionError(f"name template {name!r} refers to [{key}], which the "
                                   "instruction set does not give and the Worker class "
                                   "does not declare with a default")
        return str(attr.default)

    expanded = _TEMPLATE.sub(field, name) if "[" in name else name
    if not expanded:
        raise InstructionError(f"name template {name!r} expands to an empty task name")
    return expanded


def _check_builtin_numbers(index: int, values: Mapping[str, Any]) -> None:
    for key in BUILTIN_NUMBERS:
        value = values.get(key)
        if value is not None and (not value >= 0 or not math.isfinite(value)):
            raise InstructionError(f"instruction set #{index}: {key!r} must be a finite "
                                   f"number >= 0, got {value!r}")


def split_simple(view: Mapping[str, Any], keys: Iterable[str]) -> tuple[dict[str, Any],
                                                                       dict[str, Any]]:
    """(view without, and the values of) the ``keys`` whose values are not simple."""
    extra = {k: view[k] for k in keys if k in view and not _is_simple(view[k])}
    if not extra:
        return dict(view), extra
    return {k: v for k, v in view.items() if k not in extra}, extra


def _is_simple(value: Any) -> bool:
    if isinstance(value, _SIMPLE):
        return not isinstance(value, str) or len(value) <= 4096
    if type(value) is bytes:  # a small pickled value (an Executor's call): inline
        return len(value) <= 4096
    if isinstance(value, (tuple, list)) and len(value) <= 64:
        return all(isinstance(v, _SIMPLE) for v in value)
    return False


def _no_match_message(index: int, common: Mapping[str, Any], own: Mapping[str, Any],
                      why_not: Mapping[type[Worker], str]) -> str:
    lines = [f"no Worker class matches instruction set #{index} {_show({**common, **own})}:"]
    for cls, reason in list(why_not.items())[:_MAX_SHOWN_CANDIDATES]:
        lines.append(f"  - {cls.__qualname__}: {reason}")
    if len(why_not) > _MAX_SHOWN_CANDIDATES:
        lines.append(f"  ... and {len(why_not) - _MAX_SHOWN_CANDIDATES} more classes")
    return "\n".join(lines)


def _short(value: Any) -> str:
    return short_repr(value, 60)


def short_repr(value: Any, width: int) -> str:
    """``repr(value)`` cut to ``width`` characters; never raises (a value whose repr
    fails, or is nested too deep, is named by its type)."""
    try:
        text = repr(value)
    except Exception:
        return f"<{type(value).__name__} whose repr() failed>"
    return text if len(text) <= width else text[:width - 3] + "..."


def _show(values: Mapping[str, Any]) -> str:
    return "{" + ", ".join(f"{k!r}: {_short(v)}" for k, v in values.items()) + "}"
