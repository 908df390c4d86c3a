"""``SharedArray``: a numpy array in shared memory that workers receive without a copy.
Made in the main program, mapped in worker processes; removed with its array (or by
the boss, if the main program dies).

The memory is a file in /dev/shm mapped by every process that uses it: the main
program writes the data once; a worker's instruction attribute is a numpy array over
the same pages (attached once per process), so a 400 MB array costs the workers
neither a copy nor a pickle. ``multiprocessing.shared_memory`` is not used: in this
Python it registers every segment with a resource-tracker process, which would be a
stray child and would unlink segments at the wrong process's exit.

Lifetime: the segment lives as long as its SharedArray object in the main program (it
is removed when the object is collected, or when the program exits), and a Boss given
the array as an instruction value holds it until every task that received it has
ended, so ``{"data": SharedArray(table)}`` written inline is safe, one array can serve
several farms, and a service that shares a new array every stride keeps /dev/shm
flat; the boss's workers unmap it then too. ``close()`` removes the segment now. If
the main program is killed, its boss removes the segments it was given before it
exits.

Writing: read-only by default (a worker that assigns to it gets numpy's ValueError).
With ``writable=True`` workers write into the same memory; taskfarm does no locking,
so give each task its own part (a row range named in its instructions), or put the
tasks that write the same part under ``ResourceLockScheduler`` with a common resource.

Space: /dev/shm is a tmpfs with a size limit (64 MB by default in Docker). A file
grown with ``ftruncate`` alone reserves nothing, so a mapping past the free space
faults (SIGBUS) at the first write to a missing page: the main program while copying
the data, or a worker writing into a zero-filled writable array, and the segment was
left behind. So the pages are reserved when the array is made (``posix_fallocate``),
and an array that does not fit raises :class:`SharedSpaceError` at ``SharedArray(...)``,
with nothing left in /dev/shm.
"""

from __future__ import annotations

import errno
import mmap
import os
import weakref
from collections.abc import Iterable
from typing import Any

from taskfarm._common import processes
from taskfarm._common.errors import SharedSpaceError
from taskfarm._common.processes import SHM_PREFIX, unlink_shared

__all__ = ["SharedArray", "SharedSpaceError"]

_attached: dict[tuple[str, bool], Any] = {}   # in a worker: segments mapped


def _shm_dir() -> str:
    """The directory of the segments, read at each call (tests point it at a small
    tmpfs by setting ``taskfarm._common.processes.SHM_DIR``, which ``unlink_shared``
    reads too)."""
    return processes.SHM_DIR


def _size(nbytes: float) -> str:
    """``nbytes`` for people: MiB, or GiB from 1 GiB up."""
    if nbytes >= 2**30:
        return f"{nbytes / 2**30:.1f} GiB"
    return f"{nbytes / 2**20:.1f} MiB"


def _no_space(directory: str, needed: int, what: str) -> SharedSpaceError:
    """The error for a segment of ``needed`` bytes that ``directory`` cannot hold."""
    try:
        info = os.statvfs(directory)
        free: int | None = info.f_bavail * info.f_frsize
        total = f" (of {_size(info.f_blocks * info.f_frsize)})"
    except OSError:
        free, total = None, ""
    has = "too little" if free is None else _size(free)
    message = (f"SharedArray {what} needs {_size(needed)} of shared memory, but {directory} "
               f"has {has} free{total}: give the machine or container a larger {directory} "
               f"(Docker: `docker run --shm-size=2g`; Kubernetes: a memory-backed emptyDir "
               f"mounted there; a host: `mount -o remount,size=... {directory}`), or share "
               f"a smaller array")
    return SharedSpaceError(message, directory, needed, free)


def _create(name: str, size: int, what: str) -> mmap.mmap:
    """Create segment ``name`` of ``size`` bytes with its pages reserved, and map it.

    Raises SharedSpaceError when the pages do not fit; on any error the file is
    removed, so nothing is left in the directory."""
    directory = _shm_dir()
    path = os.path.join(directory, name)
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        try:
            os.posix_fallocate(fd, 0, size)  # reserve now: no SIGBUS at the first write
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EFBIG):
                raise
            raise _no_space(directory, size, what) from None
        return mmap.mmap(fd, size)
    except BaseException:
        os.unlink(path)
        raise
    finally:
        os.close(fd)


