"""Run-time state of the simulated storage: paths, locks, pauses, users, space.

What SM and tapdisk coordinate on a real host through lock files, journals
and ``tap-ctl pause``, the simulator keeps here, in memory:

* **paths** -- the dom0 root directory (``<state_dir>/dom0``) under which
  absolute dom0 paths such as ``/var/run/sr-mount/<sr uuid>`` resolve;
* **SR locks** -- metadata operations on one SR (create, clone, snapshot,
  destroy, scan, garbage collection) run one at a time, like SM's SR lock;
* **taps** -- per-VDI pause locks with a generation counter: a writer that
  streams into a VDI (an import, a compute-domain write-back) holds the
  lock per chunk and re-opens the VDI's files when the generation moved, as
  tapdisk re-opens its chain after ``tap-ctl unpause``; clone, snapshot and
  garbage collection take the lock and bump the generation;
* **users** -- data-plane transfers register the VHD files they read or
  write; destroy and offline resize of a VDI in use fail with
  ``VDI_IN_USE`` (the transfer holds a dom0 attachment on a real host) and
  garbage collection leaves files in use alone until they are released;
* **space** -- bytes reserved by writers on thin SRs, so that concurrent
  writers cannot overrun ``physical_size`` (``SR_FULL``);
* **GC scheduling** -- a coalesce pass runs synchronously inside ``SR.scan``
  and in the background ``gc_delay`` seconds after a VDI was destroyed (or a
  transfer that held it up finished).
"""
from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ApiError

if TYPE_CHECKING:
    from .simulator import Simulator

LOG = logging.getLogger(__name__)

#: Default delay between a GC kick (VDI destroyed, transfer finished) and the pass.
GC_DELAY = 2.0


class Tap:
    """Pause lock and generation of one VDI's open files."""

    __slots__ = ("lock", "generation")

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.generation = 0


