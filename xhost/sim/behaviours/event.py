"""event.*: event.from, the legacy register/next/unregister, inject."""
from __future__ import annotations

from typing import Any

from ..dispatch import CallContext
from . import behaviour


@behaviour("event.from")
def event_from(ctx: CallContext, classes: list[str], token: str, timeout: float
               ) -> dict[str, Any]:
    assert ctx.session is not None
    return ctx.sim.events.event_from(ctx.session, classes, token, timeout)


@behaviour("event.register")
def register(ctx: CallContext, classes: list[str]) -> None:
    assert ctx.session is not None
    ctx.sim.events.register(ctx.session, classes)


@behaviour("event.unregister")
def unregister(ctx: CallContext, classes: list[str]) -> None:
    assert ctx.session is not None
    ctx.sim.events.unregister(ctx.session, classes)


@behaviour("event.next")
def next_(ctx: CallContext) -> list[dict[str, Any]]:
    assert ctx.session is not None
    return ctx.sim.events.next(ctx.session)


@behaviour("event.inject")
def inject(ctx: CallContext, cls: str, ref: str) -> str:
    return ctx.sim.events.inject(cls, ref)


@behaviour("event.get_current_id")
def get_current_id(ctx: CallContext) -> int:
    return ctx.sim.events.current_id()
