"""The taylorism-shaped ``Worker``: a footprints class whose instructions are footprint
attributes and whose work is ``_task()``. Defined and matched in the main program,
instantiated and run in the task's own process (see :mod:`taskfarm.taylorism._outcome`).

Every Worker has the footprint attributes ``name`` (unique; a fresh UUID when not
given), ``memory`` (MiB) and ``expected_time`` (seconds) that schedulers read,
``scheduler_ticket`` (the slot number the scheduler gave the task) and
``scheduler_hooks`` (callables run on the worker before ``_task``).
"""

from __future__ import annotations

import functools
import uuid
from typing import Any

from bronx.system import cpus
from footprints import FootprintBase, FPList

from taskfarm.taylorism._log import taylorism_log

__all__ = ["BindedWorker", "Worker"]


class Worker(FootprintBase):  # type: ignore[misc]  # footprints has no type hints
    """Base class of taylorism workers: declare the instructions as footprint
    attributes (``_footprint = dict(attr=dict(...))``) and implement :meth:`_task`,
    whose return value is the task's report.

    A concrete subclass registers itself in footprints' ``worker`` collector; the
    Boss picks, for each instruction set, the class footprints' own rules choose
    (every mandatory attribute given, values allowed, the highest priority, then the
    most attributes used).
    """

    _abstract = True
    _collector = ("worker",)
    _footprint: Any = dict(
        attr=dict(
            name=dict(info="Name of the worker (unique within a Boss).",
                      optional=True, default=None, access="rwx"),
            memory=dict(info="Memory the task needs (MiB), for memory schedulers.",
                        optional=True, default=0., type=float),
            expected_time=dict(info="How long the task is expected to run (s).",
                               optional=True, default=0., type=float),
            scheduler_ticket=dict(info="The slot number the scheduler gave the task.",
                                  optional=True, default=None, type=int),
            scheduler_hooks=dict(info="Callables run with the worker before its task.",
                                 optional=True, default=FPList(), type=FPList),
        )
    )

    # Footprint attributes (descriptors footprints sets), for type checkers.
    name: str | None
    scheduler_ticket: int | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.name is None:
            self.name = str(uuid.uuid4())
            taylorism_log.debug("Worker's name auto-assigned: %s", self.name)

    def binding(self) -> list[int | None]:
        """The CPUs this process is bound to, or ``[None]`` when it may run on every
        CPU of the machine. Raises bronx's ``CpusToolUnavailableError`` where the
        CPU layout cannot be read."""
        allowed = cpus.get_affinity()
        if allowed == _machine_cpus():
            return [None]
        return sorted(allowed)

    def _work_and_communicate_prehook(self) -> None:
        """Run in the task's process just before :meth:`_task` (after the scheduler
        hooks). The default does nothing."""

    def _task(self) -> Any:
        """The task: implement it in a subclass; its return value is the report."""
        raise RuntimeError("this method must be implemented in Worker's inheritant class !")


class BindedWorker(Worker):
    """Deprecated in taylorism: a Worker that binds its process to the CPU of its
    ticket. Prefer a scheduler made with ``binded=True``."""

    _abstract = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        taylorism_log.warning('The %s class is deprecated. Please use "Worker" instead.',
                              type(self).__name__)

    def _work_and_communicate_prehook(self) -> None:
        if self.scheduler_ticket is not None:
            from taskfarm.taylorism.schedulers import binding_setup

            binding_setup(self)


@functools.cache
def _machine_cpus() -> frozenset[int]:
    """Every CPU of the machine, read once per process: bronx parses /proc/cpuinfo
    for it, about 0.2 ms, which a task calling ``binding()`` would pay every time."""
    return frozenset(cpus.LinuxCpusInfo().raw_cpulist())
