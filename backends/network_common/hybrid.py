"""Nova's hybrid plumbing: a per-port interim network and a Linux bridge
``qbr<id>`` between the guest and its switch, so that iptables security
groups can filter the port.

The XAPI side (the interim network ``net-<port id>``) is made here; the
dom0 side (bridge and veth pairs) by the ``xhost_network`` dom0 script in
one call to build and one to remove -- Nova made about two dozen.
"""
from __future__ import annotations

import logging
from typing import Any

from xhost.context import Context
from xhost.objects import Port

from .names import HybridNames, interim_network_name
from .vifs import destroy_network

LOG = logging.getLogger(__name__)
DOM0_SCRIPT = "xhost_network"
#: other_config keys of an interim network.
PORT_KEY = "xhost-port-id"
TARGET_KEY = "xhost-target-bridge"


def interim_of_vif(ctx: Context, vif_ref: str, port: Port) -> dict[str, Any] | None:
    """The record of the VIF's network if it is the port's interim network."""
    rec = ctx.xapi.call("network.get_record", ctx.xapi.call("VIF.get_network", vif_ref))
    return rec if rec["other_config"].get(PORT_KEY) == port.id else None


def find_interim_network(ctx: Context, port: Port) -> tuple[str, dict[str, Any]] | None:
    """The interim network of a port, if it exists."""
    name = interim_network_name(port.id)
    for ref in ctx.xapi.call("network.get_by_name_label", name):
        rec = ctx.xapi.call("network.get_record", ref)
        owner = rec["other_config"].get(PORT_KEY)
        # Nova's interim networks carry no owner; ours must be this port's.
        if owner in (None, port.id):
            return ref, rec
    return None


def ensure_interim_network(ctx: Context, port: Port, *, bridge: str = "",
                           target_bridge: str = "") -> str:
    """The port's interim network, created (with its undo) when missing.

    :param bridge: the bridge name XAPI is to give it (empty: xapi picks
        ``xapiN``).
    :param target_bridge: the bridge ``qvo`` is plugged into, remembered in
        the network's ``other_config`` for the post-start step.
    """
    name = interim_network_name(port.id)
    for ref in ctx.xapi.call("network.get_by_name_label", name):
        return ref
    other = {"assume_network_is_shared": "true", PORT_KEY: port.id}
    if target_bridge:
        other[TARGET_KEY] = target_bridge
    ref = ctx.xapi.call("network.create", {
        "name_label": name, "name_description": f"xhost interim network of port {port.id}",
        "MTU": str(port.mtu or 1500), "other_config": other, "bridge": bridge,
        "managed": True, "tags": []})
    ctx.undo.push(f"destroy interim network {name}", destroy_network, ctx.xapi, ref)
    return ref


def plug(ctx: Context, host_ref: str, port: Port, *, qvo_master: str | None = None,
         patch: bool = False) -> list[str]:
    """Build ``qbr``, ``qvb``/``qvo`` (and the ``tap``/``vif`` patch pair) in
    dom0; returns the devices created."""
    names = HybridNames.for_port(port.id)
    dom0 = ctx.extra["dom0"]
    ctx.undo.push(f"remove the hybrid plumbing of port {port.id}", unplug, ctx, host_ref, port)
    answer = dom0.call(host_ref, DOM0_SCRIPT, "plug_hybrid", bridge=names.qbr, qvb=names.qvb,
                       qvo=names.qvo, qvo_master=qvo_master,
                       patch=[names.tap, names.patch] if patch else None,
                       mtu=int(port.mtu or 1500))
    return list(answer.get("created", []))


def unplug(ctx: Context, host_ref: str, port: Port) -> list[str]:
    """Remove the dom0 devices of a port's hybrid plumbing (missing ones are fine)."""
    names = HybridNames.for_port(port.id)
    answer = ctx.extra["dom0"].call(host_ref, DOM0_SCRIPT, "unplug_hybrid", bridge=names.qbr,
                                    devices=[names.qvb, names.tap])
    return list(answer.get("deleted", []))


def remove_interim_network(ctx: Context, network_ref: str) -> bool:
    return destroy_network(ctx.xapi, network_ref)
