"""The tasks of a journal as a Gantt chart: one row per worker slot, one bar per task
from its start to its end, coloured by its state; drawn with matplotlib as SVG.

Each bar is its own patch carrying the id ``task-<index>`` (matplotlib's SVG backend
writes a patch's ``gid`` as the id of the group that holds it), so that a page can find
and annotate every bar, and a test can count them in the rendered page. A failed bar
links to its entry in the page's list of failures (``failure-<n>``).

A row is the journal's ``slot`` (the scheduler's ticket, one per concurrently running
task); a task recorded without a slot goes to a row for its process id, or to an
"unknown" row. At most ``max_bars`` bars are drawn (the first tasks by start time), so
that the page of a 100,000-task journal still opens at once; the page says so.
"""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import matplotlib
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from taskfarm._report.summary import Run, when

__all__ = ["COLOURS", "MAX_BARS", "Bar", "Timeline", "draw_svg", "read_timeline"]

MAX_BARS = 5000
COLOURS = {"done": "#2e7d32", "failed": "#c62828", "killed": "#6a1b9a",
           "timeout": "#ef6c00", "cancelled": "#9e9e9e"}
OTHER_COLOUR = "#455a64"    # a state this version does not know


@dataclass(frozen=True, slots=True)
class Bar:
    """One task on the chart; ``index`` makes its id, ``task-<index>``."""

    index: int
    name: str
    worker: str
    status: str
    row: str
    started: float
    ended: float
    run: int | None

    @property
    def id(self) -> str:
        """The id of the bar's element in the SVG."""
        return f"task-{self.index}"


@dataclass(frozen=True, slots=True)
class Timeline:
    """The bars to draw, the rows in order, and what was left out: ``timed`` tasks have
    a start and an end (``len(bars)`` of them are drawn), the others never started."""

    bars: tuple[Bar, ...]
    rows: tuple[str, ...]
    timed: int

    @property
    def capped(self) -> bool:
        """True when some tasks that ran are not drawn."""
        return len(self.bars) < self.timed


def read_timeline(db: sqlite3.Connection, timed: int,
                  max_bars: int | None = MAX_BARS) -> Timeline:
    """The first ``max_bars`` tasks by start time of the journal open as ``db`` (None:
    all); ``timed`` is how many tasks have a start and an end (from the summary)."""
    rows = db.execute(
        "SELECT name, worker, status, slot, pid, started, ended, run FROM tasks"
        " WHERE started IS NOT NULL AND ended IS NOT NULL ORDER BY started, name LIMIT ?",
        (-1 if max_bars is None else max_bars,)).fetchall()
    bars = tuple(Bar(i, name, worker or "?", status, _row(slot, pid), started,
                     max(ended, started), run)
                 for i, (name, worker, status, slot, pid, started, ended, run)
                 in enumerate(rows))
    return Timeline(bars, tuple(sorted({b.row for b in bars}, key=_row_order)), timed)


def _row(slot: int | None, pid: int | None) -> str:
    if slot is not None:
        return f"slot {slot}"
    return f"pid {pid}" if pid is not None else "unknown"


def _row_order(label: str) -> tuple[int, int]:
    kind, _, number = label.partition(" ")
    rank = {"slot": 0, "pid": 1}.get(kind, 2)
    return rank, int(number) if number.isdigit() else 0


def draw_svg(timeline: Timeline, runs: Sequence[Run] = (),
             links: Mapping[str, str] | None = None) -> str:
    """The chart as an ``<svg>`` element (no XML prolog), ready to inline in HTML.
    ``links`` maps a task name to a fragment (``#failure-3``) its bar links to."""
    if not timeline.bars:
        return ""
    links = links or {}
    origin = min(b.started for b in timeline.bars)
    place = {row: i for i, row in enumerate(timeline.rows)}
    width, height = 12.0, min(60.0, 1.2 + 0.32 * len(timeline.rows))
    left = 0.3 + 0.075 * max(len(row) for row in timeline.rows)   # inches, for the labels
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "taskfarm",
                                "font.size": 9}):
        # Margins set here rather than by a layout engine, which would draw every bar
        # once more to measure the figure.
        figure = Figure(figsize=(width, height))
        figure.subplots_adjust(left=left / width, right=1 - 1.5 / width,
                               bottom=0.55 / height, top=1 - 0.2 / height)
        axes = figure.add_subplot()
        for bar in timeline.bars:
            colour = COLOURS.get(bar.status, OTHER_COLOUR)
            # An edge of the bar's own colour keeps a task of a few microseconds
            # visible as a thin line on an axis of hours.
            patch = Rectangle((bar.started - origin, place[bar.row] - 0.35),
                              bar.ended - bar.started, 0.7, facecolor=colour,
                              edgecolor=colour, linewidth=0.6, gid=bar.id,
                              url=links.get(bar.name))
            # add_artist, not add_patch: the limits are set below, and updating them
            # bar by bar is most of the time matplotlib would take.
            axes.add_artist(patch)
        end = max(b.ended for b in timeline.bars) - origin
        for run in runs:
            if run.started is not None and 0 < run.started - origin <= end:
                axes.axvline(run.started - origin, color="#607d8b", linestyle="--",
                             linewidth=0.8)
                axes.annotate(f"run {run.id}", (run.started - origin, 1.0),
                              xycoords=("data", "axes fraction"), fontsize=8,
                              color="#607d8b", xytext=(2, -10),
                              textcoords="offset points")
        axes.set_yticks(range(len(timeline.rows)), timeline.rows)
        axes.set_ylim(len(timeline.rows) - 0.5, -0.5)   # the first row on top
        axes.set_xlim(0, max(end, 1e-6) * 1.01)
        axes.set_xlabel(f"seconds since {when(origin)}")
        axes.grid(axis="x", color="#e0e0e0", linewidth=0.6)
        axes.set_axisbelow(True)
        counts: dict[str, int] = {}
        for bar in timeline.bars:
            counts[bar.status] = counts.get(bar.status, 0) + 1
        order = sorted(counts, key=lambda s: (list(COLOURS).index(s) if s in COLOURS
                                              else len(COLOURS), s))
        axes.legend(handles=[Patch(color=COLOURS.get(s, OTHER_COLOUR),
                                   label=f"{s} ({counts[s]:,})") for s in order],
                    loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
        out = io.StringIO()
        # No metadata: no RDF block naming outside addresses, and the same bytes each time.
        figure.savefig(out, format="svg",
                       metadata={"Creator": None, "Date": None, "Format": None, "Type": None})
    text = out.getvalue()
    return text[text.index("<svg"):]
