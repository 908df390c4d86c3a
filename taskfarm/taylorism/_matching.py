"""From taylorism instructions to taskfarm tasks, in the main program.

taylorism expanded ``common_instructions`` over ``individual_instructions`` (equal
lengths, or an ``AssertionError``) and let footprints pick, for each set, the Worker
class to hire. The same is done here, when the instructions are given: each set is
resolved by footprints' ``worker`` collector with footprints' own rules (every
candidate's ``footprint_couldbe``, then the highest ``footprint_weight``: priority
level, then the number of attributes used), without instantiating anything. The
resolved attributes (defaults, remaps, ``[attr]`` expansions applied) and the class
are pickled into the task's *call* (:mod:`taskfarm.taylorism._outcome`).
"""

from __future__ import annotations

import copy
import pickle
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import footprints

from taskfarm import NoMatchingWorkerError
from taskfarm._common import by_value as pickling
from taskfarm.taylorism.util import SharedNumpyArray

__all__ = ["NoAdequateWorkerError", "TaskSpec", "expand", "pack_call", "resolve"]

_SIMPLE = (str, int, float, bool, type(None))


class NoAdequateWorkerError(NoMatchingWorkerError, AttributeError):
    """No taylorism Worker class accepts an instruction set (an ``AttributeError``, as
    in taylorism, and taskfarm's ``NoMatchingWorkerError``). Raised when the
    instructions are given; nothing of that call reaches the boss."""


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """One instruction set, resolved: the Worker class footprints chose and its
    attributes (``None`` for attributes left unknown)."""

    name: str
    cls: type[Any]
    attrs: dict[str, Any]

    def number(self, key: str) -> float:
        """``memory`` or ``expected_time``, as taskfarm wants them (>= 0)."""
        value = self.attrs.get(key)
        return float(value) if isinstance(value, (int, float)) and value > 0 else 0.0

    def simple_attrs(self) -> dict[str, Any]:
        """The attributes whose values are plain (what a scheduler may look at)."""
        return {k: v for k, v in self.attrs.items()
                if isinstance(v, _SIMPLE) and not (isinstance(v, str) and len(v) > 4096)}

    def shared_arrays(self) -> list[Any]:
        """The taskfarm SharedArrays behind the SharedNumpyArrays it is given."""
        return [v.shared_array for v in self.attrs.values()
                if isinstance(v, SharedNumpyArray) and v.shared_array is not None]


def expand(common: Mapping[str, Any], individual: Mapping[str, Sequence[Any]]
           ) -> list[dict[str, Any]]:
    """The instruction sets of one call, as taylorism made them: one per position of
    the individual lists (none when there are none); the individual values are deep
    copies, the common ones shared."""
    if not individual:
        return []
    lengths = {len(values) for values in individual.values()}
    if len(lengths) > 1:
        raise AssertionError("all *individual_instructions* must have the same length.")
    individual = copy.deepcopy(dict(individual))
    return [{**common, **{k: v[i] for k, v in individual.items()}}
            for i in range(lengths.pop())]


def resolve(instructions: Mapping[str, Any]) -> TaskSpec:
    """The Worker class footprints picks for ``instructions`` and its attributes."""
    collector = footprints.collectors.get(tag="worker")
    candidates = collector.find_all(dict(instructions))
    if not candidates:
        raise NoAdequateWorkerError(
            "no adequate Worker was found with these instructions: "
            f"{_shown(instructions)} (footprints' report: "
            "footprints.collectors.get(tag='worker').report_whynot(ClassName))")
    candidates.sort(key=lambda c: c[0].footprint_weight(len(c[2])), reverse=True)
    cls, resolved, _ = candidates[0]
    # footprints' "unknown" is a string compared by identity, which no pickle keeps.
    attrs = {k: (None if isinstance(v, str) and v == footprints.UNKNOWN else v)
             for k, v in resolved.items()}
    if attrs.get("name") is None:
        attrs["name"] = str(uuid.uuid4())
    name = attrs["name"]
    if not isinstance(name, str) or not name:
        raise ValueError(f"a Worker's name must be a non-empty string, got {name!r}")
    return TaskSpec(name, cls, attrs)


def pack_call(spec: TaskSpec, by_value: bool) -> bytes:
    """The task's call: its class and attributes, pickled. By reference (plain pickle)
    for a copy of the main program, where the classes already are; ``by_value``
    (cloudpickle, for classes of ``__main__``) for a taskfarm worker process. A class
    or value plain pickle cannot take (a class defined in a function) goes by value."""
    attrs = {k: v for k, v in spec.attrs.items() if k != "scheduler_ticket"}
    if not by_value:
        try:
            return pickle.dumps((spec.cls, attrs), pickle.HIGHEST_PROTOCOL)
        except Exception:
            pass
    try:
        data: bytes = pickling.dumps((spec.cls, attrs), pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        raise TypeError(f"the instructions of worker {spec.name!r} cannot travel to its "
                        f"process: {type(exc).__name__}: {exc}") from exc
    return data


def _shown(instructions: Mapping[str, Any]) -> str:
    parts = []
    for key, value in instructions.items():
        text = repr(value)
        parts.append(f"{key!r}: {text if len(text) <= 60 else text[:57] + '...'}")
    return "{" + ", ".join(parts) + "}"
