"""The service examples run as they are, briefly: each runs as a subprocess, and its exit
status and the key lines of its summary are checked. Every wait has a timeout, and a
child still running when a test fails is killed."""

from __future__ import annotations

import queue
import re
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).parent.parent / "examples"
WAIT = 60.0      # the longest any example may take here (each takes a few seconds)


def run_example(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run an example to its end; past WAIT it is killed (TimeoutExpired)."""
    done = subprocess.run([sys.executable, str(EXAMPLES / name), *args],
                          capture_output=True, text=True, timeout=WAIT)
    assert done.returncode == 0, f"exit status {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test starts: killed at its end if still running."""
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=WAIT)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def lines_of(proc: subprocess.Popen[str]) -> queue.Queue[str]:
    """The lines ``proc`` prints, as they come (read by a thread: a test waits on them
    with a timeout)."""
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    return lines


def wait_for(lines: queue.Queue[str], pattern: str, timeout: float) -> list[str]:
    """The lines read until one matches ``pattern`` (a TimeoutError past ``timeout``)."""
    seen: list[str] = []
    while not seen or not re.search(pattern, seen[-1]):
        try:
            seen.append(lines.get(timeout=timeout))
        except queue.Empty:
            raise TimeoutError(f"no line matching {pattern!r} within {timeout} s; "
                               f"read: {''.join(seen)}") from None
    return seen


def test_streaming_service_skips_ahead_when_slowed_and_releases_its_arrays() -> None:
    done = run_example("streaming_service.py", "--stride", "0.25", "--duration", "4",
                       "--slow-at", "2", "--slow-for", "6", "--quiet")
    out = done.stdout
    assert "stride 2: stalling for 6 strides (--slow-at)" in out
    skip = re.search(r"stride (\d+): skipped (\d+) windows to catch up with real time "
                     r"\(--max-lag 3\)", out)
    assert skip is not None, out
    assert int(skip[2]) >= 4 and int(skip[1]) == 3 + int(skip[2])
    summary = re.search(r"summary: (\d+) strides handled in [\d.]+ s, (\d+) skipped", out)
    assert summary is not None and int(summary[2]) == int(skip[2]), out
    jobs = re.search(r"jobs ended: (.*)", out)
    assert jobs is not None and "failed" not in jobs[1], out
    for kind in ("calibrate", "evaluate", "train"):
        assert f"{kind} done" in jobs[1]
    assert "dead channels [13, 200]" in out
    assert re.search(r"shared arrays in /dev/shm: at most \d+ at once, 0 left", out), out


