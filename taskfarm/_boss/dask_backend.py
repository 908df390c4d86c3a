"""The Dask backend, in the boss process: tasks run in taskfarm worker processes hosted
by the workers of a Dask cluster, one per Dask worker (see
:mod:`taskfarm._worker.dask_host` for the Dask side). Implements the loop's
:class:`~taskfarm._boss.backend.Backend` interface; knows Dask futures and the
termination policy, nothing of schedulers or error policy.

::

    BossLoop ── acquire/give/flush/stop ──> DaskSlots ── Client.submit (one batch) ──> Dask
        ^                                      │  ^          Client.run (signals)     worker
        │ on_messages / on_exit                │  │ self-pipe, watched by the loop's poll()
        └──────────────────────────────────────┘  └── Dask's callback thread: a future done,
                                                      a worker added or lost

*Slots.* A slot is one Dask worker with the process it hosts (its pid, and a token
telling it from the process that replaces it). The boss decides which worker runs what
(one slot per worker, pinned there); the cluster decides which workers exist.

*Batches.* The tasks given to a slot since its last flush travel as one Dask task
(:func:`~taskfarm._worker.dask_host.run_batch`), at most one in flight per slot; what
is given meanwhile leaves as soon as it returns. Tiny tasks, which the boss queues
many deep (prefetch), thus cost one Dask round trip per batch, not per task.

*Events.* Dask calls back in a thread of its own: each callback only queues what it
learned and writes a byte to a pipe the loop's ``poll()`` watches; the loop's thread
then delivers outcomes (``on_messages``), and a hosted process's death (its exit code
or signal, from the host's ``waitpid``) or a lost Dask worker (``on_exit``). Futures
are released as soon as their outcome is delivered.

*Stopping.* A slot running a batch is stopped by signalling its hosted process through
``client.run`` (SIGTERM, then SIGKILL ``TERMINATE_GRACE`` later): the Dask worker
survives. A retired slot (isolated, or past ``max_tasks_per_child``) has its process
replaced. Dask's own retries are off. *Refused*, as they do not cross machines: CPU
binding (a SchedulerError ends the run), SharedArrays (:mod:`.dask_batches`).
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import signal
import sys
from collections import deque
from collections.abc import Iterator
from typing import Any

import distributed

from taskfarm._boss.backend import BackendEvents, Doom, NoCapacity, Watcher
from taskfarm._boss.dask_batches import received, take_out, without_shared
from taskfarm._boss.dask_bridge import DaskBridge, Result
from taskfarm._boss.deadlines import Deadlines
from taskfarm._boss.tasks import Task
from taskfarm._common.errors import SchedulerError
from taskfarm._common.logs import LEVEL_VARIABLE
from taskfarm._common.messages import RunTask, Skipped, WorkerClassSpec
from taskfarm._common.processes import (
    CAPTURE_VARIABLE,
    SEED_VARIABLE,
    TERMINATE_GRACE,
    ExitInfo,
)
from taskfarm._common.wire import dumps
from taskfarm._worker import dask_host

_LOG = logging.getLogger("taskfarm.boss")
# How long the cluster gets to end the farm's processes at the boss's exit.
ENDING_TIMEOUT = dask_host.CLOSE_WAIT + TERMINATE_GRACE + 4.0


def lost(address: str) -> ExitInfo:
    return ExitInfo(None, None, f"was lost with Dask worker {address} (lost worker: its "
                                "process or node died, or it left the cluster)")


class BusyCluster(NoCapacity):
    """Every Dask worker has a slot: the task waits for one (expected, not warned)."""


class DaskWorker:
    """A Dask worker, as the boss knows it."""

    __slots__ = ("address", "broken", "identity", "pending", "slot")

    def __init__(self, address: str) -> None:
        self.address = address
        self.identity: dask_host.Identity | None = None   # its hosted process, once known
        self.slot: DaskSlot | None = None
        self.pending: Any = None    # an identify or replace task of its own, in flight
        self.broken = False         # its host failed: not used again

    @property
    def free(self) -> bool:
        return (self.identity is not None and self.slot is None and self.pending is None
                and not self.broken)


class DaskSlot:
    """One Dask worker's hosted process (a :class:`~taskfarm._boss.backend.Slot`)."""

    __slots__ = ("classes", "commons", "doom", "ended", "inflight", "isolated", "number",
                 "outgoing", "pid", "ran", "stopping", "tasks", "token", "worker")

    def __init__(self, worker: DaskWorker, isolated: bool, number: int) -> None:
        assert worker.identity is not None
        self.worker = worker
        self.pid, self.token = worker.identity
        self.isolated, self.number = isolated, number
        self.ran = 0
        self.tasks: deque[Task] = deque()
        self.doom: Doom | None = None
        self.classes: set[int] = set()
        self.commons: set[int] = set()
        self.outgoing: list[RunTask] = []   # given since its last batch left
        self.inflight: Any = None           # the future of its batch running
        self.stopping = False
        self.ended = False

    def __repr__(self) -> str:
        return (f"<DaskSlot {self.worker.address} pid={self.pid} "
                f"tasks={[t.tid for t in self.tasks]}>")


