"""The event system: ``event.from`` and the legacy register/next/unregister.

Tokens are ``"%020d,%020d"`` (database generation, message generation) so
they compare lexicographically; ``""`` means generation 0 and replays every
object as ``add``.  Several modifications of one object between two calls
coalesce into one ``mod`` carrying the current record; an object created and
destroyed between two calls is not reported; ``del`` events have no
snapshot.  ``event.from`` blocks until a subscribed change happens or the
timeout expires, then answers ``{events, valid_ref_counts, token}``.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import ApiError
from .xapi_types import Int32, TypeRegistry, xml_escape

if TYPE_CHECKING:
    from .simulator import Simulator


@dataclass
class Subscription:
    all: bool = False
    classes: set[str] = field(default_factory=set)
    objects: set[tuple[str, str]] = field(default_factory=set)

    @classmethod
    def parse(cls, items: list[str]) -> Subscription:
        sub = cls()
        for item in items:
            if item == "*":
                sub.all = True
                continue
            name, sep, ref = item.partition("/")
            if sep and ref:
                sub.objects.add((name.lower(), ref))
            elif not sep:
                sub.classes.add(name.lower())
            else:
                raise ApiError("EVENT_SUBSCRIPTION_PARSE_FAILURE", item)
        return sub

    def matches(self, cls: str, ref: str) -> bool:
        if self.all:
            return True
        low = cls.lower()
        return low in self.classes or (low, ref) in self.objects

    def is_empty(self) -> bool:
        return not (self.all or self.classes or self.objects)


def format_token(gen: int, msg_gen: int) -> str:
    return "%020d,%020d" % (gen, msg_gen)


def parse_token(token: str) -> int:
    if token == "":
        return 0
    parts = token.split(",")
    if len(parts) != 2:
        raise ApiError("EVENT_FROM_TOKEN_PARSE_FAILURE", token)
    try:
        return int(parts[0])
    except ValueError:
        raise ApiError("EVENT_FROM_TOKEN_PARSE_FAILURE", token) from None


@dataclass
class _Registration:
    subs: Subscription
    cursor: int


class EventManager:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.db = sim.db
        self._registrations: dict[str, _Registration] = {}
        self._gone: set[str] = set()
        self._lock = threading.Lock()

    # -- event.from ------------------------------------------------------------
    def event_from(self, session: str, classes: list[str], token: str,
                   timeout: float) -> dict[str, Any]:
        since = parse_token(token)
        subs = Subscription.parse(classes)
        deadline = time.monotonic() + max(0.0, timeout)
        db = self.db
        with db.changed:
            while True:
                changes, last = db.changes_since(since, subs.matches)
                if changes:
                    break
                if session in self._gone or not db.exists("session", session):
                    raise ApiError("SESSION_INVALID", session)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                db.waiters += 1
                try:
                    db.changed.wait(remaining)
                finally:
                    db.waiters -= 1
            counts = {cls.lower(): Int32(len(t)) for cls, t in db.tables.items()}
            msg_gen = db.message_generation
        events = []
        for op, cls, ref, gen, rec in changes:
            ev: dict[str, Any] = {"id": str(gen), "timestamp": "0.0", "class": cls.lower(),
                                  "operation": op, "ref": ref}
            if rec is not None:
                ev["snapshot"] = rec
            events.append(ev)
        return {"events": events, "valid_ref_counts": counts,
                "token": format_token(max(last, since), msg_gen)}

    # -- legacy interface --------------------------------------------------------
    def register(self, session: str, classes: list[str]) -> None:
        with self._lock:
            reg = self._registrations.get(session)
            new = Subscription.parse(classes)
            if reg is None:
                self._registrations[session] = _Registration(new, self.db.generation)
            else:
                reg.subs.all |= new.all
                reg.subs.classes |= new.classes
                reg.subs.objects |= new.objects

    def unregister(self, session: str, classes: list[str]) -> None:
        with self._lock:
            reg = self._registrations.get(session)
            if reg is None:
                return
            gone = Subscription.parse(classes)
            if gone.all:
                reg.subs = Subscription()
            reg.subs.classes -= gone.classes
            reg.subs.objects -= gone.objects

    def next(self, session: str) -> list[dict[str, Any]]:
        reg = self._registrations.get(session)
        if reg is None:
            raise ApiError("SESSION_NOT_REGISTERED", session)
        db = self.db
        with db.changed:
            while True:
                if session in self._gone:
                    raise ApiError("SESSION_INVALID", session)
                if reg.cursor < db.deleted_floor:
                    reg.cursor = db.generation
                    raise ApiError("EVENTS_LOST")
                changes, last = db.changes_since(reg.cursor, reg.subs.matches)
                if changes:
                    reg.cursor = max(last, reg.cursor)
                    break
                db.waiters += 1
                try:
                    db.changed.wait(30.0)
                finally:
                    db.waiters -= 1
        now = "%.6f" % time.time()
        out = []
        for op, cls, ref, gen, rec in changes:
            ev: dict[str, Any] = {"id": str(gen), "timestamp": now, "class": cls.lower(),
                                  "operation": op, "ref": ref,
                                  "obj_uuid": (rec or {}).get("uuid", "")}
            if rec is not None:
                ev["snapshot"] = rec
            out.append(ev)
        return out

    # -- misc --------------------------------------------------------------------
    def inject(self, cls: str, ref: str) -> str:
        spec = self.sim.schema.classes.get(cls)
        if spec is None or not spec.is_table or not self.db.exists(cls, ref):
            raise ApiError("HANDLE_INVALID", cls, ref)
        gen = self.db.touch(cls, ref)
        return format_token(gen - 1, 0)

    def current_id(self) -> int:
        return self.db.generation

    def session_gone(self, session: str) -> None:
        with self._lock:
            self._registrations.pop(session, None)
        with self.db.changed:
            self._gone.add(session)
            if len(self._gone) > 10000:
                self._gone.clear()
            self.db.changed.notify_all()


def install_encoders(types: TypeRegistry, class_by_lower: dict[str, str]) -> None:
    """XML encoders for the event batch and event records (snapshots are typed
    by the class named in each event)."""

    def snapshot_xml(ev: dict[str, Any]) -> str:
        cls = class_by_lower.get(ev["class"], ev["class"])
        return types.record_encoders[cls](ev["snapshot"])

    def enc_event(ev: dict[str, Any]) -> str:
        parts = ["<value><struct>"]
        for key in ("id", "timestamp", "class", "operation", "ref", "obj_uuid"):
            if key in ev:
                parts.append("<member><name>" + key + "</name><value>"
                             + xml_escape(ev[key]) + "</value></member>")
        if "snapshot" in ev:
            parts.append("<member><name>snapshot</name>" + snapshot_xml(ev) + "</member>")
        parts.append("</struct></value>")
        return "".join(parts)

    def enc_batch(batch: dict[str, Any]) -> str:
        counts = "".join("<member><name>" + k + "</name><value><i4>" + str(int(v))
                         + "</i4></value></member>"
                         for k, v in batch["valid_ref_counts"].items())
        return ("<value><struct><member><name>events</name><value><array><data>"
                + "".join(map(enc_event, batch["events"]))
                + "</data></array></value></member>"
                "<member><name>valid_ref_counts</name><value><struct>" + counts
                + "</struct></value></member><member><name>token</name><value>"
                + batch["token"] + "</value></member></struct></value>")

    types.record_encoders["event"] = enc_event
    types.event_batch_encoder = enc_batch  # type: ignore[attr-defined]
