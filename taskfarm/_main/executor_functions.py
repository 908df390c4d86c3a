"""The pickled function of :class:`taskfarm.Executor` calls, kept from one batch to the
next when nothing that went into it can have changed. Runs in the main program (the
executor's feeder thread, or a thread submitting a lone call).

A function defined in ``__main__`` (or a lambda there) travels by value: cloudpickle
pickles its code with the globals it names, about 50 µs, once per batch. A program
that submits one call at a time pays that on every call, a fifth of the round trip.
:class:`FunctionBlobs` keeps such a blob while everything cloudpickle put in it is
provably the same as then:

- the same function object, with the same code object, name, qualname, docstring,
  and no closure and no attributes of its own;
- defaults, keyword defaults and annotations that are immutable scalars (compared by
  type and value) or builtin types;
- each name its code refers to (its own and its nested functions', attribute names
  included) bound in the module's globals to the same immutable scalar (type and
  value), or to the very same module, builtin, or function or class of another module
  that pickles by reference; or still not bound there;
- no module imported since (cloudpickle also records the submodules a function may
  reach through a module it names).

Anything else (a global list or dict, which may have changed in place; a ``__main__``
class or helper function; a closure) is pickled afresh every batch, as before: what a
worker receives is always what pickling the function now would give.
"""

from __future__ import annotations

import sys
import types
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from taskfarm._main.executor_worker import dumps_function

_SCALARS = (type(None), bool, int, float, complex, str, bytes)
_ABSENT = object()    # a name the module's globals do not bind
_MAX_KEPT = 32


class FunctionBlobs:
    """Pickled functions of one executor (see the module docstring)."""

    def __init__(self) -> None:
        # id(function) -> (a weak reference to it, its state, its blob)
        self._kept: dict[int, tuple[weakref.ref[Any], tuple[Any, ...], bytes]] = {}
        self._names: dict[types.CodeType, tuple[str, ...]] = {}   # of the codes kept

    def dumps(self, fn: Callable[..., Any]) -> bytes:
        """``dumps_function(fn)``, from what was kept when nothing changed since."""
        state = self._state(fn)
        if state is None:
            return dumps_function(fn)
        kept = self._kept.get(id(fn))
        # The code by identity, every other part by equality: a scalar is a (type,
        # value) pair, anything else compares by identity.
        if kept is not None and kept[0]() is fn and kept[1][0] is state[0] \
                and kept[1][1:] == state[1:]:
            return kept[2]
        blob = dumps_function(fn)
        if len(self._kept) >= _MAX_KEPT:
            del self._kept[next(iter(self._kept))]
            self._names.clear()
        self._kept[id(fn)] = (weakref.ref(fn), state, blob)
        return blob

    def _state(self, fn: Any) -> tuple[Any, ...] | None:
        """What the blob of ``fn`` is made of, or None when that cannot be told
        cheaply (then it is pickled every time)."""
        if type(fn) is not types.FunctionType or fn.__module__ != "__main__" \
                or fn.__closure__ is not None or fn.__dict__:
            return None
        code = fn.__code__
        parts: list[Any] = [code, _key(fn.__name__), _key(fn.__qualname__),
                            _key(fn.__doc__), _key(len(sys.modules))]
        for values in (fn.__defaults__, fn.__kwdefaults__ and fn.__kwdefaults__.items(),
                       fn.__annotations__ and fn.__annotations__.items()):
            for value in values or ():
                if not _plain(value):
                    return None
                parts.append(_key(value))
        names = self._names.get(code)
        if names is None:
            names = self._names[code] = tuple(dict.fromkeys(_names(code)))
        namespace = fn.__globals__
        for name in names:
            value = namespace.get(name, _ABSENT)
            if value is not _ABSENT and not _plain(value) and not _by_reference(value):
                return None
            parts.append(_key(value))
        return tuple(parts)


def _key(value: Any) -> Any:
    """How a part is compared: a scalar by type and value, anything else by identity."""
    if isinstance(value, tuple):  # an item of kwdefaults or annotations
        return tuple(_key(v) for v in value)
    return (type(value), value) if type(value) in _SCALARS else value


def _plain(value: Any) -> bool:
    """An immutable scalar, a builtin type, or a pair of them (a dict item)."""
    if type(value) is tuple:
        return all(_plain(v) for v in value)
    return type(value) in _SCALARS or (isinstance(value, type)
                                        and value.__module__ == "builtins")


def _by_reference(value: Any) -> bool:
    """Pickled by reference (its module and name): a module, a builtin, or a function
    or class of another module found under its own name there."""
    if isinstance(value, types.ModuleType | types.BuiltinFunctionType):
        return True
    if not isinstance(value, type | types.FunctionType):
        return False
    module = sys.modules.get(value.__module__)
    if module is None or value.__module__ == "__main__":
        return False
    found: Any = module
    for part in value.__qualname__.split("."):
        found = getattr(found, part, None)
    return found is value


def _names(code: types.CodeType) -> Iterator[str]:
    """Every name a code object and the code nested in it refer to."""
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _names(const)
