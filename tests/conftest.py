"""Fixtures every test gets: no process and no descriptor may outlive a test. Also
``start_method``: a behaviour module that uses it runs each test under fork and spawn."""

from __future__ import annotations

import gc
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from workers import Gate, Mailbox

# Every process the farm starts must be gone this long after the test ends.
LEAK_WAIT = 5.0


def _fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Fail the test if it leaves a child process or an open descriptor behind."""
    me = psutil.Process()
    before_children = {p.pid for p in me.children(recursive=True)}
    before_fds = _fds()
    yield
    deadline = time.monotonic() + LEAK_WAIT
    left: list[psutil.Process] = []
    while time.monotonic() < deadline:
        left = [p for p in me.children(recursive=True)
                if p.pid not in before_children and p.is_running()
                and p.status() != psutil.STATUS_ZOMBIE]
        if not left:
            break
        psutil.wait_procs(left, timeout=0.2)
    assert not left, f"processes left behind: {[(p.pid, p.cmdline()) for p in left]}"
    for thread in threading.enumerate():
        if thread.name == "taskfarm-receiver":  # it closes its pipe as it ends
            thread.join(max(0.0, deadline - time.monotonic()))
    gc.collect()  # objects awaiting collection (a SharedArray's mapping) hold descriptors
    leaked = _fds() - before_fds
    assert not leaked, f"descriptors left open: {sorted(leaked)}"


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[Gate]:
    made = Gate(tmp_path / "gate")
    yield made
    made.close()


@pytest.fixture
def mailbox(tmp_path: Path) -> Iterator[Mailbox]:
    made = Mailbox(tmp_path / "mailbox")
    yield made
    made.close()


@pytest.fixture(params=["fork", "spawn"], ids=["fork", "spawn"])
def start_method(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The Boss's default start method for this test (TASKFARM_START_METHOD)."""
    method: str = request.param
    monkeypatch.setenv("TASKFARM_START_METHOD", method)
    return method
