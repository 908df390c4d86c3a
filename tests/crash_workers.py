"""Worker classes and hostile values for the crash table (``test_crash_table.py``).

A *bomb* goes off in the way its kind says: ``exception`` raises :class:`CrashBoom`,
``unpicklable`` raises one that carries a lock (so it cannot be pickled back),
``sigkill`` kills its own process, ``exit`` calls ``os._exit(3)`` and ``segfault``
reads address 0. A bomb given a *marker* (a file path) goes off once only: the first
process to reach it creates the file, and a later process (the one that replaces a
killed worker, or a second attempt in the same process) passes through unharmed.
"""

from __future__ import annotations

import ctypes
import os
import signal
import threading
from typing import Any

import taskfarm

# setup_process() takes no instructions: its bomb ("KIND MARKER") comes through the
# environment, which the boss and its workers inherit from the main program.
SETUP_BOMB = "TASKFARM_CRASH_TABLE_SETUP_BOMB"


class CrashBoom(Exception):
    """The exception a bomb raises."""


def arm(marker: str | None) -> bool:
    """True if the bomb must go off here: always without a marker, else only in the
    first process that gets here (it creates the marker file)."""
    if marker is None:
        return True
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def explode(kind: str, where: str) -> None:
    """Go off as ``kind`` says; ``where`` (the stage) is part of the message."""
    if kind == "exception":
        raise CrashBoom(f"bomb in {where}")
    if kind == "unpicklable":
        exc = CrashBoom(f"bomb in {where}, carrying a lock")
        exc.lock = threading.Lock()  # type: ignore[attr-defined]
        raise exc
    if kind == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if kind == "exit":
        os._exit(3)
    if kind == "segfault":
        ctypes.string_at(0)
    raise AssertionError(f"unknown kind of bomb {kind!r}")


class RaisesWhenPickled:
    """A value whose pickling raises (or, with ``kind``, sets a bomb off)."""

    def __init__(self, kind: str = "exception", where: str = "pickling") -> None:
        self.kind = kind
        self.where = where

    def __reduce__(self) -> tuple[Any, ...]:
        explode(self.kind, self.where)
        raise AssertionError("not reached")


def _rebuild_bomb(kind: str, value: object, marker: str | None, maker: int) -> object:
    if os.getpid() != maker and arm(marker):
        explode(kind, "unpickling in the worker")
    return value


class ExplodesWhenUnpickled:
    """An instruction value that sets its bomb off when unpickled in another process
    than the one that made it (a worker: the boss never unpickles instructions), and
    otherwise arrives as ``value``."""

    def __init__(self, kind: str, value: object, marker: str | None = None) -> None:
        self.kind = kind
        self.value = value
        self.marker = marker
        self.maker = os.getpid()

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild_bomb, (self.kind, self.value, self.marker, self.maker)


def _rebuild_result(maker: int) -> str:
    if os.getpid() != maker:
        raise CrashBoom("result rebuilt away from its worker")
    return "rebuilt in its own worker"


class FailsAwayFromItsWorker:
    """A result made in a worker whose unpickling raises in any other process (the main
    program: the boss forwards results without unpickling them)."""

    def __init__(self) -> None:
        self.maker = os.getpid()

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild_result, (self.maker,)


class Crash(taskfarm.Worker):
    """Returns ``step + value``, unless ``stage`` names where its bomb of ``kind`` goes
    off: in ``task``, while its result is pickled (``pickle_result``), or while its
    result is unpickled in the main program (``unpickle_result``)."""

    step: int
    value: object = 0
    stage: str = ""
    kind: str = ""

    def task(self) -> object:
        if self.stage == "task":
            explode(self.kind, "task()")
        if self.stage == "pickle_result":
            if self.kind == "unpicklable":
                return threading.Lock()
            return RaisesWhenPickled(self.kind, "pickling the result")
        if self.stage == "unpickle_result":
            return FailsAwayFromItsWorker()
        assert isinstance(self.value, int)
        return self.step + self.value


class SetupCrash(Crash):
    """A :class:`Crash` whose ``setup_process`` sets off the bomb :data:`SETUP_BOMB`
    names, if any."""

    @classmethod
    def setup_process(cls) -> None:
        kind, _, marker = os.environ.get(SETUP_BOMB, "").partition(" ")
        if kind and arm(marker or None):
            explode(kind, "setup_process")
