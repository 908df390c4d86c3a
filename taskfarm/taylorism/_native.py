"""The schedulers the boss runs for a taylorism Boss, besides taskfarm's own. Run in
the boss process (which loads the layer only when one of these is used).

- :class:`BronxOrderBinding` pins each launched task to a CPU chosen by its ticket in
  bronx's order (physical cores first, sockets in turn, hyperthread siblings last),
  as taylorism's ``binded=True`` did; the order is computed in the main program.
- :class:`TaylorismStyle` runs a taylorism-style scheduler (a subclass with its own
  ``launchable``, or any object with one) on taylorism-shaped arguments: instruction
  dicts (the footprint attributes with plain values, plus ``name``, ``memory`` and
  ``expected_time``) and running workers as objects with those attributes.
"""

from __future__ import annotations

import types
from collections.abc import Mapping, Sequence
from typing import Any

from schedulers import AllOf, BaseScheduler
from schedulers.base import Instructions, Launch, RunReport

__all__ = ["VIEW_PREFIX", "BronxOrderBinding", "TaylorismStyle", "wants_views"]

# Plain footprint attributes travel in a task's instructions under this prefix, for
# TaylorismStyle only (see wants_views).
VIEW_PREFIX = "fp_"
_BUILTIN = ("name", "memory", "expected_time", "scheduler_ticket")


class BronxOrderBinding(BaseScheduler):
    """``inner``'s decisions, each launched task pinned to ``cpus[ticket % len(cpus)]``
    (``taskfarm_cpu``); a task without a ticket is not pinned."""

    def __init__(self, inner: Any, cpus: Sequence[int]) -> None:
        if not cpus:
            raise ValueError("BronxOrderBinding needs at least one CPU")
        self.inner = inner
        self.cpus = tuple(cpus)
        self.prefetch = bool(getattr(inner, "prefetch", False))

    def check_instructions(self, instructions: Mapping[str, Any]) -> None:
        check = getattr(self.inner, "check_instructions", None)
        if check is not None:
            check(instructions)

    def recheck_after(self) -> float | None:
        recheck = getattr(self.inner, "recheck_after", None)
        return recheck() if recheck is not None else None

    def launchable(self, pending_instructions: Sequence[Instructions],
                   workers: Mapping[str, Instructions], report: RunReport | None) -> Launch:
        chosen, rest = self.inner.launchable(pending_instructions, workers, report)
        for instructions in chosen:
            ticket = instructions.get("scheduler_ticket")
            if ticket is not None:
                instructions["taskfarm_cpu"] = self.cpus[ticket % len(self.cpus)]
        return chosen, rest


class TaylorismStyle(BaseScheduler):
    """Runs ``scheduler.launchable(pending, workers, report)`` as taylorism called it
    (see the module docstring): ``pending`` is a list of dicts, ``workers`` maps each
    running task's name to an object with its attributes, and ``report`` is taskfarm's
    bounded statistics of ended tasks (taylorism gave the list of reports). The
    tickets it sets are kept; every other change to the dicts is ignored."""

    def __init__(self, scheduler: Any) -> None:
        self.scheduler = scheduler

    def launchable(self, pending_instructions: Sequence[Instructions],
                   workers: Mapping[str, Instructions], report: RunReport | None) -> Launch:
        views, by_view = [], {}
        for instructions in pending_instructions:
            view = _view(instructions)
            views.append(view)
            by_view[id(view)] = instructions
        running = {name: types.SimpleNamespace(**_view(w)) for name, w in workers.items()}
        chosen, _ = self.scheduler.launchable(views, running, report)
        launched: list[Instructions] = []
        for view in chosen:
            given = by_view.get(id(view))
            if given is None:
                raise TypeError(f"{self.scheduler!r}.launchable() returned a set it was not "
                                f"given: {view!r}")
            if view.get("scheduler_ticket") is not None:
                given["scheduler_ticket"] = view["scheduler_ticket"]
            launched.append(given)
        return launched, []

    def __repr__(self) -> str:
        return f"TaylorismStyle({self.scheduler!r})"


def _view(instructions: Mapping[str, Any]) -> dict[str, Any]:
    view = {k[len(VIEW_PREFIX):]: v for k, v in instructions.items()
            if k.startswith(VIEW_PREFIX)}
    for key in _BUILTIN:
        if key in instructions:
            view[key] = instructions[key]
    return view


def wants_views(scheduler: Any) -> bool:
    """True when the boss's scheduler runs a taylorism-style one, which reads the
    footprint attributes of the tasks."""
    if isinstance(scheduler, TaylorismStyle):
        return True
    if isinstance(scheduler, BronxOrderBinding):
        return wants_views(scheduler.inner)
    if isinstance(scheduler, AllOf):
        return any(wants_views(s) for s in scheduler.schedulers)
    return False
