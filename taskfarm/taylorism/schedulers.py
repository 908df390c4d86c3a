"""taylorism's schedulers, made with footprints and run by taskfarm's.

``footprints.proxy.scheduler(...)`` finds them as it found taylorism's::

    footprints.proxy.scheduler(limit='threads', max_threads=2, binded=True)
    footprints.proxy.scheduler(limit='memory', memory_per_task=1.8)
    footprints.proxy.scheduler(limit='threads+memory', max_threads=4)
    footprints.proxy.scheduler(nosort=True)                  # no limit
    footprints.proxy.scheduler(limit='threads', max_threads=2, singlefile=True)

Each keeps taylorism's attributes and defaults (``max_threads=0``: half the CPUs;
``memory_max_percentage=0.75`` of the memory; ``memory_per_task=2048`` MiB) and its
``launchable(pending_instructions, workers, report)``, and the Boss runs the
equivalent taskfarm scheduler (:meth:`BaseScheduler.to_taskfarm`): the same rule,
decided in the boss after every event instead of every 10 ms. A subclass that
overrides ``launchable`` is run as written (:class:`~taskfarm.taylorism._native.TaylorismStyle`).
``binded=True`` pins each task to a CPU by its ticket in bronx's order.

The deprecated classes (``LaxistScheduler``, ``MaxThreadsScheduler``,
``MaxMemoryScheduler``, ``SingleOpenFileScheduler``) make the footprints ones.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, ClassVar

import footprints
from bronx.system import cpus
from footprints import FootprintBase

import schedulers as native
from taskfarm.taylorism._log import taylorism_log
from taskfarm.taylorism._native import BronxOrderBinding, TaylorismStyle

__all__ = [
    "BaseScheduler", "LaxistScheduler", "LongerFirstScheduler", "MaxMemoryScheduler",
    "MaxThreadsScheduler", "NewLaxistScheduler", "NewLimitedScheduler",
    "NewMaxMemoryScheduler", "NewMaxThreadsScheduler", "NewSingleOpenFileScheduler",
    "SingleOpenFileScheduler", "binding_setup", "bronx_cpu_order",
]

MAX_NUMBER_PROCESSES = 512
_HALF_THE_CPUS = {0: max(1, native.available_cpus() // 2)}


def bronx_cpu_order() -> list[int]:
    """The CPUs this process may use, in bronx's order (``socketpacked_cpulist``)."""
    allowed = os.sched_getaffinity(0)
    try:
        order = list(cpus.LinuxCpusInfo().socketpacked_cpulist())
    except cpus.CpusToolUnavailableError:
        order = native.packed_cpus()
    return [c for c in order if c in allowed] or sorted(allowed)


def binding_setup(worker: Any) -> None:
    """Bind the calling process to the CPU of ``worker.scheduler_ticket``."""
    order = bronx_cpu_order()
    cpus.set_affinity(order[worker.scheduler_ticket % len(order)])


