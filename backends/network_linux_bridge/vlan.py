"""VLAN networks made on demand, as Nova's XenAPIBridgeDriver made them.

A port with ``vlan`` set goes onto the XAPI network carrying that tag on the
physical interfaces (PIFs) of the network it names.  If there is none, xhost
creates it -- ``network.create`` then ``VLAN.create`` on each of those PIFs
(every host of the pool) -- and marks it as made on demand, so that it is
removed again once no VIF uses it.  An existing VLAN network (made by an
administrator) is used as it is and never removed.
"""
from __future__ import annotations

import logging
import threading
from typing import Any

from xhost import exception
from xhost.backends.network_common.vifs import NetworkBackendError
from xhost.context import Context, durable

LOG = logging.getLogger(__name__)
#: other_config marker of a VLAN network xhost made (and may remove).
ON_DEMAND_KEY = "xhost-vlan-on-demand"
NULL_REF = "OpaqueRef:NULL"

_guard = threading.Lock()
_locks: dict[tuple[str, int], threading.Lock] = {}


def _lock(base: str, tag: int) -> threading.Lock:
    with _guard:
        return _locks.setdefault((base, tag), threading.Lock())


def _base_pifs(pifs: dict[str, dict[str, Any]], base_ref: str) -> dict[str, dict[str, Any]]:
    return {ref: p for ref, p in pifs.items()
            if p["network"] == base_ref and int(p["VLAN"]) == -1
            and p.get("bond_slave_of", NULL_REF) == NULL_REF}


def find_vlan_network(pifs: dict[str, dict[str, Any]], base_ref: str, tag: int) -> str | None:
    """The network tagged ``tag`` on the PIFs of ``base_ref``, if any."""
    base = {(p["host"], p["device"]) for p in _base_pifs(pifs, base_ref).values()}
    for pif in pifs.values():
        if int(pif["VLAN"]) == tag and (pif["host"], pif["device"]) in base:
            return pif["network"]
    return None


def ensure_vlan_network(ctx: Context, base_ref: str, base: dict[str, Any], tag: int) -> str:
    """The VLAN ``tag`` network on ``base``'s PIFs, created when missing."""
    if not 0 <= tag <= 4094:
        raise NetworkBackendError(reason=f"VLAN tag {tag} is out of range (0-4094)")
    with _lock(base_ref, tag):
        pifs = ctx.xapi.call("PIF.get_all_records")
        found = find_vlan_network(pifs, base_ref, tag)
        if found is not None:
            return found
        carriers = _base_pifs(pifs, base_ref)
        if not carriers:
            raise NetworkBackendError(
                reason=f"network {base['name_label']!r} has no physical interface (PIF) to "
                       f"carry VLAN {tag}; name a network bound to a NIC (`xe pif-list`)")
        net = ctx.xapi.call("network.create", {
            "name_label": f"{base['name_label']} VLAN {tag}",
            "name_description": f"VLAN {tag} on {base['bridge']}, made by xhost on demand",
            "MTU": str(base.get("MTU") or 1500),
            "other_config": {ON_DEMAND_KEY: "true", "xhost-vlan-base": base["uuid"]}})
        ctx.undo.push(f"remove VLAN {tag} network", remove_if_unused, ctx.xapi, net)
        for pif in carriers:
            try:
                ctx.xapi.call("VLAN.create", pif, str(tag), net)
            except exception.XapiFailure as exc:
                if exc.code != "PIF_VLAN_EXISTS":
                    raise
                # Another xhost made it meanwhile: use theirs, drop ours.
                remove_if_unused(ctx.xapi, net)
                found = find_vlan_network(ctx.xapi.call("PIF.get_all_records"), base_ref, tag)
                if found is None:
                    raise
                return found
        return net


@durable
def remove_if_unused(xapi: Any, network_ref: str, own_mac: str | None = None) -> bool:
    """Remove an on-demand VLAN network (its VLANs, then itself) unless a VIF
    uses it; anything else, or a missing network, is left alone.

    :param own_mac: MAC of the port being cleaned up: its own unplugged VIF
        (a deleted server's, about to go with the VM) does not count as a user.
    """
    try:
        rec = xapi.call("network.get_record", network_ref)
    except exception.HandleInvalid:
        return True
    if rec["other_config"].get(ON_DEMAND_KEY) != "true":
        return False
    for vif in rec["VIFs"]:
        try:
            vrec = xapi.call("VIF.get_record", vif)
        except exception.HandleInvalid:
            continue
        if own_mac is None or vrec["MAC"].lower() != own_mac.lower() \
                or vrec["currently_attached"]:
            return False
        try:
            xapi.call("VIF.destroy", vif)
        except exception.HandleInvalid:
            pass
    for pif in rec["PIFs"]:
        try:
            vlan = xapi.call("PIF.get_VLAN_master_of", pif)
            if vlan != NULL_REF:
                xapi.call("VLAN.destroy", vlan)
        except exception.HandleInvalid:
            continue
    try:
        xapi.call("network.destroy", network_ref)
    except exception.HandleInvalid:
        pass
    return True


def release(ctx: Context, base_ref: str, tag: int, mac: str) -> bool:
    """After the port with ``mac`` on VLAN ``tag`` of ``base_ref`` went: drop
    the network if xhost made it and nothing else uses it any more."""
    with _lock(base_ref, tag):
        found = find_vlan_network(ctx.xapi.call("PIF.get_all_records"), base_ref, tag)
        if found is None:
            return True
        return remove_if_unused(ctx.xapi, found, own_mac=mac)
