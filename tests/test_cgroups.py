"""Reality, not the raw machine: limits come from this process's cgroup, and a task the
kernel's out-of-memory killer kills is reported as such. Uses real cgroups (created by
the test under this process's own, as root); skipped where that is not allowed."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from workers import Hog

import taskfarm
from schedulers import MaxThreadsScheduler
from taskfarm._common.system import cgroup_dirs


def _child_cgroup(controller: str, settings: dict[str, str]) -> Iterator[Path]:
    dirs = [Path(d) for d in cgroup_dirs(controller)]
    if not dirs:
        pytest.skip(f"no {controller} cgroup here")
    child = dirs[0] / f"taskfarm-test-{os.getpid()}"
    try:
        child.mkdir()
        for name, value in settings.items():
            (child / name).write_text(value)
    except OSError as exc:
        if child.exists():
            child.rmdir()
        pytest.skip(f"cannot make a {controller} cgroup here: {exc}")
    yield child
    child.rmdir()


@pytest.fixture
def small_memory() -> Iterator[Path]:
    limit = str(150 * 2**20)
    names = ["memory.max"] if Path((cgroup_dirs("memory") or ["."])[0]).joinpath(
        "memory.max").exists() else ["memory.limit_in_bytes"]
    yield from _child_cgroup("memory", dict.fromkeys(names, limit))


@pytest.fixture
def half_a_cpu() -> Iterator[Path]:
    v2 = Path((cgroup_dirs("cpu") or ["."])[0]).joinpath("cpu.max").exists()
    settings = {"cpu.max": "50000 100000"} if v2 else {"cpu.cfs_period_us": "100000",
                                                       "cpu.cfs_quota_us": "50000"}
    yield from _child_cgroup("cpu", settings)


def _inside(cgroup: Path, code: str) -> str:
    """Run ``code`` in a Python process that first moves itself into ``cgroup``."""
    prelude = (f"import os; open({str(cgroup / 'cgroup.procs')!r}, 'w').write(str(os.getpid()))\n")
    done = subprocess.run([sys.executable, "-c", prelude + code], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_memory_budget_honours_the_cgroup_limit(small_memory: Path) -> None:
    budget = _inside(small_memory, "from schedulers import memory_budget_mib\n"
                                   "print(memory_budget_mib(1.0))")
    assert float(budget) == pytest.approx(150.0)


def test_the_cpu_count_honours_the_cgroup_quota(half_a_cpu: Path) -> None:
    cpus = _inside(half_a_cpu, "from schedulers import MaxThreadsScheduler\n"
                               "print(MaxThreadsScheduler(0).max_threads)")
    assert int(cpus) == 1


def test_a_task_killed_by_the_oom_killer_is_reported_as_such(small_memory: Path) -> None:
    report = taskfarm.batch_main({"cgroup": str(small_memory)}, {"mib": [600]}, worker=Hog,
                                 on_error="continue", scheduler=MaxThreadsScheduler(1),
                                 print_report=None)
    task = report.tasks[0]
    assert str(task.status) == "killed" and task.signal_name == "SIGKILL"
    assert "out-of-memory killer" in task.reason
