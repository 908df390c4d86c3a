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
