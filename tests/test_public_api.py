"""The public surface is exactly what ``__all__`` says, and every name is documented."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import types
from pathlib import Path

import pytest

import schedulers
import taskfarm

EXPECTED = {
    "Accumulator", "AmbiguousWorkerError", "Boss", "BossDiedError", "BossStateError",
    "Cadence", "DaskBackend", "EventKind",
    "Executor", "InstructionError", "InstructionTypeError", "NoMatchingWorkerError",
    "RemoteTaskError", "Report", "ReportStatus", "SchedulerError", "SharedArray",
    "SharedSpaceError", "Signal", "TaskCancelledError", "TaskError", "TaskEvent",
    "TaskReport", "TaskStatus", "TaskfarmError", "Window", "Worker", "WorkerKilledError",
    "batch_main", "run_as_server",
}


@pytest.mark.parametrize("package", [taskfarm, schedulers])
def test_all_is_sorted_and_every_name_exists_and_is_documented(package: object) -> None:
    names = package.__all__
    assert names == sorted(names)
    for name in names:
        value = getattr(package, name)
        assert getattr(value, "__doc__", None), f"{package.__name__}.{name} has no docstring"


def test_taskfarm_exports_exactly_the_intended_names() -> None:
    assert set(taskfarm.__all__) == EXPECTED
    with pytest.raises(AttributeError):
        taskfarm.NoSuchThing  # noqa: B018


def test_no_private_name_leaks_into_the_namespace() -> None:
    """Everything in ``dir(taskfarm)`` that is not a dunder, a private subpackage or a
    public submodule imported on its own (``taskfarm.taylorism``, ``taskfarm.cli``) is
    in ``__all__``, and no name in ``__all__`` starts with an underscore."""
    public = {n for n in dir(taskfarm) if not n.startswith("_")
              and not isinstance(getattr(taskfarm, n), types.ModuleType)}
    assert public == set(taskfarm.__all__)
    assert not [n for n in taskfarm.__all__ if n.startswith("_")]


def test_type_checkers_see_the_same_names() -> None:
    """The TYPE_CHECKING imports of ``taskfarm/__init__.py`` name exactly ``__all__``."""
    source = Path(taskfarm.__file__).read_text()
    tree = ast.parse(source)
    guarded = next(node for node in tree.body if isinstance(node, ast.If)
                   and "TYPE_CHECKING" in ast.unparse(node.test))
    names = {alias.asname for node in guarded.body if isinstance(node, ast.ImportFrom)
             for alias in node.names}
    assert names == set(taskfarm.__all__)


def test_errors_subclass_the_builtins_callers_catch() -> None:
    assert issubclass(taskfarm.InstructionError, ValueError)
    assert issubclass(taskfarm.InstructionTypeError, TypeError)
    assert issubclass(taskfarm.BossStateError, RuntimeError)
    assert issubclass(taskfarm.BossDiedError, taskfarm.BossStateError)
    assert issubclass(taskfarm.WorkerKilledError, taskfarm.TaskError)


def test_every_module_imports_and_says_what_it_is() -> None:
    for package in (taskfarm, schedulers):
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if info.name.endswith(".__main__"):  # entry points: importing one runs it
                continue
            module = importlib.import_module(info.name)
            assert module.__doc__, f"{module.__name__} has no docstring"
            assert len(Path(module.__file__ or "").read_text().splitlines()) <= 400, \
                f"{module.__name__} is over 400 lines: split it"
