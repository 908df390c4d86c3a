"""A SharedArray larger than the free space of /dev/shm raises a clear ENOSPC error at
``SharedArray(...)`` and leaves nothing behind, instead of SIGBUS at the first write.

For real, without mocks: each test mounts an 8 MiB tmpfs and points taskfarm's
shared-memory directory at it (``processes.SHM_DIR``, read at each call by
SharedArray, ``attach`` and ``unlink_shared``). Before the fix, the too-big cases
killed the test process with SIGBUS. Only the main program is involved: no Boss.
"""

from __future__ import annotations

import errno
import gc
import os
import pickle
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import taskfarm
from taskfarm._common import processes, shared_array

TMPFS_MIB = 8


@pytest.fixture
def small_shm(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs used as the shared-memory directory for the test's duration."""
    if shutil.which("mount") is None or shutil.which("umount") is None:
        pytest.skip("no mount/umount command to make a small tmpfs")
    where = tmp_path / "shm"
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_MIB}m", "tmpfs",
                              str(where)], capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): "
                    f"{mounted.stderr.strip()}")
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(processes, "SHM_DIR", str(where))
            patch.setattr(shared_array, "_attached", {})  # attach()'s mappings, dropped after
            yield where
            gc.collect()  # arrays of a failed test: unlink them while SHM_DIR points here
    finally:
        gc.collect()  # no mapping may keep the tmpfs busy
        subprocess.run(["umount", str(where)], check=True)


def _files(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


def _read_back(shared: taskfarm.SharedArray) -> np.ndarray:
    """What a worker receives: the array rebuilt from its pickle, over the segment."""
    rebuilt: np.ndarray = pickle.loads(pickle.dumps(shared))
    return rebuilt


def test_data_too_big_raises_enospc_naming_sizes_and_leaves_nothing(small_shm: Path) -> None:
    data = np.ones(2 * TMPFS_MIB * 2**20 // 8)  # 16 MiB of float64
    with pytest.raises(OSError) as caught:
        taskfarm.SharedArray(data)
    error = caught.value
    assert isinstance(error, taskfarm.SharedSpaceError)
    assert isinstance(error, taskfarm.TaskfarmError)
    assert error.errno == errno.ENOSPC and error.filename == str(small_shm)
    assert error.needed == data.nbytes and error.free is not None
    assert error.free <= TMPFS_MIB * 2**20
    message = str(error)
    assert "16.0 MiB" in message and "8.0 MiB" in message and str(small_shm) in message
    assert "--shm-size" in message
    assert _files(small_shm) == []


def test_data_that_fits_is_shared_and_reads_back(small_shm: Path) -> None:
    data = np.arange(TMPFS_MIB * 2**20 // 2 // 8, dtype=np.float64)  # 4 MiB
    shared = taskfarm.SharedArray(data)
    assert _files(small_shm) == [shared.name]
    assert os.stat(small_shm / shared.name).st_blocks * 512 >= data.nbytes  # reserved
    assert np.array_equal(shared.array, data)
    assert np.array_equal(_read_back(shared), data)
    del shared
    gc.collect()
    assert _files(small_shm) == []


def test_second_array_reports_the_space_left(small_shm: Path) -> None:
    first = taskfarm.SharedArray(np.zeros(5 * 2**20, dtype=np.uint8))
    with pytest.raises(taskfarm.SharedSpaceError) as caught:
        taskfarm.SharedArray(np.zeros(5 * 2**20, dtype=np.uint8))
    assert caught.value.free is not None and caught.value.free < 4 * 2**20
    assert _files(small_shm) == [first.name]
    assert pickle.loads(pickle.dumps(caught.value)).needed == 5 * 2**20  # travels intact


def test_writable_shape_too_big_raises_and_leaves_nothing(small_shm: Path) -> None:
    with pytest.raises(taskfarm.SharedSpaceError, match=r"needs 16\.0 MiB") as caught:
        taskfarm.SharedArray(shape=(2**20, 2), dtype=np.float64, writable=True)
    assert caught.value.errno == errno.ENOSPC
    assert _files(small_shm) == []


def test_writable_shape_that_fits_takes_writes(small_shm: Path) -> None:
    shared = taskfarm.SharedArray(shape=(2**18, 2), dtype=np.float64, writable=True)  # 4 MiB
    assert not shared.array.any()
    seen = _read_back(shared)  # as a worker would: writable, over the same pages
    seen[...] = 3.0            # every page: a SIGBUS here if they were not reserved
    assert (shared.array == 3.0).all()
    del shared, seen
    shared_array._attached.clear()
    gc.collect()
    assert _files(small_shm) == []
