"""Test and demo controls: fault injection, latency, call counters, pool role.

All of it is reachable from Python (``sim.controls``) and, for a running
simulator, through the authenticated ``/sim/...`` HTTP endpoints and the
``xhost sim ...`` commands (see :mod:`xhost.sim.control_http`).

Fault rules
    A rule matches a method (``VM.start``, ``Async.VM.start`` counts as
    ``VM.start``; ``*`` matches everything) and optionally a plugin and plugin
    function (for ``host.call_plugin``).  ``nth=N`` fails only the N-th matching
    call counted from when the rule was added; otherwise every matching call
    fails, at most ``times`` times if given.  The error is any XAPI error list.
Connection drops
    The next ``count`` requests (optionally only those calling ``method``) are
    answered by closing the connection without a response.
Pool member mode
    ``set_member(master_address)`` makes every call, logins included, fail
    with ``HOST_IS_SLAVE [master_address]``; ``set_member(None)`` restores.
"""
from __future__ import annotations

import itertools
import re
import threading
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import ApiError

_CODE_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")


@dataclass
class FaultRule:
    method: str
    error: list[str]
    nth: int | None = None
    times: int | None = None
    plugin: str | None = None
    fn: str | None = None
    id: int = 0
    seen: int = 0
    fired: int = 0
    #: The call the rule failed last: ``VM.start``, or ``host.call_plugin
    #: xhost_disks.make_filesystem`` for dom0 plugin calls.
    hit: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DropRule:
    count: int
    method: str | None = None


@dataclass
class Controls:
    """Mutable control state shared by every simulated host of a pool."""

    speed: float = 0.0
    latency_overrides: dict[str, float] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    faults: list[FaultRule] = field(default_factory=list)
    drops: list[DropRule] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._ids = itertools.count(1)

    # -- counters --------------------------------------------------------------
    def count(self, method: str) -> None:
        with self._count_lock:
            counters = self.counters
            counters[method] = counters.get(method, 0) + 1

    def read_counters(self, reset: bool = False) -> dict[str, int]:
        with self._count_lock:
            snapshot = dict(self.counters)
            if reset:
                self.counters.clear()
            return snapshot

    def reset_counters(self) -> None:
        with self._count_lock:
            self.counters.clear()

    # -- faults ----------------------------------------------------------------
    def add_fault(self, method: str, error: list[str] | tuple[str, ...] | str, *,
                  nth: int | None = None, times: int | None = None,
                  plugin: str | None = None, fn: str | None = None) -> FaultRule:
        """Make calls of ``method`` fail with ``error`` (see module doc)."""
        if isinstance(error, str):
            error = [error]
        error = [str(e) for e in error]
        if not error or not error[0]:
            raise ValueError("error must be a non-empty XAPI error list, e.g. "
                             "['SR_BACKEND_FAILURE_47', '', 'The SR is not available', '']")
        if not _CODE_RE.match(error[0]):
            raise ValueError(f"{error[0]!r} is not a XAPI error code (upper case, e.g. "
                             "HANDLE_INVALID)")
        if nth is not None and nth < 1:
            raise ValueError("nth counts from 1")
        if times is not None and times < 1:
            raise ValueError("times must be at least 1")
        if method != "*" and "." not in method:
            raise ValueError(f"method {method!r} must look like Class.name (e.g. VM.start) or *")
        method = method[len("Async."):] if method.startswith("Async.") else method
        rule = FaultRule(method=method, error=error, nth=nth, times=times, plugin=plugin,
                         fn=fn, id=next(self._ids))
        with self.lock:
            self.faults.append(rule)
        return rule

    def clear_faults(self, rule_id: int | None = None) -> int:
        with self.lock:
            before = len(self.faults)
            if rule_id is None:
                self.faults.clear()
            else:
                self.faults[:] = [r for r in self.faults if r.id != rule_id]
            return before - len(self.faults)

    def check_fault(self, method: str, plugin: str | None = None,
                    fn: str | None = None) -> None:
        """Raise the injected error if a rule matches this call."""
        if not self.faults:
            return
        with self.lock:
            for rule in list(self.faults):
                if rule.method not in ("*", method):
                    continue
                # A rule for plugin "p" also matches calls of "p.py" (xhost's names).
                if rule.plugin is not None and rule.plugin not in (
                        plugin, (plugin or "").removesuffix(".py")):
                    continue
                if rule.fn is not None and rule.fn != fn:
                    continue
                rule.seen += 1
                if rule.nth is not None:
                    if rule.seen != rule.nth:
                        continue
                    self.faults.remove(rule)
                elif rule.times is not None:
                    if rule.fired + 1 >= rule.times:
                        self.faults.remove(rule)
                rule.fired += 1
                rule.hit = method if plugin is None else f"{method} " \
                    f"{(plugin or '').removesuffix('.py')}.{fn}"
                raise ApiError(*rule.error)

    # -- connection drops ----------------------------------------------------
    def add_drop(self, count: int = 1, method: str | None = None) -> None:
        if count < 1:
            raise ValueError("count must be at least 1")
        with self.lock:
            self.drops.append(DropRule(count=count, method=method))

    def should_drop(self, method: str | None) -> bool:
        if not self.drops:
            return False
        with self.lock:
            for rule in self.drops:
                if rule.method is None or rule.method == method:
                    rule.count -= 1
                    if rule.count <= 0:
                        self.drops.remove(rule)
                    return True
        return False

    # -- latency ---------------------------------------------------------------
    def set_latency(self, method: str, seconds: float | None) -> None:
        """Fix ``method`` to take ``seconds`` (unscaled; ``*``: every method
        without a latency of its own); None removes it."""
        with self.lock:
            if seconds is None:
                self.latency_overrides.pop(method, None)
            else:
                if seconds < 0:
                    raise ValueError("latency cannot be negative")
                self.latency_overrides[method] = float(seconds)

    def state(self) -> dict[str, Any]:
        with self.lock:
            return {
                "speed": self.speed,
                "latency_overrides": dict(self.latency_overrides),
                "faults": [r.to_dict() for r in self.faults],
                "drops": [asdict(d) for d in self.drops],
            }
