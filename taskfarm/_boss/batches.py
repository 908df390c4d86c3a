"""What the boss holds of each instruction batch, in the boss process: the Worker
classes (as cloudpickled blobs it never unpickles) and each batch's common
instructions, kept while a task of that batch has not ended.
"""

from __future__ import annotations

from taskfarm._common.messages import AddTasks, WorkerClassSpec


class Batches:
    """Worker class specs by key, and common-instruction blobs by batch."""

    __slots__ = ("_commons", "classes")

    def __init__(self) -> None:
        self.classes: dict[int, WorkerClassSpec] = {}
        self._commons: dict[int, list[bytes | int]] = {}   # batch -> [blob, tasks not ended]

    def add(self, msg: AddTasks) -> None:
        """A batch (or the next chunk of one) arrived."""
        for spec in msg.classes:
            self.classes[spec.key] = spec
        entry = self._commons.get(msg.batch_id)
        if entry is None:
            entry = self._commons[msg.batch_id] = [msg.common_blob, 0]
        entry[1] = int(entry[1]) + len(msg.tasks)

    def common(self, batch_id: int) -> bytes:
        """The common instructions of a batch with a task not ended."""
        blob = self._commons[batch_id][0]
        assert isinstance(blob, bytes)
        return blob

    def __contains__(self, batch_id: int) -> bool:
        return batch_id in self._commons

    def release(self, batch_id: int) -> None:
        """One task of the batch ended; the last one lets go of its blob."""
        entry = self._commons[batch_id]
        entry[1] = int(entry[1]) - 1
        if entry[1] == 0:
            del self._commons[batch_id]
