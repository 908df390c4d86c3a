"""taylorism-style workers and a scheduler for tests/test_taylorism_compat.py, in a
module of their own so that task processes (and the boss, for the scheduler) can
import them by name. Each worker has a mandatory ``case`` of its own, so that none of
them competes with another (or with taylorism's example workers) for a set."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import footprints

from taskfarm.taylorism import Worker
from taskfarm.taylorism.schedulers import NewMaxThreadsScheduler
from taskfarm.taylorism.util import SharedNumpyArray

# What the main program sets up before making a Boss (a session, a configuration):
# tasks forked from its copy see it.
SESSION: dict[str, Any] = {"user": None}


class CompatError(Exception):
    """What Boom raises."""


class Echo(Worker):
    """Reports its attributes and where it ran."""

    _footprint = dict(attr=dict(
        case=dict(values=["echo"]),
        value=dict(type=int, optional=True, default=7),
        colour=dict(values=["red", "green"], optional=True, default="red",
                    alias=("color",), remap=dict(rouge="red")),
        pause=dict(type=float, optional=True, default=0.0)))

    def _task(self) -> dict[str, Any]:
        time.sleep(self.pause)
        return dict(name=self.name, value=self.value, colour=self.colour, pid=os.getpid(),
                    ticket=self.scheduler_ticket, cpus=sorted(os.sched_getaffinity(0)),
                    cwd=os.getcwd(), user=SESSION["user"], kind=type(self).__name__,
                    started=time.monotonic())


class LoudEcho(Echo):
    """Echo at a higher footprints priority, for sets that say ``loud=True``."""

    _footprint = dict(priority=dict(level=footprints.priorities.top.level("debug")),
                      attr=dict(loud=dict(type=bool, values=[True])))


class Boom(Worker):
    """Raises CompatError."""

    _footprint = dict(attr=dict(case=dict(values=["boom"])))

    def _task(self) -> None:
        raise CompatError(f"boom in {self.name}")


class Sleepy(Worker):
    """Sleeps ``seconds``."""

    _footprint = dict(attr=dict(case=dict(values=["sleep"]), seconds=dict(type=float)))

    def _task(self) -> int:
        time.sleep(self.seconds)
        return os.getpid()


class Suicide(Worker):
    """Kills its own process."""

    _footprint = dict(attr=dict(case=dict(values=["die"])))

    def _task(self) -> None:
        os.kill(os.getpid(), signal.SIGKILL)


class Mover(Worker):
    """Changes directory; reports where it started and where it went."""

    _footprint = dict(attr=dict(case=dict(values=["chdir"]), to=dict()))

    def _task(self) -> tuple[str, str]:
        before = os.getcwd()
        os.chdir(self.to)
        return before, os.getcwd()


class TryLock(Worker):
    """Tries the lock of a shared array without waiting; reads it as it goes."""

    _footprint = dict(attr=dict(case=dict(values=["trylock"]),
                                array=dict(type=SharedNumpyArray, access="rwx")))

    def _task(self) -> tuple[bool, list[int], Any]:
        got = self.array.acquire(block=False)
        if got:
            self.array.release()
        import numpy

        mask = getattr(self.array, "mask", None)
        values = [int(v) for v in numpy.ma.getdata(self.array[...])]
        return got, values, None if mask is None else mask.tolist()


class Files(Worker):
    """Holds ``fileA`` and ``fileB`` for a moment (for the singlefile scheduler)."""

    _footprint = dict(attr=dict(case=dict(values=["files"]), fileA=dict(), fileB=dict()))

    def _task(self) -> tuple[float, float]:
        start = time.monotonic()
        time.sleep(0.15)
        return start, time.monotonic()


class NamesBackwards(NewMaxThreadsScheduler):
    """A taylorism-style scheduler of a program's own: one task at a time, the
    largest name first."""

    _footprint = dict(attr=dict(backwards=dict(values=[True], type=bool)))

    def launchable(self, pending_instructions: list[dict[str, Any]], workers: Any,
                   report: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        if workers:
            return [], pending_instructions
        ordered = sorted(pending_instructions, key=lambda i: i["name"], reverse=True)
        return self._assign_tickets(workers, ordered[:1]), ordered[1:]
