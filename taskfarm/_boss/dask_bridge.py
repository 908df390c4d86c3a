"""Dask's threads to the boss loop's one ``poll()``, in the boss process: the client,
the farm's Dask tasks and their results, the cluster's comings and goings, and the
signals sent to hosted processes. Mechanism for :mod:`taskfarm._boss.dask_backend`.

Dask reports in threads of its own (a future's done-callback, a scheduler event): each
such report is only queued, and a byte written to a pipe the loop watches; the loop's
thread then handles what was queued, in order. So every backend event (``on_messages``,
``on_exit``) happens in the loop's thread, as with local processes.
"""

from __future__ import annotations

import functools
import itertools
import os
import queue
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import distributed

from taskfarm._boss.backend import Watcher
from taskfarm._worker import dask_host

# distributed's API is only partly annotated: its objects are held as Any here.
_Client: Any = distributed.Client
# How long closing the client may take at the end of the farm (seconds).
CLOSE_TIMEOUT = 5.0
# What a Dask task ended with: (True, its result) or (False, the exception).
Result = tuple[bool, Any]
Then = Callable[[Any, Result], None]


class DaskBridge:
    """The boss's client of the cluster at ``address``, for the farm ``name`` (its
    plugin's name). ``on_event(msg)`` is called in the loop for each worker that joins
    (``msg["action"] == "add-worker"``) or leaves (``"remove-worker"``)."""

    def __init__(self, address: str, name: str, watcher: Watcher,
                 on_event: Callable[[dict[str, Any]], None]) -> None:
        self.address, self.name = address, name
        self._watcher, self._on_event = watcher, on_event
        self._keys = itertools.count()
        self._live: dict[str, Any] = {}          # key -> future whose result is awaited
        self._inbox: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._ready: deque[tuple[Any, ...]] = deque()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._wake_lock = threading.Lock()   # no byte written once the pipe is closed
        watcher.watch(self._wake_r, self._on_wake)
        # client.run blocks: signals leave from a thread of their own.
        self._signaller = ThreadPoolExecutor(1, thread_name_prefix="taskfarm-dask-signal")
        self.client: Any = _Client(address, set_as_default=False)
        self.client.subscribe_topic("all", self._on_cluster_event)

    def submit(self, worker: str, fn: Callable[..., Any], args: tuple[Any, ...], then: Then,
               slot: object = None) -> Any:
        """Run ``fn(name, *args)`` as a Dask task on ``worker`` (there and nowhere else,
        without Dask's retries); ``then(future, result)`` is called in the loop once
        it is done, unless the future was dropped first. Returns the future."""
        key = f"taskfarm-{fn.__name__}-{self.name}-{next(self._keys)}"
        future = self.client.submit(fn, self.name, *args, key=key, pure=False, retries=0,
                                    workers=[worker], allow_other_workers=False)
        self._live[key] = future
        future.add_done_callback(functools.partial(self._arrived, then, slot))
        return future

    def drop(self, future: Any) -> None:
        """Forget a future: its result is not wanted (and not fetched, if not yet)."""
        if future is not None and self._live.pop(future.key, None) is not None:
            future.release()

    def signal(self, worker: str, token: str, sig: int) -> None:
        """Signal the hosted process ``token`` names on ``worker``, without waiting."""
        self._signaller.submit(self.client.run, dask_host.signal_hosted, self.name, token,
                               int(sig), workers=[worker], on_error="ignore")

    def later(self, slot: object, action: Callable[[], None]) -> None:
        """Call ``action()`` in the loop at its next wake-up (or drain of ``slot``)."""
        self._queue((slot, lambda _future, _result: action(), None, None))

    def deliver(self, only: object = None) -> None:
        """Handle what Dask reported, in order (``only``: the results submitted for
        that slot; the rest waits)."""
        while True:
            try:
                self._ready.append(self._inbox.get_nowait())
            except queue.Empty:
                break
        kept: deque[tuple[Any, ...]] = deque()
        while self._ready:
            item = self._ready.popleft()
            slot, then, future, result = item
            if only is not None and slot is not only:
                kept.append(item)
                continue
            if future is not None:
                if self._live.pop(future.key, None) is None:
                    continue    # dropped meanwhile
                future.release()   # its result is here: Dask may forget it
            then(future, result)
        self._ready.extendleft(reversed(kept))

    def close(self, ending: Callable[[Any], None]) -> None:
        """Call ``ending(client)`` (the last words to the cluster), then release every
        future, close the client and stop watching."""
        try:
            if self.client.status == "running":   # else the cluster is gone: no last words
                ending(self.client)
        finally:
            for future in self._live.values():
                future.release()
            self._live.clear()
            self._signaller.shutdown(wait=True)
            try:   # first: the scheduler would write its event to a closed comm
                self.client.unsubscribe_topic("all")
            except Exception:
                pass
            try:
                self.client.close(timeout=CLOSE_TIMEOUT)
            except Exception:
                pass
            self._watcher.unwatch(self._wake_r)
            with self._wake_lock:
                os.close(self._wake_r)
                os.close(self._wake_w)
                self._wake_w = -1

    # ---- in Dask's threads --------------------------------------------------------------

    def _arrived(self, then: Then, slot: object, future: Any) -> None:
        """A future is done (Dask's callback thread): fetch its result, queue it."""
        if future.key not in self._live:
            return
        try:
            result: Result = (True, future.result())
        except BaseException as exc:
            result = (False, exc)
        self._queue((slot, then, future, result))

    def _on_cluster_event(self, event: tuple[float, Any]) -> None:
        """A scheduler event (the client's thread): workers that join or leave."""
        msg = event[1]
        if isinstance(msg, dict) and msg.get("action") in ("add-worker", "remove-worker") \
                and isinstance(msg.get("worker"), str):
            self._queue((None, lambda _, m: self._on_event(m), None, msg))

    def _queue(self, item: tuple[Any, ...]) -> None:
        self._inbox.put(item)
        with self._wake_lock:
            if self._wake_w < 0:
                return   # closed
            try:
                os.write(self._wake_w, b"\0")
            except BlockingIOError:
                pass     # full: the loop wakes anyway

    # ---- in the loop --------------------------------------------------------------------

    def _on_wake(self, fd: int) -> None:
        try:
            while os.read(fd, 4096):
                pass
        except BlockingIOError:
            pass
        self.deliver()
