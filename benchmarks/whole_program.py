"""Whole programs as users run them: a script timed from interpreter start to exit,
taskfarm against ``multiprocessing.Pool``, ``concurrent.futures.ProcessPoolExecutor``
and loky, for 1, 100 and 5,000 tiny tasks (``x + 1``, 2 workers), and the detector
example; alternating runs, medians, ratios to Pool.

    python benchmarks/whole_program.py [--runs 7] [--sizes 1 100 5000]

Each script runs in a fresh interpreter with bytecode caching on (the modules are
compiled once first, as ``pip install`` does): a variable such as
``PYTHONDONTWRITEBYTECODE`` in the environment would otherwise make every run compile
taskfarm again and measure that. What is installed matters too: an editable install
(``pip install -e``) costs every interpreter its import hook; measure ``pip install .``.

Goals (issue: performance round two): a one-task script <= 1.5x the Pool script; a
5,000-task script's throughput >= 1.0x Pool's.
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SCRIPTS = {
    "taskfarm": """
import taskfarm
from schedulers import MaxThreadsScheduler

class Add(taskfarm.Worker):
    x: int

    def task(self):
        return self.x + 1

if __name__ == "__main__":
    report = taskfarm.batch_main({{}}, {{"x": list(range({n}))}}, worker=Add,
                                 scheduler=MaxThreadsScheduler(2), print_report=None,
                                 progress=False)
    assert len(report.tasks) == {n}
""",
    "Pool": """
import multiprocessing

def add(x):
    return x + 1

if __name__ == "__main__":
    with multiprocessing.Pool(2) as pool:
        assert len(list(pool.imap_unordered(add, range({n})))) == {n}
""",
    "ProcessPoolExecutor": """
from concurrent.futures import ProcessPoolExecutor

def add(x):
    return x + 1

if __name__ == "__main__":
    with ProcessPoolExecutor(2) as pool:
        assert len(list(pool.map(add, range({n})))) == {n}
""",
    "loky": """
from loky import get_reusable_executor

def add(x):
    return x + 1

if __name__ == "__main__":
    pool = get_reusable_executor(max_workers=2)
    assert len(list(pool.map(add, range({n})))) == {n}
    pool.shutdown(wait=True)
""",
}


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(":")
    return env


def available(peer: str) -> bool:
    if peer != "loky":
        return True
    try:
        import loky  # noqa: F401
    except ImportError:
        return False
    return True


def timed(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{command} failed:\n{done.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 100, 5000])
    parser.add_argument("--no-example", action="store_true")
    args = parser.parse_args()
    for package in ("taskfarm", "schedulers"):
        compileall.compile_dir(str(ROOT / package), quiet=1)
    env = environment()
    peers = [p for p in SCRIPTS if available(p)]
    with tempfile.TemporaryDirectory() as tmp:
        print(f"whole scripts, 2 workers, median of {args.runs} alternating runs "
              f"({sys.executable})")
        for n in args.sizes:
            files = {}
            for peer in peers:
                files[peer] = Path(tmp, f"{peer}_{n}.py")
                files[peer].write_text(SCRIPTS[peer].format(n=n))
            times: dict[str, list[float]] = {p: [] for p in peers}
            for peer in peers:   # once each, unmeasured: the page cache warms up
                timed([sys.executable, str(files[peer])], env)
            for _ in range(args.runs):
                for peer in peers:
                    times[peer].append(timed([sys.executable, str(files[peer])], env))
            pool = statistics.median(times["Pool"])
            print(f"  {n:>5} tiny tasks:")
            for peer in peers:
                median = statistics.median(times[peer])
                print(f"    {peer:<20} {median:7.3f} s   {median / pool:5.2f}x Pool's time"
                      f"   ({n / median:9,.0f} tasks/s)")
        if not args.no_example:
            example = [sys.executable, str(ROOT / "examples" / "calibrate_detector.py"),
                       "--quiet"]
            runs = [timed(example, env) for _ in range(max(3, args.runs // 2))]
            print(f"  examples/calibrate_detector.py --quiet: median "
                  f"{statistics.median(runs):.2f} s")


if __name__ == "__main__":
    main()
