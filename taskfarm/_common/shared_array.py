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
the array as an instruction value keeps it alive until the Boss is closed, so
``{"data": SharedArray(table)}`` written inline is safe and one array can serve
several farms. If the main program is killed, its boss removes the segments it was
given before it exits.

Writing: read-only by default (a worker that assigns to it gets numpy's ValueError).
With ``writable=True`` workers write into the same memory; taskfarm does no locking,
so give each task its own part (a row range named in its instructions), or put the
tasks that write the same part under ``ResourceLockScheduler`` with a common resource.
"""

from __future__ import annotations

import mmap
import os
import uuid
import weakref
from typing import TYPE_CHECKING, Any

from taskfarm._common.processes import SHM_DIR, SHM_PREFIX, unlink_shared

if TYPE_CHECKING:
    pass

__all__ = ["SharedArray"]

_attached: dict[tuple[str, bool], Any] = {}   # in a worker: segments mapped


class SharedArray:
    """A numpy array in shared memory, for instructions: workers receive a numpy
    array over the same memory, without a copy.

    Args:
        data: an array (or anything numpy takes) copied into shared memory; or None
            with ``shape`` and ``dtype`` for a zero-filled array.
        shape, dtype: the array's shape and dtype when ``data`` is None.
        writable: let workers write into it (see the module docstring on locking).

    ``.array`` is the array in this process; ``.name`` the segment in /dev/shm.
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
        self.name = f"{SHM_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:16]}"
        nbytes = int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize
        fd = os.open(os.path.join(SHM_DIR, self.name), os.O_CREAT | os.O_EXCL | os.O_RDWR,
                     0o600)
        try:
            os.ftruncate(fd, max(nbytes, 1))
            self._map = mmap.mmap(fd, max(nbytes, 1))
        finally:
            os.close(fd)
        self.array = np.ndarray(self.shape, self.dtype, buffer=self._map)
        if source is not None:
            self.array[...] = source
        weakref.finalize(self, unlink_shared, [self.name])

    @property
    def nbytes(self) -> int:
        return self.array.nbytes

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # In a worker this becomes a plain numpy array over the same memory.
        return attach, (self.name, self.shape, self.dtype.str, self.writable)

    def __repr__(self) -> str:
        mode = "writable" if self.writable else "read-only"
        return f"<SharedArray {self.name} {self.dtype} {self.shape} {mode}>"


def attach(name: str, shape: tuple[int, ...], dtype: str, writable: bool) -> Any:
    """Map a SharedArray's segment in this process (once) as a numpy array."""
    import numpy as np

    key = (name, writable)
    array = _attached.get(key)
    if array is None:
        path = os.path.join(SHM_DIR, name)
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


def shared_in(values: Any) -> list[SharedArray]:
    """The SharedArrays among instruction values (directly, or in lists of them)."""
    found = []
    for value in values:
        if isinstance(value, SharedArray):
            found.append(value)
        elif isinstance(value, (list, tuple)):
            found.extend(v for v in value if isinstance(v, SharedArray))
    return found
