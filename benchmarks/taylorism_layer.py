"""taylorism's own ``Sleeper`` example workers with tiny sleeps, through real taylorism
and through ``taskfarm.taylorism`` (the compatibility layer), in one run; and a worker
that SIGKILLs itself, which real taylorism never reports.

    python benchmarks/taylorism_layer.py [--tasks 1000] [--rounds 3]

Each contender runs in a fresh interpreter of its own (real taylorism and the layer
both register footprints classes of the same names, so one process cannot hold both),
rounds alternate, and the medians are compared. Timed: from making the Boss to
``wait_till_finished()`` returning, two tasks at a time (``max_threads=2``), each
``Sleeper(sleeping_time=0.001)``. Contenders:

- taylorism 1.1.0 (``pip install taylorism==1.1.0``, in the ``bench`` extra);
- the layer as shipped: a fresh process per task, forked from a copy of the main
  program (``fork_from_main=True, isolated=True``: what taylorism does);
- the layer reusing processes forked from the copy (``isolated=False``);
- the layer on taskfarm's own workers (``fork_from_main=False, isolated=False``).

Goal (issue: taylorism compatibility): at least 20x taylorism's throughput, and never
a hang where taylorism hangs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import os, signal, sys, time
    {imports}

    class Suicide(taylorism.Worker):
        _footprint = dict(attr=dict(suicide=dict(type=bool)))

        def _task(self):
            os.kill(os.getpid(), signal.SIGKILL)

    if __name__ == "__main__":
        scheduler = footprints.proxy.scheduler(limit="threads", max_threads=2)
        if sys.argv[1] == "kill":
            boss = taylorism.run_as_server({{}}, {{"suicide": [True]}}, scheduler=scheduler
                                           {options})
            try:
                boss.wait_till_finished()
                print("RESULT no error")
            except BaseException as exc:
                print("RESULT", type(exc).__name__)
            sys.exit(0)
        n = int(sys.argv[1])
        start = time.perf_counter()
        boss = taylorism.run_as_server({{"sleeping_time": 0.001}},
                                       {{"name": [f"s{{i}}" for i in range(n)]}},
                                       scheduler=scheduler {options})
        boss.wait_till_finished()
        elapsed = time.perf_counter() - start
        done = len(boss.get_report()["workers_report"])
        assert done == n, (done, n)
        print("RESULT", n / elapsed)
""")

REAL = "import footprints, taylorism\nfrom taylorism import examples"
LAYER = ("import footprints\nimport taskfarm.taylorism as taylorism\n"
         "from taskfarm.taylorism import examples")

CONTENDERS = {
    "taylorism 1.1.0": (REAL, ""),
    "layer (copy of main, a process per task)": (LAYER, ""),
    "layer (copy of main, processes reused)": (LAYER, ", isolated=False"),
    "layer (taskfarm workers, reused)": (LAYER, ", fork_from_main=False, isolated=False"),
}
# How long the SIGKILL check waits for an answer before calling it a hang (seconds).
HANG_AFTER = 20.0


def run(name: str, arg: str, timeout: float) -> str | None:
    """The RESULT a contender's script prints, or None if it did not answer in time."""
    imports, options = CONTENDERS[name]
    source = SCRIPT.format(imports=imports, options=options)
    # A session of its own: a contender that hangs is ended with every process it
    # started (taylorism's boss and workers outlive its main program).
    with subprocess.Popen([sys.executable, "-c", source, arg], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, start_new_session=True) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return None
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)   # nothing of it is left behind
    for line in out.splitlines():
        if line.startswith("RESULT "):
            return line[len("RESULT "):]
    raise RuntimeError(f"{name} failed:\n{err[-2000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    try:
        import taylorism  # noqa: F401
    except ImportError:
        sys.exit("taylorism is not installed: pip install taylorism==1.1.0 (extra 'bench')")
    rates: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    for _ in range(args.rounds):
        for name in CONTENDERS:
            result = run(name, str(args.tasks), timeout=600)
            assert result is not None, f"{name} did not finish"
            rates[name].append(float(result))
    base = statistics.median(rates["taylorism 1.1.0"])
    print(f"{args.tasks} Sleeper tasks (sleeping_time=0.001), 2 at a time, "
          f"median of {args.rounds} alternating rounds")
    print("| contender | tasks/s | x taylorism |\n| --- | --- | --- |")
    for name, values in rates.items():
        rate = statistics.median(values)
        print(f"| {name} | {rate:,.0f} | {rate / base:.1f} |")
    print(f"\nA worker that SIGKILLs itself (answer within {HANG_AFTER:.0f} s, else a hang):")
    for name in ("taylorism 1.1.0", "layer (copy of main, a process per task)"):
        answer = run(name, "kill", timeout=HANG_AFTER)
        print(f"- {name}: {'HANGS' if answer is None else 'raises ' + answer}")


if __name__ == "__main__":
    main()
