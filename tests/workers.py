"""Worker classes and synchronisation helpers the tests share.

Tests synchronise with worker processes through FIFOs, never through sleeps: a worker
blocks reading a byte from a :class:`Gate` until the test writes one, and announces
itself by writing a line to a :class:`Mailbox` the test reads.
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import threading
from pathlib import Path
from typing import Literal

import taskfarm


class _Fifo:
    """A FIFO the test holds open read-write (so neither side blocks on open()); only
    its path travels to worker processes."""

    def __init__(self, path: Path, flags: int = 0) -> None:
        self.path = str(path)
        os.mkfifo(self.path)
        self._fd = os.open(self.path, os.O_RDWR | flags)

    def close(self) -> None:
        os.close(self._fd)

    def __getstate__(self) -> dict[str, str]:
        return {"path": self.path}

    def __setstate__(self, state: dict[str, str]) -> None:
        self.path = state["path"]


class Gate(_Fifo):
    """A FIFO a worker waits on: ``wait()`` in the worker blocks until the test has
    called ``release(n)`` for n waiting workers."""

    def release(self, count: int = 1) -> None:
        os.write(self._fd, b"x" * count)

    def wait(self) -> None:
        with open(self.path, "rb", buffering=0) as fifo:
            fifo.read(1)


class Mailbox(_Fifo):
    """A FIFO workers write lines to and the test reads, with a timeout."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, os.O_NONBLOCK)
        self._buffer = b""

    def post(self, text: str) -> None:
        fd = os.open(self.path, os.O_WRONLY)
        try:
            os.write(fd, text.encode() + b"\n")
        finally:
            os.close(fd)

    def read(self, count: int = 1, timeout: float = 30.0) -> list[str]:
        """The next ``count`` lines, waiting at most ``timeout`` seconds in all."""
        lines: list[str] = []
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        import time

        deadline = time.monotonic() + timeout
        while len(lines) < count:
            while b"\n" in self._buffer and len(lines) < count:
                line, self._buffer = self._buffer.split(b"\n", 1)
                lines.append(line.decode())
            if len(lines) >= count:
                break
            left = deadline - time.monotonic()
            if left <= 0 or not poller.poll(left * 1000):
                raise TimeoutError(f"mailbox: got {lines}, wanted {count} lines")
            self._buffer += os.read(self._fd, 65536)
        return lines

    def __setstate__(self, state: dict[str, str]) -> None:
        super().__setstate__(state)
        self._buffer = b""


class Add(taskfarm.Worker):
    """x + 1."""

    x: int

    def task(self) -> int:
        return self.x + 1


class Scale(taskfarm.Worker):
    """factor * value, with a float declaration to test coercion."""

    value: float
    factor: float = 2.0
    mode: Literal["mul", "div"] = "mul"

    def task(self) -> float:
        return self.value * self.factor if self.mode == "mul" else self.value / self.factor


class Blocker(taskfarm.Worker):
    """Announces itself, waits on a gate, then writes a side-effect file."""

    gate: Gate
    mailbox: Mailbox
    label: str
    out_dir: str = ""

    def task(self) -> str:
        self.mailbox.post(f"started {self.label} {os.getpid()}")
        self.gate.wait()
        if self.out_dir:
            Path(self.out_dir, self.label).write_text("done")
        return self.label


class CountingSetup(taskfarm.Worker):
    """Counts how often setup_process ran in this process."""

    item: int
    setups = 0

    @classmethod
    def setup_process(cls) -> None:
        cls.setups += 1

    def task(self) -> tuple[int, int]:
        return os.getpid(), type(self).setups


class WorkerBoom(Exception):
    """An exception type of the tests' own, to check it is re-raised as itself."""


class OddError(Exception):
    """An exception whose constructor cannot be called again by unpickling."""

    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"odd {a} {b}")


class Misbehave(taskfarm.Worker):
    """Ends in the way ``how`` says."""

    how: Literal["ok", "raise", "sigkill", "exit3", "segfault", "unpicklable_result",
                 "unpicklable_exception", "odd_exception"]
    tag: int = 0

    def task(self) -> object:
        how = self.how
        if how == "raise":
            raise_boom(self.tag)
        if how == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        if how == "exit3":
            os._exit(3)
        if how == "segfault":
            ctypes.string_at(0)
        if how == "unpicklable_result":
            return threading.Lock()
        if how == "unpicklable_exception":
            exc = WorkerBoom("carries a lock")
            exc.lock = threading.Lock()
            raise exc
        if how == "odd_exception":
            raise OddError(1, 2)
        return self.tag


def raise_boom(tag: int) -> None:
    """A named frame that must show up in the re-raised traceback."""
    raise WorkerBoom(f"boom {tag}")


class Journal(taskfarm.Worker):
    """Appends its name to its own file when it completes: the side effect by which a
    test checks that a done task ran to completion exactly once."""

    out_dir: str
    spin: int = 2000

    def task(self) -> int:
        total = sum(i * i for i in range(self.spin))  # a little real work
        with open(os.path.join(self.out_dir, self.name), "a") as out:
            out.write(self.name + "\n")
        return total


