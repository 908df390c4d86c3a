"""A scoring engine: a model that is expensive to load scores a stream of events.

Each worker process loads the model once, in ``setup_process`` (a small neural network
whose weights take about half a second to build, standing for a large file to read),
and keeps it for every batch of events it scores. Each task scores one batch with a
begin / per-event / end lifecycle; the model keeps running statistics of the features
it has seen (its state, updated at every event). When the farm ends,
``teardown_process`` releases the model in each process.

- Seeds: ``Boss(seed=--seed)`` gives every task its own seed, derived from the run's
  seed and the task's name; the task draws the events it keeps for audit with
  ``self.rng``. The same seed gives the same audit sample and the same fingerprint
  whatever the number of workers or the order the batches ran in.
- Errors: --bad-batch N puts a malformed event (a NaN feature) in batch N; scoring it
  raises, and ``on_error`` writes the model's last state and the batch's scores so far
  to a checkpoint in --out, so nothing is lost. The other batches go on.
- Timing: each report's ``setup_time`` (the model load the task waited for: 0 for a
  process's later tasks), ``duration`` and the events it scored are in the summary.

Batches arrive every --interval seconds; their reports are printed as they end.

    python examples/scoring_engine.py [--batches 12] [--events 500] [--workers 2]
        [--interval 0.05] [--seed 2024] [--bad-batch 3] [--out DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

import taskfarm
from schedulers import MaxThreadsScheduler

FEATURES, HIDDEN = 32, 256
LOAD_SECONDS = 0.5           # how long building the model takes


class Model:
    """A two-layer network, and its state: running statistics of the features it has
    seen (to watch the input drift), updated at every event."""

    def __init__(self) -> None:
        began = time.monotonic()
        rng = np.random.default_rng(0)          # the same model in every process
        self.w1 = rng.normal(0.0, FEATURES ** -0.5, (FEATURES, HIDDEN))
        self.w2 = rng.normal(0.0, HIDDEN ** -0.5, HIDDEN)
        time.sleep(max(0.0, LOAD_SECONDS - (time.monotonic() - began)))  # a big file
        self.seen = 0                           # events scored by this process
        self.mean = np.zeros(FEATURES)
        self.m2 = np.zeros(FEATURES)            # sum of squared deviations (Welford)

    def score(self, event: np.ndarray) -> float:
        """Score one event in [0, 1], and add it to the running statistics."""
        if not np.isfinite(event).all():
            bad = int(np.flatnonzero(~np.isfinite(event))[0])
            raise ValueError(f"malformed event: feature {bad} is {event[bad]}")
        self.seen += 1
        delta = event - self.mean
        self.mean += delta / self.seen
        self.m2 += delta * (event - self.mean)
        return float(1.0 / (1.0 + np.exp(-3.0 * np.tanh(event @ self.w1) @ self.w2)))


class ScoreEvents(taskfarm.Worker):
    """Score one batch of events with the process's model."""

    events: Any                 # (events, FEATURES) array
    out_dir: str

    model: ClassVar[Model]

    @classmethod
    def setup_process(cls) -> None:
        cls.model = Model()
        say("model loaded")

    @classmethod
    def teardown_process(cls) -> None:
        say(f"model released after scoring {cls.model.seen} events")
        del cls.model

    def task(self) -> dict[str, Any]:
        """The batch's lifecycle: begin, each event, end (``on_error`` if one raises)."""
        self.begin()
        for number, event in enumerate(self.events):
            self.score(number, event)
        return self.end()

    def begin(self) -> None:
        """Before the first event."""
        self.scores: list[float] = []
        self.current = -1                       # the event being scored

    def score(self, number: int, event: np.ndarray) -> None:
        self.current = number
        self.scores.append(self.model.score(event))

    def end(self) -> dict[str, Any]:
        """After the last event: the batch's summary, and an audit sample drawn with the
        task's own seeded generator."""
        scores = np.array(self.scores)
        audit = sorted(self.rng.choice(len(scores), size=3, replace=False).tolist())
        return {"events": len(scores), "mean": float(scores.mean()),
                "flagged": int((scores > 0.9).sum()), "audit": audit, "seed": self.seed,
                "fingerprint": hashlib.sha256(scores.tobytes()).hexdigest()}

    def on_error(self, exc: BaseException) -> None:
        """Write the model's last state and the scores so far: nothing is lost."""
        path = Path(self.out_dir, f"checkpoint-{self.name}.npz")
        np.savez(path, feature_mean=self.model.mean, feature_m2=self.model.m2,
                 seen=self.model.seen, scores=np.array(self.scores),
                 failed_event=self.current)
        say(f"{self.name}: {exc}; model state written to {path}")


