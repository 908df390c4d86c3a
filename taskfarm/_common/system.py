"""How many CPUs this process may really use: its affinity mask, bounded by a cgroup
CPU quota (containers, batch allocations), not the raw core count; the order in which
tickets pin workers to them; and the memory budget of this process's cgroup."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable

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


CGROUP_ROOT = "/sys/fs/cgroup"


def _read(*parts: str | os.PathLike[str]) -> str:
    """The text of the file at ``os.path.join(*parts)`` (OSError if unreadable)."""
    with open(os.path.join(*parts)) as file:
        return file.read()


def cgroup_dirs(controller: str) -> list[str]:
    """The directories of this process's cgroup for ``controller`` and of its
    ancestors (a limit anywhere up the tree applies), v2 and v1 layouts alike."""
    try:
        lines = _read("/proc/self/cgroup").splitlines()
    except OSError:
        return []
    found: list[str] = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":                          # v2: one unified hierarchy
            base = CGROUP_ROOT
        elif controller in controllers.split(","):     # v1: one hierarchy per controller
            base = os.path.join(CGROUP_ROOT, controllers)
            if not os.path.exists(base):
                base = os.path.join(CGROUP_ROOT, controller)
        else:
            continue
        here = os.path.normpath(os.path.join(base, path.lstrip("/")))
        while True:
            if os.path.isdir(here):
                found.append(here)
            if here == base or len(here) <= len(base):
                break
            here = os.path.dirname(here)
    return found


def _cgroup_quota() -> float | None:
    """The smallest CPU quota (in CPUs) on this process's cgroup path, if any."""
    quotas = []
    for directory in cgroup_dirs("cpu"):
        try:
            quota, period = _read(directory, "cpu.max").split()[:2]
            if quota != "max":
                quotas.append(int(quota) / int(period))
            continue
        except (OSError, ValueError):
            pass
        try:
            quota_us = int(_read(directory, "cpu.cfs_quota_us"))
            period_us = int(_read(directory, "cpu.cfs_period_us"))
            if quota_us > 0:
                quotas.append(quota_us / period_us)
        except (OSError, ValueError, ZeroDivisionError):
            pass
    return min(quotas, default=None)


CPU_SYSFS = "/sys/devices/system/cpu"


def packed_cpus(sysfs: str | os.PathLike[str] = CPU_SYSFS,
                allowed: Iterable[int] | None = None) -> list[int]:
    """The CPUs this process may use, in the order tickets pin workers (``binded=True``):
    one thread per physical core first, socket-packed, then the hyperthread siblings.

    Socket-packed: every core of the first socket (core by core) before any core of the
    next, so that tickets 0..n-1 fill one socket's cache first. Siblings last: two
    hyperthreads of one core share its execution units, so tickets 0 and 1 on one core
    would each run at about half speed while other cores idle; the second threads of
    the cores come only once every core has one ticket (in the same order), then the
    third, and so on. Only the CPUs in ``allowed`` count, and a core whose first thread
    is not allowed counts its first allowed one as its first.

    Args:
        sysfs: the directory of the ``cpuN/topology`` files (a test gives a fake one).
        allowed: the CPUs to order; by default this process's affinity mask.

    A CPU whose topology cannot be read counts as a core of its own on socket 0.
    """
    if allowed is None:
        try:
            allowed = os.sched_getaffinity(0)
        except (AttributeError, OSError):
            allowed = range(os.cpu_count() or 1)
    cpus = sorted(set(allowed))
    cores: dict[tuple[int, int, int], list[int]] = {}
    for cpu in cpus:
        cores.setdefault(_core_of(sysfs, cpu), []).append(cpu)
    ranked = [(rank, core, cpu) for core, threads in cores.items()
              for rank, cpu in enumerate(threads)]
    return [cpu for *_, cpu in sorted(ranked)]


def _core_of(sysfs: str | os.PathLike[str], cpu: int) -> tuple[int, int, int]:
    """``cpu``'s physical core as (socket, core id, lowest sibling): the sibling list
    tells the core apart where core ids repeat across dies of one socket."""
    base = os.path.join(sysfs, f"cpu{cpu}", "topology")
    try:
        package = int(_read(base, "physical_package_id"))
        core = int(_read(base, "core_id"))
    except (OSError, ValueError):
        return 0, cpu, cpu
    siblings = [cpu]
    for name in ("core_cpus_list", "thread_siblings_list"):
        try:
            siblings = _cpu_list(_read(base, name))
            break
        except (OSError, ValueError):
            continue
    return package, core, min(siblings, default=cpu)


def _cpu_list(text: str) -> list[int]:
    """A sysfs CPU list such as ``0-3,8,10-11``, as numbers."""
    found: list[int] = []
    for part in text.strip().split(","):
        if part:
            first, _, last = part.partition("-")
            found.extend(range(int(first), int(last or first) + 1))
    return found


def memory_budget_mib(fraction: float) -> float:
    """``fraction`` of the memory this process may use, in MiB: the machine's, or its
    cgroup's limit (v2 ``memory.max``, v1 ``memory.limit_in_bytes``) when lower."""
    import psutil

    total = psutil.virtual_memory().total
    for directory in cgroup_dirs("memory"):
        for name in ("memory.max", "memory.limit_in_bytes"):
            try:
                text = _read(directory, name).strip()
            except OSError:
                continue
            if text.isdigit():
                total = min(total, int(text))
    return fraction * total / 2**20
