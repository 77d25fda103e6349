"""Tasks: the records behind ``Async.*`` calls, ``task.create`` and long work.

Status goes ``pending -> success | failure`` or ``pending -> cancelling ->
cancelled``.  On completion progress is 1.0, ``finished`` is set,
``allowed_operations`` emptied and ``result`` holds the XML-RPC ``<value>``
fragment of the return value (empty for void) -- also for JSON-RPC clients,
as xapi stores it that way.  Failures put the error list in ``error_info``.

Cancellation is cooperative: ``task.cancel`` flags the task and the worker
notices at its next progress tick (:meth:`TaskState.check`), raising
``TASK_CANCELLED [task]``; work that finishes first still succeeds.  Tasks
without a worker (made by ``task.create`` for the HTTP handlers) are
cancelled at once unless a handler registered a cancel hook.

Finished tasks are garbage-collected after ``completed_ttl`` (65 min), all
tasks after ``pending_ttl`` (24 h), and the oldest finished ones go first
once there are more than ``max_tasks`` (200).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import NULL_REF, ApiError
from .xapi_types import now_datetime

if TYPE_CHECKING:
    from .simulator import Simulator

FINISHED = ("success", "failure", "cancelled")
#: Seconds between the collections task creation triggers (the simulator also
#: collects every 30 s, and at once when there are more than ``max_tasks``).
GC_EVERY = 1.0


@dataclass
class TaskState:
    ref: str
    cancel_requested: threading.Event = field(default_factory=threading.Event)
    has_worker: bool = False
    destroy_when_done: bool = False
    on_cancel: list[Callable[[], None]] = field(default_factory=list)
    finished_at: float | None = None
    created_at: float = field(default_factory=time.monotonic)

    def check(self) -> None:
        """Raise TASK_CANCELLED if somebody cancelled this task."""
        if self.cancel_requested.is_set():
            raise ApiError("TASK_CANCELLED", self.ref)


class TaskManager:
    def __init__(self, sim: Simulator, *, completed_ttl: float = 65 * 60.0,
                 pending_ttl: float = 24 * 3600.0, max_tasks: int = 200) -> None:
        self.sim = sim
        self.db = sim.db
        self.completed_ttl = completed_ttl
        self.pending_ttl = pending_ttl
        self.max_tasks = max_tasks
        self.states: dict[str, TaskState] = {}
        self._lock = threading.Lock()
        self._last_gc = 0.0

    def create(self, label: str, description: str = "", *, host: str = NULL_REF,
               cancellable: bool = False, worker: bool = False,
               subtask_of: str = NULL_REF) -> str:
        spec = self.sim.schema.classes["task"]
        rec = spec.new_record({
            "name_label": label,
            "name_description": description,
            "allowed_operations": ["cancel"] if cancellable else [],
            "created": now_datetime(),
            "status": "pending",
            "resident_on": host,
            "progress": 0.0,
            "type": "<none/>",
            "subtask_of": subtask_of,
        })
        ref = self.db.add("task", rec)
        with self._lock:
            self.states[ref] = TaskState(ref, has_worker=worker)
            crowded = len(self.states) > self.max_tasks
        # Every call of an async-capable message makes a task: collecting at
        # each one cost more than the call itself.
        if crowded or time.monotonic() - self._last_gc >= GC_EVERY:
            self.gc()
        return ref

    def state(self, ref: str) -> TaskState:
        with self._lock:
            st = self.states.get(ref)
            if st is None:
                st = self.states[ref] = TaskState(ref)
            return st

    def set_cancellable(self, ref: str, cancellable: bool) -> None:
        rec = self.db.find("task", ref)
        if rec is None or rec["status"] in FINISHED:
            return
        ops = ["cancel"] if cancellable else []
        if rec["allowed_operations"] != ops:
            self.db.update("task", ref, allowed_operations=ops)

    def progress(self, ref: str, value: float) -> None:
        rec = self.db.find("task", ref)
        if rec is None or rec["status"] in FINISHED:
            return
        value = max(0.0, min(1.0, float(value)))
        if abs(rec["progress"] - value) >= 0.01:
            self.db.update("task", ref, progress=value)

    def _finish(self, ref: str, **changes: object) -> None:
        st = self.state(ref)
        st.finished_at = time.monotonic()
        if not self.db.exists("task", ref):
            return
        self.db.update("task", ref, progress=1.0, finished=now_datetime(),
                       allowed_operations=[], current_operations={}, **changes)
        if st.destroy_when_done:
            self.destroy(ref)

    def complete(self, ref: str, result_xml: str) -> None:
        self._finish(ref, status="success", result=result_xml)

    def fail(self, ref: str, error: ApiError) -> None:
        if error.code == "TASK_CANCELLED":
            self._finish(ref, status="cancelled", error_info=error.description)
        else:
            self._finish(ref, status="failure", error_info=error.description)

    def cancel(self, ref: str, by_task: str | None = None) -> None:
        rec = self.db.get("task", ref)
        if rec["status"] in FINISHED or "cancel" not in rec["allowed_operations"]:
            raise ApiError("OPERATION_NOT_ALLOWED",
                           f"Task {ref} cannot be cancelled: it is {rec['status']} "
                           "and not cancellable")
        st = self.state(ref)
        key = by_task or ref
        self.db.update("task", ref, status="cancelling", current_operations={key: "cancel"})
        st.cancel_requested.set()
        for hook in list(st.on_cancel):
            hook()
        if not st.has_worker and not st.on_cancel:
            self.fail(ref, ApiError("TASK_CANCELLED", ref))

    def destroy(self, ref: str) -> None:
        rec = self.db.get("task", ref)
        st = self.state(ref)
        if rec["status"] not in FINISHED and st.has_worker:
            # xapi defers destroying a running task until it completes.
            st.destroy_when_done = True
            ops = dict(rec["current_operations"])
            ops["task"] = "destroy"
            self.db.update("task", ref, current_operations=ops)
            return
        self.db.remove("task", ref)
        with self._lock:
            self.states.pop(ref, None)

    def destroy_now(self, ref: str) -> None:
        """Remove a task whatever its state (the per-call tasks of sync calls)."""
        with self._lock:
            self.states.pop(ref, None)
        self.db.remove("task", ref)

    def gc(self) -> int:
        """Drop expired tasks; returns how many were destroyed."""
        now = self._last_gc = time.monotonic()
        with self._lock:
            states = list(self.states.values())
        finished = sorted((s for s in states if s.finished_at is not None),
                          key=lambda s: s.finished_at or 0.0)
        victims = [s.ref for s in finished if now - (s.finished_at or now) > self.completed_ttl]
        victims += [s.ref for s in states if s.finished_at is None and not s.has_worker
                    and now - s.created_at > self.pending_ttl]
        excess = len(states) - len(victims) - self.max_tasks
        if excess > 0:
            victims += [s.ref for s in finished if s.ref not in victims][:excess]
        for ref in victims:
            try:
                self.db.remove("task", ref)
            except ApiError:
                pass
            with self._lock:
                self.states.pop(ref, None)
        return len(victims)

    def restore(self) -> None:
        """After a restart, tasks that were running cannot finish: fail them."""
        for ref, rec in self.db.all("task").items():
            st = self.state(ref)
            if rec["status"] in ("pending", "cancelling"):
                self._finish(ref, status="failure", error_info=[
                    "INTERNAL_ERROR", "the simulator restarted while the task was running"])
            st.finished_at = time.monotonic()