class _QuietBusy(logging.Filter):
    """A full cluster is the normal state of a farm larger than it: the launcher's
    warning for it is left out (said once, at INFO, by the backend)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        return not (isinstance(args, tuple) and args and isinstance(args[0], BusyCluster))


class DaskSlots:
    """Slots on the workers of the Dask cluster at ``options["address"]``."""

    def __init__(self, options: dict[str, Any], watcher: Watcher, events: BackendEvents,
                 deadlines: Deadlines) -> None:
        self._events, self._deadlines = events, deadlines
        self._name: str = options["name"]    # the plugin's, one per farm
        self._workers: dict[str, DaskWorker] = {}
        self._slots: dict[int, DaskSlot] = {}    # number -> slot alive
        self._idle: list[DaskSlot] = []
        self._unsent: list[DaskSlot] = []
        self._told_busy = False
        self._quiet = _QuietBusy()
        _LOG.addFilter(self._quiet)
        self._dask = DaskBridge(options["address"], self._name, watcher, self._cluster_event)
        client = self._dask.client
        environ = {name: os.environ.get(name)
                   for name in (LEVEL_VARIABLE, SEED_VARIABLE, CAPTURE_VARIABLE)}
        client.register_plugin(dask_host.TaskfarmHost(self._name, environ, list(sys.path)),
                               name=self._name)
        for address, identity in client.run(dask_host.identify, self._name,
                                            on_error="return").items():
            worker = self._workers.setdefault(address, DaskWorker(address))
            self._identified(worker, None, (True, identity))

    # ---- the Backend interface ----------------------------------------------------------

    def acquire(self, spec: WorkerClassSpec, isolated: bool) -> DaskSlot:
        if not isolated and self._idle:
            return self._idle.pop()
        free = next((w for w in self._workers.values() if w.free), None)
        if free is not None:   # its process is fresh: a slot's end replaces it
            used = {s.number for s in self._slots.values()}
            number = next(n for n in itertools.count() if n not in used)
            slot = self._slots[number] = free.slot = DaskSlot(free, isolated, number)
            return slot
        if isolated and self._idle:   # an isolated task needs a fresh process
            self.retire(self._idle.pop(0))
        if not any(not w.broken for w in self._workers.values()):
            raise NoCapacity(f"no Dask worker at {self._dask.address} can host a taskfarm "
                             "worker process yet: the farm waits for one to join")
        if not self._told_busy:
            _LOG.info("all %d Dask workers are busy: tasks wait for one (size the "
                      "scheduler to the cluster to avoid it)", len(self._workers))
            self._told_busy = True
        raise BusyCluster(f"all {len(self._workers)} Dask workers are busy")

    def give(self, slot: DaskSlot, msg: RunTask) -> None:
        if msg.settings and msg.settings.get("cpu") is not None:
            raise SchedulerError(
                "the scheduler pins worker processes to CPUs (binded=True), which the Dask "
                "backend refuses: CPU numbers of the boss's machine mean nothing on a Dask "
                "worker's. Make the scheduler with binded=False")
        msg = without_shared(msg)
        if not slot.outgoing:
            self._unsent.append(slot)
        slot.outgoing.append(msg)
        slot.classes.add(msg.class_key)
        slot.commons.add(msg.batch_id)
        slot.commons.difference_update(msg.forget)

    def flush(self) -> None:
        for slot in self._unsent:
            if slot.outgoing and slot.inflight is None and not slot.stopping \
                    and not slot.ended:
                self._send(slot)
        self._unsent.clear()

    def take_back(self, slot: DaskSlot, tid: int) -> None:
        """A task not sent yet is taken back (Skipped, at the next wake-up); one in the
        batch running runs, and reports as usual."""
        for index, msg in enumerate(slot.outgoing):
            if msg.tid == tid:
                take_out(slot.outgoing, index, slot.classes, slot.commons)
                self._dask.later(slot, lambda: None if slot.ended else
                                 self._events.on_messages(slot, [Skipped(tid)]))
                return

    def drain(self, slot: DaskSlot) -> None:
        self._dask.deliver(slot)

    def idle(self, slot: DaskSlot) -> None:
        if slot.isolated:
            self.retire(slot)
        elif not slot.ended and not slot.stopping and slot not in self._idle:
            self._idle.append(slot)

    def release(self, names: tuple[str, ...]) -> None:
        """Nothing: SharedArrays never reach a Dask worker."""

    def retire(self, slot: DaskSlot) -> None:
        if slot in self._idle:
            self._idle.remove(slot)
        if not slot.ended and slot.worker.pending is None:
            self._replace(slot, graceful=True)

    def stop(self, slot: DaskSlot) -> None:
        if slot.ended or slot.stopping:
            return
        slot.stopping = True
        if slot in self._idle:
            self._idle.remove(slot)
        batch = slot.inflight
        if batch is None:
            if slot.worker.pending is None:
                self._replace(slot, graceful=False)
            return
        self._signal(slot, signal.SIGTERM)
        self._deadlines.after(TERMINATE_GRACE, lambda: self._signal(slot, signal.SIGKILL)
                              if slot.inflight is batch else None)

    def slots(self) -> Iterator[DaskSlot]:
        return iter(list(self._slots.values()))

    def shutdown(self, linger: bool) -> None:
        """End every hosted process (``linger``: once it has run what it was given),
        remove the farm's plugin, and close the client."""

        def ending(client: Any) -> None:
            try:   # bounded: a cluster that died with the main program never answers
                client.run(dask_host.close_host, self._name, linger, on_error="ignore",
                           callback_timeout=ENDING_TIMEOUT)
                client.unregister_worker_plugin(self._name)
            except Exception as exc:  # a cluster gone first: its processes went with it
                _LOG.info("the Dask cluster could not end the farm's processes: %s", exc)

        try:
            self._dask.close(ending)
        finally:
            _LOG.removeFilter(self._quiet)

    # ---- Dask tasks and what they tell ---------------------------------------------------

    def _send(self, slot: DaskSlot) -> None:
        msgs, slot.outgoing = slot.outgoing, []
        slot.inflight = self._dask.submit(
            slot.worker.address, dask_host.run_batch, (slot.token, dumps(*msgs), len(msgs)),
            functools.partial(self._batch_done, slot), slot)

    def _replace(self, slot: DaskSlot, graceful: bool) -> None:
        """End the slot's process (a retire, or a stop with no batch running); the
        slot ends, and its worker is free, once a new process is hosted."""
        worker = slot.worker
        worker.pending = self._dask.submit(worker.address, dask_host.replace,
                                           (slot.token, graceful),
                                           functools.partial(self._replaced, slot))

    def _batch_done(self, slot: DaskSlot, future: Any, result: Result) -> None:
        if slot.inflight is not future or slot.ended:
            return
        slot.inflight = None
        ok, value = result
        if not ok:
            self._failed(slot.worker, value)
            return
        frame, ending, identity = value
        msgs = received(frame)
        replaced = identity is None or identity[1] != slot.token
        gone = slot.worker.address not in self._workers
        if ending is None and not replaced:
            if slot.outgoing and not slot.stopping and not gone:
                self._send(slot)   # what was given meanwhile leaves now
            if msgs:
                self._events.on_messages(slot, msgs)
            if gone:
                self._end(slot, lost(slot.worker.address))
            elif slot.stopping and not slot.ended and slot.inflight is None \
                    and slot.worker.pending is None:
                self._replace(slot, graceful=False)   # it ended its tasks first
            return
        if msgs:
            self._events.on_messages(slot, msgs)
        self._identified(slot.worker, None, (True, identity))
        self._end(slot, ExitInfo(*ending) if ending is not None else ExitInfo(
            None, None, "was replaced before its tasks could run"))

    def _replaced(self, slot: DaskSlot, future: Any, result: Result) -> None:
        worker = slot.worker
        worker.pending = None
        ok, value = result
        if not ok:
            self._failed(worker, value)
            return
        ending, identity = value
        self._identified(worker, None, (True, identity))
        self._end(slot, ExitInfo(*ending) if ending is not None else ExitInfo(None, None))

    def _identified(self, worker: DaskWorker, future: Any, result: Result) -> None:
        """The process ``worker`` hosts now (or why it hosts none)."""
        worker.pending = None
        ok, identity = result
        if worker.address not in self._workers:
            return
        if not ok or not isinstance(identity, tuple):
            _LOG.warning("Dask worker %s cannot host a taskfarm worker process (%s): it "
                         "is not used", worker.address,
                         "its host is closed" if identity is None else identity)
            worker.broken = True
            return
        worker.identity = (int(identity[0]), str(identity[1]))

    def _cluster_event(self, msg: dict[str, Any]) -> None:
        """A Dask worker joined (its process is identified) or left (its slot ends)."""
        address = msg["worker"]
        if msg["action"] == "add-worker":
            if address not in self._workers:
                worker = self._workers[address] = DaskWorker(address)
                worker.pending = self._dask.submit(
                    address, dask_host.identify, (),
                    functools.partial(self._identified, worker))
                self._told_busy = False
            return
        gone = self._workers.pop(address, None)
        if gone is None:
            return
        self._dask.drop(gone.pending)
        slot = gone.slot
        # A batch that finished first is delivered first (its slot then ends, lost).
        if slot is not None and getattr(slot.inflight, "status", None) != "finished":
            self._end(slot, lost(address))

    def _failed(self, worker: DaskWorker, exc: BaseException) -> None:
        """A Dask task of the farm failed on ``worker``: the worker was lost (Dask
        says so, or will), or its host is broken."""
        slot = worker.slot
        if isinstance(exc, distributed.scheduler.KilledWorker) \
                or worker.address not in self._workers:
            self._workers.pop(worker.address, worker)
            info: ExitInfo = lost(worker.address)
        else:
            worker.broken = True
            _LOG.warning("Dask worker %s failed to run the farm's task (%s: %s): it is not "
                         "used", worker.address, type(exc).__name__, exc)
            info = ExitInfo(None, None, f"could not run on Dask worker {worker.address} "
                                        f"({type(exc).__name__}: {exc})")
        if slot is not None:
            self._end(slot, info)

    def _end(self, slot: DaskSlot, info: ExitInfo) -> None:
        """The slot's process ended: every outcome it sent was delivered first."""
        if slot.ended:
            return
        slot.ended = True
        if slot in self._idle:
            self._idle.remove(slot)
        slot.outgoing.clear()
        self._dask.drop(slot.inflight)
        slot.inflight = None
        if slot.worker.slot is slot:
            slot.worker.slot = None
        self._slots.pop(slot.number, None)
        self._events.on_exit(slot, info)

    def _signal(self, slot: DaskSlot, sig: int) -> None:
        self._dask.signal(slot.worker.address, slot.token, sig)