class SharedArray:
    """A numpy array in shared memory, for instructions: workers receive a numpy
    array over the same memory, without a copy.

    Args:
        data: an array (or anything numpy takes) copied into shared memory; or None
            with ``shape`` and ``dtype`` for a zero-filled array.
        shape, dtype: the array's shape and dtype when ``data`` is None.
        writable: let workers write into it (see the module docstring on locking).

    ``.array`` is the array in this process; ``.name`` the segment in /dev/shm.

    Raises:
        SharedSpaceError: (an ``OSError`` with errno ENOSPC) the array does not fit in
            the free space of /dev/shm; the message names both sizes and the fix.
    """

    def __init__(self, data: Any = None, *, shape: int | tuple[int, ...] | None = None,
                 dtype: Any = None, writable: bool = False) -> None:
        import numpy as np

        source = None if data is None else np.asarray(data)
        if source is not None:
            shape, dtype = source.shape, source.dtype
        elif shape is None:
            raise ValueError("SharedArray needs data, or a shape (and a dtype)")
        self.shape = ((int(shape),) if isinstance(shape, (int, np.integer))
                      else tuple(int(n) for n in shape))
        self.dtype = np.dtype(dtype if dtype is not None else np.float64)
        self.writable = bool(writable)
        self.name = f"{SHM_PREFIX}{os.getpid()}-{os.urandom(8).hex()}"
        nbytes = int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize
        self._map = _create(self.name, max(nbytes, 1), f"{self.dtype} {self.shape}")
        # Made before the copy can fail. Only this process removes the segment: a copy
        # of it (os.fork()) that drops the object must not remove it for everyone.
        self._finalizer = weakref.finalize(self, _unlink_in, os.getpid(), self.name)
        self.array = np.ndarray(self.shape, self.dtype, buffer=self._map)
        if source is not None:
            self.array[...] = source

    @property
    def nbytes(self) -> int:
        return self.array.nbytes

    @property
    def closed(self) -> bool:
        """True once :meth:`close` removed the segment."""
        return not self._finalizer.alive

    def close(self) -> None:
        """Remove the segment from /dev/shm now, rather than when the object goes.
        ``.array`` stays usable in this process (the memory is freed once every
        mapping is gone); workers that mapped it keep their mapping, but a task that
        has not mapped it yet fails, and giving it to a Boss is an error."""
        self._finalizer()

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # In a worker this becomes a plain numpy array over the same memory.
        return attach, (self.name, self.shape, self.dtype.str, self.writable)

    def __repr__(self) -> str:
        mode = "writable" if self.writable else "read-only"
        return f"<SharedArray {self.name} {self.dtype} {self.shape} {mode}>"


def _unlink_in(owner: int, name: str) -> None:
    if os.getpid() == owner:
        unlink_shared([name])


def attach(name: str, shape: tuple[int, ...], dtype: str, writable: bool) -> Any:
    """Map a SharedArray's segment in this process (once) as a numpy array."""
    import numpy as np

    key = (name, writable)
    array = _attached.get(key)
    if array is None:
        path = os.path.join(_shm_dir(), name)
        fd = os.open(path, os.O_RDWR if writable else os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            mapped = mmap.mmap(fd, size, access=mmap.ACCESS_WRITE if writable
                               else mmap.ACCESS_READ)
        finally:
            os.close(fd)
        array = np.ndarray(shape, np.dtype(dtype), buffer=mapped)
        _attached[key] = array
    return array


def detach(names: Iterable[str]) -> None:
    """In a worker: forget these segments; each is unmapped once the last array over
    it (a task's, a cached common instruction's) is gone."""
    for name in names:
        _attached.pop((name, False), None)
        _attached.pop((name, True), None)


def shared_in(values: Any) -> list[SharedArray]:
    """The SharedArrays among instruction values, however deep in lists, tuples, sets
    and dicts: the boss must know them all, to remove them if the main program dies."""
    found: list[SharedArray] = []
    stack = list(values)
    seen: set[int] = set()
    while stack:
        value = stack.pop()
        if isinstance(value, SharedArray):
            found.append(value)
        elif isinstance(value, (list, tuple, set, frozenset, dict)) and id(value) not in seen:
            seen.add(id(value))
            stack.extend(value.values() if isinstance(value, dict) else value)
    return found