class Probe(taskfarm.Worker):
    """Reports what its process looks like: CPU affinity and niceness."""

    item: int

    def task(self) -> tuple[list[int], int]:
        return sorted(os.sched_getaffinity(0)), os.getpriority(os.PRIO_PROCESS, 0)


class Busy(taskfarm.Worker):
    """A short piece of real work, for runs whose intervals a test examines."""

    item: int
    spin: int = 20000

    def task(self) -> int:
        return sum(i * i for i in range(self.spin))


class RecordingLoad:
    """A load probe for PoliteScheduler: measures for real (``system_load``) and
    posts each measurement to a mailbox, so a test can wait on measurements."""

    def __init__(self, mailbox_path: str) -> None:
        self.mailbox_path = mailbox_path

    def __call__(self) -> tuple[float, float]:
        from schedulers import system_load

        busy, available = system_load()
        fd = os.open(self.mailbox_path, os.O_WRONLY)
        try:
            os.write(fd, f"{busy:.3f} {available:.3f}\n".encode())
        finally:
            os.close(fd)
        return busy, available


class BlasThreads(taskfarm.Worker):
    """Reports the size of numpy's BLAS thread pool in its process."""

    item: int

    def task(self) -> tuple[int, int]:
        import numpy as np
        from threadpoolctl import threadpool_info

        np.dot(np.ones((64, 64)), np.ones((64, 64)))
        blas = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
        return os.getpid(), blas[0]


class WideBlasThreads(BlasThreads):
    """The same, for a class that asks for two threads."""

    threads = 2


class Hog(taskfarm.Worker):
    """Moves its own process into a (small) memory cgroup, then allocates ``mib``."""

    cgroup: str
    mib: int

    def task(self) -> int:
        with open(os.path.join(self.cgroup, "cgroup.procs"), "w") as procs:
            procs.write(str(os.getpid()))
        block = bytearray(self.mib * 2**20)
        for i in range(0, len(block), 4096):  # touch every page
            block[i] = 1
        return len(block)


class Stuck(taskfarm.Worker):
    """Blocks on a gate nobody opens: only a timeout ends it."""

    gate: Gate
    label: str = ""

    def task(self) -> None:
        self.gate.wait()


class Flaky(taskfarm.Worker):
    """Counts its attempts in a file; fails (or dies) on the first, succeeds after."""

    marks: str
    how: Literal["fail_once", "kill_once", "always_fail"] = "fail_once"

    def task(self) -> tuple[int, float]:
        path = os.path.join(self.marks, self.name)
        with open(path, "a") as marks:
            marks.write("x")
        attempt = os.path.getsize(path)
        if self.how == "always_fail" or attempt == 1:
            if self.how == "kill_once":
                os.kill(os.getpid(), signal.SIGKILL)
            raise WorkerBoom(f"attempt {attempt}")
        return attempt, self.memory


class Checkpointing(taskfarm.Worker):
    """Waits on its gate; when stopped, its finally block and on_stop leave marks."""

    gate: Gate
    mailbox: Mailbox
    out_dir: str

    def task(self) -> None:
        try:  # announce from inside: once the test hears it, the finally is armed
            self.mailbox.post(f"started {self.name} {os.getpid()}")
            self.gate.wait()
        finally:
            Path(self.out_dir, f"{self.name}.finally").write_text("cleaned up")

    def on_stop(self) -> None:
        Path(self.out_dir, f"{self.name}.checkpoint").write_text("state saved")


class Chaos(taskfarm.Worker):
    """Ends as ``how`` says; a done task appends its name to its own file first."""

    out_dir: str
    how: Literal["ok", "raise", "exit", "hang"] = "ok"
    gate: Gate | None = None

    def task(self) -> str:
        if self.how == "raise":
            raise WorkerBoom(self.name)
        if self.how == "exit":
            os._exit(7)
        if self.how == "hang":
            self.gate.wait()  # nobody opens it: the timeout ends the task
        with open(os.path.join(self.out_dir, self.name), "a") as out:
            out.write("done\n")
        return self.name


class UsesShared(taskfarm.Worker):
    """Reads (or writes a row of) a SharedArray; reports what its process saw."""

    data: object
    row: int = -1
    how: Literal["sum", "write", "uss"] = "sum"

    def task(self) -> object:
        import numpy as np
        import psutil

        assert isinstance(self.data, np.ndarray)
        if self.how == "write":
            self.data[self.row] = self.row
            return self.row
        if self.how == "uss":
            before = psutil.Process().memory_full_info().uss
            total = float(self.data.sum())  # touches every page
            return total, psutil.Process().memory_full_info().uss - before
        return float(self.data.sum()), self.data.flags.writeable


TOUCHED: list[int] = []  # module state a task changes: isolated tasks must not see it


class Polluter(taskfarm.Worker):
    """Leaves a mark in its module's state and reports every mark it sees."""

    item: int

    def task(self) -> tuple[int, list[int]]:
        TOUCHED.append(self.item)
        return os.getpid(), list(TOUCHED)