def say(text: str) -> None:
    """Log a line of a worker process on stderr (stdout has the table), in one write, so
    that the lines of several processes never mix."""
    sys.stderr.write(f"[pid {os.getpid()}] {text}\n")
    sys.stderr.flush()


def event_batches(count: int, size: int, seed: int, bad: int) -> list[np.ndarray]:
    """The simulated stream: ``count`` batches of ``size`` events; batch ``bad`` has a
    malformed event in its middle."""
    rng = np.random.default_rng(seed)
    batches = [rng.normal(0.0, 1.0, (size, FEATURES)) for _ in range(count)]
    if 0 <= bad < count:
        batches[bad][size // 2, 5] = np.nan
    return batches


def row(report: taskfarm.TaskReport) -> str:
    """One line of the summary table for one report."""
    head = f"{report.name:9} {report.pid or '-':>7} "
    if not report.ok:
        return head + f"{report.status}: {report.summary()}"
    r = report.result
    return head + (f"{r['seed']:>20} {report.setup_time:6.2f} {report.duration or 0:6.3f} "
                   f"{r['events']:6} {r['mean']:6.3f} {r['flagged']:7}  {r['audit']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--events", type=int, default=500, help="events per batch")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--interval", type=float, default=0.05,
                        help="seconds between two batches' arrival")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--bad-batch", type=int, default=-1,
                        help="put a malformed event in this batch")
    parser.add_argument("--out", default="", help="directory for checkpoints (default: a "
                        "new temporary directory)")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="scoring-"))
    out.mkdir(parents=True, exist_ok=True)
    reports: list[taskfarm.TaskReport] = []
    print(f"{'batch':9} {'pid':>7} {'seed':>20} {'load s':>6} {'run s':>6} {'events':>6} "
          f"{'mean':>6} {'flagged':>7}  audit")
    with taskfarm.Boss(MaxThreadsScheduler(args.workers), workers=[ScoreEvents],
                       seed=args.seed, on_error="continue", keep_reports=False) as boss:
        boss.make_them_work()
        stream = event_batches(args.batches, args.events, args.seed, args.bad_batch)
        for number, events in enumerate(stream):
            boss.set_instructions({"events": events, "out_dir": str(out),
                                   "name": f"batch-{number:02d}"})
            time.sleep(args.interval)           # the next batch is not there yet
            try:
                for report in boss.as_completed(timeout=0):   # those ended meanwhile
                    reports.append(report)
                    print(row(report), flush=True)
            except TimeoutError:
                pass
        boss.end()
        for report in boss.as_completed(timeout=60):
            reports.append(report)
            print(row(report), flush=True)
        boss.wait_till_finished(timeout=60)     # the workers' teardown_process runs here
    done = [r for r in reports if r.ok]
    loads = [r.setup_time for r in reports if r.setup_time]
    fingerprint = hashlib.sha256("".join(
        r.result["fingerprint"] + str(r.result["audit"])
        for r in sorted(done, key=lambda r: r.name)).encode()).hexdigest()[:16]
    print(f"\nsummary: {len(done)} batches scored, {sum(r.result['events'] for r in done)} "
          f"events, {len(reports) - len(done)} failed")
    print(f"  model loads: {len(loads)} (one per worker process), "
          f"{np.mean(loads) if loads else 0:.2f} s each on average; scoring took "
          f"{sum(r.duration or 0 for r in reports):.2f} s in all")
    print(f"  run seed {args.seed}: results fingerprint {fingerprint}")
    for path in sorted(out.glob("checkpoint-*.npz")):
        with np.load(path) as state:
            print(f"  checkpoint {path}: failed at event {int(state['failed_event'])}, "
                  f"{len(state['scores'])} scores kept, model had seen {int(state['seen'])} "
                  "events")


if __name__ == "__main__":
    main()
