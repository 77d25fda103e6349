"""The state directory: object database on disk, written atomically.

Layout of ``state_dir``::

    db.json        the object database (all tables, the event generation)
    lock           held (flock) by the running simulator
    tls/           generated certificate and key (``--tls``)

``db.json`` is never written in place: a snapshot taken under the database
lock (cheap, records are copy-on-write) is serialised to ``db.json.tmp``
(re-encoding only the records changed since the last write: the encoding
holds the GIL, and a whole big database at every flush stalled every
request for tens of milliseconds),
fsynced and renamed over the old file, and the directory is fsynced.  A
simulator killed at any moment therefore restarts from the last complete
snapshot -- consistent, possibly missing the changes of the last flush
interval.  A background thread flushes when something changed (every
``interval`` seconds, 1 s by default, longer when writing takes long); a clean
stop and :meth:`flush` write everything.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from .db import Database

LOG = logging.getLogger(__name__)

FORMAT = 1
DB_FILE = "db.json"


def _dumps(value: Any) -> str:
    # json.dumps, not json.dump: only the one-shot form uses the C encoder.
    return json.dumps(value, separators=(",", ":"))


class StateDirInUse(RuntimeError):
    pass


class Persistence:
    def __init__(self, state_dir: Path, db: Database, interval: float = 1.0) -> None:
        self.dir = Path(state_dir)
        self.db = db
        self.interval = interval
        self.path = self.dir / DB_FILE
        self._lock_fh: Any = None
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.writes = 0
        #: class -> ref -> the JSON text of ``"ref":{record}`` as last written
        self._encoded: dict[str, dict[str, str]] = {}
        self._loads = -1

    def acquire(self) -> None:
        """Create the directory and take its lock (one simulator per state dir)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        fh = open(self.dir / "lock", "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            owner = fh.read().strip() or "another process"
            fh.close()
            raise StateDirInUse(
                f"state directory {self.dir} is in use by a running simulator "
                f"({owner}); stop it or choose another --state-dir") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}\n")
        fh.flush()
        self._lock_fh = fh

    def release(self) -> None:
        if self._lock_fh is not None:
            fcntl.flock(self._lock_fh, fcntl.LOCK_UN)
            self._lock_fh.close()
            self._lock_fh = None

    def load(self) -> dict[str, Any] | None:
        """The stored state, or None for a fresh directory."""
        if not self.path.exists():
            return None
        try:
            with open(self.path, encoding="utf-8") as fh:
                state = json.load(fh)
        except (OSError, ValueError) as exc:
            raise RuntimeError(
                f"cannot read {self.path}: {exc}; the file is damaged -- move it away to "
                "start from a fresh host, or restore a backup") from exc
        if state.get("format") != FORMAT:
            raise RuntimeError(f"{self.path} has unknown format {state.get('format')!r}")
        return state

    def flush(self, force: bool = False) -> bool:
        """Write the database if it changed (or always with ``force``)."""
        with self._write_lock:
            if not force and not self.db.dirty:
                return False
            with self.db.lock:
                snap = self.db.snapshot()
                loads, touched = self.db.take_touched()
            tmp = self.path.with_name(DB_FILE + ".tmp")
            try:
                text = self._encode(snap, loads, touched)
                with open(tmp, "w", encoding="utf-8") as fh:
                    fh.write(text)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                self.db.dirty = True  # not on disk: try again next time
                self._encoded = {}  # the changes taken are not in it: encode all again
                raise
            dir_fd = os.open(self.dir, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
            self.writes += 1
            return True

    def _encode(self, snap: dict[str, Any], loads: int, touched: set[str]) -> str:
        """``db.json``'s text; records not in ``touched`` reuse their text."""
        if loads != self._loads:
            self._encoded, self._loads = {}, loads
        tables = []
        encoded: dict[str, dict[str, str]] = {}
        for cls, table in snap["tables"].items():
            before = self._encoded.get(cls, {})
            now = encoded[cls] = {}
            for ref, record in table.items():
                text = before.get(ref)
                if text is None or ref in touched:
                    text = f"{_dumps(ref)}:{_dumps(record)}"
                now[ref] = text
            tables.append(f"{_dumps(cls)}:{{{','.join(now.values())}}}")
        self._encoded = encoded
        head = _dumps({"format": FORMAT, "saved_at": time.time(),
                       **{k: v for k, v in snap.items() if k != "tables"}})
        return f"{head[:-1]},\"tables\":{{{','.join(tables)}}}}}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="sim-flush", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        wait = self.interval
        while not self._stop.wait(wait):
            started = time.monotonic()
            try:
                self.flush()
            except Exception:
                LOG.exception("flushing the simulator state failed")
            # A big database must not spend most of the time being written.
            wait = max(self.interval, 5 * (time.monotonic() - started))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.flush(force=True)
