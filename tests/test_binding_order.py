"""``packed_cpus``, the order in which ``binded=True`` pins workers by ticket: one
thread per physical core first, socket-packed (every core of socket 0 before socket
1), hyperthread siblings last. Checked on fake sysfs trees, and on this machine."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from schedulers import MaxThreadsScheduler
from taskfarm._common.system import packed_cpus


def _fake_sysfs(root: Path, layout: dict[int, tuple[int, int]],
                list_name: str = "thread_siblings_list") -> Path:
    """A ``/sys/devices/system/cpu`` tree: ``layout`` maps cpu -> (socket, core id);
    the CPUs sharing both are siblings."""
    for cpu, (socket, core) in layout.items():
        siblings = sorted(c for c, where in layout.items() if where == (socket, core))
        topology = root / f"cpu{cpu}" / "topology"
        topology.mkdir(parents=True)
        (topology / "physical_package_id").write_text(f"{socket}\n")
        (topology / "core_id").write_text(f"{core}\n")
        (topology / list_name).write_text(",".join(map(str, siblings)) + "\n")
    return root


def _two_sockets(root: Path) -> Path:
    """2 sockets x 2 cores x 2 threads, numbered as Linux does on Intel: one thread of
    every core across the sockets (0-3), then their siblings (4-7)."""
    layout = {cpu: (cpu % 2, (cpu // 2) % 2) for cpu in range(8)}
    return _fake_sysfs(root, layout)


def _one_socket(root: Path) -> Path:
    """1 socket x 4 cores x 2 threads, siblings numbered side by side (0-1 on core 0)."""
    return _fake_sysfs(root, {cpu: (0, cpu // 2) for cpu in range(8)}, "core_cpus_list")


def test_two_sockets_first_threads_socket_packed_then_siblings(tmp_path: Path) -> None:
    sysfs = _two_sockets(tmp_path)
    # socket 0: cores 0, 1 = cpus 0, 2; socket 1: cpus 1, 3; then siblings 4, 6, 5, 7.
    assert packed_cpus(sysfs, range(8)) == [0, 2, 1, 3, 4, 6, 5, 7]


def test_one_socket_never_puts_two_tickets_on_one_core_first(tmp_path: Path) -> None:
    sysfs = _one_socket(tmp_path)
    order = packed_cpus(sysfs, range(8))
    assert order == [0, 2, 4, 6, 1, 3, 5, 7]
    assert len({cpu // 2 for cpu in order[:4]}) == 4  # tickets 0..3 on four cores


def test_only_allowed_cpus_and_a_core_first_allowed_thread_counts_first(
        tmp_path: Path) -> None:
    sysfs = _one_socket(tmp_path)
    # core 0 only by its sibling 1, core 1 wholly, core 2 only by 5, core 3 not at all
    assert packed_cpus(sysfs, [5, 3, 2, 1]) == [1, 2, 5, 3]


def test_unreadable_topology_keeps_cpu_order(tmp_path: Path) -> None:
    assert packed_cpus(tmp_path, [3, 0, 2]) == [0, 2, 3]


def test_ranges_in_sibling_lists(tmp_path: Path) -> None:
    sysfs = _one_socket(tmp_path)
    for cpu in range(8):  # the same siblings, written as the kernel does: "2-3"
        first = cpu - cpu % 2
        (sysfs / f"cpu{cpu}" / "topology" / "core_cpus_list").write_text(
            f"{first}-{first + 1}\n")
    assert packed_cpus(sysfs, range(8)) == [0, 2, 4, 6, 1, 3, 5, 7]


def _is_permutation(order: list[int], of: Iterable[int]) -> bool:
    return len(order) == len(set(order)) and set(order) == set(of)


def test_this_machine_gives_a_permutation_of_the_affinity_mask() -> None:
    mask = os.sched_getaffinity(0)
    assert _is_permutation(packed_cpus(), mask)
    assert MaxThreadsScheduler(1, binded=True)._cpus == packed_cpus()
