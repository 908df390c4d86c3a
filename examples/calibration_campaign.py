"""A calibration campaign that survives its driver: run ranges x three dependent
algorithms (pedestals, then gains, then a validation of both), recorded in a journal.
Kill the program at any moment (Ctrl-C, a dropped SSH session, SIGKILL) and run the
same command again: what was recorded done is not redone, the rest runs.

    python examples/calibration_campaign.py --journal campaign.db   # runs, say, 40 of 90 steps
    kill -9 <its pid>                                                # or close the terminal
    python examples/calibration_campaign.py --journal campaign.db   # resumes: the other 50

``--step-seconds`` sets how long each step takes (a real campaign's steps take minutes).
"""

from __future__ import annotations

import argparse
import time
from typing import Literal

import numpy as np

import taskfarm
from schedulers import MaxThreadsScheduler

CHANNELS = 1024


def scan(run: int) -> np.ndarray:
    """A simulated charge-injection scan of one run: 8 amplitudes x CHANNELS."""
    rng = np.random.default_rng(run)
    gains = 2.0 + np.random.default_rng(1).normal(0.0, 0.05, CHANNELS) + 1e-4 * run
    amplitudes = np.linspace(5.0, 200.0, 8)[:, None]
    return 100.0 + gains * amplitudes + rng.normal(0.0, 1.0, (8, CHANNELS))


class CampaignStep(taskfarm.Worker):
    """One algorithm on one run range; later algorithms wait for earlier ones."""

    first_run: int
    algorithm: Literal["pedestal", "gain", "validate"]
    runs_per_range: int = 5
    step_seconds: float = 0.2

    def task(self) -> dict[str, float]:
        time.sleep(self.step_seconds)          # the real work of a real campaign
        scans = np.stack([scan(r) for r in range(self.first_run,
                                                  self.first_run + self.runs_per_range)])
        mean = scans.mean(axis=0)
        slope = (mean[-1] - mean[0]) / (200.0 - 5.0)
        if self.algorithm == "pedestal":
            value = float((mean[0] - slope * 5.0).mean())
        elif self.algorithm == "gain":
            value = float(slope.mean())
        else:
            value = float(np.abs(slope - slope.mean()).max())
        return {"value": round(value, 4)}


def main() -> taskfarm.Report:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--journal", default="campaign.db", help="the campaign's journal")
    parser.add_argument("--ranges", type=int, default=30, help="run ranges")
    parser.add_argument("--step-seconds", type=float, default=0.2)
    parser.add_argument("--workers", type=int, default=0, help="0: one per available CPU")
    args = parser.parse_args()
    first_runs = [1000 + 5 * i for i in range(args.ranges)]
    common = {"step_seconds": args.step_seconds}
    with taskfarm.Boss(MaxThreadsScheduler(args.workers), workers=[CampaignStep],
                       journal=args.journal, on_error="continue") as boss:
        previous: list[str] = []
        for algorithm in ("pedestal", "gain", "validate"):
            names = [f"{algorithm}_{run}" for run in first_runs]
            boss.set_instructions(
                {**common, "algorithm": algorithm},
                {"first_run": first_runs, "name": names,
                 "after": [[p] for p in previous] or [[] for _ in names]})
            previous = names
        boss.make_them_work(terminate=True)
        ran = resumed = 0
        for report in boss.as_completed():
            resumed += report.resumed
            ran += not report.resumed
            earlier = " (recorded earlier)" if report.resumed else ""
            print(f"{report.name}: {report.status}{earlier}", flush=True)
        final = boss.wait_till_finished()
    done = sum(t.ok for t in final.tasks)
    print(f"\n{done} of {len(final.tasks)} steps done: {ran} ran now, {resumed} were recorded "
          f"in {args.journal} by an earlier run")
    return final


if __name__ == "__main__":
    main()