def test_streaming_service_stops_cleanly_on_sigterm(
        started: list[subprocess.Popen[str]]) -> None:
    proc = subprocess.Popen([sys.executable, str(EXAMPLES / "streaming_service.py"),
                             "--stride", "0.2"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    started.append(proc)
    lines = lines_of(proc)
    wait_for(lines, r"^stride 4: ", timeout=30)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    out = "".join(wait_for(lines, r"shared arrays in /dev/shm", timeout=5))
    assert "stopping on SIGTERM" in out and "summary:" in out
    assert re.search(r"at most \d+ at once, 0 left", out), out


def scoring_rows(out: str) -> dict[str, tuple[str, ...]]:
    """The summary table of the scoring engine: batch -> (pid, seed, load s, run s,
    events, mean, flagged, audit), or (pid, failure) for a failed batch."""
    rows: dict[str, tuple[str, ...]] = {}
    for line in out.splitlines():
        if match := re.match(r"(batch-\d+)\s+(\d+) failed: (.*)", line):
            rows[match[1]] = (match[2], match[3])
        elif match := re.match(r"(batch-\d+)\s+(\d+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+(\d+)"
                               r"\s+([\d.]+)\s+(\d+)\s+(\[.*\])", line):
            rows[match[1]] = match.groups()[1:]
    return rows


def test_scoring_engine_checkpoints_on_error_and_reports_seeds_and_timing(
        tmp_path: Path) -> None:
    args = ("--batches", "6", "--events", "200", "--bad-batch", "2", "--out", str(tmp_path))
    done = run_example("scoring_engine.py", *args, "--workers", "2")
    out, err = done.stdout, done.stderr
    assert "summary: 5 batches scored, 1000 events, 1 failed" in out, out + err
    rows = scoring_rows(out)
    assert sorted(rows) == [f"batch-{n:02d}" for n in range(6)]
    assert rows["batch-02"][1] == "ValueError: malformed event: feature 5 is nan"
    checkpoint = tmp_path / "checkpoint-batch-02.npz"
    with np.load(checkpoint) as state:
        assert int(state["failed_event"]) == 100 and len(state["scores"]) == 100
    assert f"checkpoint {checkpoint}: failed at event 100, 100 scores kept" in out
    assert f"batch-02: malformed event: feature 5 is nan; model state written to {checkpoint}" \
        in err
    # Timing: the model is loaded once per process, and only its first task waits for it.
    loads = re.search(r"model loads: (\d+) \(one per worker process\), ([\d.]+) s each", out)
    assert loads is not None and float(loads[2]) >= 0.45, out
    done_rows = {name: row for name, row in rows.items() if len(row) > 2}
    pids = {row[0] for row in rows.values()}
    assert int(loads[1]) == len(pids)
    assert sum(float(row[2]) > 0.4 for row in done_rows.values()) <= len(pids)
    assert all(int(row[4]) == 200 for row in done_rows.values())
    for pid in pids:
        assert f"[pid {pid}] model loaded" in err
        assert re.search(rf"\[pid {pid}\] model released after scoring \d+ events", err), err
    # Seeds: the same run seed gives the same seeds, audit samples and results on one
    # worker as on two.
    again = run_example("scoring_engine.py", *args, "--workers", "1").stdout
    seeds = {name: (row[1], row[7]) for name, row in done_rows.items()}
    assert seeds == {name: (row[1], row[7]) for name, row in scoring_rows(again).items()
                     if len(row) > 2}
    assert len({seed for seed, _ in seeds.values()}) == len(seeds)
    fingerprint = re.search(r"run seed 2024: results fingerprint (\w+)", out)
    assert fingerprint is not None and fingerprint[0] in again


def test_results_consumer_stores_each_batch_once(tmp_path: Path) -> None:
    db = tmp_path / "results.sqlite"
    done = run_example("results_consumer.py", "--batches", "20", "--db", str(db))
    out = done.stdout
    assert "summary: 26 deliveries, 0 unacknowledged" in out      # 20, 5 again, 1 withdrawal
    assert "run and stored: 18; rejected: 1; withdrawn: 1" in out
    assert "duplicates acknowledged without running again: 5 " in out
    assert ("ERROR results_consumer: b-0007 rejected (malformed): ValueError: result 3 "
            "(event 953122): score 'n/a' is not a number in [0, 1]") in done.stderr
    assert "b-0012 withdrawn by the producer: cancelling it" in done.stderr
    with sqlite3.connect(db) as connection:
        stored = [row[0] for row in connection.execute("SELECT batch_id FROM batches")]
        rejected = connection.execute("SELECT batch_id, reason FROM rejected").fetchall()
    connection.close()
    assert sorted(stored) == [f"b-{k:04d}" for k in range(20) if k not in (7, 12)]
    assert rejected == [("b-0007", "ValueError: result 3 (event 953122): score 'n/a' is not "
                                   "a number in [0, 1]")]
    # Delivered again, everything: nothing stored runs again.
    out = run_example("results_consumer.py", "--batches", "20", "--db", str(db)).stdout
    assert "run and stored: 0; rejected: 0; withdrawn: 1" in out
    assert "duplicates acknowledged without running again: 24 (22 already stored, " \
           "2 already rejected, 0 in flight)" in out
    assert "store " + str(db) + ": 18 batches" in out
