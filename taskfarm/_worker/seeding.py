"""Reproducible seeds: with ``Boss(seed=N)`` each task gets a seed derived from the run
seed and its name alone, so the same seed and names give the same values whatever the
number of workers, the order of execution or the start method. Runs in worker
processes only.
"""

from __future__ import annotations

# hashlib, random and numpy are imported by the functions: a farm without a seed
# never needs them, and the boss (which preloads this module) starts faster.


def derive_seed(run_seed: int, name: str) -> int:
    """A 64-bit seed for the task ``name`` of the run seeded ``run_seed``: numpy's
    SeedSequence over the run seed and the name's SHA-256, so that nearby run seeds
    and similar names give unrelated streams."""
    import hashlib

    import numpy

    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).digest()
    words = [int.from_bytes(digest[i:i + 4], "little") for i in range(0, 32, 4)]
    sequence = numpy.random.SeedSequence([run_seed, *words])
    return int(sequence.generate_state(1, numpy.uint64)[0])


def seed_globals(seed: int) -> None:
    """Seed the global generators a task may use without asking: ``random`` and the
    legacy ``numpy.random`` state."""
    import random

    import numpy

    random.seed(seed)
    numpy.random.seed(seed % (1 << 32))
