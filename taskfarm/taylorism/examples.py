"""taylorism's example workers, and small programs that run them.

- :class:`Sleeper` sleeps ``sleeping_time`` seconds (one of 0.001, 0.01, 0.1, 0 to 9,
  then 10 to 60 by 5) and reports it with its CPU binding;
- :class:`Logarithmer` takes the log of one ``row`` of a shared ``array``;
- :class:`Summer` adds its ``value`` to a shared one-element ``shared_sum``, under its
  lock if ``use_lock``;
- :class:`MatrixProducter` computes the block ``[i1:i2, j1:j2]`` of ``C = A x B``.

Run one of the programs, for instance::

    python -c "from taskfarm.taylorism import examples; examples.summer_example()"
"""

from __future__ import annotations

import time
from typing import Any

import footprints

from taskfarm.taylorism._worker import Worker
from taskfarm.taylorism.util import SharedNumpyArray

__all__ = [
    "Logarithmer", "MatrixProducter", "Sleeper", "Summer", "logarithmer_example",
    "matrixproduct_example", "sleepers_example_bindedmemory",
    "sleepers_example_bindedthreads", "sleepers_example_laxist",
    "sleepers_example_memory", "sleepers_example_threads", "sleepers_generic_program",
    "summer_example",
]

_SLEEPS = [0.001, 0.01, 0.1, *range(10), *range(10, 65, 5)]


class Sleeper(Worker):
    """Sleeps ``sleeping_time`` seconds, then says ``wakeup_sentence``."""

    _footprint: Any = dict(info="Sleeps.", attr=dict(
        sleeping_time=dict(info="Sleeping time in s.", values=_SLEEPS, type=float),
        wakeup_sentence=dict(info="What to say after sleep.", optional=True, access="rwx",
                             default="Hello !")))

    def _task(self) -> str:
        time.sleep(self.sleeping_time)
        return (f"{self.wakeup_sentence} Woke up after {self.sleeping_time} s sleep "
                f"on cpu {self.binding()}")


def _shared_attr(info: str) -> dict[str, Any]:
    return dict(info=info, type=SharedNumpyArray, access="rwx")


class Logarithmer(Worker):
    """Replaces each element of row ``row`` of the shared ``array`` by its log."""

    _footprint: Any = dict(attr=dict(
        row=dict(info="Index of the row to work on.", type=int),
        array=_shared_attr("The shared-memory array to work on.")))

    def _task(self) -> None:
        import numpy

        for j in range(self.array.shape[1]):
            self.array[self.row, j] = numpy.log(self.array[self.row, j])


class Summer(Worker):
    """Adds ``value`` to ``shared_sum[0]``; without ``use_lock`` the sum may be wrong."""

    _footprint: Any = dict(attr=dict(
        value=dict(info="Value to add.", type=int),
        shared_sum=_shared_attr("The shared-memory array holding the sum."),
        use_lock=dict(info="Whether to take the array's lock.", type=bool)))

    def _task(self) -> None:
        if self.use_lock:
            self.shared_sum.acquire()
        try:
            self.shared_sum[0] += self.value
        finally:
            if self.use_lock:
                self.shared_sum.release()


class MatrixProducter(Worker):
    """Computes ``C[i1:i2+1, j1:j2+1]`` of ``C = A x B``, all three shared."""

    _footprint: Any = dict(attr=dict(
        A=_shared_attr("The A matrix."), B=_shared_attr("The B matrix."),
        C=_shared_attr("The result C."),
        i1=dict(info="First row of the block.", type=int),
        i2=dict(info="Last row of the block.", type=int),
        j1=dict(info="First column of the block.", type=int),
        j2=dict(info="Last column of the block.", type=int)))

    def _task(self) -> None:
        for i in range(self.i1, self.i2 + 1):
            for j in range(self.j1, self.j2 + 1):
                self.C[i, j] = sum(self.A[i, k] * self.B[k, j] for k in range(self.A.shape[1]))


def run_as_server(*args: Any, **kwargs: Any) -> Any:
    """:func:`taskfarm.taylorism.run_as_server`, imported when a program runs (a task
    process that imports these workers never loads the main program's side)."""
    from taskfarm.taylorism._entry import run_as_server as run

    return run(*args, **kwargs)


