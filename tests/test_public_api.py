"""The public surface is exactly what ``__all__`` says, and every name is documented."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import schedulers
import taskfarm

EXPECTED = {
    "AmbiguousWorkerError", "Boss", "BossDiedError", "BossStateError", "InstructionError",
    "InstructionTypeError", "NoMatchingWorkerError", "RemoteTaskError", "Report",
    "ReportStatus", "SharedArray", "Signal", "TaskCancelledError", "TaskError", "TaskReport",
    "TaskStatus",
    "TaskfarmError", "Worker", "WorkerKilledError", "batch_main", "run_as_server",
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


def test_errors_subclass_the_builtins_callers_catch() -> None:
    assert issubclass(taskfarm.InstructionError, ValueError)
    assert issubclass(taskfarm.InstructionTypeError, TypeError)
    assert issubclass(taskfarm.BossStateError, RuntimeError)
    assert issubclass(taskfarm.BossDiedError, taskfarm.BossStateError)
    assert issubclass(taskfarm.WorkerKilledError, taskfarm.TaskError)


def test_every_module_imports_and_says_what_it_is() -> None:
    for package in (taskfarm, schedulers):
        for info in pkgutil.iter_modules(package.__path__):
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            assert module.__doc__, f"{module.__name__} has no docstring"
