"""The journal as one self-contained HTML page: the state counts, a Gantt chart of the
tasks (:mod:`taskfarm._report.timeline`, inline SVG), the figures per Worker class, the
runs, and every failure with its traceback. The page is a Jinja2 template shipped in
the package (``templates/report.html.j2``); its style and its one small script are
inline, so the file opens anywhere with no network.

Needs the ``report`` extra (matplotlib, Jinja2); :func:`taskfarm.cli.main` says so
when they are missing.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from taskfarm._report.summary import (
    Failure,
    Summary,
    mib,
    open_journal,
    seconds,
    summarise,
    when,
)
from taskfarm._report.timeline import (
    COLOURS,
    MAX_BARS,
    OTHER_COLOUR,
    Timeline,
    draw_svg,
    read_timeline,
)

__all__ = ["MAX_BARS", "MAX_FAILURES", "Page", "render_html", "write_html"]

MAX_FAILURES = 1000   # failures written in full into a page (the rest are counted)
OPEN_FAILURES = 20    # up to this many, each failure's traceback is shown unfolded


@dataclass(frozen=True, slots=True)
class Page:
    """A rendered page and what it shows."""

    html: str
    summary: Summary
    timeline: Timeline


def write_html(journal: str | os.PathLike[str], out: str | os.PathLike[str],
               max_bars: int | None = MAX_BARS,
               max_failures: int | None = MAX_FAILURES) -> Page:
    """Write the page of ``journal`` to ``out`` (see :func:`render_html`)."""
    page = render_html(journal, max_bars, max_failures)
    Path(out).write_text(page.html, encoding="utf-8")
    return page


def render_html(journal: str | os.PathLike[str], max_bars: int | None = MAX_BARS,
                max_failures: int | None = MAX_FAILURES) -> Page:
    """The page of ``journal``: at most ``max_bars`` bars on the timeline and
    ``max_failures`` failures in full (None: no limit).

    Raises:
        JournalError: no such file, or not a taskfarm journal.
    """
    path = os.fspath(journal)
    with open_journal(path) as db:
        summary = summarise(db, path, max_failures)
        timeline = read_timeline(db, sum(c.timed for c in summary.classes), max_bars)
    anchors = {f.name: f"failure-{i}" for i, f in enumerate(summary.failures)}
    svg = draw_svg(timeline, summary.runs, {n: f"#{a}" for n, a in anchors.items()})
    template = _environment().get_template("report.html.j2")
    html = template.render(
        title=f"taskfarm journal {os.path.basename(path)}", path=path,
        generated=when(time.time()), summary=summary,
        span=_span(summary), counts=_counts(summary), classes=_classes(summary),
        runs=[{"id": r.id, "started": when(r.started), "pid": r.pid or "-",
               "host": r.host or "-", "tasks": f"{r.tasks:,}", "argv": r.command}
              for r in summary.runs],
        failures=[_failure(f, anchors[f.name]) for f in summary.failures],
        open_failures=len(summary.failures) <= OPEN_FAILURES,
        hidden_failures=summary.failures_total - len(summary.failures),
        svg=Markup(svg), timeline=timeline, max_bars=max_bars,
        untimed=summary.total - timeline.timed,
        tips={b.id: f"{b.name}: {b.status}, {b.worker}, {seconds(b.ended - b.started)}, "
                    f"{b.row}, run {b.run}" for b in timeline.bars})
    return Page(html, summary, timeline)


def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("taskfarm._report", "templates"), autoescape=True,
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    environment.filters["thousands"] = _thousands
    return environment


def _thousands(value: int) -> str:
    return f"{value:,}"


def _span(summary: Summary) -> str:
    if summary.first_start is None or summary.last_end is None:
        return ""
    return (f"first start {when(summary.first_start)}, last end {when(summary.last_end)} "
            f"({seconds(summary.last_end - summary.first_start)} between them)")


def _counts(summary: Summary) -> list[dict[str, Any]]:
    return [{"state": s, "count": f"{n:,}", "colour": COLOURS.get(s, OTHER_COLOUR)}
            for s, n in summary.counts.items()]


def _classes(summary: Summary) -> list[dict[str, str]]:
    return [{"worker": c.worker, "tasks": f"{c.tasks:,}", "done": f"{c.done:,}",
             "timed": f"{c.timed:,}", "total": seconds(c.total if c.timed else None),
             "mean": seconds(c.mean), "max": seconds(c.longest), "peak": mib(c.peak_rss)}
            for c in summary.classes]


def _failure(failure: Failure, anchor: str) -> dict[str, Any]:
    duration = (failure.ended - failure.started
                if failure.started is not None and failure.ended is not None else None)
    return {"anchor": anchor, "name": failure.name, "status": failure.status,
            "colour": COLOURS.get(failure.status, OTHER_COLOUR), "why": failure.why,
            "worker": failure.worker or "?", "run": failure.run,
            "attempts": failure.attempts,
            "duration": seconds(duration), "instructions": failure.instructions or "-",
            "traceback": (failure.traceback or "").rstrip()}
