"""Sessions: login, logout, expiry and per-originator limits.

Like xapi: a session inactive for ``inactive_timeout`` seconds (24 h) is
destroyed; at most ``max_per_originator`` (500) sessions live per originator
(or per non-root user) and ``max_anonymous`` (400) without one, the oldest
being invalidated first.  A failed login waits ``auth_delay`` seconds (xapi:
5 s; 0 in tests) before answering ``SESSION_AUTHENTICATION_FAILED [user,
message]``.  Passwords are never logged.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import NULL_REF, ApiError
from .xapi_types import now_datetime

if TYPE_CHECKING:
    from .simulator import Simulator

LOG = logging.getLogger(__name__)

#: Seconds between two writes of ``last_active`` into a session record.
LAST_ACTIVE_RESOLUTION = 60.0


#: xapi's RBAC roles, most to least privileged.
ROLES = ("pool-admin", "pool-operator", "vm-power-admin", "vm-admin", "vm-operator",
         "read-only")

UserSpec = str | tuple[str, str]


@dataclass
class _Meta:
    group: str
    last_seen: float
    last_written: float
    local: bool
    role: str = "pool-admin"


class SessionManager:
    def __init__(self, sim: Simulator, users: dict[str, UserSpec], *, auth_delay: float = 0.0,
                 inactive_timeout: float = 24 * 3600.0, max_per_originator: int = 500,
                 max_anonymous: int = 400) -> None:
        self.sim = sim
        self.db = sim.db
        self.users: dict[str, str] = {}
        #: user -> RBAC role; root is the local superuser and bypasses RBAC.
        self.roles: dict[str, str] = {}
        for name, spec in users.items():
            password, role = (spec, "pool-admin") if isinstance(spec, str) else spec
            if role not in ROLES:
                raise ValueError(f"unknown role {role!r} for user {name!r}; choose one of "
                                 f"{', '.join(ROLES)}")
            self.users[name] = password
            self.roles[name] = role
        self.auth_delay = auth_delay
        self.inactive_timeout = inactive_timeout
        self.max_per_originator = max_per_originator
        self.max_anonymous = max_anonymous
        self._meta: dict[str, _Meta] = {}
        self._groups: dict[str, OrderedDict[str, None]] = {}
        self._lock = threading.Lock()

    # -- login / logout ------------------------------------------------------
    def login(self, uname: str, pwd: str, originator: str, host_ref: str, *,
              local: bool = False) -> str:
        expected = self.users.get(uname)
        if expected is None or expected != pwd:
            LOG.info("login failed for user %r", uname)
            if self.auth_delay > 0:
                time.sleep(self.auth_delay)
            raise ApiError("SESSION_AUTHENTICATION_FAILED", uname, "Authentication failure")
        now = now_datetime()
        spec = self.sim.schema.classes["session"]
        rec = spec.new_record({
            "this_host": host_ref,
            "this_user": NULL_REF,
            "last_active": now,
            "pool": False,
            "is_local_superuser": uname == "root",
            "validation_time": now,
            "auth_user_name": uname,
            "originator": originator,
        })
        ref = self.db.add("session", rec)
        if originator:
            group, limit = "originator:" + originator, self.max_per_originator
        elif uname != "root":
            group, limit = "user:" + uname, self.max_per_originator
        else:
            group, limit = "", self.max_anonymous
        mono = time.monotonic()
        evicted: list[str] = []
        role = "pool-admin" if uname == "root" else self.roles.get(uname, "pool-admin")
        with self._lock:
            self._meta[ref] = _Meta(group, mono, mono, local, role)
            members = self._groups.setdefault(group, OrderedDict())
            members[ref] = None
            while len(members) > limit:
                old, _ = members.popitem(last=False)
                evicted.append(old)
        for old in evicted:
            self.destroy(old)
        return ref

    def logout(self, ref: str) -> None:
        self.destroy(ref)

    def destroy(self, ref: str) -> None:
        """Invalidate a session (logout, expiry, eviction or a test's request)."""
        with self._lock:
            meta = self._meta.pop(ref, None)
            if meta is not None:
                self._groups.get(meta.group, OrderedDict()).pop(ref, None)
        try:
            self.db.remove("session", ref)
        except ApiError:
            pass
        self.sim.events.session_gone(ref)

    def expire(self, ref: str | None = None) -> int:
        """Invalidate one session, or all of them; returns how many."""
        refs = [ref] if ref else self.db.refs("session")
        n = 0
        for r in refs:
            if self.db.exists("session", r):
                self.destroy(r)
                n += 1
        return n

    # -- per-call check ----------------------------------------------------------
    def check(self, ref: str) -> None:
        """SESSION_INVALID [ref] unless ``ref`` is a live session."""
        meta = self._meta.get(ref)
        if meta is None:
            raise ApiError("SESSION_INVALID", ref)
        now = time.monotonic()
        if now - meta.last_seen > self.inactive_timeout:
            self.destroy(ref)
            raise ApiError("SESSION_INVALID", ref)
        meta.last_seen = now
        if now - meta.last_written > LAST_ACTIVE_RESOLUTION:
            meta.last_written = now
            try:
                self.db.update("session", ref, last_active=now_datetime())
            except ApiError:
                raise ApiError("SESSION_INVALID", ref) from None

    def role(self, ref: str) -> str:
        """The RBAC role of a session ("pool-admin" for root)."""
        meta = self._meta.get(ref)
        return meta.role if meta is not None else "pool-admin"

    def is_local(self, ref: str) -> bool:
        meta = self._meta.get(ref)
        return bool(meta and meta.local)

    def reap(self) -> int:
        """Destroy sessions idle longer than the timeout; returns how many."""
        now = time.monotonic()
        with self._lock:
            stale = [r for r, m in self._meta.items()
                     if now - m.last_seen > self.inactive_timeout]
        for ref in stale:
            self.destroy(ref)
        return len(stale)

    def restore(self) -> None:
        """Re-register sessions loaded from the state directory."""
        mono = time.monotonic()
        with self._lock:
            for ref, rec in self.db.all("session").items():
                originator = rec.get("originator", "")
                user = rec.get("auth_user_name", "")
                group = ("originator:" + originator if originator
                         else "" if user == "root" else "user:" + user)
                role = "pool-admin" if user == "root" else self.roles.get(user, "pool-admin")
                self._meta[ref] = _Meta(group, mono, mono, False, role)
                self._groups.setdefault(group, OrderedDict())[ref] = None
