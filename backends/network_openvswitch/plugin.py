"""The ``openvswitch`` network backend.

Topology (default, ``hybrid_plug = False``): the VIF goes straight onto the
XAPI network whose bridge is ``[xenserver] ovs_integration_bridge`` -- as
Nova did up to Liberty -- and once the domain exists, xhost writes the
``external_ids`` the Neutron Open vSwitch agent binds ports by (``iface-id``,
``attached-mac``, ``iface-status=active``, ``vm-uuid``) on the
``vif<domid>.<device>`` port XAPI's hotplug script added, over OVSDB
(``[network_openvswitch] ovsdb_connection``).  No dom0 script runs: zero
dom0 calls per VIF, where Nova made about 24.  The VIF also carries
``other_config:nicira-iface-id``, so the hotplug script itself restores
``iface-id`` when the domain is re-created behind xhost's back (guest reboot,
migration).  Security groups then come from Neutron's native ``openvswitch``
firewall driver (OpenFlow rules on the integration bridge), which needs no
extra bridge.

With ``hybrid_plug = True`` (or a port's ``hybrid_plug``) ports get Nova's
Mitaka-to-Victoria plumbing for the iptables firewall driver: an interim
network ``net-<port>`` for the VIF, a Linux bridge ``qbr<id>`` patched to the
interim bridge by the veth pair ``tap<id>``/``vif<id>``, and the veth pair
``qvb<id>``/``qvo<id>`` whose ``qvo`` end is the port on the integration
bridge carrying the external ids.  The Linux devices are made by one dom0
call (``xhost_network.plug_hybrid``) and removed by one; the Open vSwitch
ports are written over OVSDB.

Without ``ovs_integration_bridge`` a port goes onto the XAPI network its
``network`` names (name, bridge or uuid), and its external ids are written on
that network's bridge -- useful without Neutron.
"""
from __future__ import annotations

import logging
from typing import Any

from oslo_config import cfg

from xhost import exception, hookimpl
from xhost.backends.network_common import hybrid
from xhost.backends.network_common.names import HybridNames
from xhost.backends.network_common.networks import find_network
from xhost.backends.network_common.vifs import (
    NetworkBackendError,
    VifBackend,
    host_of,
    known_device,
    vif_device_name,
)
from xhost.context import Context
from xhost.objects import Instance, Port

LOG = logging.getLogger(__name__)
OVSDB_PORT = 6640

GROUP = cfg.OptGroup("network_openvswitch", title="'openvswitch' network backend options",
                     help="Options of the 'openvswitch' network backend (ports on the dom0 "
                          "Open vSwitch, as Neutron's Open vSwitch agent expects them).")
OPTS = [
    cfg.StrOpt("ovsdb_connection",
               sample_default="tcp:<host address>:6640",
               help="OVSDB connection of the dom0 Open vSwitch (tcp:IP:PORT, ssl:IP:PORT or "
                    "unix:PATH), the one the Neutron agent of this host uses. Unset: "
                    "tcp:<address>:6640 where <address> is XAPI's host.address (the "
                    "management interface) of the host the VM runs on -- dom0 must listen "
                    "there (`ovs-vsctl set-manager ptcp:6640`, firewall open for tcp/6640, as "
                    "os-xenapi set it up); with the embedded simulator in real-network mode, "
                    "its dom0 OVSDB."),
    cfg.FloatOpt("ovsdb_timeout", default=10.0, min=0.5,
                 help="Seconds to wait to connect to OVSDB and for a transaction."),
    cfg.FloatOpt("vif_timeout", default=60.0, min=1.0,
                 help="Seconds to wait for XAPI's hotplug script (or the interim bridge) to "
                      "put a VIF's device on Open vSwitch after the domain starts."),
    cfg.BoolOpt("hybrid_plug", default=False,
                help="Plug every port through Nova's hybrid qbr/qvb/qvo plumbing (an interim "
                     "network and a Linux bridge, for the iptables security-group driver): "
                     "one dom0 call per VIF to build it and one to remove it. Off: VIFs go "
                     "straight onto the integration bridge (use Neutron's native "
                     "'openvswitch' firewall driver for security groups); a port can still "
                     "ask for hybrid plumbing (Port.hybrid_plug)."),
]