class StorageRuntime:
    """Shared run-time storage state of one simulator (``sim.storage_runtime``)."""

    def __init__(self, sim: Simulator, gc_delay: float = GC_DELAY) -> None:
        self.sim = sim
        #: Seconds between a GC kick and the background pass; tests lower it.
        self.gc_delay = gc_delay
        self._lock = threading.Lock()
        self._sr_locks: dict[str, threading.RLock] = {}
        self._taps: dict[str, Tap] = {}
        self._users: Counter[str] = Counter()
        self._reserved: Counter[str] = Counter()
        self._deferred: set[str] = set()
        self._timers: dict[str, threading.Timer] = {}
        self._running: dict[str, threading.Thread] = {}
        self._stopped = False
        #: Called with (sr ref) for a background GC pass; set by the file drivers.
        self.gc_runner: Callable[[str], None] | None = None
        #: VDI uuid -> callable writing a materialised device back (compute domain).
        self.syncers: dict[str, Callable[[], None]] = {}

    # -- paths -------------------------------------------------------------------
    @property
    def dom0_root(self) -> Path:
        """``<state_dir>/dom0``: where absolute dom0 paths resolve."""
        return Path(self.sim.state_dir) / "dom0"

    def host_path(self, dom0_path: str) -> Path:
        """The real path of an absolute dom0 path (``/var/run/sr-mount/x``)."""
        if not dom0_path.startswith("/"):
            raise ValueError(f"dom0 path {dom0_path!r} must be absolute")
        parts = [p for p in dom0_path.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise ValueError(f"dom0 path {dom0_path!r} must not contain '..'")
        return self.dom0_root.joinpath(*parts)

    @staticmethod
    def sr_mount(sr_uuid: str) -> str:
        """The dom0 path file-based SRs are mounted at."""
        return f"/var/run/sr-mount/{sr_uuid}"

    # -- locks -------------------------------------------------------------------
    def sr_lock(self, sr: str) -> threading.RLock:
        with self._lock:
            lock = self._sr_locks.get(sr)
            if lock is None:
                lock = self._sr_locks[sr] = threading.RLock()
            return lock

    def tap(self, vdi_uuid: str) -> Tap:
        with self._lock:
            tap = self._taps.get(vdi_uuid)
            if tap is None:
                tap = self._taps[vdi_uuid] = Tap()
            return tap

    @contextmanager
    def paused(self, *vdi_uuids: str) -> Iterator[None]:
        """Pause the writers of these VDIs; they re-open their files afterwards."""
        taps = [self.tap(u) for u in sorted(set(vdi_uuids))]
        for tap in taps:
            tap.lock.acquire()
        try:
            yield
        finally:
            for tap in reversed(taps):
                tap.generation += 1
                tap.lock.release()

    def sync(self, vdi_uuid: str) -> None:
        """Write a materialised compute-domain device back before its VDI is read."""
        syncer = self.syncers.get(vdi_uuid)
        if syncer is not None:
            syncer()

    # -- users of files ------------------------------------------------------------
    def acquire(self, file_uuids: list[str]) -> None:
        """Register a transfer reading or writing these VHD/volume files."""
        with self._lock:
            self._users.update(file_uuids)

    def release_use(self, sr: str, file_uuids: list[str]) -> None:
        """The transfer is over; a GC pass it held up runs now."""
        with self._lock:
            self._users.subtract(file_uuids)
            for uuid in file_uuids:
                if self._users[uuid] <= 0:
                    del self._users[uuid]
            kick = sr in self._deferred
        if kick:
            self.kick_gc(sr)

    @contextmanager
    def using(self, sr: str, file_uuids: list[str]) -> Iterator[None]:
        """``acquire`` for the duration of a ``with`` block."""
        self.acquire(file_uuids)
        try:
            yield
        finally:
            self.release_use(sr, file_uuids)

    def in_use(self, *file_uuids: str) -> bool:
        with self._lock:
            return any(self._users.get(u, 0) > 0 for u in file_uuids)

    def defer_gc(self, sr: str) -> None:
        """GC skipped files in use: run again when a transfer releases them."""
        with self._lock:
            self._deferred.add(sr)

    # -- space -------------------------------------------------------------------
    def reserve(self, sr: str, nbytes: int) -> None:
        """Reserve ``nbytes`` on a thin SR or fail with SR_FULL [requested, free]."""
        if nbytes <= 0:
            return
        db = self.sim.db
        with self._lock:
            rec = db.get("SR", sr)
            free = rec["physical_size"] - rec["physical_utilisation"] - self._reserved[sr]
            if nbytes > free:
                raise ApiError("SR_FULL", nbytes, max(0, free))
            self._reserved[sr] += nbytes

    def release(self, sr: str, nbytes: int) -> None:
        with self._lock:
            self._reserved[sr] = max(0, self._reserved[sr] - nbytes)

    def free_space(self, sr: str) -> int:
        rec = self.sim.db.get("SR", sr)
        with self._lock:
            return rec["physical_size"] - rec["physical_utilisation"] - self._reserved[sr]

    # -- garbage collection --------------------------------------------------------
    def kick_gc(self, sr: str, delay: float | None = None) -> None:
        """Schedule a background GC pass of ``sr`` (coalescing one timer per SR)."""
        if self.gc_runner is None:
            return
        delay = self.gc_delay if delay is None else delay
        with self._lock:
            if self._stopped:
                return
            self._deferred.discard(sr)
            old = self._timers.pop(sr, None)
            if old is not None:
                old.cancel()
            timer = threading.Timer(delay, self._run_gc, args=(sr,))
            timer.daemon = True
            timer.name = f"sim-gc-{sr[-8:]}"
            self._timers[sr] = timer
        timer.start()

    def _run_gc(self, sr: str) -> None:
        with self._lock:
            self._timers.pop(sr, None)
            if self._stopped:
                return
            self._running[sr] = threading.current_thread()
        try:
            if self.gc_runner is not None and self.sim.db.exists("SR", sr):
                self.gc_runner(sr)
        except Exception:
            LOG.exception("background garbage collection of SR %s failed", sr)
        finally:
            with self._lock:
                self._running.pop(sr, None)

    def start(self) -> None:
        """Allow GC passes again (a stopped simulator started anew)."""
        with self._lock:
            self._stopped = False

    def stop(self) -> None:
        """Cancel pending GC passes and wait for running ones."""
        with self._lock:
            self._stopped = True
            timers = list(self._timers.values())
            self._timers.clear()
            running = list(self._running.values())
        for timer in timers:
            timer.cancel()
        for thread in running:
            if thread is not threading.current_thread():
                thread.join(timeout=30)


def fsync_dir(path: Path) -> None:
    """Make renames and unlinks in ``path`` durable."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
