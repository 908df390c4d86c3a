"""Dependencies between instruction sets (``after=[...]``), checked in the main program
at the call that gives them: every prerequisite is a task given to this Boss, there is
no cycle, and prerequisites whose reports have already arrived are resolved here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from taskfarm._common.errors import InstructionError

if TYPE_CHECKING:
    from taskfarm._main.prepare import PreparedBatch


def resolve_dependencies(batch: PreparedBatch, names: Mapping[str, int],
                         statuses: Mapping[int, str]
                         ) -> list[tuple[tuple[str, ...], str | None]]:
    """Check every ``after`` of a batch (each name given to this Boss before, or in the
    batch; no cycle) and resolve the prerequisites whose reports have arrived
    (``names``: task name -> id; ``statuses``: id -> terminal status). Per task: the
    names still to wait for, or why it must not run."""
    if "after" not in batch.own_keys and not batch.common.get("after"):
        return [((), None)] * len(batch.tasks)  # nobody waits: nothing to check
    in_call = {t.name for t in batch.tasks}
    graph: dict[str, tuple[str, ...]] = {}
    for task in batch.tasks:
        after = tuple(task.view.get("after") or ())
        for name in after:
            if name not in in_call and name not in names:
                raise InstructionError(f"task {task.name!r} waits for {name!r}, which is "
                                       "not a task given to this Boss")
        graph[task.name] = tuple(n for n in after if n in in_call)
    check_acyclic(graph)
    waits: list[tuple[tuple[str, ...], str | None]] = []
    for task in batch.tasks:
        unresolved: list[str] = []
        cancelled = None
        for name in task.view.get("after") or ():
            status = None if name in in_call else statuses.get(names[name])
            if status is None:
                unresolved.append(name)
            elif status != "done":
                cancelled = f"its prerequisite {name!r} ended {status}"
                break
        waits.append((tuple(unresolved), cancelled))
    return waits


def check_acyclic(graph: Mapping[str, Sequence[str]]) -> None:
    """Raise InstructionError naming a cycle of ``after`` in ``graph``, if any."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in graph:
        if state.get(root):
            continue
        path = [root]
        stack = [iter(graph[root])]
        state[root] = 1
        while stack:
            name = next(stack[-1], None)
            if name is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(name) == 1:
                cycle = [*path[path.index(name):], name]
                raise InstructionError(f"tasks wait for each other in a cycle: "
                                       f"{' -> '.join(cycle)}")
            elif not state.get(name):
                state[name] = 1
                path.append(name)
                stack.append(iter(graph.get(name, ())))
