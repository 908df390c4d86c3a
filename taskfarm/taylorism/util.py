"""Utilities of the taylorism layer: :class:`SharedNumpyArray`, a numpy array in shared
memory that every task of a Boss reads and writes, with a lock that works across them.

taylorism built it on ``multiprocessing.Array``, whose memory and lock only reach
processes forked after it was made. Here the memory is a taskfarm
:class:`~taskfarm.SharedArray` (a file in /dev/shm, mapped by each process that
receives the array) and the lock is a POSIX record lock (``lockf``) on that same file
(plus a thread lock within a process): both reach any process the array is given to,
whether forked from the main program or started as a separate program by taskfarm's
boss. A record lock belongs to the process that took it, so a process forked meanwhile
(the copy of the main program a Boss keeps) never holds it on the holder's behalf, as
an ``flock`` shared through the inherited descriptor would.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["SharedNumpyArray"]

# Per process (a fork starts afresh): the thread lock of each segment, and the
# descriptor of each segment's record lock while this process holds the lock.
_thread_locks: dict[str, tuple[int, threading.Lock]] = {}
_held: dict[str, int] = {}
_guard = threading.Lock()


def _segment_path(name: str) -> str:
    from taskfarm._common import processes

    return os.path.join(processes.SHM_DIR, name)


def _thread_lock(name: str) -> threading.Lock:
    with _guard:
        entry = _thread_locks.get(name)
        if entry is None or entry[0] != os.getpid():
            entry = (os.getpid(), threading.Lock())
            _thread_locks[name] = entry
            _held.pop(name, None)
        return entry[1]


class SegmentLock:
    """A lock over one shared segment, for every process and thread that uses it
    (``acquire``/``release``, or ``with``). ``acquire(block=True, timeout=None)``
    behaves as ``multiprocessing.Lock.acquire``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        deadline = None if timeout is None or not block else time.monotonic() + timeout
        lock = _thread_lock(self.name)
        if not lock.acquire(block, -1 if deadline is None else max(0.0, timeout or 0.0)):
            return False
        try:
            fd = os.open(_segment_path(self.name), os.O_RDWR | os.O_CLOEXEC)
        except BaseException:
            lock.release()
            raise
        try:
            if not _lock(fd, block, deadline):
                os.close(fd)
                lock.release()
                return False
        except BaseException:
            os.close(fd)
            lock.release()
            raise
        _held[self.name] = fd
        return True

    def release(self) -> None:
        fd = _held.pop(self.name, None)
        if fd is None:
            raise ValueError(f"the lock of {self.name} is not held by this process")
        os.close(fd)   # drops the record lock
        _thread_lock(self.name).release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<SegmentLock {self.name}>"


def _lock(fd: int, block: bool, deadline: float | None) -> bool:
    """Take the record lock: blocking, once, or retrying until ``deadline`` (it has no
    timeout of its own; only an explicit timeout costs these retries)."""
    if block and deadline is None:
        fcntl.lockf(fd, fcntl.LOCK_EX)
        return True
    pause = 0.001
    while True:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except (BlockingIOError, PermissionError):
            if deadline is None or time.monotonic() >= deadline:
                return False
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 2, 0.05)


class SharedNumpyArray:
    """A numpy array (or masked array) in shared memory, given to workers as an
    instruction (usually in ``sharedmemory_common_instructions``): every task reads
    and writes the same memory, and ``acquire()``/``release()`` (or ``get_lock()``)
    serialise writers across processes.

    Made from a numpy array (the data is copied into shared memory, so the original
    no longer follows it). Item access, slicing and every numpy attribute go to the
    array. A masked array's mask is copied to each task, its data is shared.
    """

    _own = ("_np_array", "_shared", "_segment", "_attach")

    def __init__(self, array: Any) -> None:
        import numpy

        from taskfarm import SharedArray

        if type(array).__name__ == "SynchronizedArray":
            raise TypeError("SharedNumpyArray cannot wrap a multiprocessing.Array: its memory "
                            "only reaches processes forked after it was made; give the numpy "
                            "array instead (numpy.frombuffer(mp_array.get_obj()))")
        masked = isinstance(array, numpy.ma.MaskedArray)
        data = numpy.ma.getdata(array) if masked else numpy.asarray(array)
        shared = SharedArray(data, writable=True)
        attach, args = shared.__reduce__()
        view: Any = shared.array
        if masked:
            view = numpy.ma.masked_where(numpy.ma.getmaskarray(array), view, copy=False)
        self._set(view, shared, shared.name, (attach, args))

    def _set(self, view: Any, shared: Any, segment: str,
             attach: tuple[Callable[..., Any], tuple[Any, ...]]) -> None:
        object.__setattr__(self, "_np_array", view)
        object.__setattr__(self, "_shared", shared)   # the owner (main program) only
        object.__setattr__(self, "_segment", segment)
        object.__setattr__(self, "_attach", attach)

    @property
    def shared_array(self) -> Any:
        """The taskfarm SharedArray that holds the data (None in a task's process)."""
        return self._shared

    def get_lock(self) -> SegmentLock:
        """The lock shared by every process that has this array."""
        return SegmentLock(self._segment)

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        return self.get_lock().acquire(block, timeout)

    def release(self) -> None:
        self.get_lock().release()

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        import numpy

        mask = (numpy.ma.getmaskarray(self._np_array)
                if isinstance(self._np_array, numpy.ma.MaskedArray) else None)
        return _rebuild, (self._attach, self._segment, mask)

    def __copy__(self) -> SharedNumpyArray:
        return self   # a copy of shared memory is the shared memory

    def __deepcopy__(self, memo: dict[int, Any]) -> SharedNumpyArray:
        return self

    def __hash__(self) -> int:
        return hash(self._segment)

    def __eq__(self, other: object) -> Any:
        if isinstance(other, SharedNumpyArray):
            return self._np_array == other._np_array
        return False

    def __getattr__(self, name: str) -> Any:
        if name in SharedNumpyArray._own:   # not set yet (while unpickling)
            raise AttributeError(name)
        return getattr(self._np_array, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._np_array, name, value)

    def __getitem__(self, key: Any) -> Any:
        return self._np_array[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        self._np_array[key] = value

    def __array__(self, dtype: Any = None, copy: Any = None) -> Any:
        import numpy

        return numpy.asarray(self._np_array, dtype=dtype)

    def __len__(self) -> int:
        return len(self._np_array)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._np_array)

    def __repr__(self) -> str:
        return f"SharedNumpyArray({self._np_array!r})"


def _rebuild(attach: tuple[Callable[..., Any], tuple[Any, ...]], segment: str,
             mask: Any) -> SharedNumpyArray:
    """A SharedNumpyArray over the same memory, in the process that unpickles it."""
    import numpy

    function, args = attach
    view: Any = function(*args)
    if mask is not None:
        view = numpy.ma.masked_where(mask, view, copy=False)
    array = SharedNumpyArray.__new__(SharedNumpyArray)
    array._set(view, None, segment, attach)
    return array
