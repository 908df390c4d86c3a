"""A detector-quality service: every stride it gathers the detector data that arrived
and launches train, evaluate and calibrate jobs on them, for as long as it runs.

The simulated detector has 256 channels read out in packets of 128 samples; a random
number of packets arrives in each stride, none while the beam is off (4 strides in 20).
Two channels are dead; channel 77 turns noisy at stride 12. Every stride (a window of
``taskfarm.Cadence``), the service reads the new packets straight into one
``taskfarm.SharedArray`` (workers read it without a copy; it is released once the jobs
that received it have ended) and launches:

- an *evaluate* job: the stride's data quality against the current constants (an alarm
  for a dead or noisy channel the constants do not know);
- a *train* job (per-channel pedestal and noise) once --batch-packets packets have
  accumulated (``taskfarm.Accumulator``), or once the oldest has waited --max-wait strides;
- every --calibrate-every strides, a *calibrate* job pooling the training results since
  the last one into new constants.

While it waits for the next window it handles reports as they come (``as_completed``;
``keep_reports=False``: nothing piles up over weeks). More than --max-lag strides behind
real time, it skips ahead to the latest complete window (--slow-at N stalls it once, at
stride N, for --slow-for strides, to show it). Ctrl-C, SIGTERM or --duration seconds
(0: until stopped) stop it at the next window: the jobs given finish, a summary is
printed, the exit status is 0 (a second Ctrl-C stops every job at once).

    python examples/streaming_service.py [--stride 1.0] [--duration 0] [--slow-at N]
        [--slow-for 6] [--max-lag 3] [--quiet]     (--help lists every option)
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import time
from collections import Counter
from typing import Any

import numpy as np

import taskfarm
from schedulers import MaxThreadsScheduler

CHANNELS, PACKET = 256, 128
DEAD = [13, 200]
NOISY, NOISY_FROM = 77, 12          # channel 77 turns noisy at stride 12
PEDESTALS = np.random.default_rng(7).normal(100.0, 3.0, CHANNELS).astype(np.float32)

log = logging.getLogger("streaming_service")


def arrivals(stride: int) -> int:
    """How many packets arrive during a stride: none while the beam is off."""
    return int(np.random.default_rng(stride).poisson(3)) if stride % 20 < 16 else 0


def read_detector(stride: int, out: np.ndarray) -> None:
    """Read the stride's packets, ADC counts, into ``out`` (packets, PACKET, CHANNELS):
    straight into shared memory, with no copy and no big temporary array."""
    rng = np.random.default_rng([stride, 1])
    noise = np.full(CHANNELS, 2.0, dtype=np.float32)
    if stride >= NOISY_FROM:
        noise[NOISY] = 12.0
    rng.standard_normal(dtype=np.float32, out=out)
    out *= noise
    out += PEDESTALS
    hits = rng.integers(0, out.size, rng.binomial(out.size, 0.02))     # particles
    out.reshape(-1)[hits] += rng.exponential(60.0, hits.size).astype(np.float32)
    out[..., DEAD] = PEDESTALS[DEAD]


def robust_noise(samples: np.ndarray, pedestal: np.ndarray) -> np.ndarray:
    """Per-channel noise that particle hits do not inflate (scaled median deviation)."""
    return 1.4826 * np.median(np.abs(samples - pedestal), axis=0)


class Train(taskfarm.Worker):
    """Per-channel pedestal and noise from one mini-batch of packets."""

    packets: list[Any]   # (array, packet number): a SharedArray there, a numpy array here

    def task(self) -> dict[str, Any]:
        samples = np.concatenate([data[k] for data, k in self.packets])
        pedestal = np.median(samples, axis=0)
        return {"samples": len(samples), "pedestal": pedestal,
                "noise": robust_noise(samples, pedestal)}


class Calibrate(taskfarm.Worker):
    """Pool training results into constants; flag dead and noisy channels."""

    trainings: list[dict[str, Any]]

    def task(self) -> dict[str, Any]:
        weights = [t["samples"] for t in self.trainings]
        pedestal = np.average([t["pedestal"] for t in self.trainings], axis=0, weights=weights)
        noise = np.sqrt(np.average([t["noise"] ** 2 for t in self.trainings], axis=0,
                                   weights=weights))
        return {"samples": sum(weights), "pedestal": pedestal, "noise": noise,
                "dead": np.flatnonzero(noise < 0.1).tolist(),
                "noisy": np.flatnonzero(noise > 3 * np.median(noise)).tolist()}


class Evaluate(taskfarm.Worker):
    """Data quality of one stride against the constants: channels dead or noisy now."""

    data: Any            # the stride's packets
    constants: dict[str, Any]

    def task(self) -> dict[str, Any]:
        samples = self.data.reshape(-1, CHANNELS)
        noise = robust_noise(samples, np.median(samples, axis=0))
        expected = np.maximum(self.constants["noise"], 0.1)
        return {"samples": len(samples), "dead": np.flatnonzero(noise < 0.1).tolist(),
                "noisy": np.flatnonzero(noise > 3 * expected).tolist()}


class Service:
    """The service's state between strides: the farm, the mini-batches, the constants."""

    def __init__(self, boss: taskfarm.Boss, args: argparse.Namespace) -> None:
        self.boss, self.args = boss, args
        self.packets: taskfarm.Accumulator[tuple[taskfarm.SharedArray, int]] = \
            taskfarm.Accumulator(args.batch_packets, max_wait=args.max_wait * args.stride)
        self.trainings: list[dict[str, Any]] = []     # since the last calibration
        self.constants: dict[str, Any] | None = None
        self.ended: Counter[str] = Counter()          # "train done", "evaluate failed", ...
        self.strides = self.skipped = self.arrived = self.alarms = self.max_segments = 0
        self.seconds, self.untrained = 0.0, 0

    def on_window(self, number: int, window: taskfarm.Window) -> None:
        """Gather one stride's data and launch what is due."""
        self.strides += 1
        if window.skipped:
            self.skipped += window.skipped
            print(f"stride {number}: skipped {window.skipped} windows to catch up with real "
                  f"time (--max-lag {self.args.max_lag})", flush=True)
        packets = arrivals(number)
        launched = []
        if packets:
            self.arrived += packets
            shared = taskfarm.SharedArray(shape=(packets, PACKET, CHANNELS), dtype=np.float32)
            read_detector(number, shared.array)
            self.packets.add(*[(shared, k) for k in range(packets)])
            if self.constants is not None:
                launched += self.give(Evaluate, number, data=shared, constants=self.constants)
        if (batch := self.packets.take()) is not None:
            launched += self.give(Train, number, packets=batch)
        if self.trainings and (self.constants is None
                               or number % self.args.calibrate_every == 0):
            launched += self.give(Calibrate, number, trainings=self.trainings)
            self.trainings = []
        self.max_segments = max(self.max_segments, shared_segments())
        if not self.args.quiet:
            print(f"stride {number}: {packets} packet{'s' * (packets != 1)}; launched "
                  f"{', '.join(launched) or 'nothing'}", flush=True)

    def close(self) -> None:
        """The service has stopped: drop the packets left untrained, and their arrays."""
        self.untrained = len(self.packets)
        self.packets = taskfarm.Accumulator(1)

    def give(self, worker: type[taskfarm.Worker], number: int, **instructions: Any) -> list[str]:
        name = f"{worker.__name__.lower()}-{number}"
        return self.boss.set_instructions({**instructions, "name": name}, worker=worker)

    def wait(self, seconds: float) -> None:
        """Cadence's wait for the next window: handle reports as they come meanwhile."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                report = next(self.boss.as_completed(timeout=left), None)
            except TimeoutError:
                return
            if report is None:          # every job given so far has ended
                time.sleep(left)
                return
            self.handle(report)

    def handle(self, report: taskfarm.TaskReport) -> None:
        kind = report.name.split("-")[0]
        self.ended[f"{kind} {report.status}"] += 1
        if not report.ok:
            log.warning("%s %s: %s", report.name, report.status, report.summary())
        elif kind == "train":
            self.trainings.append(report.result)
        elif kind == "calibrate":
            old, self.constants = self.constants, report.result
            if self.args.quiet and old and (old["dead"], old["noisy"]) == (
                    report.result["dead"], report.result["noisy"]):
                return
            print(f"  {report.name}: constants from {report.result['samples']} samples; "
                  f"dead {report.result['dead']}, noisy {report.result['noisy']}", flush=True)
        elif kind == "evaluate" and self.constants is not None:
            known = self.constants
            new = {k: sorted(set(report.result[k]) - set(known[k])) for k in ("dead", "noisy")}
            if any(new.values()):
                self.alarms += 1
                print(f"  {report.name}: ALARM channels not in the constants: "
                      + ", ".join(f"{k} {v}" for k, v in new.items() if v), flush=True)


def shared_segments() -> int:
    """This program's SharedArray segments in /dev/shm now."""
    return sum(name.startswith(f"taskfarm-{os.getpid()}-") for name in os.listdir("/dev/shm"))


