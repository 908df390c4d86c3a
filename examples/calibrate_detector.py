"""Calibrate the gain and pedestal of every channel of a detector, for many run ranges.

Each task is one run range (an interval of validity). For each run of the range, a
charge-injection scan records the ADC response of every channel at known injected
amplitudes; the task fits ``adc = pedestal + gain * amplitude`` for all channels at
once (linear least squares with numpy), flags dead and noisy channels, and returns the
constants' summary. The constants of each range can be written to ``--out``.

The data are simulated: true gains drift slowly with the run number, a few channels are
dead or noisy, so the farm has real numerical work to do and a known truth to check.

Each task streams its progress run by run (``emit``); the main program reads the farm's
event stream and prints a line as each range starts and ends (``--quiet``: only the
report), then the per-task report.

    python examples/calibrate_detector.py [--ranges 24] [--runs-per-range 5]
                                          [--channels 4096] [--out DIR] [--quiet]
                                          [--dask]

``--dask`` runs the same farm on a Dask ``LocalCluster`` (one Dask worker per worker
process; ``pip install "taskfarm[dask]"``): see docs/scaling.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np

import taskfarm
from schedulers import MaxThreadsScheduler

AMPLITUDES = np.linspace(5.0, 200.0, 16)  # injected charge, fC


class CalibrateRunRange(taskfarm.Worker):
    """Fit gain and pedestal per channel over one run range."""

    first_run: int
    last_run: int
    channels: int = 4096
    method: Literal["lstsq", "mean-slope"] = "lstsq"
    out_dir: str = ""

    design: ClassVar[np.ndarray]

    @classmethod
    def setup_process(cls) -> None:
        # Shared by every task of the process: the fit's design matrix, built once.
        cls.design = np.column_stack([np.ones_like(AMPLITUDES), AMPLITUDES])

    def task(self) -> dict[str, float | int]:
        runs = range(self.first_run, self.last_run + 1)
        scanned = []
        for run in runs:
            scanned.append(simulate_scan(run, self.channels))
            self.emit({"run": run, "scanned": len(scanned), "of": len(runs)})
        scans = np.stack(scanned)
        mean_scan = scans.mean(axis=0)                       # (amplitudes, channels)
        if self.method == "lstsq":
            coefficients, *_ = np.linalg.lstsq(self.design, mean_scan, rcond=None)
            pedestal, gain = coefficients
        else:
            gain = (mean_scan[-1] - mean_scan[0]) / (AMPLITUDES[-1] - AMPLITUDES[0])
            pedestal = mean_scan[0] - gain * AMPLITUDES[0]
        residual = mean_scan - (pedestal + np.outer(AMPLITUDES, gain))
        rms = residual.std(axis=0)
        dead = gain < 0.1
        noisy = ~dead & (rms > 5 * np.median(rms))
        good = ~dead & ~noisy
        if self.out_dir:
            np.savez(Path(self.out_dir, f"{self.name}.npz"), gain=gain, pedestal=pedestal,
                     dead=dead, noisy=noisy)
        truth = true_gains(np.mean(list(runs)), self.channels)
        return {
            "mean_gain": round(float(gain[good].mean()), 4),
            "gain_spread": round(float(gain[good].std()), 4),
            "worst_gain_error": round(float(np.abs(gain[good] - truth[good]).max()), 4),
            "dead": int(dead.sum()),
            "noisy": int(noisy.sum()),
        }


def true_gains(run: float, channels: int) -> np.ndarray:
    """The simulated truth: gains spread around 2 ADC/fC, drifting with the run."""
    spread = np.random.default_rng(12345).normal(0.0, 0.05, channels)
    return 2.0 + spread + 1e-4 * run


def simulate_scan(run: int, channels: int) -> np.ndarray:
    """ADC counts (amplitudes x channels) of one injection scan."""
    rng = np.random.default_rng(run)
    gains = true_gains(run, channels)
    gains[::509] = 0.0                               # dead channels
    pedestals = 100.0 + np.random.default_rng(7).normal(0.0, 3.0, channels)
    noise = np.full(channels, 1.0)
    noise[3::613] = 40.0                             # noisy channels
    return pedestals + np.outer(AMPLITUDES, gains) + rng.normal(0.0, 1.0, (AMPLITUDES.size,
                                                                            channels)) * noise


def describe(event: taskfarm.TaskEvent) -> str:
    """One line for one event of the farm."""
    kind = event.kind.value
    if kind == "started":
        return f"{event.name}: started in worker {event.slot} (pid {event.pid})"
    if kind == "emitted":
        value = event.value
        return f"{event.name}: run {value['run']} scanned ({value['scanned']}/{value['of']})"
    if kind == "ended" and event.report is not None:
        took = event.report.duration or 0.0
        return f"{event.name}: {event.report.status} in {took:.2f} s"
    return f"{event.name}: {kind}"


def main() -> taskfarm.Report:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranges", type=int, default=24, help="run ranges to calibrate")
    parser.add_argument("--runs-per-range", type=int, default=5)
    parser.add_argument("--channels", type=int, default=4096)
    parser.add_argument("--workers", type=int, default=0, help="0: one per available CPU")
    parser.add_argument("--out", default="", help="directory for the constants (.npz)")
    parser.add_argument("--quiet", action="store_true", help="print the report only")
    parser.add_argument("--dask", action="store_true",
                        help="run on a Dask LocalCluster of --workers workers")
    args = parser.parse_args()
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
    first_runs = [1000 + i * args.runs_per_range for i in range(args.ranges)]
    backend = taskfarm.DaskBackend(n_workers=args.workers or None) if args.dask else None
    with taskfarm.Boss(MaxThreadsScheduler(args.workers), workers=[CalibrateRunRange],
                       backend=backend) as boss:
        events = boss.events()     # subscribed before any task is given: sees them all
        boss.set_instructions(
            {"channels": args.channels, "out_dir": args.out,
             "name": "calib_[first_run]-[last_run]"},
            {"first_run": first_runs,
             "last_run": [r + args.runs_per_range - 1 for r in first_runs]})
        boss.make_them_work(terminate=True)
        for event in events:
            if not args.quiet:
                print(describe(event), flush=True)
        report = boss.wait_till_finished()
    print(report.format())
    worst = max(t.result["worst_gain_error"] for t in report.tasks)
    print(f"\n{len(report.tasks)} run ranges x {args.channels} channels calibrated; "
          f"worst gain error over good channels: {worst:.4f} ADC/fC")
    return report


if __name__ == "__main__":
    main()
