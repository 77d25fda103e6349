"""pool.*: single-host pool operations (joins and migrations are part 2)."""
from __future__ import annotations

from ..dispatch import CallContext
from ..errors import ApiError
from . import behaviour


@behaviour("pool.sync_database")
def sync_database(ctx: CallContext) -> None:
    ctx.sim.persistence.flush(force=True)


@behaviour("pool.get_license_state")
def get_license_state(ctx: CallContext, pool: str) -> dict[str, str]:
    ctx.db.get("pool", pool)
    return {"edition": "xcp-ng", "expiry": "never"}


@behaviour("pool.eject")
def eject(ctx: CallContext, host: str) -> None:
    ctx.db.get("host", host)
    raise ApiError("OPERATION_NOT_ALLOWED", "Cannot eject the pool master")


@behaviour("pool.designate_new_master")
def designate_new_master(ctx: CallContext, host: str) -> None:
    ctx.db.get("host", host)
