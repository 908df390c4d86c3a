"""Checking, expanding and matching instructions: all in the main program, no process."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest
from workers import Add, Scale

import taskfarm
from taskfarm._main.prepare import prepare


def _prepare(common: Any = None, individual: Any = None, *, workers: Any = (Add, Scale),
             worker: Any = None, taken: set[str] | None = None):
    return prepare({} if common is None else common, {} if individual is None else individual,
                   worker=worker, candidates=list(workers), taken_names=taken or set(),
                   first_tid=0)


class Path2(taskfarm.Worker):
    where: pathlib.Path
    size: int | None = None

    def task(self) -> str:
        return str(self.where)


class Anything(taskfarm.Worker):
    accept_undeclared = True
    required: str

    def task(self) -> dict[str, Any]:
        return dict(vars(self))


def test_individual_lists_expand_over_common() -> None:
    batch = _prepare({"factor": 3.0}, {"value": [1.0, 2.0, 3.0]})
    assert [t.worker for t in batch.tasks] == [Scale] * 3
    assert [t.view["value"] for t in batch.tasks] == [1.0, 2.0, 3.0]
    assert batch.common == {"factor": 3.0}
    assert all(t.view["factor"] == 3.0 for t in batch.tasks)  # simple common values are seen


def test_common_alone_makes_one_set_and_nothing_makes_none() -> None:
    assert len(_prepare({"x": 1}).tasks) == 1
    assert _prepare().tasks == []


def test_mismatched_lengths_name_each_list() -> None:
    with pytest.raises(taskfarm.InstructionError,
                       match=r"different lengths \(value: 2, factor: 3\)"):
        _prepare({}, {"value": [1.0, 2.0], "factor": [1.0, 2.0, 3.0]})


@pytest.mark.parametrize(("common", "individual", "error"), [
    ([1], {}, taskfarm.InstructionTypeError),
    ({}, [1], taskfarm.InstructionTypeError),
    ({}, {"x": 5}, taskfarm.InstructionTypeError),
    ({}, {"x": "abc"}, taskfarm.InstructionTypeError),
    ({1: 2}, {}, taskfarm.InstructionError),
    ({"x": 1}, {"x": [1]}, taskfarm.InstructionError),
    ({"scheduler_ticket": 1, "x": 1}, {}, taskfarm.InstructionError),
])
def test_bad_containers_are_errors(common: Any, individual: Any, error: type) -> None:
    with pytest.raises(error):
        _prepare(common, individual)


def test_no_match_names_the_set_and_why_each_class_refused() -> None:
    with pytest.raises(taskfarm.NoMatchingWorkerError) as info:
        _prepare({}, {"x": [1, "two"]})
    text = str(info.value)
    assert "instruction set #1" in text and "'two'" in text
    assert "Add: 'x' must be int, got str" in text
    assert "Scale: missing required 'value'" in text


def test_unknown_key_is_refused_unless_the_class_accepts_undeclared() -> None:
    with pytest.raises(taskfarm.NoMatchingWorkerError, match="does not declare 'extra'"):
        _prepare({"x": 1, "extra": 2})
    batch = _prepare({"required": "r", "extra": 2}, workers=[Anything])
    assert batch.tasks[0].worker is Anything


def test_safe_coercions_only() -> None:
    batch = _prepare({}, {"value": [1, 2]})  # int -> float
    assert [type(t.view["value"]) for t in batch.tasks] == [float, float]
    with pytest.raises(taskfarm.NoMatchingWorkerError, match="must be float, got bool"):
        _prepare({"value": True})
    with pytest.raises(taskfarm.NoMatchingWorkerError, match="must be int, got float"):
        _prepare({"x": 1.5})
    assert isinstance(_prepare({"where": "/tmp/a"}, workers=[Path2]).common["where"],
                      pathlib.Path)
    assert isinstance(_prepare({}, {"where": ["/a"]}, workers=[Path2]).tasks[0].view["where"],
                      pathlib.Path)
    assert _prepare({"where": "/a", "size": None}, workers=[Path2]).tasks[0].view["size"] is None


def test_literal_values_are_the_allowed_set() -> None:
    assert _prepare({"value": 1.0, "mode": "div"}).tasks[0].worker is Scale
    with pytest.raises(taskfarm.NoMatchingWorkerError,
                       match=r"'mode' must be one of \['mul', 'div'\]"):
        _prepare({"value": 1.0, "mode": "add"})


def test_several_matches_is_an_error_and_worker_chooses() -> None:
    class Twin(taskfarm.Worker):
        x: int

        def task(self) -> int:
            return self.x

    with pytest.raises(taskfarm.AmbiguousWorkerError, match=r"Add, .*Twin"):
        _prepare({"x": 1}, workers=[Add, Twin])
    assert _prepare({"x": 1}, workers=[Add, Twin], worker=Twin).tasks[0].worker is Twin
    assert _prepare({"x": 1}, workers=[Add, Twin], worker=Add).tasks[0].worker is Add


def test_worker_by_registered_name() -> None:
    assert _prepare({"x": 1}, worker="Add").tasks[0].worker is Add
    with pytest.raises(taskfarm.NoMatchingWorkerError, match="no registered Worker class"):
        _prepare({"x": 1}, worker="NoSuchWorker")
    with pytest.raises(taskfarm.NoMatchingWorkerError, match="'x' must be int"):
        _prepare({"x": "a"}, worker="Add")


def test_names_default_unique_templates_expand_duplicates_refused() -> None:
    batch = _prepare({}, {"x": [1, 2]})
    assert [t.name for t in batch.tasks] == ["Add-0", "Add-1"]
    batch = _prepare({"name": "add_[x]"}, {"x": [1, 2]})
    assert [t.name for t in batch.tasks] == ["add_1", "add_2"]
    with pytest.raises(taskfarm.InstructionError, match="duplicate task name 'same'"):
        _prepare({"name": "same"}, {"x": [1, 2]})
    with pytest.raises(taskfarm.InstructionError, match="duplicate task name 'add_1'"):
        _prepare({"name": "add_[x]"}, {"x": [1]}, taken={"add_1"})
    with pytest.raises(taskfarm.InstructionError, match=r"refers to \[nope\]"):
        _prepare({"name": "a_[nope]"}, {"x": [1]})


def test_builtin_numbers_are_checked() -> None:
    assert _prepare({"x": 1, "memory": 512, "expected_time": 2}).tasks[0].view["memory"] == 512.0
    with pytest.raises(taskfarm.InstructionError, match="'memory' must be a finite number >= 0"):
        _prepare({"x": 1, "memory": -1})
    with pytest.raises(taskfarm.NoMatchingWorkerError, match="'expected_time' must be float"):
        _prepare({"x": 1, "expected_time": "long"})


def test_declarations() -> None:
    attrs = taskfarm._common.worker_class.declared_attributes(Scale)
    assert {"name", "memory", "expected_time", "scheduler_ticket", "resources", "after",
            "timeout", "retries", "retry_on", "retry_memory", "seed",
            "value", "factor", "mode"} == set(attrs)
    assert attrs["value"].required and not attrs["factor"].required
    assert attrs["mode"].allowed == ("mul", "div")
    assert "isolated" not in attrs and "accept_undeclared" not in attrs
    # A Worker is an ordinary class too: easy to test in-process.
    assert Scale(value=2.0, mode="div").task() == 1.0


def test_worker_class_must_be_a_worker() -> None:
    with pytest.raises(taskfarm.InstructionTypeError, match=r"not a taskfarm\.Worker subclass"):
        _prepare({"x": 1}, worker=int)
