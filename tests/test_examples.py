"""The examples run as they are (they are what the README tells people to run)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

EXAMPLES = Path(__file__).parent.parent / "examples"


def test_calibration_example_runs_and_finds_the_truth(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "calibrate_detector.py"), "--ranges", "4",
         "--channels", "1024", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "taskfarm report: finished" in done.stdout and "4 done" in done.stdout
    assert "4 run ranges x 1024 channels calibrated" in done.stdout
    constants = np.load(tmp_path / "calib_1000-1004.npz")
    assert constants["gain"].shape == (1024,)
    assert constants["dead"].sum() == 3  # channels 0, 509 and 1018 are simulated dead
    assert abs(np.median(constants["gain"]) - 2.1) < 0.02


def test_the_campaign_killed_midway_resumes_what_is_left(tmp_path: Path) -> None:
    """SIGKILL once some steps are recorded, run again: the rest runs, nothing twice."""
    command = [sys.executable, str(EXAMPLES / "calibration_campaign.py"), "--journal",
               str(tmp_path / "campaign.db"), "--ranges", "6", "--step-seconds", "0.05"]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout is not None
        seen = [first.stdout.readline() for _ in range(4)]   # four steps recorded
        assert all(": done" in line for line in seen), seen
    finally:
        first.kill()
        first.wait(30)
        assert first.stdout is not None
        first.stdout.close()
    second = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    assert "18 of 18 steps done" in second.stdout
    ran_now = int(second.stdout.split(": ")[-1].split(" ran now")[0].split()[-1])
    recorded = second.stdout.count("(recorded earlier)")
    assert recorded >= 4 and ran_now + recorded == 18
