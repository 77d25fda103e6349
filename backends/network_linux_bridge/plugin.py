"""The ``linux_bridge`` network backend.

A port goes onto the XAPI network its ``network`` names (name_label, bridge
such as ``xenbr1``, or uuid); XAPI's hotplug script puts the VIF's device
``vif<domid>.<device>`` on the network's Linux bridge.  A port with ``vlan``
set goes onto the VLAN network with that tag on the named network's NICs,
made on demand (:mod:`.vlan`).  Plain ports need no dom0 call.

With ``hybrid_plug = True`` (or a port's ``hybrid_plug``) a port gets Nova's
hybrid plumbing for iptables security groups: its VIF goes onto a per-port
interim network whose Linux bridge XAPI names ``qbr<id>``, and one dom0 call
(``xhost_network.plug_hybrid``) joins that bridge to the port's bridge
through the veth pair ``qvb<id>``/``qvo<id>``::

    guest -- vif<domid>.<n> -- qbr<id> -- qvb<id> ~ qvo<id> -- xenbrN

Hybrid plumbing needs Linux bridges in dom0 (the host's ``network_backend``
``bridge``); plain and VLAN ports work on any XAPI host.
"""
from __future__ import annotations

import logging

from oslo_config import cfg

from xhost import exception, hookimpl
from xhost.backends.network_common import hybrid
from xhost.backends.network_common.names import HybridNames
from xhost.backends.network_common.networks import NetworkCache, find_network
from xhost.backends.network_common.vifs import (
    NetworkBackendError,
    VifBackend,
    has_dom0_network,
    host_of,
)
from xhost.context import Context
from xhost.objects import Instance, Port

from . import vlan

LOG = logging.getLogger(__name__)

GROUP = cfg.OptGroup("network_linux_bridge", title="'linux_bridge' network backend options",
                     help="Options of the 'linux_bridge' network backend (VIFs on XAPI "
                          "networks bound to Linux bridges).")
OPTS = [
    cfg.BoolOpt("hybrid_plug", default=False,
                help="Plug every port through Nova's hybrid qbr/qvb/qvo plumbing (a per-port "
                     "interim network whose Linux bridge qbr<id> is joined to the port's "
                     "bridge by a veth pair), where iptables security groups can filter it: "
                     "one dom0 call per VIF to build it, one to remove it. Needs the host's "
                     "network backend 'bridge'. A port can ask for it alone "
                     "(Port.hybrid_plug)."),
    cfg.IntOpt("network_cache_seconds", default=60, min=0,
               help="Seconds the XAPI network a port's network name found is reused before "
                    "it is looked up again (an operation that fails, or a network found "
                    "gone, looks it up again at once; a name given to another network is "
                    "noticed after this time). 0 looks it up for every spawn (one XAPI "
                    "call)."),
]


def list_opts() -> list[tuple[cfg.OptGroup, list[cfg.Opt]]]:
    return [(GROUP, OPTS)]