def list_opts() -> list[tuple[cfg.OptGroup, list[cfg.Opt]]]:
    return [(GROUP, OPTS)]


def port_external_ids(instance: Instance, port: Port) -> dict[str, str]:
    """What the Neutron Open vSwitch agent reads on a port's interface."""
    return {"iface-id": port.id, "attached-mac": port.mac.lower(), "iface-status": "active",
            "vm-uuid": instance.uuid}


def _format_tcp(address: str) -> str:
    return f"tcp:[{address}]:{OVSDB_PORT}" if ":" in address else f"tcp:{address}:{OVSDB_PORT}"


class OpenvswitchBackend(VifBackend):
    """Ports on the dom0 Open vSwitch (see the module doc)."""

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        # A group object of its own: oslo.config's copy of a registered group
        # shares the option table, so one shared GROUP would leak overrides
        # between configurations.
        group = cfg.OptGroup(GROUP.name, title=GROUP.title, help=GROUP.help)
        conf.register_group(group)
        conf.register_opts(OPTS, group=group)
        self.conf = conf
        self.opts = conf.network_openvswitch
        self._addresses: dict[str, str] = {}
        self._told_no_ovs = False

    # -- configuration ----------------------------------------------------------

    @property
    def integration_bridge(self) -> str | None:
        return self.conf.xenserver.ovs_integration_bridge or None

    def hybrid_for(self, port: Port) -> bool:
        return bool(self.opts.hybrid_plug or port.hybrid_plug)

    def _connection_string(self, ctx: Context, host_ref: str) -> str | None:
        """The OVSDB to use for ``host_ref``; ``None`` when the host has no
        Open vSwitch at all (the embedded simulator without real network)."""
        if self.opts.ovsdb_connection:
            return self.opts.ovsdb_connection
        connection = ctx.extra.get("connection")
        sim = getattr(connection, "simulator", None)
        if sim is not None:
            if sim.network.real:
                return sim.network.ovsdb_connection(host_ref)
            if not self._told_no_ovs:
                LOG.info("openvswitch: the embedded simulator runs without real-network mode, "
                         "so there is no dom0 Open vSwitch to write ports to; VIFs are "
                         "plugged at the XAPI level only")
                self._told_no_ovs = True
            return None
        if host_ref not in self._addresses:
            self._addresses[host_ref] = ctx.xapi.call("host.get_address", host_ref)
        return _format_tcp(self._addresses[host_ref])

    def ovsdb(self, ctx: Context, host_ref: str) -> Any:
        """The OVSDB client for ``host_ref`` (``None``: no Open vSwitch)."""
        from . import ovsdb

        target = self._connection_string(ctx, host_ref)
        if target is None:
            return None
        try:
            return ovsdb.connect(target, self.opts.ovsdb_timeout)
        except ovsdb.OvsdbError as exc:
            raise ovsdb.OvsdbError(connection=target,
                                   reason=str(exc).split(": ", 1)[-1]
                                   + self._backend_hint(ctx, host_ref)) from exc

    def _backend_hint(self, ctx: Context, host_ref: str) -> str:
        try:
            version = ctx.xapi.call("host.get_software_version", host_ref)
        except exception.XhostError:
            return ""
        if version.get("network_backend") == "bridge":
            return (". This host's network backend is 'bridge' (Linux bridges, no Open "
                    "vSwitch): set [xenserver] network_backend = linux_bridge")
        return ""

    # -- where a port goes ----------------------------------------------------------

    def target(self, ctx: Context, port: Port) -> tuple[str, str]:
        """(XAPI network, bridge) the port belongs to: the integration bridge's
        network, else the network the port names."""
        if self.integration_bridge:
            key = ("network_openvswitch.integration", self.integration_bridge)
            # A network's bridge never changes: found once per connection (a
            # network re-created meanwhile is found again, see plug_vif).
            ref, rec = ctx.xapi.remembered(key, lambda: find_network(
                ctx, self.integration_bridge, by_bridge_only=True,
                hint=f" ([xenserver] ovs_integration_bridge); create it with `xe "
                     f"network-create name-label={self.integration_bridge} "
                     f"bridge={self.integration_bridge}` or correct the option"))
            ctx.extra.setdefault("network.by_name", {})[(self.integration_bridge, True)] = \
                (ref, rec)
        else:
            ref, rec = find_network(ctx, port.network)
        return ref, rec["bridge"]

    def vif_other_config(self, instance: Instance, port: Port) -> dict[str, str]:
        other = super().vif_other_config(instance, port)
        if not self.hybrid_for(port):
            # XenServer's vif hotplug script copies it into external_ids:iface-id
            # whenever it (re)creates the port; never with hybrid plumbing, where
            # Neutron would see the port id on two OVS ports (why Nova dropped it).
            other["nicira-iface-id"] = port.id
        return other

    # -- hooks --------------------------------------------------------------------------

    @hookimpl
    def xhost_network_prepare(self, ctx: Context, instance: Instance, port: Port) -> str:
        network, bridge = self.target(ctx, port)
        if not self.hybrid_for(port):
            return network
        return hybrid.ensure_interim_network(ctx, port, target_bridge=bridge)

    @hookimpl
    def xhost_network_plug_vif(self, ctx: Context, instance: Instance, vm_ref: str, port: Port,
                               network_ref: str, device: str) -> str:
        try:
            return super().xhost_network_plug_vif(ctx, instance, vm_ref, port, network_ref,
                                                  device)
        except exception.HandleInvalid as exc:
            # The remembered integration network was re-created: find it again.
            if network_ref not in exc.params or not self.integration_bridge:
                raise
            ctx.xapi.forget(("network_openvswitch.integration", self.integration_bridge))
            ctx.extra.get("network.by_name", {}).pop((self.integration_bridge, True), None)
        network = self.xhost_network_prepare(ctx, instance, port)
        return super().xhost_network_plug_vif(ctx, instance, vm_ref, port, network, device)

    @hookimpl
    def xhost_network_post_start(self, ctx: Context, instance: Instance, vm_ref: str,
                                 port: Port, vif_ref: str) -> bool:
        device = known_device(ctx, vif_ref)
        if not self.hybrid_for(port) and device is not None and instance.state == "building":
            return self._post_start_direct(ctx, instance, port)
        host = host_of(ctx, vm_ref)
        if self.hybrid_for(port) or device is None:
            vif = ctx.xapi.call("VIF.get_record", vif_ref)
            interim = self._interim_record(ctx, vif["network"], port)
            if interim is not None:
                return self._post_start_hybrid(ctx, instance, port, host, interim,
                                               self.ovsdb(ctx, host))
            device = vif["device"]
        db = self.ovsdb(ctx, host)
        name = vif_device_name(ctx, vm_ref, device)
        if db is None:
            return True
        bridge = db.wait_for_port(name, self.opts.vif_timeout)
        return self._label_port(db, instance, port, name, bridge)

    def _label_port(self, db: Any, instance: Instance, port: Port, name: str,
                    bridge: str) -> bool:
        """Give the port's device on ``bridge`` the port's external_ids, once
        it is known to be on the integration bridge (when there is one)."""
        if self.integration_bridge and bridge != self.integration_bridge:
            raise NetworkBackendError(
                reason=f"the device {name} of port {port.id} is on Open vSwitch bridge "
                       f"{bridge!r}, not on the integration bridge "
                       f"{self.integration_bridge!r}: the VIF's network does not use it")
        db.set_external_ids(name, port_external_ids(instance, port))
        return True

    def _post_start_direct(self, ctx: Context, instance: Instance, port: Port) -> bool:
        """A spawn's VIF, plugged straight onto the switch: its domain was
        started on this host, and XAPI's hotplug script names the port's
        device ``vif<domid>.<device>`` and marks it with the port's MAC, which
        is enough to find it without asking XAPI for the domid."""
        db = self.ovsdb(ctx, ctx.host_ref)
        if db is None:
            return True
        name, bridge = db.wait_for_interface_with("attached-mac", port.mac.lower(),
                                                  self.opts.vif_timeout, prefix="vif")
        return self._label_port(db, instance, port, name, bridge)

    def _interim_record(self, ctx: Context, network_ref: str,
                        port: Port) -> dict[str, Any] | None:
        targets = ctx.extra.get("network.by_name", {})
        if any(ref == network_ref for ref, _rec in targets.values()):
            return None  # the port's own network: plugged directly
        rec = ctx.xapi.call("network.get_record", network_ref)
        return rec if rec["other_config"].get(hybrid.PORT_KEY) == port.id else None

    def _post_start_hybrid(self, ctx: Context, instance: Instance, port: Port, host: str,
                           interim: dict[str, Any], db: Any) -> bool:
        if db is None:
            return True
        names = HybridNames.for_port(port.id)
        target = interim["other_config"].get(hybrid.TARGET_KEY) or self.integration_bridge
        if not target:
            raise NetworkBackendError(reason=f"interim network of port {port.id} does not say "
                                             f"which bridge its qvo port goes to")
        # XAPI makes the interim bridge when the VIF is plugged on a domain.
        db.wait_for_bridge(interim["bridge"], self.opts.vif_timeout)
        hybrid.plug(ctx, host, port, patch=True)
        ctx.undo.push(f"delete the Open vSwitch ports of port {port.id}", db.delete_ports,
                      [names.patch, names.qvo])
        db.add_ports([(interim["bridge"], names.patch, {}),
                      (target, names.qvo, port_external_ids(instance, port))])
        return True

    def after_hot_unplug(self, ctx: Context, instance: Instance, vm_ref: str, port: Port,
                         vif_ref: str) -> None:
        # Direct plugging: XAPI's hotplug script removed the port with the device.
        if not self.hybrid_for(port) or hybrid.interim_of_vif(ctx, vif_ref, port) is None:
            return
        host = host_of(ctx, vm_ref)
        db = self.ovsdb(ctx, host)
        if db is None:
            return
        names = HybridNames.for_port(port.id)
        db.delete_ports([names.qvo, names.patch])
        hybrid.unplug(ctx, host, port)

    @hookimpl
    def xhost_network_cleanup(self, ctx: Context, instance: Instance, port: Port) -> bool:
        names = HybridNames.for_port(port.id)
        found = hybrid.find_interim_network(ctx, port)
        if found is None:
            self._sweep_ports(ctx, port, strict=False)
            return True
        ref, rec = found
        for vif in rec["VIFs"]:
            try:
                if ctx.xapi.call("VIF.get_currently_attached", vif):
                    LOG.info("interim network of port %s is in use by a plugged VIF; kept",
                             port.id)
                    return True
            except exception.HandleInvalid:
                continue
        db = self._sweep_ports(ctx, port, strict=True, extra=[names.patch, names.qvo])
        if db is not None:
            hybrid.unplug(ctx, ctx.host_ref, port)
        hybrid.remove_interim_network(ctx, ref)
        # XAPI removes the interim bridge with the network once our patch port
        # is gone; a bridge it left behind (nothing plugged) goes too, as Nova did.
        if db is not None and rec["bridge"] and db.bridge_ports(rec["bridge"]) == []:
            db.delete_bridge(rec["bridge"])
        return True

    def _sweep_ports(self, ctx: Context, port: Port, *, strict: bool,
                     extra: list[str] | None = None) -> Any:
        """Delete the Open vSwitch ports left for ``port`` (its qvo and patch,
        and any interface still claiming its iface-id)."""
        from . import ovsdb

        try:
            db = self.ovsdb(ctx, ctx.host_ref)
            if db is None:
                return None
            stale = db.interfaces_with("iface-id", port.id)
            db.delete_ports(sorted(set(stale) | set(extra or [])))
            return db
        except ovsdb.OvsdbError as exc:
            if strict:
                raise
            # Direct plugging leaves nothing of xhost's on the switch: XAPI removes
            # the vif ports itself, this sweep only catches leftovers.
            LOG.warning("openvswitch: could not check Open vSwitch for leftovers of port "
                        "%s: %s", port.id, exc)
            return None
