"""Behaviour of explicit XAPI messages, one module per area.

A behaviour is a function ``fn(ctx, *args)`` registered for a wire name with
:func:`behaviour`; ``args`` are the decoded parameters without the session.
Modules are listed in :data:`MODULES` -- the single place where areas are
plugged in.  A behaviour that simulates long work itself (progress ticks,
cancellation, holding ``current_operations``) declares ``latency=True`` so
the dispatcher does not add the method's latency again; ``cancellable=True``
makes its ``Async`` task cancellable.

Per-simulator replacements (what part 2's storage drivers, plugin runner and
pool use) go through ``Simulator.dispatcher.override(wire, fn)``.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MODULES = (
    "session", "task", "event", "host", "pool", "vm", "storage", "network",
    "message", "misc", "migration",
)


@dataclass(frozen=True)
class Behaviour:
    wire: str
    fn: Callable[..., Any]
    latency: bool = False
    cancellable: bool = False


_REGISTRY: dict[str, Behaviour] = {}
_LOADED = False


def behaviour(wire: str, *, latency: bool = False, cancellable: bool = False
              ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register the decorated function as the implementation of ``wire``."""
    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        if wire in _REGISTRY and _REGISTRY[wire].fn is not fn:
            raise RuntimeError(f"two behaviours for {wire}")
        _REGISTRY[wire] = Behaviour(wire, fn, latency, cancellable)
        return fn
    return deco


def registry() -> dict[str, Behaviour]:
    """All behaviours (imports the behaviour modules on first use)."""
    global _LOADED
    if not _LOADED:
        for name in MODULES:
            importlib.import_module(f"{__name__}.{name}")
        _LOADED = True
    return _REGISTRY
