"""``start_method="main"``: worker processes forked from a copy of the main program,
taken when the Boss is made, so that tasks see what the main program had set up by
then (modules it loaded, a session object, configuration). Runs in the main program;
the copy's own loop is :func:`taskfarm._worker.zygote.main_copy`.

::

    main program ──fork (Boss made)──> copy of the main program ──fork──> worker
         │                                  ^ its socket                    │
         │ starts                           │ (fork on request,             │ tasks,
         v                                  │  how each worker ended)       │ outcomes
    boss process ───────────────────────────┘ <─────────── pipes ───────────┘

The boss still manages every worker as its own (pipes, pidfd sentinel, signals to its
process group, retries): only the fork happens in the copy. The copy is forked twice
over, so that it is nobody's child to reap; it exits when the boss closes its socket
(killing the workers still running: the boss is gone) — that is, when the Boss is
closed, or the main program or the boss die.

The trade-off: forking a program that runs threads copies it in whatever state those
threads left it (a lock held by one stays held in the copy), so this start method is
for main programs that start no thread before the Boss — the Boss warns otherwise
(taskfarm's own threads, those of other Boss handles, excepted: the copy uses nothing
they hold).
And the copy is the main program *as it was*: what it changes later is not seen.

Worker classes are sent to workers by reference (module and name) when the copy has
them, so that their module's globals are the copy's own, not copies made by pickling;
a class the copy does not have (defined after the Boss) is sent by value, as under
the other start methods.
"""

from __future__ import annotations

import os
import pickle
import threading
import warnings
from typing import TYPE_CHECKING, Any

from taskfarm._common.processes import flush_std_streams

if TYPE_CHECKING:
    import socket

__all__ = ["class_by_reference", "start_copy"]


def start_copy() -> socket.socket:
    """Fork the copy of the main program; the boss's end of its socket, to be passed
    to the boss (and closed here once it is)."""
    # taskfarm's own threads (other farms' receivers) hold nothing the copy uses.
    others = [t.name for t in threading.enumerate() if t is not threading.current_thread()
              and not t.name.startswith("taskfarm-")]
    if others:
        warnings.warn(f"start_method='main' copies the main program while it runs other "
                      f"threads ({', '.join(others)}): a lock one of them holds stays held "
                      "in the copy and its workers; make the Boss before starting threads",
                      RuntimeWarning, stacklevel=5)
    import socket  # here: only this start method needs it

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    flush_std_streams()
    try:
        pid = os.fork()
    except BaseException:
        ours.close()
        theirs.close()
        raise
    if pid == 0:   # the first child forks the copy and exits: nobody has to reap the copy
        try:
            ours.close()
            if os.fork() == 0:
                from taskfarm._worker.zygote import main_copy

                main_copy(theirs)   # never returns
        finally:
            os._exit(0)
    theirs.close()
    os.waitpid(pid, 0)
    return ours


def class_by_reference(cls: type, by_value: bytes) -> bytes:
    """The class pickled so that a worker forked from the copy uses the copy's own
    class (found by module and name), or, when the copy has none by that name, the
    class sent by value (``by_value``, the class pickled)."""
    return pickle.dumps(_ByReference(cls.__module__, cls.__qualname__, by_value),
                        protocol=5)


class _ByReference:
    """Unpickles (in the worker) as the class named, or the class sent by value."""

    def __init__(self, module: str, qualname: str, by_value: bytes) -> None:
        self.module, self.qualname, self.by_value = module, qualname, by_value

    def __reduce__(self) -> tuple[Any, tuple[str, str, bytes]]:
        return find_class, (self.module, self.qualname, self.by_value)


def find_class(module: str, qualname: str, by_value: bytes) -> type:
    """In a worker: the class ``module.qualname`` this process has, if it is one; else
    the class sent by value."""
    import sys

    found: Any = sys.modules.get(module)
    for part in qualname.split("."):
        found = getattr(found, part, None)
    if isinstance(found, type):
        return found
    cls: type = pickle.loads(by_value)
    return cls
