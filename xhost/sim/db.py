"""The simulator's object database.

Records are dicts that are never mutated once stored: every change stores a
new dict (copy-on-write).  Readers can therefore encode a record, or a whole
table snapshot, outside the lock without copying it, and an event snapshot is
simply the record object current at the time.

Each change bumps a global *generation*.  The database remembers, per object,
the generation it was created and last modified at (``recent``, ordered by
modification so "what changed since G" is a walk from the end) and keeps
tombstones of deleted objects; that is exactly what ``event.from`` needs.
Relations (``VBD.VM`` -> ``VM.VBDs``) are maintained here, as in xapi, and a
change to a relation also bumps the object on the other side.
"""
from __future__ import annotations

import threading
import uuid as uuidlib
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from .errors import NULL_REF, ApiError
from .schema import ClassSpec, Schema

#: Tombstones kept for ``event.from``; older deletions are forgotten (a token
#: older than the oldest forgotten deletion gets EVENTS_LOST).
MAX_TOMBSTONES = 20000


def new_ref() -> str:
    return "OpaqueRef:" + str(uuidlib.uuid4())


def new_uuid() -> str:
    return str(uuidlib.uuid4())


class Database:
    """Tables of records keyed by reference, with generations for events."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.lock = threading.RLock()
        #: Notified (under ``lock``) after every change; event waiters use it.
        self.changed = threading.Condition(self.lock)
        self.tables: dict[str, dict[str, dict[str, Any]]] = {
            c.name: {} for c in schema.table_classes()}
        self.uuids: dict[str, dict[str, str]] = {c: {} for c in self.tables}
        self.ref_class: dict[str, str] = {}
        self.generation = 0
        self.message_generation = 0
        self.created: dict[str, int] = {}
        #: ref -> (class, modified generation), least recently modified first
        self.recent: OrderedDict[str, tuple[str, int]] = OrderedDict()
        #: ref -> (class, created generation, deleted generation)
        self.deleted: OrderedDict[str, tuple[str, int, int]] = OrderedDict()
        #: deletions at or below this generation may have been forgotten
        self.deleted_floor = 0
        self.waiters = 0
        self.dirty = False
        #: References added, changed or removed since :meth:`take_touched`
        #: (None: nobody asks, so nothing is kept).
        self.touched: set[str] | None = None
        #: How many times :meth:`load` replaced everything.
        self.loads = 0
        self._event_classes = {c.name for c in schema.table_classes() if c.events}
        self._fields = {c.name: frozenset(c.fields) for c in schema.table_classes()}
        self._on_destroy: list[Callable[[str, str, dict[str, Any]], None]] = []

    # -- reading -------------------------------------------------------------
    def get(self, cls: str, ref: str) -> dict[str, Any]:
        """The record of ``ref`` or HANDLE_INVALID [cls, ref]."""
        rec = self.tables[cls].get(ref)
        if rec is None:
            raise ApiError("HANDLE_INVALID", cls, ref)
        return rec

    def find(self, cls: str, ref: str) -> dict[str, Any] | None:
        return self.tables[cls].get(ref)

    def exists(self, cls: str, ref: str) -> bool:
        return ref in self.tables[cls]

    def class_of(self, ref: str) -> str | None:
        return self.ref_class.get(ref)

    def by_uuid(self, cls: str, uuid: str) -> str:
        ref = self.uuids[cls].get(uuid)
        if ref is None:
            raise ApiError("UUID_INVALID", cls, uuid)
        return ref

    def all(self, cls: str) -> dict[str, dict[str, Any]]:
        """A snapshot (shallow copy) of a table; safe to use without the lock."""
        with self.lock:
            return dict(self.tables[cls])

    def refs(self, cls: str) -> list[str]:
        with self.lock:
            return list(self.tables[cls])

    def select(self, cls: str, **where: Any) -> list[tuple[str, dict[str, Any]]]:
        """(ref, record) pairs whose fields equal ``where``."""
        with self.lock:
            items = list(self.tables[cls].items())
        return [(r, rec) for r, rec in items
                if all(rec.get(k) == v for k, v in where.items())]

    # -- writing ---------------------------------------------------------------
    def _bump(self, cls: str, ref: str) -> None:
        self.generation += 1
        if cls == "message":
            self.message_generation += 1
        self.dirty = True
        if self.touched is not None:
            self.touched.add(ref)
        if cls in self._event_classes:
            self.recent[ref] = (cls, self.generation)
            self.recent.move_to_end(ref)
        if self.waiters:
            self.changed.notify_all()

    def add(self, cls: str, record: dict[str, Any], ref: str | None = None) -> str:
        """Store a complete new record; fills uuid, keeps relations."""
        spec = self.schema.classes[cls]
        if len(record) != len(spec.fields) or not self._fields[cls].issuperset(record):
            missing = set(spec.fields) - set(record)
            extra = set(record) - set(spec.fields)
            raise ApiError("INTERNAL_ERROR", f"{cls} record: missing {sorted(missing)}, "
                                             f"unknown {sorted(extra)}")
        with self.lock:
            ref = ref or new_ref()
            if ref in self.ref_class:
                raise ApiError("INTERNAL_ERROR", f"duplicate reference {ref}")
            if spec.has_uuid:
                if not record.get("uuid"):
                    record = dict(record, uuid=new_uuid())
                elif record["uuid"] in self.uuids[cls]:
                    raise ApiError("UUID_INVALID", cls, record["uuid"])
                self.uuids[cls][record["uuid"]] = ref
            # The "many" sides are derived; start them empty and let the
            # other objects' relation fields fill them.
            for many_field, _one_cls, _one_field in self.schema.relations_to.get(cls, ()):
                if record.get(many_field):
                    record = dict(record, **{many_field: []})
            self.tables[cls][ref] = record
            self.ref_class[ref] = cls
            self._bump(cls, ref)
            self.created[ref] = self.generation
            for one_field, many_cls, many_field in self.schema.relations_from.get(cls, ()):
                target = record.get(one_field)
                if target and target != NULL_REF:
                    self._link(many_cls, target, many_field, ref, add=True)
            self.deleted.pop(ref, None)
            return ref

    def update(self, cls: str, ref: str, **changes: Any) -> dict[str, Any]:
        """Replace fields of ``ref``; returns the new record."""
        fields = self._fields[cls]
        for name in changes:
            if name not in fields:
                raise ApiError("INTERNAL_ERROR", f"{cls} has no field {name}")
        with self.lock:
            old = self.get(cls, ref)
            new = dict(old)
            new.update(changes)
            self.tables[cls][ref] = new
            self._bump(cls, ref)
            for one_field, many_cls, many_field in self.schema.relations_from.get(cls, ()):
                if one_field in changes and old.get(one_field) != new[one_field]:
                    before, after = old.get(one_field), new[one_field]
                    if before and before != NULL_REF:
                        self._link(many_cls, before, many_field, ref, add=False)
                    if after and after != NULL_REF:
                        self._link(many_cls, after, many_field, ref, add=True)
            return new

    def _link(self, cls: str, target: str, field: str, ref: str, *, add: bool) -> None:
        rec = self.tables[cls].get(target)
        if rec is None:
            return
        current = rec.get(field) or []
        if add:
            if ref in current:
                return
            value = current + [ref]
        else:
            if ref not in current:
                return
            value = [r for r in current if r != ref]
        new = dict(rec)
        new[field] = value
        self.tables[cls][target] = new
        self._bump(cls, target)

    def remove(self, cls: str, ref: str) -> dict[str, Any]:
        """Delete ``ref`` (HANDLE_INVALID if absent); returns its last record."""
        with self.lock:
            rec = self.get(cls, ref)
            for one_field, many_cls, many_field in self.schema.relations_from.get(cls, ()):
                target = rec.get(one_field)
                if target and target != NULL_REF:
                    self._link(many_cls, target, many_field, ref, add=False)
            # Objects pointing at this one through a relation keep a dangling
            # reference, exactly like xapi (clients see HANDLE_INVALID later).
            del self.tables[cls][ref]
            self.ref_class.pop(ref, None)
            if rec.get("uuid"):
                self.uuids[cls].pop(rec["uuid"], None)
            created = self.created.pop(ref, 0)
            self.recent.pop(ref, None)
            self.generation += 1
            if cls == "message":
                self.message_generation += 1
            self.dirty = True
            if self.touched is not None:
                self.touched.add(ref)
            if cls in self._event_classes:
                self.deleted[ref] = (cls, created, self.generation)
                while len(self.deleted) > MAX_TOMBSTONES:
                    _r, (_c, _cr, gone) = self.deleted.popitem(last=False)
                    self.deleted_floor = max(self.deleted_floor, gone)
            if self.waiters:
                self.changed.notify_all()
            for hook in self._on_destroy:
                hook(cls, ref, rec)
            return rec

    def touch(self, cls: str, ref: str) -> int:
        """Bump an object's generation without changing it (event.inject)."""
        with self.lock:
            self.get(cls, ref)
            self._bump(cls, ref)
            return self.generation

    def on_destroy(self, hook: Callable[[str, str, dict[str, Any]], None]) -> None:
        self._on_destroy.append(hook)

    # -- events ----------------------------------------------------------------
    def changes_since(self, since: int, matches: Callable[[str, str], bool]
                      ) -> tuple[list[tuple[str, str, str, int, dict | None]], int]:
        """Changes after generation ``since`` selected by ``matches(cls, ref)``.

        Returns ``([(op, cls, ref, generation, snapshot)], last)`` where ``last``
        is the highest generation among the selected changes (or ``since``).
        Must be called with the lock held.
        """
        if since < self.deleted_floor and since > 0:
            raise ApiError("EVENTS_LOST")
        out: list[tuple[str, str, str, int, dict | None]] = []
        last = since
        for ref, (cls, gen) in reversed(self.recent.items()):
            if gen <= since:
                break
            if not matches(cls, ref):
                continue
            if gen > last:
                last = gen
            created = self.created.get(ref, 0)
            rec = self.tables[cls].get(ref)
            if rec is None:
                continue
            if created > since:
                out.append(("add", cls, ref, created, rec))
            else:
                out.append(("mod", cls, ref, gen, rec))
        for ref, (cls, created, gone) in reversed(self.deleted.items()):
            if gone <= since:
                break
            if not matches(cls, ref):
                continue
            if gone > last:
                last = gone
            if created <= since:
                out.append(("del", cls, ref, gone, None))
        out.sort(key=lambda e: e[3])
        return out, last

    def counts(self) -> dict[str, int]:
        with self.lock:
            return {cls: len(t) for cls, t in self.tables.items()}

    # -- persistence support ---------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """A consistent picture of every table, cheap to take under the lock."""
        with self.lock:
            self.dirty = False
            return {
                "generation": self.generation,
                "message_generation": self.message_generation,
                "tables": {cls: dict(t) for cls, t in self.tables.items() if t},
                # Event bookkeeping, so tokens issued before a restart stay valid.
                "created": dict(self.created),
                "modified": {ref: gen for ref, (_cls, gen) in self.recent.items()},
                "deleted": [[ref, cls, created, gone]
                            for ref, (cls, created, gone) in self.deleted.items()],
                "deleted_floor": self.deleted_floor,
            }

    def take_touched(self) -> tuple[int, set[str]]:
        """``(loads, references touched)`` since the last call, and start
        keeping them (call with :attr:`lock` held, with :meth:`snapshot`)."""
        touched, self.touched = self.touched or set(), set()
        return self.loads, touched

    def load(self, state: dict[str, Any], skip: Iterable[str] = ()) -> None:
        """Replace the content with a :meth:`snapshot` (relations as stored)."""
        skip = set(skip)
        with self.lock:
            self.loads += 1
            for cls, table in self.tables.items():
                table.clear()
                self.uuids[cls].clear()
            self.ref_class.clear()
            self.created.clear()
            self.recent.clear()
            self.deleted.clear()
            self.generation = int(state.get("generation", 0))
            self.message_generation = int(state.get("message_generation", 0))
            created = state.get("created")
            modified = state.get("modified", {})
            if created is None:
                # No event history stored: tokens from before must resync.
                self.deleted_floor = self.generation
                created = {}
            else:
                self.deleted_floor = int(state.get("deleted_floor", 0))
                for ref, cls, cre, gone in state.get("deleted", []):
                    self.deleted[ref] = (cls, cre, gone)
            for cls, table in state.get("tables", {}).items():
                if cls not in self.tables or cls in skip:
                    continue
                spec = self.schema.classes[cls]
                for ref, rec in table.items():
                    full = self._complete(spec, rec)
                    self.tables[cls][ref] = full
                    self.ref_class[ref] = cls
                    if full.get("uuid"):
                        self.uuids[cls][full["uuid"]] = ref
                    self.created[ref] = int(created.get(ref, 0))
                    if cls in self._event_classes:
                        self.recent[ref] = (cls, int(modified.get(ref, self.created[ref])))
            for ref, _entry in sorted(self.recent.items(), key=lambda kv: kv[1][1]):
                self.recent.move_to_end(ref)
            self.dirty = False

    @staticmethod
    def _complete(spec: ClassSpec, rec: dict[str, Any]) -> dict[str, Any]:
        """Fill fields a stored record lacks (e.g. after a schema update)."""
        if len(rec) == len(spec.fields) and all(f in rec for f in spec.fields):
            return rec
        full = spec.new_record()
        full.update({k: v for k, v in rec.items() if k in spec.fields})
        return full