class BaseScheduler(FootprintBase):  # type: ignore[misc]  # footprints has no type hints
    """Base class of taylorism schedulers: ``launchable(pending_instructions, workers,
    report) -> (launchable, not_yet_launchable)``."""

    _abstract = True
    _collector = ("scheduler",)
    _footprint: Any = dict(attr=dict(identity=dict(info="Scheduler identity.", optional=True,
                                              default="anonymous")))
    # The class whose ``launchable`` :meth:`_native` implements (None: none does).
    _native_of: ClassVar[type | None] = None

    def launchable(self, pending_instructions: list[dict[str, Any]], workers: Mapping[str, Any],
                   report: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        raise NotImplementedError("launchable() must be implemented in a subclass")

    def _all_tickets(self) -> set[int | None]:
        return {None}

    def _workers_hooks(self) -> list[Any]:
        return []

    def _assign_tickets(self, workers: Mapping[str, Any],
                        launchable: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Give each launched set the lowest ticket no running worker holds (None once
        there are none left)."""
        taken = {getattr(w, "scheduler_ticket", None) for w in workers.values()}
        free = sorted(t for t in self._all_tickets() - taken if t is not None)
        for instructions in launchable:
            instructions.update(scheduler_ticket=free.pop(0) if free else None,
                                scheduler_hooks=self._workers_hooks())
        return launchable

    def _native(self) -> Any:
        return None

    def task_instructions(self, instructions: Mapping[str, Any]) -> dict[str, Any]:
        """taskfarm instructions this rule needs for one task (``resources``)."""
        return {}

    def to_taskfarm(self) -> Any:
        """The taskfarm scheduler the boss runs for this one."""
        owner = self._native_of
        same = owner is not None and type(self).launchable is owner.__dict__["launchable"]
        scheduler = self._native() if same else TaylorismStyle(self)
        if getattr(self, "binded", False):
            scheduler = BronxOrderBinding(scheduler, bronx_cpu_order())
        return scheduler


class NewLaxistScheduler(BaseScheduler):
    """No limit: every pending set is launchable at once."""

    _footprint: Any = dict(attr=dict(nosort=dict(alias=("laxist", "unsorted"), values=(True,),
                                            type=bool)))

    def launchable(self, pending_instructions: list[dict[str, Any]], workers: Mapping[str, Any],
                   report: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        return self._assign_tickets(workers, list(pending_instructions)), []

    def _native(self) -> Any:
        return native.LaxistScheduler()


NewLaxistScheduler._native_of = NewLaxistScheduler


class NewLimitedScheduler(BaseScheduler):
    """Abstract: schedulers with a ``limit``."""

    _abstract = True
    _footprint: Any = dict(attr=dict(limit=dict(values=["threads", "memory", "mem",
                                                   "threads+memory"],
                                           remap=dict(mem="memory"))))


_BINDED = footprints.Footprint(info="Abstract binded attribute", attr=dict(binded=dict(
    type=bool, info="Binds each task to a CPU.", default=False, optional=True)))
_MAX_THREADS = dict(alias=("maxpc", "maxthreads"), remap=_HALF_THE_CPUS, type=int)


class NewMaxThreadsScheduler(NewLimitedScheduler):
    """At most ``max_threads`` tasks at once (0: half the CPUs), in the order given."""

    _footprint: Any = [_BINDED, dict(attr=dict(
        limit=dict(values=["threads", "processes"], remap=dict(processes="threads")),
        max_threads=_MAX_THREADS))]

    def _all_tickets(self) -> set[int | None]:
        return set(range(self.max_threads))

    def launchable(self, pending_instructions: list[dict[str, Any]], workers: Mapping[str, Any],
                   report: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        room = max(self.max_threads - len(workers), 0)
        chosen = self._assign_tickets(workers, pending_instructions[:room])
        return chosen, pending_instructions[room:]

    def _native(self) -> Any:
        return native.MaxThreadsScheduler(self.max_threads)


NewMaxThreadsScheduler._native_of = NewMaxThreadsScheduler


class NewMaxMemoryScheduler(NewLimitedScheduler):
    """Running tasks' ``memory`` (MiB; ``memory_per_task`` for one that declares none)
    under ``max_memory`` (default: ``memory_max_percentage`` of the memory)."""

    _footprint: Any = [_BINDED, dict(attr=dict(
        limit=dict(values=["memory", "mem"], remap=dict(mem="memory")),
        max_memory=dict(info="Usable memory (MiB).", optional=True, type=float,
                        access="rwx"),
        memory_per_task=dict(info="MiB counted for a task that declares none.",
                             optional=True, default=2048., type=float),
        memory_max_percentage=dict(info="Default max_memory, as a fraction of the memory.",
                                   optional=True, default=0.75, type=float)))]

    max_memory: float | None   # a footprint attribute, for type checkers

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.max_memory is None:
            self.max_memory = native.memory_budget_mib(self.memory_max_percentage)

    def _all_tickets(self) -> set[int | None]:
        return set(range(MAX_NUMBER_PROCESSES))

    def _used(self, workers: Mapping[str, Any]) -> float:
        return float(sum(getattr(w, "memory", 0) or self.memory_per_task
                         for w in workers.values()))

    def launchable(self, pending_instructions: list[dict[str, Any]], workers: Mapping[str, Any],
                   report: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        used, chosen, rest = self._used(workers), [], []
        for instructions in pending_instructions:
            need = instructions.get("memory") or self.memory_per_task
            if used + need < self._budget():
                chosen.append(instructions)
                used += need
            else:
                rest.append(instructions)
        return self._assign_tickets(workers, chosen), rest

    def _budget(self) -> float:
        return float(self.max_memory or 0.0)

    def _per_task(self) -> float:
        """``memory_per_task`` for taskfarm, which refuses one above the budget: there a
        task that declares no memory runs alone (taylorism never launched it)."""
        return float(min(self.memory_per_task, self._budget()))

    def _native(self) -> Any:
        return native.MaxMemoryScheduler(self.max_memory, self._per_task(),
                                         self.memory_max_percentage, learn=False)


NewMaxMemoryScheduler._native_of = NewMaxMemoryScheduler


class LongerFirstScheduler(NewMaxMemoryScheduler):
    """Threads and memory limits, the longest ``expected_time`` first."""

    _footprint: Any = dict(attr=dict(limit=dict(values=["threads+memory"]),
                                max_threads=_MAX_THREADS))

    def _all_tickets(self) -> set[int | None]:
        return set(range(self.max_threads))

    def launchable(self, pending_instructions: list[dict[str, Any]], workers: Mapping[str, Any],
                   report: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        room = self.max_threads - len(workers)
        free = self._budget() - self._used(workers)
        chosen, rest = [], []
        ordered = sorted(pending_instructions, key=lambda i: i.get("expected_time") or 0,
                         reverse=True)
        for instructions in ordered:
            need = instructions.get("memory") or self.memory_per_task
            if need <= free and room > 0:
                chosen.append(instructions)
                free, room = free - need, room - 1
            else:
                rest.append(instructions)
        return self._assign_tickets(workers, chosen), rest

    def _native(self) -> Any:
        return native.LongerFirstScheduler(self.max_threads, self.max_memory,
                                           self._per_task(), self.memory_max_percentage,
                                           learn=False)


LongerFirstScheduler._native_of = LongerFirstScheduler


class NewSingleOpenFileScheduler(NewMaxThreadsScheduler):
    """Threads limit, and never two tasks at once with a ``fileA`` or ``fileB`` in
    common (taskfarm's ResourceLockScheduler on those names)."""

    _footprint: Any = dict(attr=dict(singlefile=dict(values=(True,), type=bool)))

    def launchable(self, pending_instructions: list[dict[str, Any]], workers: Mapping[str, Any],
                   report: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        held = {getattr(w, f, None) for w in workers.values() for f in ("fileA", "fileB")}
        free: list[dict[str, Any]] = []
        rest: list[dict[str, Any]] = []
        for instructions in pending_instructions:
            files = {instructions.get("fileA"), instructions.get("fileB")}
            (rest if files & held - {None} else free).append(instructions)
        chosen, later = super().launchable(free, workers, report)
        return chosen, rest + later

    def task_instructions(self, instructions: Mapping[str, Any]) -> dict[str, Any]:
        files = [instructions.get("fileA"), instructions.get("fileB")]
        return {"resources": tuple(str(f) for f in files if f is not None)}

    def _native(self) -> Any:
        return native.ResourceLockScheduler() & native.MaxThreadsScheduler(self.max_threads)


NewSingleOpenFileScheduler._native_of = NewSingleOpenFileScheduler


class _Deprecated:
    """The deprecated scheduler classes: each makes the footprints one and stands for
    it (attribute access goes to it)."""

    def __init__(self, target: Any) -> None:
        taylorism_log.warning("The %s class is deprecated. Instead, use the footprint "
                              "mechanism to create schedulers.", type(self).__name__)
        object.__setattr__(self, "_target", target)

    def __getattr__(self, name: str) -> Any:
        if name == "_target":
            raise AttributeError(name)
        return getattr(self._target, name)


class LaxistScheduler(_Deprecated):
    """Deprecated: ``footprints.proxy.scheduler(nosort=True)``."""

    def __init__(self) -> None:
        super().__init__(NewLaxistScheduler(nosort=True))


class MaxThreadsScheduler(_Deprecated):
    """Deprecated: ``footprints.proxy.scheduler(limit='threads', max_threads=...)``."""

    def __init__(self, max_threads: int = 0) -> None:
        super().__init__(NewMaxThreadsScheduler(limit="threads", max_threads=max_threads))


class MaxMemoryScheduler(_Deprecated):
    """Deprecated: ``footprints.proxy.scheduler(limit='memory', ...)``."""

    def __init__(self, max_memory_percentage: float = 0.75,
                 total_system_memory: float | None = None) -> None:
        kwargs: dict[str, Any] = dict(limit="memory",
                                      memory_max_percentage=max_memory_percentage)
        if total_system_memory is not None:
            kwargs["max_memory"] = total_system_memory * max_memory_percentage
        super().__init__(NewMaxMemoryScheduler(**kwargs))


class SingleOpenFileScheduler(_Deprecated):
    """Deprecated: ``footprints.proxy.scheduler(limit='threads', singlefile=True)``."""

    def __init__(self, max_threads: int = 0) -> None:
        super().__init__(NewSingleOpenFileScheduler(limit="threads", max_threads=max_threads,
                                                    singlefile=True))
