"""A results consumer: batches of model results, delivered at least once, stored once.

A simulated broker delivers messages *at least once*, as real queues do: a message
stays unacknowledged until the consumer acknowledges it, and some are delivered twice
(--duplicate-every K: the K-th batches come again, soon or later, as after a lost
acknowledgement). Batch --malformed N carries a score that is not a number, and the
producer withdraws batch --withdraw N right after sending it.

The consumer, a long-lived farm (``run_as_server``, ``keep_reports=False``):

- looks each delivery up in its SQLite store and among the batches in flight: a
  duplicate is acknowledged without running again;
- runs each new batch as a task (``Summarize``: validate the results, aggregate them);
- stores a done task's result in SQLite (WAL, ``synchronous=FULL``; a table keyed by
  batch id, ``INSERT OR IGNORE``) and acknowledges the batch only once that is
  committed;
- rejects a batch whose task fails (malformed) with a log line, records it as rejected
  (a redelivery is not run again) and acknowledges it; the service keeps going;
- cancels a withdrawn batch (``Boss.cancel``) and acknowledges it without storing;
- leaves a batch whose task was killed unacknowledged: the broker delivers it again.

Run it twice on the same --db: the second run finds every batch stored and runs none.

    python examples/results_consumer.py [--batches 30] [--db results.sqlite]
        [--duplicate-every 4] [--malformed 7] [--withdraw 12] [--workers 2] [--quiet]
"""

from __future__ import annotations

import argparse
import json
import logging
import sqlite3
import time
from collections import Counter, deque
from typing import Any

import numpy as np

import taskfarm
from schedulers import MaxThreadsScheduler

log = logging.getLogger("results_consumer")


class Summarize(taskfarm.Worker):
    """Validate one batch of model results and aggregate them."""

    model: str
    results: list[dict[str, Any]]

    def task(self) -> dict[str, Any]:
        scores = []
        for number, result in enumerate(self.results):
            score = result.get("score")
            if not isinstance(score, (int, float)) or not 0.0 <= score <= 1.0:
                raise ValueError(f"result {number} (event {result.get('event')}): score "
                                 f"{score!r} is not a number in [0, 1]")
            scores.append(score)
        time.sleep(0.05)                   # stands for the real work on each result
        return {"model": self.model, "results": len(scores),
                "mean_score": float(np.mean(scores)), "positives": sum(s > 0.5 for s in scores)}


class Store:
    """Batch results in SQLite: each stored once, durably, before it is acknowledged."""

    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")     # committed means on disk
        with self.db:
            self.db.execute("CREATE TABLE IF NOT EXISTS batches (batch_id TEXT PRIMARY KEY,"
                            " model TEXT, results INTEGER, mean_score REAL, positives INTEGER)")
            self.db.execute("CREATE TABLE IF NOT EXISTS rejected (batch_id TEXT PRIMARY KEY,"
                            " reason TEXT)")

    def seen(self, batch_id: str) -> str | None:
        """'stored' or 'rejected' if the batch was handled already, else None."""
        for table, what in (("batches", "stored"), ("rejected", "rejected")):
            if self.db.execute(f"SELECT 1 FROM {table} WHERE batch_id = ?",
                               (batch_id,)).fetchone():
                return what
        return None

    def put(self, batch_id: str, result: dict[str, Any]) -> bool:
        """Store a batch's result and commit; False if it was stored already."""
        with self.db:
            cursor = self.db.execute(
                "INSERT OR IGNORE INTO batches VALUES (?, ?, ?, ?, ?)",
                (batch_id, result["model"], result["results"], result["mean_score"],
                 result["positives"]))
        return cursor.rowcount == 1

    def reject(self, batch_id: str, reason: str) -> None:
        with self.db:
            self.db.execute("INSERT OR IGNORE INTO rejected VALUES (?, ?)", (batch_id, reason))


