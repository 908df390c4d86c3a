"""How many CPUs this process may really use: its affinity mask, bounded by a cgroup
CPU quota (containers, batch allocations), not the raw core count."""

from __future__ import annotations

import math
import os
from pathlib import Path

__all__ = ["available_cpus", "memory_budget_mib", "packed_cpus"]


def available_cpus() -> int:
    """CPUs this process may use: ``len(sched_getaffinity)``, lowered by a cgroup v2
    (``cpu.max``) or v1 (``cpu.cfs_quota_us``) quota; at least 1."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    return max(1, count)


def _cgroup_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota_us / period_us if quota_us > 0 else None
    except (OSError, ValueError, ZeroDivisionError):
        return None


def packed_cpus() -> list[int]:
    """The CPUs this process may use, socket-packed: all CPUs of the first socket
    (core by core) before any of the next, so that tickets 0..n-1 fill one socket's
    cache first."""
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))

    def topology(cpu: int) -> tuple[int, int, int]:
        base = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            package = int((base / "physical_package_id").read_text())
            core = int((base / "core_id").read_text())
        except (OSError, ValueError):
            package, core = 0, cpu
        return package, core, cpu

    return [cpu for *_, cpu in sorted(map(topology, allowed))]


def memory_budget_mib(fraction: float) -> float:
    """``fraction`` of the memory this process may use, in MiB: the machine's, or its
    cgroup's limit (v2 ``memory.max``, v1 ``memory.limit_in_bytes``) when lower."""
    import psutil

    total = psutil.virtual_memory().total
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return fraction * total / 2**20
