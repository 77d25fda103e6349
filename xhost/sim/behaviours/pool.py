"""pool.*: database sync, licensing, joining, ejecting and master changes
(the mechanics are in :mod:`xhost.sim.pool`)."""
from __future__ import annotations

from .. import pool as pool_mod
from .. import pool_membership
from ..dispatch import CallContext
from . import behaviour


@behaviour("pool.sync_database")
def sync_database(ctx: CallContext) -> None:
    ctx.sim.persistence.flush(force=True)


@behaviour("pool.get_license_state")
def get_license_state(ctx: CallContext, pool: str) -> dict[str, str]:
    ctx.db.get("pool", pool)
    return {"edition": "xcp-ng", "expiry": "never"}


@behaviour("pool.eject", latency=True)
def eject(ctx: CallContext, host: str) -> None:
    ctx.work()
    pool_membership.eject(ctx, host)


@behaviour("pool.designate_new_master", latency=True)
def designate_new_master(ctx: CallContext, host: str) -> None:
    ctx.db.get("host", host)
    ctx.work()
    pool_mod.designate_new_master(ctx.sim, host)


@behaviour("pool.join", latency=True)
def join(ctx: CallContext, master_address: str, master_username: str,
         master_password: str) -> None:
    ctx.work()
    pool_membership.join(ctx, master_address, master_username, master_password, force=False)


@behaviour("pool.join_force", latency=True)
def join_force(ctx: CallContext, master_address: str, master_username: str,
               master_password: str) -> None:
    ctx.work()
    pool_membership.join(ctx, master_address, master_username, master_password, force=True)


@behaviour("pool.emergency_transition_to_master")
def emergency_transition_to_master(ctx: CallContext) -> None:
    pool_mod.emergency_transition_to_master(ctx.sim, ctx.host_ref)


@behaviour("pool.emergency_reset_master")
def emergency_reset_master(ctx: CallContext, master_address: str) -> None:
    pool_mod.emergency_reset_master(ctx.sim, ctx.host_ref, master_address)


@behaviour("pool.recover_slaves")
def recover_slaves(ctx: CallContext) -> list[str]:
    return pool_mod.recover_slaves(ctx.sim, ctx.host_ref)
