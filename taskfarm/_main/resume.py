"""Resuming from a journal, in the main program, at the call that gives instructions:
the sets recorded done are taken out of the call (their reports are read back), and
``after=`` names are satisfied by tasks recorded done, in this run or an earlier one.
See :mod:`taskfarm._main.journal`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from taskfarm._main.journal import Journal
from taskfarm._main.prepare import PreparedBatch, PreparedTask
from taskfarm._main.report import TaskReport

# The id given to a prerequisite recorded done in an earlier run and not given now.
RECORDED = -1


def journal_filter(batch: PreparedBatch,
                   journal: Journal) -> list[tuple[PreparedTask, TaskReport]]:
    """Take out of ``batch`` the sets recorded done (InstructionError for one recorded
    under other instructions); returns them with their reports."""
    keep: list[PreparedTask] = []
    resumed: list[tuple[PreparedTask, TaskReport]] = []
    done = journal.done_among([task.name for task in batch.tasks])
    for task in batch.tasks:
        report = None if task.name not in done else journal.resumed_report(
            task.name, task.worker.__qualname__, {**batch.common, **task.view})
        if report is None:
            keep.append(task)
        else:
            resumed.append((task, report))
    batch.tasks = keep
    return resumed


class _Names(Mapping[str, int]):
    """Task names known to the Boss, those resumed in this call, and (looked up when
    asked) those recorded done in the journal."""

    def __init__(self, names: Mapping[str, int], resumed: Mapping[str, int],
                 journal: Journal) -> None:
        self._names, self._resumed, self._journal = names, resumed, journal

    def __getitem__(self, name: str) -> int:
        if name in self._resumed:
            return self._resumed[name]
        if name in self._names:
            return self._names[name]
        if self._journal.recorded_done(name):
            return RECORDED
        raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        try:
            self[name]  # type: ignore[index]
        except KeyError:
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        yield from self._resumed
        yield from self._names

    def __len__(self) -> int:
        return len(self._resumed) + len(self._names)


class _Statuses(Mapping[int, str]):
    """Terminal statuses known to the Boss, and 'done' for the resumed ones."""

    def __init__(self, statuses: Mapping[int, str], done: set[int]) -> None:
        self._statuses, self._done = statuses, done

    def __getitem__(self, tid: int) -> str:
        if tid in self._done:
            return "done"
        return self._statuses[tid]

    def __iter__(self) -> Iterator[int]:
        yield from self._done
        yield from self._statuses

    def __len__(self) -> int:
        return len(self._done) + len(self._statuses)


def recorded(names: Mapping[str, int], statuses: Mapping[int, str], journal: Journal,
             resumed: Mapping[str, int]) -> tuple[Mapping[str, int], Mapping[int, str]]:
    """``names`` and ``statuses`` for resolving dependencies, with what the journal
    says is done."""
    return (_Names(names, resumed, journal),
            _Statuses(statuses, {RECORDED, *resumed.values()}))
