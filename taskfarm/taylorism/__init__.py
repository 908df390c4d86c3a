"""taylorism's API over taskfarm: programs written for taylorism run with an import
change (``import taskfarm.taylorism as taylorism``). Needs the ``taylorism`` extra
(footprints and bronx). See docs/migrating-from-taylorism.md.

::

   main program                          boss process            task processes
  ┌──────────────────────────────┐     ┌──────────────────┐
  │ taylorism.Boss               │     │ taskfarm boss:   │ pipes  a process per task,
  │  footprints resolve each set │────>│ scheduler, time- │<─────> running the call
  │  taskfarm.Boss (the farm)    │<────│ outs, stops,     │        (TaylorismTask)
  │  reports as taylorism dicts  │     │ reports          │           ^
  └──────┬───────────────────────┘     └──────────────────┘           │ fork on the
         │ fork when the Boss is made                                 │ boss's request
         v                                                            │
      a copy of the main program (taskfarm's start_method="main") ────┘

- :mod:`~taskfarm.taylorism._boss` — ``Boss``: taylorism's calls mapped to taskfarm's.
- :mod:`~taskfarm.taylorism._matching` — instruction sets expanded and resolved with
  footprints' own rules, in the main program, when they are given.
- :mod:`~taskfarm.taylorism._relay` — the one taskfarm Worker the layer uses. By
  default (``fork_from_main=True``) its processes are forked from a copy of the main
  program taken when the Boss is made, so tasks see the program's state as
  taylorism's workers did; with ``fork_from_main=False`` they are taskfarm's usual
  worker processes.
- :mod:`~taskfarm.taylorism._outcome` — a task run, and its outcome as bytes.
- :mod:`~taskfarm.taylorism.schedulers` — footprints schedulers run as taskfarm ones.
- :mod:`~taskfarm.taylorism.util` — ``SharedNumpyArray``.
- :mod:`~taskfarm.taylorism.examples` — ``Sleeper`` and the other example workers.

Importing the package defines ``Worker`` and registers the schedulers with footprints
(``footprints.proxy.scheduler(...)`` finds them, as after ``import taylorism``); the
rest (``Boss``, ``run_as_server``, ``batch_main``, ``util``, ``examples``) is loaded on
first use, so that a task process that imports a program's workers does not load the
main program's side of taskfarm.
"""

from __future__ import annotations

import importlib as _importlib
import typing as _typing

from . import schedulers as schedulers  # registers them with footprints
from ._log import taylorism_log as taylorism_log
from ._worker import BindedWorker as BindedWorker
from ._worker import Worker as Worker
from .schedulers import BaseScheduler as BaseScheduler
from .schedulers import MaxThreadsScheduler as MaxThreadsScheduler
from .schedulers import binding_setup as binding_setup

_LAZY = {"Boss": "_boss", "batch_main": "_entry", "run_as_server": "_entry"}
_SUBMODULES = ("examples", "util")

__all__ = sorted(["BaseScheduler", "BindedWorker", "MaxThreadsScheduler", "Worker",
                  "binding_setup", "schedulers", "taylorism_log", *_LAZY, *_SUBMODULES])

if _typing.TYPE_CHECKING:
    from . import examples as examples
    from . import util as util
    from ._boss import Boss as Boss
    from ._entry import batch_main as batch_main
    from ._entry import run_as_server as run_as_server


def __getattr__(name: str) -> _typing.Any:
    if name in _SUBMODULES:
        value = _importlib.import_module(f".{name}", __name__)
    elif name in _LAZY:
        value = getattr(_importlib.import_module(f".{_LAZY[name]}", __name__), name)
    else:
        raise AttributeError(f"module 'taskfarm.taylorism' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

