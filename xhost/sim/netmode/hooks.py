"""Where network state follows the calls that change it.

The calls that create or destroy domains, plug VIFs or change networks are
wrapped (``Dispatcher.override``) so that, after their behaviour ran:

* the PIFs a plugged VIF needs are brought up (``PIF.currently_attached``),
  as xapi's ``attach_for_vif`` does -- in every mode;
* in real-network mode the dom0 networks are reconciled; if that fails, a
  VM start or VIF plug is undone and the error (e.g. ``BRIDGE_NOT_AVAILABLE``)
  reaches the caller, as a failed vif hotplug fails the real operation.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import NULL_REF, ApiError

if TYPE_CHECKING:
    from ..dispatch import CallContext
    from ..simulator import Simulator

#: Calls that create a domain (or move it): VIFs become interfaces.
DOMAIN_UP = ("VM.start", "VM.start_on", "VM.resume", "VM.resume_on", "VM.hard_reboot",
             "VM.clean_reboot", "VM.pool_migrate", "VM.migrate_send")
#: Calls that may destroy a domain.
DOMAIN_DOWN = ("VM.shutdown", "VM.clean_shutdown", "VM.hard_shutdown", "VM.suspend",
               "VM.power_state_reset", "VM.revert")
VIF_CALLS = ("VIF.plug", "VIF.unplug", "VIF.unplug_force", "VIF.move")
NETWORK_CALLS = ("network.destroy", "PIF.plug", "PIF.unplug", "VLAN.create",
                 "VLAN.destroy", "pool.create_VLAN", "pool.create_VLAN_from_PIF",
                 "Bond.create", "Bond.destroy")


def install(sim: Simulator) -> None:
    """Wrap the network-relevant calls of ``sim``'s dispatcher."""
    for wire in DOMAIN_UP + DOMAIN_DOWN + VIF_CALLS + NETWORK_CALLS:
        entry = sim.dispatcher.entries[wire]
        sim.dispatcher.override(wire, _wrap(sim, wire, entry.impl),
                                handles_latency=entry.handles_latency,
                                cancellable=entry.cancellable)


def _wrap(sim: Simulator, wire: str, impl: Callable[..., Any]) -> Callable[..., Any]:
    def wrapped(ctx: CallContext, *args: Any) -> Any:
        result = impl(ctx, *args)
        after(ctx, wire, args, result)
        return result
    wrapped.__name__ = f"network_{wire.replace('.', '_')}"
    return wrapped


def after(ctx: CallContext, wire: str, args: tuple[Any, ...], result: Any) -> None:
    sim = ctx.sim
    net = sim.network
    if wire in DOMAIN_UP:
        vm = args[0]
        bring_up_pifs(ctx, vm)
        try:
            net.sync()
        except ApiError:
            if wire in ("VM.start", "VM.start_on"):
                _undo_start(ctx, vm)
            raise
        return
    if wire in ("VIF.plug", "VIF.move"):
        vif = args[0]
        rec = ctx.db.find("VIF", vif)
        if rec is not None:
            bring_up_pifs(ctx, rec["VM"])
        try:
            net.sync()
        except ApiError:
            if wire == "VIF.plug":
                _undo_plug(ctx, vif)
            raise
        return
    if wire == "network.destroy":
        net.forget_network(args[0])
    net.sync()


def bring_up_pifs(ctx: CallContext, vm: str) -> None:
    """Attach the PIFs the plugged VIFs of ``vm`` need on its host."""
    db = ctx.db
    with db.lock:
        rec = db.find("VM", vm)
        if rec is None or rec["resident_on"] == NULL_REF:
            return
        host = rec["resident_on"]
        for vif in rec["VIFs"]:
            vrec = db.find("VIF", vif)
            if vrec is None or not vrec["currently_attached"]:
                continue
            network = db.find("network", vrec["network"])
            if network is None:
                continue
            for pif in network["PIFs"]:
                _bring_up(ctx, pif, host)


def _bring_up(ctx: CallContext, pif: str, host: str) -> None:
    db = ctx.db
    prec = db.find("PIF", pif)
    if prec is None or prec["host"] != host or prec["currently_attached"]:
        return
    db.update("PIF", pif, currently_attached=True)
    vlan = db.find("VLAN", prec["VLAN_master_of"]) if prec["VLAN_master_of"] != NULL_REF \
        else None
    if vlan is not None:
        _bring_up(ctx, vlan["tagged_PIF"], host)


def _undo_start(ctx: CallContext, vm: str) -> None:
    from ..behaviours.vm import domain_gone

    rec = ctx.db.find("VM", vm)
    if rec is not None and rec["power_state"] in ("Running", "Paused"):
        domain_gone(ctx, vm)
    try:
        ctx.sim.network.sync()
    except ApiError:
        pass


def _undo_plug(ctx: CallContext, vif: str) -> None:
    from ..behaviours.network import vif_update_allowed_operations

    if ctx.db.exists("VIF", vif):
        ctx.db.update("VIF", vif, currently_attached=False)
        vif_update_allowed_operations(ctx, vif)
    try:
        ctx.sim.network.sync()
    except ApiError:
        pass
