"""Reading a journal back, and running a farm from a job file: the machinery of the
``taskfarm`` command (:mod:`taskfarm.cli`). Runs in the command's process only.

- :mod:`~taskfarm._report.summary` reads a journal with SQL aggregates into a
  :class:`~taskfarm._report.summary.Summary` and formats it as text;
- :mod:`~taskfarm._report.timeline` draws the tasks as a Gantt chart (matplotlib, SVG);
- :mod:`~taskfarm._report.html` puts the summary and the chart in one self-contained
  HTML page (Jinja2);
- :mod:`~taskfarm._report.job` reads a TOML job file and runs it with ``batch_main``.

The last three need the ``report`` extra (matplotlib, Jinja2) or only the standard
library (``job``); ``summary`` needs nothing beyond taskfarm itself.
"""
