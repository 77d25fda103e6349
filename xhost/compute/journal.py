"""The journal of operations in flight.

Each spawn or destroy writes a small JSON entry before it touches the host
and removes it when it is done (succeeded, or failed and rolled back). An
entry that outlives its process (the process was killed) tells the next run
what to clean up: ``Compute.reconcile()`` destroys what the operation had
created, found by the tags every created object carries.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any


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

    def _write(self, entry: dict[str, Any]) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=".entry-")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(entry, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, os.path.join(self.path, f"{entry['id']}.json"))
