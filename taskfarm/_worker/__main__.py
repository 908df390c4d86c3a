"""Entry point of a worker process under the 'spawn' start method: ``python -m
taskfarm._worker TASK_FD RESULT_FD BOSS_PID`` (started by the boss, never by hand)."""

import sys

from taskfarm._worker.serve import main

main(sys.argv[1:])
sys.stdout.flush()
sys.stderr.flush()