class LinuxBridgeBackend(VifBackend):
    """VIFs on Linux-bridge networks (see the module doc)."""

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        # A group object of its own: oslo.config's copy of a registered group
        # shares the option table, so one shared GROUP would leak overrides
        # between configurations.
        group = cfg.OptGroup(GROUP.name, title=GROUP.title, help=GROUP.help)
        conf.register_group(group)
        conf.register_opts(OPTS, group=group)
        self.conf = conf
        self.opts = conf.network_linux_bridge
        self._backends: dict[str, str] = {}
        self.networks = NetworkCache(self.opts.network_cache_seconds)

    def hybrid_for(self, port: Port) -> bool:
        return bool(self.opts.hybrid_plug or port.hybrid_plug)

    def _require_linux_bridges(self, ctx: Context) -> None:
        host = ctx.host_ref
        if host not in self._backends:
            version = ctx.xapi.call("host.get_software_version", host)
            self._backends[host] = version.get("network_backend", "")
        if self._backends[host] not in ("bridge", ""):
            raise NetworkBackendError(
                reason=f"hybrid plumbing with the linux_bridge backend needs Linux bridges "
                       f"in dom0, but this host's network backend is "
                       f"{self._backends[host]!r}; use [xenserver] network_backend = "
                       f"openvswitch with [network_openvswitch] hybrid_plug = true")

    def _port_network(self, ctx: Context, port: Port) -> tuple[str, str]:
        """(XAPI network, bridge) the port's traffic belongs on."""
        ref, rec = self.networks.find(ctx, port.network)
        if port.vlan is None:
            return ref, rec["bridge"]
        try:
            net = vlan.ensure_vlan_network(ctx, ref, rec, int(port.vlan))
        except exception.HandleInvalid as exc:
            if ref not in exc.params:
                raise
            self.networks.forget(ctx, port.network)  # gone since it was found
            ref, rec = self.networks.find(ctx, port.network)
            net = vlan.ensure_vlan_network(ctx, ref, rec, int(port.vlan))
        return net, ctx.xapi.call("network.get_bridge", net)

    @hookimpl
    def xhost_network_prepare(self, ctx: Context, instance: Instance, port: Port) -> str:
        if self.hybrid_for(port):
            self._require_linux_bridges(ctx)
        network, bridge = self._port_network(ctx, port)
        if not self.hybrid_for(port):
            return network
        return hybrid.ensure_interim_network(ctx, port, bridge=HybridNames.for_port(port.id).qbr,
                                             target_bridge=bridge)

    @hookimpl
    def xhost_network_plug_vif(self, ctx: Context, instance: Instance, vm_ref: str, port: Port,
                               network_ref: str, device: str) -> str:
        try:
            return super().xhost_network_plug_vif(ctx, instance, vm_ref, port, network_ref,
                                                  device)
        except exception.HandleInvalid as exc:
            # The network is gone: a remembered one re-created since, or an
            # on-demand VLAN network another xhost removed after our prepare.
            # Look it up (or make it) again and retry once.
            if network_ref not in exc.params:
                raise
            self.networks.forget(ctx, port.network)
        network = self.xhost_network_prepare(ctx, instance, port)
        return super().xhost_network_plug_vif(ctx, instance, vm_ref, port, network, device)

    @hookimpl
    def xhost_network_post_start(self, ctx: Context, instance: Instance, vm_ref: str,
                                 port: Port, vif_ref: str) -> bool:
        if not self.hybrid_for(port) or not has_dom0_network(ctx):
            return True  # XAPI's hotplug script puts the VIF on the bridge
        network = ctx.xapi.call("VIF.get_network", vif_ref)
        rec = ctx.xapi.call("network.get_record", network)
        target = rec["other_config"].get(hybrid.TARGET_KEY)
        if rec["other_config"].get(hybrid.PORT_KEY) != port.id or not target:
            raise NetworkBackendError(
                reason=f"the VIF of port {port.id} is not on its interim network "
                       f"(found {rec['name_label']!r}); was hybrid_plug switched on after "
                       f"it was plugged? Detach and attach the port again")
        host = host_of(ctx, vm_ref)
        self._bring_up(ctx, target, host)
        hybrid.plug(ctx, host, port, qvo_master=target)
        return True

    @staticmethod
    def _bring_up(ctx: Context, bridge: str, host: str) -> None:
        """Plug the host's PIF of the network owning ``bridge``: XAPI brings a
        NIC's bridge up only for VIFs on its network, and here the VIF is on
        the interim network."""
        network, _rec = find_network(ctx, bridge, by_bridge_only=True)
        pifs = ctx.xapi.call("PIF.get_all_records_where",
                             f'field "network"="{network}" and field "host"="{host}"')
        for pif, rec in pifs.items():
            if not rec["currently_attached"]:
                ctx.xapi.call("PIF.plug", pif)

    def after_hot_unplug(self, ctx: Context, instance: Instance, vm_ref: str, port: Port,
                         vif_ref: str) -> None:
        if not self.hybrid_for(port) or not has_dom0_network(ctx):
            return
        if hybrid.interim_of_vif(ctx, vif_ref, port) is not None:
            hybrid.unplug(ctx, host_of(ctx, vm_ref), port)

    @hookimpl
    def xhost_network_cleanup(self, ctx: Context, instance: Instance, port: Port) -> bool:
        found = hybrid.find_interim_network(ctx, port)
        if found is not None:
            ref, rec = found
            for vif in rec["VIFs"]:
                try:
                    if ctx.xapi.call("VIF.get_currently_attached", vif):
                        LOG.info("interim network of port %s is in use; kept", port.id)
                        return True
                except exception.HandleInvalid:
                    continue
            if has_dom0_network(ctx):
                hybrid.unplug(ctx, ctx.host_ref, port)
            hybrid.remove_interim_network(ctx, ref)
        if port.vlan is not None:
            try:
                base, _rec = find_network(ctx, port.network)
            except NetworkBackendError:
                return True  # the base network is gone, and with it its VLANs
            vlan.release(ctx, base, int(port.vlan), port.mac)
        return True
