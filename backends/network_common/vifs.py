"""VIF records and their life cycle, the same for every backend.

:class:`VifBackend` implements the hooks that only touch XAPI (create a VIF,
hot plug and unplug it, remove it); a backend subclasses it and adds
``xhost_network_prepare``, ``xhost_network_post_start`` and
``xhost_network_cleanup``, plus :meth:`VifBackend.after_hot_unplug` when
unplugging must undo some plumbing.

Every step tolerates what is already done (a VIF already plugged, unplugged
or gone) so that retries, rollbacks and the cleanup sweep can run it again.
"""
from __future__ import annotations

import logging
from typing import Any

from xhost import exception, hookimpl
from xhost.context import Context, durable
from xhost.objects import Instance, Port

LOG = logging.getLogger(__name__)
NULL_REF = "OpaqueRef:NULL"
#: Power states in which a VM has a domain (and its VIFs have devices).
DOMAIN_STATES = ("Running", "Paused")


class NetworkBackendError(exception.XhostError):
    msg_fmt = "{reason}"


def find_vif(ctx: Context, vm_ref: str, mac: str) -> tuple[str, dict[str, Any]] | None:
    """The VIF of ``vm_ref`` with MAC ``mac`` (how Nova found a port's VIF)."""
    records = ctx.xapi.call("VIF.get_all_records_where", f'field "VM"="{vm_ref}"')
    for ref, rec in records.items():
        if rec["MAC"].lower() == mac.lower():
            return ref, rec
    return None


@durable
def destroy_vif(ctx_or_xapi: Any, vif_ref: str) -> None:
    """Remove a VIF, unplugging it first if its VM runs; a missing VIF is fine."""
    xapi = getattr(ctx_or_xapi, "xapi", ctx_or_xapi)
    try:
        xapi.call("VIF.destroy", vif_ref)
        return
    except exception.HandleInvalid:
        return
    except exception.XapiFailure as exc:
        if exc.code != "OPERATION_NOT_ALLOWED":
            raise
    unplug(xapi, vif_ref)
    try:
        xapi.call("VIF.destroy", vif_ref)
    except exception.HandleInvalid:
        pass


def plug(xapi: Any, vif_ref: str) -> None:
    """``VIF.plug``; already plugged is fine."""
    try:
        xapi.call("VIF.plug", vif_ref)
    except exception.XapiFailure as exc:
        if exc.code != "DEVICE_ALREADY_ATTACHED":
            raise


def unplug(xapi: Any, vif_ref: str) -> None:
    """``VIF.unplug``; already unplugged, a halted VM or a missing VIF is fine."""
    try:
        xapi.call("VIF.unplug", vif_ref)
    except (exception.HandleInvalid, exception.VmBadPowerState):
        pass
    except exception.XapiFailure as exc:
        if exc.code != "DEVICE_ALREADY_DETACHED":
            raise


def create_vif(ctx: Context, vm_ref: str, port: Port, network_ref: str, device: str,
               other_config: dict[str, str]) -> str:
    """``VIF.create`` (Nova's record), its undo registered at once.

    Idempotent: if the device already holds this port's VIF on this network,
    that VIF is returned.
    """
    record = {"device": str(device), "network": network_ref, "VM": vm_ref, "MAC": port.mac,
              "MTU": str(port.mtu or 1500), "other_config": dict(other_config),
              "qos_algorithm_type": "", "qos_algorithm_params": {}}
    try:
        ref = ctx.xapi.call("VIF.create", record)
    except exception.XapiFailure as exc:
        if exc.code != "DEVICE_ALREADY_EXISTS":
            raise
        found = find_vif(ctx, vm_ref, port.mac)
        if found and found[1]["device"] == str(device) and found[1]["network"] == network_ref:
            return found[0]
        raise NetworkBackendError(
            reason=f"VIF device {device} of the VM is already used by another interface; "
                   f"pick a free device (VM.get_allowed_VIF_devices)") from exc
    ctx.undo.push(f"destroy the VIF of port {port.id}", destroy_vif, ctx.xapi, ref)
    ctx.extra.setdefault("network.vif_devices", {})[ref] = str(device)
    return ref


def known_device(ctx: Context, vif_ref: str) -> str | None:
    """The device of a VIF created in this operation (no need to read it back)."""
    return ctx.extra.get("network.vif_devices", {}).get(vif_ref)


