"""Native thread pools: N workers must not run N x cores BLAS threads."""

from __future__ import annotations

import os

import pytest
from workers import BlasThreads, WideBlasThreads

import taskfarm
from schedulers import MaxThreadsScheduler, available_cpus

pytestmark = pytest.mark.usefixtures("start_method")


def test_each_worker_gets_its_share_of_the_cpus() -> None:
    workers = available_cpus()  # as many workers as CPUs: one thread each
    report = taskfarm.batch_main({}, {"item": list(range(4))}, worker=BlasThreads,
                                 scheduler=MaxThreadsScheduler(workers), print_report=None)
    assert {t.result[1] for t in report.tasks} == {1}


def test_a_worker_class_can_ask_for_more_and_the_next_class_gets_the_default() -> None:
    if available_cpus() < 2:
        pytest.skip("needs two CPUs")
    report = taskfarm.batch_main({}, {"item": [1, 2, 3], "name": ["wide", "narrow", "x"]},
                                 worker=WideBlasThreads, scheduler=MaxThreadsScheduler(2),
                                 print_report=None)
    assert report["wide"].result[1] == 2
    # Two slots (a default share of one thread each) but one task at a time (the second
    # waits for the first), so both run in the same process, one after the other.
    with taskfarm.Boss(MaxThreadsScheduler(2), workers=[BlasThreads, WideBlasThreads]) as boss:
        boss.set_instructions({"item": 1, "name": "first"}, worker=WideBlasThreads)
        boss.set_instructions({"item": 2, "name": "second", "after": ["first"]},
                              worker=BlasThreads)
        boss.make_them_work()
        final = boss.wait_till_finished(timeout=60)
    assert final["first"].result[0] == final["second"].result[0]  # one process
    assert (final["first"].result[1], final["second"].result[1]) == (2, 1)


def test_a_variable_the_user_set_is_respected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    report = taskfarm.batch_main({}, {"item": [1]}, worker=BlasThreads,
                                 scheduler=MaxThreadsScheduler(available_cpus()),
                                 print_report=None)
    assert report.tasks[0].result[1] == min(2, os.cpu_count() or 1)


def test_a_bad_threads_setting_is_an_error_when_given() -> None:
    class Bad(BlasThreads):
        threads = 0

    with pytest.raises(taskfarm.InstructionError, match="threads must be a positive int"):
        taskfarm.batch_main({}, {"item": [1]}, worker=Bad, print_report=None)
