"""Workers defined by their instructions. The class is read in the main program (to
check and match instruction sets) and instantiated in worker processes (to run them).

A Worker subclass declares its instructions as annotated class attributes::

    class Calibrate(taskfarm.Worker):
        run: int                              # required
        channels: int = 64                    # optional, with a default
        method: Literal["mean", "fit"] = "fit"  # allowed values

        @classmethod
        def setup_process(cls):               # once per worker process
            cls.table = load_table()

        def task(self):                       # once per instruction set
            return calibrate(self.run, self.channels, self.method, self.table)

Every Worker also has the built-in instructions ``name``, ``memory`` (MiB),
``expected_time`` (seconds), ``resources`` (names of what the task must hold alone,
for ``ResourceLockScheduler``), ``after`` (names of the tasks that must be done before
it starts), ``timeout`` (seconds), ``retries`` (extra attempts), ``retry_on`` (which
endings are retried), ``retry_memory`` (factor applied to ``memory`` at each retry) and
``scheduler_ticket`` (set by the scheduler) and ``seed`` (derived from the run's seed
when the Boss has one: see :attr:`Worker.rng`). A subclass gives its own default for
any of them as a class attribute (``timeout = 600``).
Class-level options (not instructions) are ``ClassVar`` annotations or plain
attributes listed in :data:`CLASS_OPTIONS`: ``isolated`` (a fresh process per task),
``accept_undeclared`` (receive keys the class does not declare), ``threads`` (the
size of the native thread pools — BLAS, OpenMP — of its tasks; by default each worker
gets its share of the CPUs, so N workers never run N x cores threads),
``memory_limit`` and ``capture_output`` (its tasks' stdout and stderr travel in their
reports).

Around the tasks of a class, in each worker process: ``setup_process`` (once, before
its first task), ``teardown_process`` (once, when the process ends normally),
``on_error`` (when a task raises, before its report is sent) and ``on_stop`` (when a
task is being stopped).
"""

from __future__ import annotations

import sys
import typing
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

if TYPE_CHECKING:
    import numpy

__all__ = ["Attribute", "Worker", "declared_attributes", "registered_workers"]

_MISSING = object()

# Class attributes that configure the class; never instructions.
CLASS_OPTIONS = frozenset({"isolated", "accept_undeclared", "threads", "memory_limit",
                           "capture_output"})

# Set by a worker process while one of its tasks runs: sends what ``emit`` is given.
emitter: Callable[[Any], None] | None = None

# Weak references, so that classes defined in a function (tests, notebooks) go away.
_REGISTRY: list[weakref.ref[type[Worker]]] = []


class Attribute(NamedTuple):
    """One declared instruction of a Worker class.

    ``allowed`` is the set of allowed values from ``Literal[...]`` (None: any value of
    ``types``); ``types`` is the tuple of accepted types (empty: anything).
    """

    name: str
    annotation: Any
    types: tuple[type, ...]
    allowed: tuple[Any, ...] | None
    optional: bool          # None is accepted
    default: Any = _MISSING

    @property
    def required(self) -> bool:
        """True when an instruction set must give this attribute."""
        return self.default is _MISSING


class Worker:
    """Base class of every worker. Subclass it, declare instructions, implement
    :meth:`task`. Defining a subclass registers it for matching.

    Instances are made in the worker process, one per task, with the instruction set
    as attributes; ``Worker(**instructions)`` also works in the main program, which
    makes a worker easy to test on its own. A subclass may override ``__init__``: it
    is then called with every instruction as a keyword (call ``super().__init__``).
    """

    name: str
    memory: float = 0.0
    expected_time: float = 0.0
    scheduler_ticket: int | None = None
    resources: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    timeout: float | None = None
    retries: int = 0
    retry_on: tuple[str, ...] = ("failed", "killed", "timeout")
    retry_memory: float = 1.0
    seed: int | None = None

    isolated: ClassVar[bool] = False
    accept_undeclared: ClassVar[bool] = False
    threads: ClassVar[int | None] = None
    memory_limit: ClassVar[bool] = False
    capture_output: ClassVar[bool] = False

    # Set on each subclass: its declared instructions once computed (declared_attributes).
    _taskfarm_attributes: ClassVar[dict[str, Attribute] | None]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._taskfarm_attributes = None  # computed lazily: annotations may be forward refs
        _REGISTRY.append(weakref.ref(cls))

    def __init__(self, **instructions: Any) -> None:
        for key, value in instructions.items():
            setattr(self, key, value)

    @classmethod
    def setup_process(cls) -> None:
        """Called once in a worker process before its first task of this class.

        Load what every task of the class shares (a model, a calibration table) and
        keep it on the class. The default does nothing.
        """

    @classmethod
    def teardown_process(cls) -> None:
        """Called once in a worker process that ran tasks of this class, when the
        process ends normally (the farm ends or stops, the pool shrinks, the process
        reached its ``max_tasks_per_child``), under every start method: release what
        ``setup_process`` took. Not called when the process is killed or stopped. An
        error raised here is logged on the ``taskfarm`` logger. The default does
        nothing."""

    def on_error(self, exc: BaseException) -> None:
        """Called in the worker process when :meth:`task` raised ``exc``, before the
        task's report is sent: the place to write a checkpoint. An error raised here
        is added to the task's report (a note on its exception), never swallowed. The
        default does nothing."""

    def emit(self, value: Any) -> None:
        """Send ``value`` (anything picklable) to the main program now, ahead of the
        task's report: an intermediate result, progress. Values arrive in order, as
        ``EMITTED`` events of :meth:`Boss.events` and in ``TaskReport.emitted``.
        Raises TypeError if the value cannot be pickled; RuntimeError outside a task
        run by a farm."""
        if emitter is None:
            raise RuntimeError(f"{self!r}.emit() works only while the task runs in a "
                               "worker process of a farm")
        emitter(value)

    @property
    def rng(self) -> numpy.random.Generator:
        """A numpy random Generator for this task: seeded from :attr:`seed` when there
        is one (``Boss(seed=N)`` derives a seed per task name, so runs repeat whatever
        the number of workers, the order or the start method), unseeded otherwise."""
        generator: numpy.random.Generator | None = self.__dict__.get("_taskfarm_rng")
        if generator is None:
            import numpy

            generator = numpy.random.default_rng(self.seed)
            self.__dict__["_taskfarm_rng"] = generator
        return generator

    def on_stop(self) -> None:
        """Called in the worker process when its task is being stopped (a timeout,
        STOP_RIGHTNOW, fail-fast, SIGTERM), after the task's own ``finally`` blocks
        ran: close files, write a checkpoint. The process ends right after, and is
        killed if this takes longer than the grace period. The default does nothing."""

    def task(self) -> Any:
        """Do the task; the return value is the task's report value."""
        raise NotImplementedError(f"{type(self).__qualname__} must implement task()")

    def __repr__(self) -> str:
        return f"<{type(self).__qualname__} {getattr(self, 'name', '?')!r}>"


