"""The journal of operations in flight.

Each spawn or destroy writes a small JSON entry before it touches the host
and removes it when it is done (succeeded, or failed and rolled back). While
it runs, the entry also holds the operation's *durable* undo actions (see
:func:`xhost.context.durable`): what was created, in the order it was
created. An entry that outlives its process (the process was killed) tells
the next run what to clean up: ``Compute.reconcile()`` replays those undo
actions, newest first, then destroys whatever else the operation had
created, found by the tags every created object carries.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

from xhost.context import UndoRecorder


def _process_start(pid: int) -> float | None:
    """When process ``pid`` started (epoch seconds), or None if it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open("/proc/stat") as f:
            boot = next(float(line.split()[1]) for line in f if line.startswith("btime"))
    except (OSError, StopIteration, IndexError, ValueError):
        return None
    if fields[0] == "Z":
        return None
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def _owner_alive(entry: dict[str, Any]) -> bool:
    """Whether the process that wrote ``entry`` is still running (not a new
    process that reused its pid)."""
    started = _process_start(int(entry.get("pid", 0)))
    return started is not None and started <= float(entry.get("started", 0)) + 1.0


class Journal:
    def __init__(self, state_dir: str) -> None:
        self.path = os.path.join(os.path.expanduser(state_dir), "journal")

    def begin(self, op: str, **data: Any) -> str:
        """Record an operation; returns its id."""
        os.makedirs(self.path, mode=0o700, exist_ok=True)
        entry_id = f"{int(time.time() * 1000):013d}-{uuid.uuid4().hex[:8]}"
        entry = {"id": entry_id, "op": op, "pid": os.getpid(), "started": time.time(), **data}
        self._write(entry)
        return entry_id

    def update(self, entry_id: str, **data: Any) -> None:
        entry = self.get(entry_id)
        if entry is not None:
            entry.update(data)
            self._write(entry)

    def end(self, entry_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.path, f"{entry_id}.json"))

    def get(self, entry_id: str) -> dict[str, Any] | None:
        try:
            with open(os.path.join(self.path, f"{entry_id}.json"), encoding="utf-8") as f:
                return json.load(f)
        except (FileNotFoundError, ValueError):
            return None

    def entries(self) -> list[dict[str, Any]]:
        if not os.path.isdir(self.path):
            return []
        found = []
        for name in sorted(os.listdir(self.path)):
            if name.endswith(".json"):
                entry = self.get(name[:-5])
                if entry is not None:
                    found.append(entry)
        return found

    def orphans(self) -> Iterator[dict[str, Any]]:
        """Entries whose process is gone (it was killed mid-operation)."""
        for entry in self.entries():
            if not _owner_alive(entry):
                yield entry

    def recorder(self, entry_id: str) -> EntryRecorder:
        """What an operation's :class:`~xhost.context.UndoLog` journals its
        durable undo actions through."""
        return EntryRecorder(self, entry_id)

    def _write(self, entry: dict[str, Any], sync: bool = True) -> None:
        text = json.dumps(entry)  # one shot: the C encoder, not json.dump's Python one
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=".entry-")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            if sync:  # the entry itself must survive a crash of the machine
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, os.path.join(self.path, f"{entry['id']}.json"))


class EntryRecorder(UndoRecorder):
    """Keeps an entry's ``undo`` list (oldest first) in step with its undo log.

    Written without fsync: a killed process's page cache survives it, and a
    machine crash takes the XAPI calls in flight with it anyway."""

    def __init__(self, journal: Journal, entry_id: str) -> None:
        self.journal = journal
        self.entry = journal.get(entry_id) or {"id": entry_id}
        self.lock = threading.Lock()
        self.counter = itertools.count(1)

    def record(self, description: str, call: dict[str, Any]) -> str:
        with self.lock:
            token = str(next(self.counter))
            self.entry.setdefault("undo", []).append(
                {"token": token, "description": description, **call})
            self.journal._write(self.entry, sync=False)
            return token

    def forget(self, tokens: list[str]) -> None:
        with self.lock:
            gone = set(tokens)
            self.entry["undo"] = [a for a in self.entry.get("undo", [])
                                  if a["token"] not in gone]
            if os.path.exists(os.path.join(self.journal.path, f"{self.entry['id']}.json")):
                self.journal._write(self.entry, sync=False)