class Broker:
    """At-least-once delivery of the simulated messages (see the module docstring)."""

    def __init__(self, args: argparse.Namespace) -> None:
        rng = np.random.default_rng(1)
        schedule: list[tuple[float, bytes]] = []       # (when, message)
        for k in range(args.batches):
            results: list[dict[str, Any]] = [{"event": int(e), "score": round(float(s), 4)}
                       for e, s in zip(rng.integers(0, 10**6, 100), rng.random(100),
                                       strict=True)]
            if k == args.malformed:
                results[3]["score"] = "n/a"
            body = json.dumps({"batch_id": f"b-{k:04d}", "model": f"m-{k % 3}",
                               "results": results}).encode()
            schedule.append((k, body))
            if (k + 1) % args.duplicate_every == 0:    # again, soon (in flight) or later
                schedule.append((k + (2 if k // args.duplicate_every % 2 else 12) + 0.25, body))
            if k == args.withdraw:
                schedule.append((k + 0.5, json.dumps({"withdraw": f"b-{k:04d}"}).encode()))
        self.waiting = deque(body for _, body in sorted(schedule))
        self.unacked: dict[int, bytes] = {}
        self.delivered = 0

    def receive(self, count: int) -> list[tuple[int, bytes]]:
        """Up to ``count`` deliveries: (delivery tag, message body)."""
        deliveries: list[tuple[int, bytes]] = []
        while self.waiting and len(deliveries) < count:
            self.delivered += 1
            self.unacked[self.delivered] = body = self.waiting.popleft()
            deliveries.append((self.delivered, body))
        return deliveries

    def ack(self, tag: int) -> None:
        del self.unacked[tag]

    def requeue(self, tag: int) -> None:
        """Not acknowledged: delivered again later."""
        self.waiting.append(self.unacked.pop(tag))


class Consumer:
    def __init__(self, boss: taskfarm.Boss, store: Store, broker: Broker) -> None:
        self.boss, self.store, self.broker = boss, store, broker
        self.in_flight: dict[str, list[int]] = {}    # batch id -> its delivery tags
        self.counts: Counter[str] = Counter()

    def take(self, tag: int, body: bytes) -> None:
        """One delivery: run it, or acknowledge it at once (duplicate, withdrawal)."""
        try:
            message = json.loads(body)
            if "withdraw" in message:
                self.withdraw(message["withdraw"])
                self.broker.ack(tag)
                return
            batch_id = message["batch_id"]
        except (ValueError, KeyError, TypeError) as exc:
            log.error("delivery %d rejected: not a batch of results (%s: %s)", tag,
                      type(exc).__name__, exc)
            self.counts["rejected"] += 1
            self.broker.ack(tag)
            return
        if batch_id in self.in_flight:
            self.counts["in flight"] += 1
            log.info("%s delivered again while in flight: acknowledged with it", batch_id)
            self.in_flight[batch_id].append(tag)
        elif (seen := self.store.seen(batch_id)) is not None:
            self.counts[f"already {seen}"] += 1
            log.info("%s delivered again, already %s: acknowledged", batch_id, seen)
            self.broker.ack(tag)
        else:
            self.boss.set_instructions({"model": message["model"],
                                        "results": message["results"], "name": batch_id})
            self.in_flight[batch_id] = [tag]

    def withdraw(self, batch_id: str) -> None:
        """The producer withdrew a batch: cancel its task if it has not ended."""
        if batch_id in self.in_flight and self.boss.cancel(batch_id):
            log.info("%s withdrawn by the producer: cancelling it", batch_id)
        else:
            log.info("%s withdrawn by the producer, too late: already handled", batch_id)

    def collect(self, timeout: float) -> None:
        """Handle the reports that come within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        try:
            for report in self.boss.as_completed(timeout=timeout):
                self.finish(report)
                if time.monotonic() >= deadline:
                    return
        except TimeoutError:
            pass

    def finish(self, report: taskfarm.TaskReport) -> None:
        """A batch's task ended: store, reject or cancel, then acknowledge."""
        tags = self.in_flight.pop(report.name)
        if report.ok:
            stored = self.store.put(report.name, report.result)      # committed here
            self.counts["stored" if stored else "already stored"] += 1
            log.info("%s stored, acknowledged", report.name)
        elif report.status == "failed":
            why = (f"{type(report.exception).__name__}: {report.exception}"
                   if report.exception is not None else report.summary())
            self.store.reject(report.name, why)
            self.counts["rejected"] += 1
            log.error("%s rejected (malformed): %s", report.name, why)
        elif report.status == "cancelled":
            self.counts["withdrawn"] += 1
            log.info("%s cancelled, acknowledged without storing", report.name)
        else:                              # killed, timed out: not handled, comes again
            log.warning("%s %s: not acknowledged, it will come again", report.name,
                        report.status)
            for tag in tags:
                self.broker.requeue(tag)
            return
        for tag in tags:
            self.broker.ack(tag)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--db", default="results.sqlite")
    parser.add_argument("--duplicate-every", type=int, default=4)
    parser.add_argument("--malformed", type=int, default=7, help="this batch is malformed")
    parser.add_argument("--withdraw", type=int, default=12, help="this batch is withdrawn")
    parser.add_argument("--burst", type=int, default=4, help="deliveries taken at a time")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quiet", action="store_true", help="warnings and errors only")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("taskfarm").setLevel(logging.WARNING)
    store, broker = Store(args.db), Broker(args)
    with taskfarm.run_as_server(scheduler=MaxThreadsScheduler(args.workers),
                                workers=[Summarize], on_error="continue",
                                keep_reports=False) as boss:
        consumer = Consumer(boss, store, broker)
        while broker.waiting or consumer.in_flight:
            for tag, body in broker.receive(args.burst):
                consumer.take(tag, body)
            consumer.collect(timeout=0.1)  # until the next deliveries: reports as they come
        boss.wait_till_finished(timeout=60)
    stored, results, mean = store.db.execute(
        "SELECT COUNT(*), SUM(results), AVG(mean_score) FROM batches").fetchone()
    rejected = store.db.execute("SELECT COUNT(*) FROM rejected").fetchone()[0]
    store.db.close()
    n = consumer.counts
    print(f"\nsummary: {broker.delivered} deliveries, {len(broker.unacked)} unacknowledged")
    print(f"  run and stored: {n['stored']}; rejected: {n['rejected']}; withdrawn: "
          f"{n['withdrawn']}")
    print(f"  duplicates acknowledged without running again: "
          f"{n['already stored'] + n['already rejected'] + n['in flight']} "
          f"({n['already stored']} already stored, {n['already rejected']} already "
          f"rejected, {n['in flight']} in flight)")
    print(f"  store {args.db}: {stored} batches ({results or 0} results, mean score "
          f"{mean or 0:.4f}), {rejected} rejected")


if __name__ == "__main__":
    main()