def registered_workers() -> list[type[Worker]]:
    """Every Worker subclass defined so far, in definition order (abstract ones, which
    do not override ``task``, left out)."""
    alive = [cls for ref in _REGISTRY if (cls := ref()) is not None]
    _REGISTRY[:] = [weakref.ref(cls) for cls in alive]
    return [cls for cls in alive if cls.task is not Worker.task]


def declared_attributes(cls: type[Worker]) -> dict[str, Attribute]:
    """The instructions ``cls`` declares (built-ins included), computed once per class."""
    cached: dict[str, Attribute] | None = cls.__dict__.get("_taskfarm_attributes")
    if cached is not None:
        return cached
    hints = _type_hints(cls)
    attributes: dict[str, Attribute] = {}
    for name, annotation in hints.items():
        if name.startswith("_") or name in CLASS_OPTIONS:
            continue
        if typing.get_origin(annotation) is ClassVar or annotation is ClassVar:
            continue
        types, allowed, optional = _describe(annotation)
        default = _MISSING
        for klass in cls.__mro__:
            if name in klass.__dict__:
                default = klass.__dict__[name]
                break
        attributes[name] = Attribute(name, annotation, types, allowed, optional, default)
    cls._taskfarm_attributes = attributes
    return attributes


def _type_hints(cls: type) -> dict[str, Any]:
    """Annotations of ``cls`` and its bases, resolved; one that cannot be resolved (a
    name imported inside a function, under ``from __future__ import annotations``)
    accepts any value instead of making the whole class unusable."""
    try:
        return typing.get_type_hints(cls)
    except Exception:
        pass
    hints: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        module = sys.modules.get(klass.__module__)
        namespace = dict(vars(module)) if module is not None else {}
        for name, annotation in dict(vars(klass).get("__annotations__", {})).items():
            if isinstance(annotation, str):
                try:
                    annotation = eval(annotation, namespace, dict(vars(klass)))
                except Exception:
                    annotation = Any
            hints[name] = annotation
    return hints


def _describe(annotation: Any) -> tuple[tuple[type, ...], tuple[Any, ...] | None, bool]:
    """Accepted types, allowed values and optionality of one annotation."""
    if annotation is Any or annotation is object:
        return (), None, True
    if annotation is None or annotation is type(None):
        return (type(None),), None, True
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        values = typing.get_args(annotation)
        return tuple({type(v) for v in values}), values, None in values
    if origin is typing.Union or _is_pep604_union(annotation):
        types: list[type] = []
        allowed: list[Any] | None = []
        optional = False
        for arg in typing.get_args(annotation):
            arg_types, arg_allowed, arg_optional = _describe(arg)
            if not arg_types:
                return (), None, True
            optional = optional or arg_optional
            types.extend(t for t in arg_types if t is not type(None))
            if arg_allowed is None and arg not in (None, type(None)):
                allowed = None
            elif allowed is not None and arg_allowed is not None:
                allowed.extend(arg_allowed)
        return tuple(types), (tuple(allowed) if allowed else None), optional
    if origin is not None:  # list[int], dict[str, float], ...: check the container only
        return ((origin,) if isinstance(origin, type) else ()), None, False
    if isinstance(annotation, type):
        return (annotation,), None, False
    return (), None, True  # a TypeVar, a string we could not resolve: accept anything


def _is_pep604_union(annotation: Any) -> bool:
    import types

    return isinstance(annotation, types.UnionType)
