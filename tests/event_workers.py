"""Worker classes for the tests of what happens inside a task and around it: emitted
values, captured output, forwarded log records, lifecycle hooks, seeds and timing.

Every class requires instructions of its own (prefixed by what it tests), so that no
instruction set meant for another test module matches it.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Literal

from workers import Gate, WorkerBoom

import taskfarm

# The directory teardown_process writes its marks to: a classmethod sees no
# instructions, so the test names it in the environment the workers inherit.
TEARDOWN_DIR = "TASKFARM_TEST_TEARDOWN_DIR"


class Emitter(taskfarm.Worker):
    """Emits ``emit_count`` values, ``(name, i)``, then ends as ``emit_then`` says.
    With a gate, it waits on it after emitting, before ending."""

    emit_count: int
    emit_then: Literal["return", "sigkill", "raise", "fail_once", "unpicklable",
                       "unloadable"] = "return"
    emit_gate: Gate | None = None
    emit_marks: str = ""

    def task(self) -> int:
        attempt = 1
        if self.emit_marks:  # counts attempts, for retries
            path = os.path.join(self.emit_marks, self.name)
            with open(path, "a") as marks:
                marks.write("x")
            attempt = os.path.getsize(path)
        for i in range(self.emit_count):
            self.emit((self.name, attempt, i))
        if self.emit_gate is not None:
            self.emit_gate.wait()
        if self.emit_then == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        if self.emit_then == "raise" or (self.emit_then == "fail_once" and attempt == 1):
            raise WorkerBoom(f"after emitting, attempt {attempt}")
        if self.emit_then == "unpicklable":
            self.emit(threading.Lock())
        if self.emit_then == "unloadable":
            self.emit(Unloadable())
        return self.emit_count


def _refuse_to_load() -> None:
    raise WorkerBoom("this value cannot be unpickled")


class Unloadable:
    """Pickles fine; unpickling it raises."""

    def __reduce__(self) -> tuple[object, tuple[()]]:
        return _refuse_to_load, ()


class Talker(taskfarm.Worker):
    """Writes to stdout and stderr in every way a task can: print, the descriptor
    itself and a child process; ``talk_bytes`` more bytes of stdout and stderr each,
    between a head and a tail marker."""

    talk_label: str
    talk_bytes: int = 0
    talk_fail: bool = False

    def task(self) -> str:
        print(f"print {self.talk_label}")
        os.write(1, f"fd {self.talk_label}\n".encode())
        subprocess.run(["echo", f"child {self.talk_label}"], check=True)
        print(f"err {self.talk_label}", file=sys.stderr)
        if self.talk_bytes:
            line = b"0123456789abcdef" * 7 + b"\n"   # 113 bytes
            block = (line * (self.talk_bytes // len(line) + 1))[:self.talk_bytes]
            for fd in (1, 2):
                os.write(fd, f"HEAD-{fd}\n".encode())
                view = memoryview(block)
                while view:  # a write to a memory file may be partial
                    view = view[os.write(fd, view):]
                os.write(fd, f"TAIL-{fd}\n".encode())
        if self.talk_fail:
            raise WorkerBoom(f"{self.talk_label} failed after talking")
        return self.talk_label


class CapturedTalker(Talker):
    """The same, with its output captured whatever the run says."""

    capture_output = True


class Logger(taskfarm.Worker):
    """Logs one record at each of DEBUG, INFO and WARNING on ``log_logger``, and an
    ERROR with an exception."""

    log_logger: str
    log_text: str

    def task(self) -> int:
        logger = logging.getLogger(self.log_logger)
        logger.debug("debug %s", self.log_text)
        logger.info("info %s from %d", self.log_text, os.getpid())
        logger.warning("warning %s", self.log_text)
        try:
            1 / 0  # noqa: B018
        except ZeroDivisionError:
            logger.exception("error %s", self.log_text)
        return os.getpid()


class TornDown(taskfarm.Worker):
    """Reports its pid; teardown_process appends a line to a file named after its pid
    in the directory the environment names."""

    td_item: int

    def task(self) -> int:
        return os.getpid()

    @classmethod
    def teardown_process(cls) -> None:
        with open(os.path.join(os.environ[TEARDOWN_DIR], str(os.getpid())), "a") as out:
            out.write("torn down\n")


class BadTeardown(taskfarm.Worker):
    """Its teardown_process raises."""

    bad_td_item: int

    def task(self) -> int:
        return os.getpid()

    @classmethod
    def teardown_process(cls) -> None:
        raise WorkerBoom(f"teardown failed in {os.getpid()}")


class Checkpointer(taskfarm.Worker):
    """Raises (or not); on_error writes what it was given to a checkpoint file, and
    raises in turn if asked."""

    oe_dir: str
    oe_fail: bool = True
    oe_hook_fails: bool = False

    def task(self) -> str:
        if self.oe_fail:
            raise WorkerBoom(f"task {self.name} failed")
        return self.name

    def on_error(self, exc: BaseException) -> None:
        Path(self.oe_dir, f"{self.name}.checkpoint").write_text(f"{type(exc).__name__}: {exc}")
        if self.oe_hook_fails:
            raise ValueError(f"checkpoint of {self.name} failed too")


class SeedProbe(taskfarm.Worker):
    """Reports its seed and the first draw of every generator a task may use. With
    ``probe_set_globals``, seeds the global generators itself and draws nothing."""

    probe_item: int
    probe_set_globals: int | None = None

    def task(self) -> tuple[int, int | None, float, float, float]:
        import numpy

        if self.probe_set_globals is not None:
            random.seed(self.probe_set_globals)
            numpy.random.seed(self.probe_set_globals)
            return os.getpid(), self.seed, 0.0, 0.0, 0.0
        return (os.getpid(), self.seed, random.random(), float(numpy.random.random()),
                float(self.rng.random()))


class SlowSetup(taskfarm.Worker):
    """Its setup_process takes 0.3 s (a model being loaded); its tasks are quick."""

    slow_item: int
    SETUP_SECONDS = 0.3

    @classmethod
    def setup_process(cls) -> None:
        time.sleep(cls.SETUP_SECONDS)   # stands for real work, not a wait for an event

    def task(self) -> int:
        return os.getpid()


class Spin(taskfarm.Worker):
    """Burns the CPU for ``spin_seconds`` of wall time."""

    spin_seconds: float

    def task(self) -> int:
        end = time.monotonic() + self.spin_seconds
        count = 0
        while time.monotonic() < end:
            count += 1
        return count


class Recycled(taskfarm.Worker):
    """Reports its pid and how many tasks of its class its process has run; its
    teardown_process leaves a mark as TornDown does."""

    recycle_item: int
    ran = 0

    def task(self) -> tuple[int, int]:
        type(self).ran += 1
        return os.getpid(), type(self).ran

    @classmethod
    def teardown_process(cls) -> None:
        with open(os.path.join(os.environ[TEARDOWN_DIR], str(os.getpid())), "a") as out:
            out.write(f"torn down after {cls.ran}\n")


# Paths of a mailbox and a gate for GatedTeardown, named in the environment.
TEARDOWN_MAILBOX = "TASKFARM_TEST_TEARDOWN_MAILBOX"
TEARDOWN_GATE = "TASKFARM_TEST_TEARDOWN_GATE"


class GatedTeardown(taskfarm.Worker):
    """Its teardown_process says it began, waits on a gate, then leaves its mark."""

    gated_item: int

    def task(self) -> int:
        return os.getpid()

    @classmethod
    def teardown_process(cls) -> None:
        fd = os.open(os.environ[TEARDOWN_MAILBOX], os.O_WRONLY)
        try:
            os.write(fd, f"tearing down {os.getpid()}\n".encode())
        finally:
            os.close(fd)
        with open(os.environ[TEARDOWN_GATE], "rb", buffering=0) as gate:
            gate.read(1)
        with open(os.path.join(os.environ[TEARDOWN_DIR], str(os.getpid())), "a") as out:
            out.write("torn down\n")