def sleepers_generic_program(verbose: bool = True, scheduler: Any = None) -> None:
    """Four sleepers, an interim report, one more sleeper, the final report."""
    boss = run_as_server(common_instructions=dict(wakeup_sentence="Hello Dolly !"),
                         individual_instructions=dict(sleeping_time=[4, 9, 2, 1]),
                         scheduler=scheduler, verbose=verbose)
    time.sleep(5)
    print("Intermediate report:", boss.get_report())
    boss.set_instructions(dict(), individual_instructions=dict(sleeping_time=[3]))
    boss.wait_till_finished()
    report = boss.get_report()
    assert report is not None
    for entry in report["workers_report"]:
        print(entry)


def sleepers_example_laxist(verbose: bool = True) -> None:
    """Sleepers with no limit."""
    sleepers_generic_program(verbose, footprints.proxy.scheduler(nosort=True))


def sleepers_example_threads(verbose: bool = True) -> None:
    """Sleepers, at most three at once."""
    sleepers_generic_program(verbose, footprints.proxy.scheduler(limit="threads",
                                                                 max_threads=3))


def sleepers_example_bindedthreads(verbose: bool = True) -> None:
    """Sleepers, at most three at once, each bound to a CPU."""
    sleepers_generic_program(verbose, footprints.proxy.scheduler(
        limit="threads", max_threads=3, binded=True))


def sleepers_example_memory(verbose: bool = True) -> None:
    """Sleepers under a memory budget."""
    sleepers_generic_program(verbose, footprints.proxy.scheduler(limit="memory",
                                                                 memory_per_task=1.8))


def sleepers_example_bindedmemory(verbose: bool = True) -> None:
    """Sleepers under a memory budget, each bound to a CPU."""
    sleepers_generic_program(verbose, footprints.proxy.scheduler(limit="memory",
                                                                 binded=True))


def logarithmer_example(verbose: bool = True) -> None:
    """The log of a 2x3 shared array, one task per row."""
    import numpy

    rows, cols = 2, 3
    array = SharedNumpyArray(numpy.add.outer(numpy.arange(rows), numpy.arange(cols)) + 1.)
    print(array[...])
    boss = run_as_server(common_instructions={},
                         individual_instructions=dict(row=list(range(rows))),
                         scheduler=footprints.proxy.scheduler(limit="threads",
                                                              max_threads=rows),
                         verbose=verbose, sharedmemory_common_instructions=dict(array=array))
    boss.wait_till_finished()
    print(array[...])


def summer_example(verbose: bool = True, use_lock: bool = True) -> None:
    """0 + 1 + ... + 9, each term added by a task to one shared sum."""
    import numpy

    total = SharedNumpyArray(numpy.zeros((1,), dtype=int))
    boss = run_as_server(common_instructions=dict(use_lock=use_lock),
                         individual_instructions=dict(value=list(range(10))),
                         scheduler=footprints.proxy.scheduler(limit="threads", max_threads=10),
                         verbose=verbose, sharedmemory_common_instructions=dict(shared_sum=total))
    boss.wait_till_finished()
    print(f"{total[0]}=={sum(range(10))}")


def matrixproduct_example(A_shape: tuple[int, int] = (6, 7),
                          B_shape: tuple[int, int] = (7, 8),
                          iblocks: int = 2, jblocks: int = 4, verbose: bool = True) -> None:
    """C = A x B by blocks, one task per block, the three matrices shared."""
    import numpy

    if A_shape[1] != B_shape[0] or A_shape[0] % iblocks or B_shape[1] % jblocks:
        raise ValueError("A's columns must be B's rows, and the blocks must divide C")
    a = SharedNumpyArray(numpy.random.random(A_shape))
    b = SharedNumpyArray(numpy.random.random(B_shape))
    c = SharedNumpyArray(numpy.zeros((A_shape[0], B_shape[1])))
    di, dj = A_shape[0] // iblocks, B_shape[1] // jblocks
    blocks = [(i, i + di - 1, j, j + dj - 1) for i in range(0, A_shape[0], di)
              for j in range(0, B_shape[1], dj)]
    started = time.time()
    boss = run_as_server(common_instructions={},
                         individual_instructions=dict(i1=[x[0] for x in blocks],
                                                      i2=[x[1] for x in blocks],
                                                      j1=[x[2] for x in blocks],
                                                      j2=[x[3] for x in blocks]),
                         scheduler=footprints.proxy.scheduler(limit="threads", max_threads=4),
                         verbose=verbose, sharedmemory_common_instructions=dict(A=a, B=b, C=c))
    boss.wait_till_finished()
    print("Exec in:", time.time() - started)
    print(c[:, :])