stopped_by = ""


def on_signal(signum: int, frame: object) -> None:
    """Ctrl-C or SIGTERM: stop at the next window. A second Ctrl-C: stop now (taskfarm,
    which stands in front of this handler, delivers it once a message to the boss in
    progress is whole, so the farm is never left mid-message)."""
    global stopped_by
    if stopped_by and signum == signal.SIGINT:
        raise KeyboardInterrupt
    stopped_by = signal.Signals(signum).name


def run(args: argparse.Namespace) -> Service:
    """The service loop, until --duration, Ctrl-C or SIGTERM; then a clean stop."""
    began = time.monotonic()
    with taskfarm.run_as_server(scheduler=MaxThreadsScheduler(args.workers),
                                workers=[Train, Evaluate, Calibrate], on_error="continue",
                                keep_reports=False) as boss:
        service = Service(boss, args)
        cadence = taskfarm.Cadence(args.stride, delay=args.delay, max_lag=args.max_lag,
                                   sleep=service.wait)
        first = None
        for window in cadence:
            if stopped_by:
                print(f"stopping on {stopped_by}", flush=True)
                break
            first = window.index if first is None else first
            service.on_window(window.index - first, window)
            if window.index - first == args.slow_at:
                print(f"stride {args.slow_at}: stalling for {args.slow_for} strides "
                      "(--slow-at)", flush=True)
                time.sleep(args.slow_for * args.stride)
            if args.duration and time.monotonic() - began >= args.duration:
                break
        boss.end()                      # nothing more: the jobs given finish
        for report in boss.as_completed(timeout=60):
            service.handle(report)
        boss.wait_till_finished(timeout=60)
    service.close()
    service.seconds = time.monotonic() - began
    return service


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stride", type=float, default=1.0, help="seconds per window")
    parser.add_argument("--delay", type=float, default=0.1, help="seconds data take to come")
    parser.add_argument("--duration", type=float, default=0, help="seconds; 0: until stopped")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-packets", type=int, default=8, help="packets per train job")
    parser.add_argument("--max-wait", type=float, default=4, help="strides, for a train job")
    parser.add_argument("--calibrate-every", type=int, default=5, help="strides")
    parser.add_argument("--max-lag", type=int, default=3, help="strides behind before skipping")
    parser.add_argument("--slow-at", type=int, default=-1, help="stall at this stride once")
    parser.add_argument("--slow-for", type=int, default=6, help="strides the stall lasts")
    parser.add_argument("--quiet", action="store_true", help="no line per stride")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for signum in (signal.SIGINT, signal.SIGTERM):   # before the Boss: see on_signal
        signal.signal(signum, on_signal)
    service = run(args)
    jobs = ", ".join(f"{n} {what}" for what, n in sorted(service.ended.items()))
    constants = service.constants or {"samples": 0, "dead": [], "noisy": []}
    print(f"\nsummary: {service.strides} strides handled in {service.seconds:.1f} s, "
          f"{service.skipped} skipped to catch up with real time")
    print(f"  {service.arrived} packets ({service.arrived * PACKET} samples) arrived; "
          f"{service.untrained} packets left untrained")
    print(f"  jobs ended: {jobs or 'none'}")
    print(f"  constants from {constants['samples']} samples: dead channels "
          f"{constants['dead']}, noisy channels {constants['noisy']}; alarms raised: "
          f"{service.alarms}")
    print(f"  shared arrays in /dev/shm: at most {service.max_segments} at once, "
          f"{shared_segments()} left")


if __name__ == "__main__":
    main()
