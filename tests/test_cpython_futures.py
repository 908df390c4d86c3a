"""CPython 3.11's own ``test_concurrent_futures``, run against ``taskfarm.Executor``.

The CPython file is fetched at test time by ``tests/cpython_futures/fetch.sh`` (from
Debian's ``libpython3.11-testsuite``; never copied here). Where it cannot be had (no
apt-get or dpkg-deb, no network), this module is skipped and says why. The adapter
(``tests/cpython_futures/adapter.py``) substitutes the executor class and lists each
excluded test with its reason and its public-API replacement.
"""

from __future__ import annotations

import logging
import multiprocessing.resource_tracker
from collections.abc import Iterator

import pytest
from cpython_futures import adapter

try:
    _CPYTHON = adapter.load(adapter.fetch())
except adapter.Unavailable as exc:
    pytest.skip(f"CPython's test_concurrent_futures cannot be had: {exc}",
                allow_module_level=True)

globals().update(adapter.build_classes(_CPYTHON))

# A Manager under the spawn context (test_ressources_gced_in_workers) starts
# multiprocessing's resource tracker, which lives as long as this program: started
# now, it is not taken for a process a test left behind.
multiprocessing.resource_tracker.ensure_running()


@pytest.fixture(autouse=True)
def log_as_unittest_does() -> Iterator[None]:
    """Records of ``concurrent.futures`` reach the stderr of the moment, as they do
    under unittest (no handler on the root logger there): pytest's log capture would
    take them from tests that read stderr."""
    logger = logging.getLogger("concurrent.futures")
    logger.addHandler(logging.lastResort)  # type: ignore[arg-type]
    propagate, logger.propagate = logger.propagate, False
    yield
    logger.propagate = propagate
    logger.removeHandler(logging.lastResort)  # type: ignore[arg-type]