def vm_domain(ctx: Context, vm_ref: str) -> dict[str, Any]:
    """The VM record while it has a domain, read once per operation (domid
    and host do not change within one)."""
    cache = ctx.extra.setdefault("network.vm_records", {})
    rec = cache.get(vm_ref)
    if rec is None:
        rec = ctx.xapi.call("VM.get_record", vm_ref)
        if rec["power_state"] not in DOMAIN_STATES or int(rec["domid"]) < 0:
            raise NetworkBackendError(
                reason=f"VM {rec['name_label']!r} is {rec['power_state']}: a VIF's dom0 device "
                       f"exists only while the VM runs or is paused")
        cache[vm_ref] = rec
    return rec


def host_of(ctx: Context, vm_ref: str) -> str:
    """The host a VM's domain is on (dom0 work happens there)."""
    host = vm_domain(ctx, vm_ref)["resident_on"]
    return host if host and host != NULL_REF else ctx.host_ref


def vif_device_name(ctx: Context, vm_ref: str, device: str) -> str:
    """dom0's name of a VIF's backend device: ``vif<domid>.<device>``."""
    return f"vif{int(vm_domain(ctx, vm_ref)['domid'])}.{device}"


@durable
def destroy_network(xapi: Any, network_ref: str) -> bool:
    """``network.destroy`` unless a plugged VIF still uses it; a missing
    network is fine.  Returns whether the network is gone."""
    try:
        xapi.call("network.destroy", network_ref)
    except exception.HandleInvalid:
        return True
    except exception.XapiFailure as exc:
        if exc.code == "NETWORK_CONTAINS_VIF":
            LOG.info("network %s still has plugged VIFs; left in place", network_ref)
            return False
        raise
    return True


class VifBackend:
    """The XAPI-only hooks of a network backend (see the module doc)."""

    def vif_other_config(self, instance: Instance, port: Port) -> dict[str, str]:
        """``other_config`` of a port's VIF (Nova's ``neutron-port-id``)."""
        return {"neutron-port-id": port.id}

    def after_hot_unplug(self, ctx: Context, instance: Instance, vm_ref: str, port: Port,
                         vif_ref: str) -> None:
        """Undo the post-start plumbing once the domain's device is gone (none
        by default)."""

    @hookimpl
    def xhost_network_plug_vif(self, ctx: Context, instance: Instance, vm_ref: str, port: Port,
                               network_ref: str, device: str) -> str:
        vif = create_vif(ctx, vm_ref, port, network_ref, device,
                         self.vif_other_config(instance, port))
        # A spawn ("building") plugs its VIFs before it starts the VM.
        if instance.state != "building" and \
                ctx.xapi.call("VM.get_power_state", vm_ref) == "Running":
            self.xhost_network_hot_plug(ctx, instance, vm_ref, port, vif)
        return vif

    @hookimpl
    def xhost_network_hot_plug(self, ctx: Context, instance: Instance, vm_ref: str, port: Port,
                               vif_ref: str) -> bool:
        plug(ctx.xapi, vif_ref)
        self.xhost_network_post_start(ctx, instance, vm_ref, port, vif_ref)
        return True

    def xhost_network_post_start(self, ctx: Context, instance: Instance, vm_ref: str,
                                 port: Port, vif_ref: str) -> bool:  # pragma: no cover
        raise NotImplementedError

    @hookimpl
    def xhost_network_hot_unplug(self, ctx: Context, instance: Instance, vm_ref: str,
                                 port: Port, vif_ref: str) -> bool:
        unplug(ctx.xapi, vif_ref)
        self.after_hot_unplug(ctx, instance, vm_ref, port, vif_ref)
        return True

    @hookimpl
    def xhost_network_unplug_vif(self, ctx: Context, instance: Instance, vm_ref: str,
                                 port: Port) -> bool:
        found = find_vif(ctx, vm_ref, port.mac)
        if found is None:
            return True
        vif, rec = found
        if rec["currently_attached"]:
            self.xhost_network_hot_unplug(ctx, instance, vm_ref, port, vif)
        destroy_vif(ctx.xapi, vif)
        return True


def has_dom0_network(ctx: Context) -> bool:
    """False when the host is xhost's embedded simulator running without
    real-network mode: there are no dom0 bridges or Open vSwitch to plumb,
    and dom0 commands would act on this machine's own network."""
    sim = getattr(ctx.extra.get("connection"), "simulator", None)
    return sim is None or bool(sim.network.real)
