"""Captured output: a task's stdout and stderr, written to files in memory for the
time of the task, travel in its report. Runs in worker processes only.

The capture works on the file descriptors (1 and 2), so it also catches what native
code and child processes write. What a task writes beyond :data:`CAPTURE_LIMIT` bytes
per stream is cut from the middle: the report keeps the first and the last half,
with a line in between saying how many bytes were cut. A task that is killed or
stopped loses what it wrote.
"""

from __future__ import annotations

import os
import sys

from taskfarm._common.processes import flush_std_streams

# Bytes kept of each stream per task: half from the start, half from the end.
CAPTURE_LIMIT = 1 << 20


class Capture:
    """Redirects fds 1 and 2 into memory files while a task runs."""

    def __init__(self) -> None:
        self._files = [os.memfd_create(f"taskfarm-{name}", os.MFD_CLOEXEC)
                       for name in ("stdout", "stderr")]
        self._saved: list[int] = []

    def start(self) -> None:
        """From now on, what is written to fds 1 and 2 goes to the memory files."""
        flush_std_streams()
        self._saved = [os.dup(1), os.dup(2)]
        for fd, memfd in zip((1, 2), self._files, strict=True):
            os.ftruncate(memfd, 0)
            os.lseek(memfd, 0, os.SEEK_SET)
            os.dup2(memfd, fd)

    def stop(self) -> tuple[str, str]:
        """Restore fds 1 and 2; return what was written to each, bounded."""
        flush_std_streams()
        for fd, saved in zip((1, 2), self._saved, strict=True):
            os.dup2(saved, fd)
            os.close(saved)
        self._saved = []
        out, err = (_read_bounded(memfd, name)
                    for memfd, name in zip(self._files, ("stdout", "stderr"), strict=True))
        for memfd in self._files:  # give the memory back now, not at the next task
            os.ftruncate(memfd, 0)
        return out, err


def _read_bounded(fd: int, name: str) -> str:
    size = os.fstat(fd).st_size
    if size <= CAPTURE_LIMIT:
        data = os.pread(fd, size, 0)
        return data.decode(_encoding(), "replace")
    half = CAPTURE_LIMIT // 2
    head = os.pread(fd, half, 0).decode(_encoding(), "replace")
    tail = os.pread(fd, half, size - half).decode(_encoding(), "replace")
    return (f"{head}\n[taskfarm: {size - 2 * half:,} bytes of {name} cut here; the task "
            f"wrote {size:,} bytes, and the first and last {half:,} are kept]\n{tail}")


def _encoding() -> str:
    return getattr(sys.stdout, "encoding", None) or "utf-8"
