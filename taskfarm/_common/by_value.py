"""Pickling by value (cloudpickle) that keeps where the code came from. Runs in every
process that sends a function or a class of ``__main__``: the main program, and a
worker returning one.

Why: since 3.1.3, cloudpickle renames the file of every code object it sends by value
to ``<dynamic-code>`` (so that the same function gives the same bytes wherever it was
defined). A task's traceback then shows ``File "<dynamic-code>", line 3`` and no
source line for the user's own functions, the ones they most need to see. A worker
runs where the script is, so the real file name is worth sending: :func:`dumps` wraps
each code object so that the receiving side puts its file name back. The cost is a
few bytes per code object; what cloudpickle itself does with the code is untouched.
"""

from __future__ import annotations

import io
import pickle
import types
from collections.abc import Callable
from typing import Any

import cloudpickle


def with_file(code: types.CodeType, filename: str) -> types.CodeType:
    """The code object as it was defined: its own file name back (unpickling side)."""
    if code.co_filename == filename:
        return code
    return code.replace(co_filename=filename)


class _Pickler(cloudpickle.Pickler):  # type: ignore[misc]
    """cloudpickle's pickler, but a code object travels with its file name."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The copies made here to be pickled by cloudpickle itself; kept alive (and
        # their ids unique) until the pickling ends.
        self._copies: dict[int, types.CodeType] = {}

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is types.CodeType and id(obj) not in self._copies:
            # A copy, so that pickling it reaches cloudpickle's own reducer once and
            # memoising it does not stand for the wrapped original.
            copy = obj.replace()
            self._copies[id(copy)] = copy
            return with_file, (copy, obj.co_filename)
        return super().reducer_override(obj)


def dumps_user(value: Any, buffers: list[pickle.PickleBuffer] | None = None) -> bytes:
    """Pickle a user value: plain pickle first (about ten times faster on small
    values), by value (:func:`dumps`) for what it cannot do (lambdas, classes of
    ``__main__``). With ``buffers``, large data that supports it (numpy arrays) is
    left out of the pickle and appended there instead."""
    callback = buffers.append if buffers is not None else None
    try:
        return pickle.dumps(value, protocol=5, buffer_callback=callback)
    except Exception:
        if buffers is not None:
            buffers.clear()
        return dumps(value, protocol=5, buffer_callback=callback)


def dumps(value: Any, protocol: int = pickle.HIGHEST_PROTOCOL,
          buffer_callback: Callable[[pickle.PickleBuffer], Any] | None = None) -> bytes:
    """``cloudpickle.dumps``, keeping the file name of the code it sends by value."""
    out = io.BytesIO()
    _Pickler(out, protocol=protocol, buffer_callback=buffer_callback).dump(value)
    return out.getvalue()
