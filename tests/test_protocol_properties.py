"""Property-based test of the control protocol: random sequences of instructions and
signals against a real boss. Invariants: every instruction set given ends in exactly one
of done, failed, killed, timeout, cancelled or pending; a call after the boss has
exited raises BossStateError; nothing hangs; no process is left."""

from __future__ import annotations

import psutil
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from workers import Add, Misbehave

import taskfarm
from schedulers import MaxThreadsScheduler

WAIT = 30  # seconds: a bound on every wait, never reached unless something hangs


class ControlProtocol(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.boss = taskfarm.Boss(MaxThreadsScheduler(2), workers=[Add, Misbehave],
                                  on_error="continue")
        self.given: list[str] = []
        self.no_more = False   # END or a stop was sent: no more instructions

    @precondition(lambda self: not self.boss.finished)
    @rule(xs=st.lists(st.integers(0, 100), min_size=1, max_size=4),
          failing=st.booleans())
    def give(self, xs: list[int], failing: bool) -> None:
        try:
            if failing:
                names = self.boss.set_instructions({}, {"how": ["raise"] * len(xs)})
            else:
                names = self.boss.set_instructions({}, {"x": xs})
        except taskfarm.BossStateError:
            assert self.no_more or self.boss.finished
            return
        assert not self.no_more
        self.given += names

    @rule(signal=st.sampled_from(["halt", "resume", "end", "stop", "stop_right_now"]))
    def send(self, signal: str) -> None:
        call = {"halt": self.boss.halt, "resume": self.boss.make_them_work,
                "end": self.boss.end, "stop": self.boss.stop,
                "stop_right_now": self.boss.stop_right_now}[signal]
        try:
            call()
        except taskfarm.BossStateError:
            assert self.boss.finished
            return
        if signal in ("end", "stop", "stop_right_now"):
            self.no_more = True

    @rule()
    def interim_report(self) -> None:
        report = self.boss.get_report(interim=True, timeout=WAIT)
        self._check_accounting(report, final=self.boss.finished)

    @invariant()
    def reports_are_never_duplicated(self) -> None:
        names = [t.name for t in self.boss._ledger.reports]
        assert len(names) == len(set(names))

    def _check_accounting(self, report: taskfarm.Report, final: bool) -> None:
        ended = [t.name for t in report.tasks]
        pending = [p["name"] for p in report.pending]
        running = list(report.running)
        everything = ended + pending + running
        assert len(everything) == len(set(everything)), "a set is in two states"
        assert set(everything) == set(self.given), "a set was lost or invented"
        if final:
            assert running == []
            for task in report.tasks:
                assert str(task.status) in {"done", "failed", "killed", "timeout", "cancelled"}

    def teardown(self) -> None:
        boss = self.boss
        try:
            if not boss.finished:
                if boss._halted and not self.no_more:
                    boss.make_them_work()
                boss.stop()
            report = boss.wait_till_finished(timeout=WAIT)
            self._check_accounting(report, final=True)
            try:
                boss.set_instructions({"x": 1})
                raise AssertionError("instructions accepted after the boss exited")
            except taskfarm.BossStateError:
                pass
        finally:
            pid = boss.pid
            boss.close()
            assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"


ControlProtocol.TestCase.settings = settings(
    max_examples=12, stateful_step_count=8, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
TestControlProtocol = ControlProtocol.TestCase
