"""Entry point of the boss process: ``python -m taskfarm._boss CONTROL_FD REPORT_FD
PARENT_PID`` (started by :class:`taskfarm.Boss`, never by hand)."""

import sys

from taskfarm._boss.loop import main

sys.exit(main(sys.argv[1:]))
