"""Fetch taylorism's own test suite and point it at ``taskfarm.taylorism``.

taylorism 1.1.0's ``tests/test_taylorism.py`` is under CeCILL-C, so it is not kept
here: this module downloads the sdist from PyPI with pip (cached, its SHA-256
checked), extracts that file, replaces only its two import lines::

    import taylorism                                  -> import taskfarm.taylorism as taylorism
    from taylorism import examples, schedulers, ...   -> from taskfarm.taylorism import ...

and writes the result where asked. Run it alone to look at the adapted file::

    python tests/taylorism_suite/fetch_and_adapt.py /tmp/taylorism-suite

The cache is ``$TASKFARM_TAYLORISM_CACHE``, else ``~/.cache/taskfarm/taylorism``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
from pathlib import Path

VERSION = "1.1.0"
SDIST = f"taylorism-{VERSION}.tar.gz"
SHA256 = "4f1d436e63a026147ee1cd3786841afbaffd5bf3271817a0b8c4384ecd5389de"
MEMBER = f"taylorism-{VERSION}/tests/test_taylorism.py"
# The only lines changed, each found exactly once.
IMPORTS = {
    "import taylorism": "import taskfarm.taylorism as taylorism",
    "from taylorism import examples, schedulers, taylorism_log":
        "from taskfarm.taylorism import examples, schedulers, taylorism_log",
}
PIP_TIMEOUT = 300   # seconds for the download (pip builds the sdist's metadata)


class Unavailable(Exception):
    """The sdist cannot be had here (no network, no pip): the suite cannot run."""


def cache_dir() -> Path:
    configured = os.environ.get("TASKFARM_TAYLORISM_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "taskfarm" / "taylorism"


def _checked(path: Path) -> bool:
    return path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == SHA256


def fetch_sdist(cache: Path | None = None) -> Path:
    """The taylorism sdist, downloaded with pip unless already in ``cache``.

    Raises Unavailable when pip cannot get it, ValueError when what it got is not the
    expected file."""
    cache = cache or cache_dir()
    path = cache / SDIST
    if _checked(path):
        return path
    cache.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", f"taylorism=={VERSION}", "--no-deps",
               "--no-binary", ":all:", "--disable-pip-version-check", "-d", str(cache)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Unavailable(f"could not run pip to download taylorism {VERSION}: {exc}") from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise Unavailable(f"pip could not download taylorism {VERSION} (no network to PyPI?): "
                          + " | ".join(tail))
    if not _checked(path):
        raise ValueError(f"{path} is not taylorism {VERSION}'s sdist (SHA-256 differs)")
    return path


def adapt(source: str) -> str:
    """``source`` with only its taylorism import lines pointed at taskfarm.taylorism."""
    lines = source.splitlines(keepends=True)
    for old, new in IMPORTS.items():
        where = [i for i, line in enumerate(lines) if line.rstrip("\r\n") == old]
        if len(where) != 1:
            raise ValueError(f"expected the line {old!r} once in the suite, found it "
                             f"{len(where)} times: the suite is not taylorism {VERSION}'s")
        ending = lines[where[0]][len(old):]
        lines[where[0]] = new + ending
    return "".join(lines)


def write_adapted(directory: Path, cache: Path | None = None) -> Path:
    """Write the adapted suite as ``directory/test_taylorism.py``; return its path."""
    with tarfile.open(fetch_sdist(cache)) as archive:
        member = archive.extractfile(MEMBER)
        if member is None:
            raise ValueError(f"{SDIST} has no {MEMBER}")
        source = member.read().decode("utf-8")
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / "test_taylorism.py"
    target.write_text(adapt(source), encoding="utf-8")
    return target


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} OUTPUT_DIRECTORY")
    try:
        print(write_adapted(Path(sys.argv[1])))
    except Unavailable as exc:
        sys.exit(str(exc))
