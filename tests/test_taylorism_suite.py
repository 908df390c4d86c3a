"""taylorism 1.1.0's own test suite passes against ``taskfarm.taylorism`` with only its
import lines changed (:mod:`taylorism_suite.fetch_and_adapt` downloads and adapts it;
skipped, saying why, where PyPI cannot be reached). Also: the adaptation changes
those two lines and nothing else, and refuses a file that is not the expected one.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from taylorism_suite import fetch_and_adapt

ROOT = Path(__file__).resolve().parent.parent
SUITE_TIMEOUT = 240   # seconds for the whole adapted suite (about 5 s here)
EXPECTED_TESTS = 8
# The only skips taylorism's suite makes on its own: test_binding on a host whose CPUs
# are not all available to the test (or whose CPU layout cannot be read).
ALLOWED_SKIPS = ("The host is not entirely available", "cpuinfo")


def test_adapt_changes_only_the_import_lines() -> None:
    source = ("import sys\nimport taylorism\nfrom taylorism import examples, schedulers, "
              "taylorism_log\nx = taylorism.Boss  # import taylorism\n")
    adapted = fetch_and_adapt.adapt(source)
    assert adapted.splitlines() == [
        "import sys", "import taskfarm.taylorism as taylorism",
        "from taskfarm.taylorism import examples, schedulers, taylorism_log",
        "x = taylorism.Boss  # import taylorism"]


def test_adapt_refuses_another_file() -> None:
    with pytest.raises(ValueError, match="expected the line"):
        fetch_and_adapt.adapt("import taylorism\n")


def test_taylorisms_own_suite_passes(tmp_path: Path) -> None:
    missing = [m for m in ("footprints", "bronx") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"the taylorism layer needs {' and '.join(missing)} (the 'taylorism' extra)")
    try:
        suite = fetch_and_adapt.write_adapted(tmp_path / "suite")
    except fetch_and_adapt.Unavailable as exc:
        pytest.skip(str(exc))
    (suite.parent / "pytest.ini").write_text("[pytest]\n")   # none of ours applies there
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider", suite.name],
        cwd=suite.parent, env=env, capture_output=True, text=True, timeout=SUITE_TIMEOUT,
        stdin=subprocess.DEVNULL)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert not re.search(r"\d+ (failed|errors?)\b", output), output
    passed = re.search(r"(\d+) passed", output)
    skipped = re.search(r"(\d+) skipped", output)
    count = (int(passed.group(1)) if passed else 0) + (int(skipped.group(1)) if skipped else 0)
    assert count == EXPECTED_TESTS, output
    for line in output.splitlines():
        if line.startswith("SKIPPED"):
            assert any(reason in line for reason in ALLOWED_SKIPS), output
