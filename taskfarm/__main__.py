"""``python -m taskfarm``: the ``taskfarm`` command (see :mod:`taskfarm.cli`)."""

from taskfarm.cli import main

raise SystemExit(main())
