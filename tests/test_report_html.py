"""``taskfarm report JOURNAL --html FILE`` on a real farm's journal: one self-contained
page (nothing fetched from a network), opened in headless Chromium, which renders it
without a script error, shows one timeline bar per task and the states' colours.
The browser checks skip, saying why, where no ``chromium`` binary is installed.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sqlite3
import subprocess
import time
from contextlib import closing
from html import unescape
from pathlib import Path

import pytest
from test_cli import taskfarm_command

import taskfarm

pytest.importorskip("matplotlib", reason="the HTML report needs the report extra")
pytest.importorskip("jinja2", reason="the HTML report needs the report extra")

BROWSER_TIMEOUT = 90   # seconds for one headless Chromium run
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium binary on PATH (Debian: apt-get install chromium)")


class HtmlStep(taskfarm.Worker):
    """Done, failed, killed or timed out, as its ``html_kind`` says."""

    html_i: int
    html_kind: str = "done"

    def task(self) -> int:
        if self.html_kind == "fail":
            raise KeyError(f"no calibration for {self.html_i}")
        if self.html_kind == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if self.html_kind == "slow":
            time.sleep(30)
        return self.html_i


KINDS = ["done", "fail", "done", "done", "kill", "done", "fail", "slow", "done", "done"]


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A journal of ten tasks in four states, and its page written by the command."""
    folder = tmp_path_factory.mktemp("html")
    journal, page = folder / "campaign.db", folder / "report.html"
    taskfarm.batch_main({"name": "step_[html_i]", "timeout": 1.0},
                        {"html_i": list(range(len(KINDS))), "html_kind": KINDS},
                        worker=HtmlStep, journal=journal, on_error="continue",
                        print_report=None, progress=False)
    done = taskfarm_command("report", journal, "--html", page)
    assert done.returncode == 0, done.stderr
    assert f"wrote {page}: 10 tasks on the timeline" in done.stdout
    return journal, page


def _task_count(journal: Path) -> int:
    with closing(sqlite3.connect(journal)) as db:
        count: int = db.execute("SELECT COUNT(*) FROM tasks").fetchone()[0]
    return count


def test_the_page_is_self_contained(page: tuple[Path, Path]) -> None:
    journal, path = page
    html = path.read_text()
    assert _task_count(journal) == 10
    # Nothing loaded from elsewhere: no address in a src or href (links inside the
    # page are fragments), no style sheet or script file, no CSS import or url().
    loads = re.findall(r"""(?:src|href)\s*=\s*["']?\s*([^"'\s>]+)""", html)
    assert loads and all(link.startswith("#") for link in loads), loads
    assert not re.search(r"<link\b|<script[^>]*\bsrc=|@import|url\(\s*['\"]?(?!#)", html)
    assert len(re.findall(r'\bid="task-\d+"', html)) == 10
    for state in ("done", "failed", "killed", "timeout"):
        assert f"{state}</td>" in html
    text = unescape(html)
    for i in (1, 6):    # each failure's reason and the traceback's last line
        assert text.count(f"KeyError: 'no calibration for {i}'") == 2


def test_a_page_for_an_empty_journal_says_there_is_nothing_to_draw(tmp_path: Path) -> None:
    from taskfarm._main.journal import _SCHEMA

    journal = tmp_path / "empty.db"
    with closing(sqlite3.connect(journal)) as db:
        db.executescript(_SCHEMA)
    done = taskfarm_command("report", journal, "--html", tmp_path / "empty.html")
    assert done.returncode == 0, done.stderr
    html = (tmp_path / "empty.html").read_text()
    assert "nothing to draw" in html and "<svg" not in html and "no task recorded" in html


def test_a_page_that_cannot_be_written_is_a_clear_error(page: tuple[Path, Path],
                                                        tmp_path: Path) -> None:
    done = taskfarm_command("report", page[0], "--html", tmp_path / "no" / "such.html")
    assert done.returncode == 2
    assert done.stderr.startswith("taskfarm report: cannot write ")
    assert "Traceback" not in done.stderr


def _chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--no-default-browser-check", f"--user-data-dir={profile}",
         "--enable-logging=stderr", "--v=0", *args],
        capture_output=True, text=True, timeout=BROWSER_TIMEOUT)


def _script_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines()
            if ":CONSOLE" in line and ("Uncaught" in line or "Error" in line)]


@needs_chromium
def test_chromium_renders_one_bar_per_task(page: tuple[Path, Path], tmp_path: Path) -> None:
    journal, path = page
    shown = _chromium("--dump-dom", path.as_uri(), profile=tmp_path / "profile")
    assert shown.returncode == 0, shown.stderr[-2000:]
    dom = shown.stdout
    assert 'data-rendered="ok"' in dom, "the page's script did not run to its end"
    assert not _script_errors(shown.stderr), _script_errors(shown.stderr)
    bars = re.findall(r'<g id="(task-\d+)"', dom)
    assert len(bars) == len(set(bars)) == _task_count(journal)
    # Each bar got its tooltip from the script: the task's name and state.
    titles = re.findall(r"<title>(step_\d+): (\w+),", dom)
    assert sorted(titles) == sorted(
        (f"step_{i}", {"fail": "failed", "kill": "killed", "slow": "timeout"}.get(k, k))
        for i, k in enumerate(KINDS))
    for bad in ("{{", "{%", "undefined", "NaN"):
        assert bad not in dom


@needs_chromium
def test_chromium_screenshot_shows_the_states_colours(page: tuple[Path, Path],
                                                      tmp_path: Path) -> None:
    import numpy as np
    from matplotlib.image import imread

    from taskfarm._report.timeline import COLOURS

    shot = tmp_path / "shot.png"
    taken = _chromium(f"--screenshot={shot}", "--window-size=1400,1000",
                      page[1].as_uri(), profile=tmp_path / "profile")
    assert taken.returncode == 0, taken.stderr[-2000:]
    assert not _script_errors(taken.stderr), _script_errors(taken.stderr)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 20_000
    pixels = (imread(shot)[..., :3] * 255).round().astype(int)
    assert pixels.shape[:2] == (1000, 1400)
    for state in ("done", "failed", "killed", "timeout"):
        rgb = np.array([int(COLOURS[state][i:i + 2], 16) for i in (1, 3, 5)])
        close = (np.abs(pixels - rgb).max(axis=2) <= 8).sum()
        assert close >= 50, f"hardly any {state} colour in the screenshot ({close} pixels)"
