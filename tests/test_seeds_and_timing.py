"""Reproducible seeds (``Boss(seed=N)``) and honest timing (``setup_time`` apart from
``duration``, ``cpu_time``), with real worker processes."""

from __future__ import annotations

import random
from typing import Any

import numpy
import pytest
from event_workers import SeedProbe, SlowSetup, Spin
from workers import Add

import taskfarm
from schedulers import MaxThreadsScheduler
from taskfarm._worker.seeding import derive_seed

pytestmark = pytest.mark.usefixtures("start_method")

NAMES = [f"draw-{i}" for i in range(6)]


def _draws(seed: int | None, workers: int = 2, **options: Any) -> dict[str, tuple[Any, ...]]:
    """What each task of NAMES saw: its seed and its first draw of random, numpy.random
    and self.rng (the pid left out)."""
    report = taskfarm.batch_main({}, {"probe_item": list(range(len(NAMES))), "name": NAMES},
                                 worker=SeedProbe, scheduler=MaxThreadsScheduler(workers),
                                 seed=seed, print_report=None, progress=False, **options)
    return {task.name: task.result[1:] for task in report.tasks}


def test_each_task_gets_a_seed_from_the_run_seed_and_its_name() -> None:
    draws = _draws(1234)
    for name, (seed, from_random, from_numpy, from_rng) in draws.items():
        assert isinstance(seed, int) and seed == derive_seed(1234, name)
        assert from_random == random.Random(seed).random()
        assert from_numpy == numpy.random.RandomState(seed % 2**32).random_sample()
        assert from_rng == numpy.random.default_rng(seed).random()
    assert len({seed for seed, *_ in draws.values()}) == len(NAMES)   # names differ


def test_the_same_seed_gives_the_same_values_with_one_worker_or_two() -> None:
    assert _draws(7, workers=1) == _draws(7, workers=2)


def test_the_same_seed_gives_the_same_values_under_fork_and_spawn() -> None:
    assert _draws(7, start_method="fork") == _draws(7, start_method="spawn")


def test_another_run_seed_gives_other_seeds() -> None:
    # The farm's seeds are derive_seed's (above): comparing the function is enough.
    for name in NAMES:
        assert derive_seed(1, name) != derive_seed(2, name)
    assert len({derive_seed(1, name) for name in NAMES} | {derive_seed(2, name)
                                                             for name in NAMES}) == 12


def test_a_seed_given_in_the_instructions_is_kept() -> None:
    report = taskfarm.batch_main({"probe_item": 0, "seed": 42, "name": "own"},
                                 worker=SeedProbe, seed=1234, print_report=None,
                                 progress=False)
    _, seed, from_random, _, from_rng = report["own"].result
    assert seed == 42
    assert from_random == random.Random(42).random()
    assert from_rng == numpy.random.default_rng(42).random()


@pytest.mark.parametrize("run_seed", [None, 5])
def test_without_a_run_seed_the_global_generators_are_left_alone(run_seed: int | None) -> None:
    # The first task seeds the globals itself; the second, in the same process, draws
    # on: it continues that stream unless the farm seeded the globals in between.
    with taskfarm.Boss(MaxThreadsScheduler(1), workers=[SeedProbe], seed=run_seed) as boss:
        boss.set_instructions({"probe_item": 0, "probe_set_globals": 99, "name": "setter"})
        boss.set_instructions({"probe_item": 1, "name": "drawer", "after": ["setter"]})
        boss.make_them_work()
        report = boss.wait_till_finished(timeout=30)
    setter_pid, _, _, _, _ = report["setter"].result
    pid, seed, from_random, from_numpy, _ = report["drawer"].result
    assert pid == setter_pid
    untouched = (from_random == random.Random(99).random()
                 and from_numpy == numpy.random.RandomState(99).random_sample())
    if run_seed is None:
        assert seed is None and untouched
    else:
        assert seed == derive_seed(run_seed, "drawer") and not untouched


@pytest.mark.parametrize("bad", [-1, 1.5, "3", True])
def test_a_bad_seed_is_an_error_at_boss(bad: object) -> None:
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        taskfarm.Boss(seed=bad)  # type: ignore[arg-type]


# ---- timing ------------------------------------------------------------------------------


def test_setup_time_is_reported_apart_from_the_duration() -> None:
    report = taskfarm.batch_main({}, {"slow_item": list(range(3))}, worker=SlowSetup,
                                 scheduler=MaxThreadsScheduler(1), print_report=None,
                                 progress=False)
    first, *later = sorted(report.tasks, key=lambda t: t.started or 0.0)
    assert len({t.pid for t in report.tasks}) == 1
    assert first.setup_time >= SlowSetup.SETUP_SECONDS
    assert first.duration is not None and first.duration < SlowSetup.SETUP_SECONDS / 3
    for task in later:
        assert task.setup_time == 0
        assert task.duration is not None and task.duration < SlowSetup.SETUP_SECONDS / 3


def test_cpu_time_counts_the_work_of_the_task() -> None:
    report = taskfarm.batch_main({"spin_seconds": 0.2, "name": "spin"}, worker=Spin,
                                 print_report=None, progress=False)
    task = report["spin"]
    assert task.cpu_time is not None and task.duration is not None
    assert 0.1 < task.cpu_time <= task.duration + 0.05
    assert task.peak_rss is not None and task.peak_rss > 0


def test_seeding_is_not_counted_in_the_first_task_of_a_process() -> None:
    # A trivial task: its duration and CPU time are well under a millisecond, the first
    # of its process included, with a run seed as without one.
    report = taskfarm.batch_main({}, {"x": [1, 2, 3]}, worker=Add, seed=11,
                                 scheduler=MaxThreadsScheduler(1), print_report=None,
                                 progress=False)
    first, *later = sorted(report.tasks, key=lambda t: t.started or 0.0)
    assert all(t.duration is not None and t.duration < 0.025 for t in later)
    assert first.duration is not None and first.cpu_time is not None
    assert first.duration < 0.025 and first.cpu_time < 0.025, (
        f"the first task of the process took {first.duration:.3f} s "
        f"({first.cpu_time:.3f} s of CPU) against {later[0].duration:.4f} s for the next: "
        "the run seed's preparation is counted in it")
