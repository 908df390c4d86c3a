"""SharedArray: workers get a numpy array over the same memory, read-only by default,
and no segment outlives its Boss, even when the main program is killed."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from workers import UsesShared

import taskfarm
from schedulers import MaxThreadsScheduler

pytestmark = pytest.mark.usefixtures("start_method")

SHM = Path("/dev/shm")


def test_workers_read_the_array_without_being_able_to_change_it() -> None:
    shared = taskfarm.SharedArray(np.arange(1000, dtype=np.float64))
    report = taskfarm.batch_main({"data": shared}, {"row": [0, 1]}, worker=UsesShared,
                                 print_report=None)
    assert all(t.result == (499500.0, False) for t in report.tasks)
    failing = taskfarm.batch_main({"data": shared, "how": "write", "row": 3}, worker=UsesShared,
                                  on_error="continue", print_report=None)
    assert isinstance(failing.tasks[0].exception, ValueError)
    assert "read-only" in str(failing.tasks[0].exception)


def test_writable_arrays_take_each_tasks_rows() -> None:
    shared = taskfarm.SharedArray(shape=(6, 4), dtype=np.int64, writable=True)
    taskfarm.batch_main({"data": shared, "how": "write"}, {"row": list(range(6))},
                        worker=UsesShared, scheduler=MaxThreadsScheduler(2), print_report=None)
    assert (shared.array == np.arange(6)[:, None]).all()


def test_an_array_per_task_goes_through_the_boss_as_a_handle() -> None:
    arrays = [taskfarm.SharedArray(np.full(10, i, dtype=np.float64)) for i in range(3)]
    report = taskfarm.batch_main({}, {"data": arrays}, worker=UsesShared, print_report=None)
    assert sorted(t.result[0] for t in report.tasks) == [0.0, 10.0, 20.0]


def test_workers_do_not_copy_the_array() -> None:
    shared = taskfarm.SharedArray(np.ones(25 * 2**20, dtype=np.float64))  # 200 MB
    report = taskfarm.batch_main({"data": shared, "how": "uss"}, {"row": [0]},
                                 worker=UsesShared, print_report=None)
    total, growth = report.tasks[0].result
    assert total == shared.array.size
    assert growth < 0.05 * shared.nbytes, f"worker grew by {growth / 2**20:.0f} MiB"


def test_a_segment_lives_while_its_array_or_a_boss_holds_it() -> None:
    with taskfarm.Boss(workers=[UsesShared]) as boss:
        boss.set_instructions({"data": taskfarm.SharedArray(np.arange(10.0))})  # inline
        name = next(iter(boss._keeper.arrays))
        boss.make_them_work()
        report = boss.wait_till_finished(timeout=30)
        assert (SHM / name).exists()  # the report's instructions still hold it
    assert report.tasks[0].result[0] == 45.0
    assert boss._keeper.arrays == {}  # its tasks ended: the Boss holds it no longer
    del report, boss  # the reports (and the handle's records) hold the instructions
    gc.collect()
    assert not (SHM / name).exists()  # nothing holds it: removed
    kept = taskfarm.SharedArray(np.arange(10.0))
    for _ in range(2):  # one array, two farms
        report = taskfarm.batch_main({"data": kept}, worker=UsesShared, print_report=None)
        assert report.tasks[0].result[0] == 45.0
    assert (SHM / kept.name).exists()
    name = kept.name
    del kept, report  # the report holds the instructions, and so the array
    gc.collect()
    assert not (SHM / name).exists()  # removed when collected


def _mapped(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def test_a_service_sharing_a_new_array_each_stride_keeps_dev_shm_flat() -> None:
    """Each array is let go once its tasks ended and their reports were read: its
    segment is removed, and the workers unmap it (told with the next instructions)."""
    names: list[str] = []
    with taskfarm.Boss(MaxThreadsScheduler(2), workers=[UsesShared],
                       keep_reports=False) as boss:
        boss.make_them_work()
        for stride in range(6):
            array = taskfarm.SharedArray(np.full(1000, float(stride)))
            names.append(array.name)
            boss.set_instructions({"data": array}, {"row": [0, 1, 2, 3]})
            del array
            reports = list(boss.as_completed(timeout=30))
            assert [r.result[0] for r in reports] == [1000.0 * stride] * 4
            pids = {r.pid for r in reports if r.pid is not None}
            del reports
            gc.collect()
            assert not [n for n in names[:-1] if (SHM / n).exists()]  # only this stride's
            assert not (SHM / names[-1]).exists()  # ... and it too, once read
            if stride >= 2:  # the workers heard of the strides before the last one
                maps = "".join(_mapped(pid) for pid in pids)
                assert not [n for n in names[:-2] if n in maps], maps


def test_close_removes_the_segment_now_and_a_closed_array_is_refused() -> None:
    array = taskfarm.SharedArray(np.arange(4.0))
    array.close()
    assert array.closed and not (SHM / array.name).exists()
    assert array.array.sum() == 6.0  # still usable here
    array.close()  # twice: nothing more
    with taskfarm.Boss(workers=[UsesShared]) as boss, \
            pytest.raises(taskfarm.InstructionError, match="is closed"):
        boss.set_instructions({"data": array})


def test_no_segment_outlives_a_killed_main_program(tmp_path: Path) -> None:
    script = tmp_path / "main.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import numpy as np
        import taskfarm
        from workers import UsesShared
        shared = taskfarm.SharedArray(np.arange(10))
        boss = taskfarm.run_as_server({{"data": shared}}, worker=UsesShared)
        next(boss.as_completed(timeout=30))
        print(shared.name, boss.pid, flush=True)
        sys.stdin.readline()
    """))
    with subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                          stdin=subprocess.PIPE, text=True) as proc:
        name, boss_pid = proc.stdout.readline().split()
        assert (SHM / name).exists()
        os.kill(proc.pid, signal.SIGKILL)
    import psutil

    try:
        psutil.Process(int(boss_pid)).wait(timeout=5)
    except psutil.NoSuchProcess:
        pass
    assert not (SHM / name).exists()


def test_bad_shared_arrays() -> None:
    with pytest.raises(ValueError, match="needs data, or a shape"):
        taskfarm.SharedArray()
