"""``DaskBackend``: run a farm's tasks on a Dask cluster. Runs in the main program; the
boss side is :mod:`taskfarm._boss.dask_backend`, the Dask side
:mod:`taskfarm._worker.dask_host` (``docs/scaling.md`` tells the whole story).

The main program only names the cluster: the boss process connects its own client
to it, so nothing of the farm's traffic goes through the main program.
"""

from __future__ import annotations

import socket
import uuid
from typing import Any

# Options of LocalCluster that the Dask backend sets itself.
_FIXED = {"processes": True}
_DEFAULTS = {"threads_per_worker": 1}
# How long Boss() tries to reach a scheduler given by address before saying it cannot.
CONNECT_CHECK = 5.0


class DaskBackend:
    """Where tasks run: the workers of a Dask cluster, each hosting one taskfarm worker
    process. Pass it as ``backend=`` to :class:`Boss`, ``run_as_server`` or
    ``batch_main``; the Worker classes, instructions, schedulers, reports and control
    signals stay the same.

    Args:
        address: the address of a running Dask scheduler (``"tcp://host:8786"``).
        cluster: a Dask cluster object (``LocalCluster``,
            ``dask_jobqueue.SLURMCluster``, ...): its scheduler is used. It is not
            closed by the farm.
        **local_cluster_kwargs: with neither ``address`` nor ``cluster``, a
            ``distributed.LocalCluster(processes=True, threads_per_worker=1, ...)``
            is started here with these options (``n_workers=4``, say). It lives
            while a farm uses it: it ends when the last Boss using it closes, or at
            :meth:`close` (or the end of a ``with`` block).

    Retries are taskfarm's: Dask's own are off for the farm's tasks, and a cluster
    started here never reruns a task whose worker died (``allowed-failures`` 0: the
    task fails at once, and taskfarm decides). For a cluster given by address or
    object, set ``distributed.scheduler.allowed-failures: 0`` in its configuration.

    Raises:
        ImportError: ``dask.distributed`` is not installed (``pip install
            "taskfarm[dask]"``).
        TypeError, ValueError: conflicting or invalid arguments.
    """

    def __init__(self, address: str | None = None, cluster: Any = None,
                 **local_cluster_kwargs: Any) -> None:
        try:
            import distributed  # noqa: F401 - checked here, used by the boss
        except ImportError as exc:
            raise ImportError("DaskBackend needs dask.distributed: pip install "
                              "'taskfarm[dask]'") from exc
        if address is not None and cluster is not None:
            raise ValueError("DaskBackend takes address= or cluster=, not both")
        if local_cluster_kwargs and (address is not None or cluster is not None):
            raise TypeError(f"DaskBackend: {', '.join(sorted(local_cluster_kwargs))} "
                            "configure the LocalCluster it starts when given neither "
                            "address= nor cluster=")
        if local_cluster_kwargs.get("processes", True) is not True:
            raise ValueError("DaskBackend needs worker processes (processes=True): each "
                             "Dask worker hosts a taskfarm worker process")
        if cluster is not None:
            address = getattr(cluster, "scheduler_address", None)
            if not isinstance(address, str):
                raise TypeError(f"cluster={cluster!r} is not a Dask cluster (it has no "
                                "scheduler_address)")
        elif address is not None and not isinstance(address, str):
            raise TypeError(f"address must be a str such as 'tcp://host:8786', not "
                            f"{type(address).__name__}")
        self.cluster: Any = cluster
        self.address: str | None = address
        self._kwargs = {**_DEFAULTS, **local_cluster_kwargs, **_FIXED}
        self._owns = address is None   # it starts (and ends) a LocalCluster
        self._users = 0
        if self._owns:
            self._start()   # a bad keyword is an error here, not in the boss

    def _start(self) -> None:
        import dask
        import distributed

        # Retries are taskfarm's: the scheduler must not rerun a task itself when the
        # worker running it dies.
        local_cluster: Any = distributed.LocalCluster   # only partly annotated
        with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
            self.cluster = local_cluster(**self._kwargs)
        self.address = self.cluster.scheduler_address

    def boss_configuration(self) -> tuple[str, dict[str, Any]]:
        """What the boss process needs to drive the cluster (called by Boss)."""
        if self._owns and self.cluster is None:
            self._start()   # ended by an earlier Boss: a new one for this one
        assert self.address is not None
        _check_reachable(self.address)
        self._users += 1
        return "dask", {"address": self.address, "name": f"taskfarm-{uuid.uuid4().hex}"}

    def close(self) -> None:
        """A farm using this backend ended (called by Boss): the LocalCluster it started
        ends with the last such farm. A cluster given to it is left running."""
        self._users = max(0, self._users - 1)
        if self._users == 0:
            self._end()

    def _end(self) -> None:
        if self._owns and self.cluster is not None:
            cluster, self.cluster, self.address = self.cluster, None, None
            cluster.close()

    # Why set_instructions refuses a SharedArray on this backend.
    shared_refusal = ("a SharedArray is shared memory of one machine, which DaskBackend "
                      "refuses: tasks run on the Dask workers' machines. Give the numpy "
                      "array itself (it is pickled to each task)")

    def check_farm(self, scheduler: Any, isolated: bool = False) -> None:
        """Refuse what does not cross machines, at the call that asks for it: a
        scheduler that pins processes to CPUs (``binded=True``) or that reads this
        machine's load (``PoliteScheduler``). Raises ValueError."""
        from schedulers import AllOf, PoliteScheduler

        parts = scheduler.schedulers if isinstance(scheduler, AllOf) else (scheduler,)
        for part in parts:
            if getattr(part, "binded", False):
                raise ValueError(f"{part!r} pins worker processes to CPUs (binded=True), "
                                 "which DaskBackend refuses: this machine's CPU numbers "
                                 "mean nothing on a Dask worker. Use binded=False")
            if isinstance(part, PoliteScheduler):
                raise ValueError(f"{part!r} measures this machine's load, which DaskBackend "
                                 "refuses: tasks run on the Dask workers' machines. Use "
                                 "MaxThreadsScheduler or MaxMemoryScheduler")

    def __enter__(self) -> DaskBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self._users = 0
        self._end()

    def __repr__(self) -> str:
        where = self.address or "no cluster"
        return f"DaskBackend({where}{', its own LocalCluster' if self._owns else ''})"


def _check_reachable(address: str) -> None:
    """Raise ConnectionError, at the Boss() call, when nothing answers at a TCP
    scheduler address (the boss's client would wait 30 s, then die)."""
    from distributed.comm.addressing import parse_address, parse_host_port

    scheme, location = parse_address(address)
    if scheme not in ("tcp", "tls"):
        return
    host, port = parse_host_port(location)
    try:
        socket.create_connection((host, port), timeout=CONNECT_CHECK).close()
    except OSError as exc:
        raise ConnectionError(f"no Dask scheduler answers at {address} ({exc}): start "
                              "one, or give DaskBackend the right address") from exc
