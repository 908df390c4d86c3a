"""How many CPUs this process may really use: its affinity mask, bounded by a cgroup
CPU quota (containers, batch allocations), not the raw core count."""

from __future__ import annotations

import math
import os
from pathlib import Path

__all__ = ["available_cpus"]


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
