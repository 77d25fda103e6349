"""What a host's dom0 network should look like, derived from the database.

xapi brings the network of a host in line with its database in a few places
(PIF plug, VIF plug at domain creation, VIF unplug at destruction); the
simulator's real-network mode computes the same picture in one go and lets a
backend (:mod:`.linux`, :mod:`.ovs`) reconcile the kernel or Open vSwitch
with it.  The rules are xapi's:

* a network has a bridge on a host while one of its PIFs on that host is
  attached (``PIF.currently_attached``), or -- for an internal network (no
  PIFs at all) -- while a VIF of a domain on that host is plugged into it, or
  after :meth:`NetworkMode.attach` for that host;
* an unmanaged network (``managed=false``) never gets a bridge from xapi: a
  VIF on it needs the bridge to exist already (``BRIDGE_NOT_AVAILABLE``);
* a plugged VIF of a running (or paused) domain is ``vif<domid>.<device>`` on
  its network's bridge, with the hotplug script's external ids;
* a physical PIF's device (``ethN``) is a port of its network's bridge, a VLAN
  PIF tags the bridge of its tagged PIF's network, a bond master aggregates
  its slaves' devices.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import NULL_REF

if TYPE_CHECKING:
    from ..db import Database

#: MAC address netback gives every backend vif (the guest sees the VIF's MAC).
BACKEND_MAC = "fe:ff:ff:ff:ff:ff"
#: Power states in which a domain exists.
_DOMAIN_STATES = ("Running", "Paused")


@dataclass(frozen=True)
class Bridge:
    """A bridge a network needs on the host."""

    name: str
    network_uuids: tuple[str, ...]
    #: For a VLAN network on Open vSwitch: the parent bridge and the tag.
    parent: str | None = None
    tag: int | None = None
    #: False for an unmanaged network: the bridge is never created or removed.
    managed: bool = True


@dataclass(frozen=True)
class Uplink:
    """A PIF's device on a bridge: ``ethN``, ``ethN.<tag>`` or a bond."""

    device: str
    bridge: str
    #: VLAN device on ``base`` with ``tag`` (Linux bridges only).
    base: str | None = None
    tag: int | None = None
    #: Bond members (device names) when ``device`` is a bond.
    members: tuple[str, ...] = ()


@dataclass(frozen=True)
class Vif:
    """A backend network interface of a domain."""

    name: str
    bridge: str
    mtu: int
    external_ids: tuple[tuple[str, str], ...]


@dataclass
class HostNetwork:
    """The desired dom0 network of one host."""

    bridges: dict[str, Bridge] = field(default_factory=dict)
    uplinks: dict[str, Uplink] = field(default_factory=dict)
    vifs: dict[str, Vif] = field(default_factory=dict)


@dataclass
class Owned:
    """What the simulator created (and may therefore remove) on one host."""

    bridges: set[str]
    links: set[str]
    ports: set[str]

    @classmethod
    def empty(cls) -> Owned:
        return cls(set(), set(), set())


def vif_name(domid: int, device: str) -> str:
    """The dom0 name of a domain's network backend: ``vif<domid>.<device>``."""
    return f"vif{domid}.{device}"


def compute(db: Database, host: str, attached_networks: set[str] | frozenset[str] = frozenset()
            ) -> HostNetwork:
    """The desired network of ``host`` (``attached_networks``: networks given
    to ``network.attach`` for this host)."""
    with db.lock:
        networks = dict(db.tables["network"])
        pifs = {r: p for r, p in db.tables["PIF"].items() if p["host"] == host}
        vlans = dict(db.tables["VLAN"])
        bonds = dict(db.tables["Bond"])
        vms = {r: v for r, v in db.tables["VM"].items()
               if v["resident_on"] == host and v["power_state"] in _DOMAIN_STATES
               and v["domid"] >= 0 and not v["is_control_domain"]}
        vifs = [db.tables["VIF"][v] for vm in vms.values() for v in vm["VIFs"]
                if v in db.tables["VIF"]]
    out = HostNetwork()
    # VLAN networks stack on their parent's bridge; remember them for the
    # parent's xs-network-uuids (base network first, as interface-reconfigure does).
    stacked: dict[str, list[str]] = {}

    def bridge_of_pif(pif_ref: str) -> str | None:
        pif = pifs.get(pif_ref)
        net = networks.get(pif["network"]) if pif else None
        return net["bridge"] if net else None

    for pif in pifs.values():
        if not pif["currently_attached"] or pif["bond_slave_of"] != NULL_REF:
            continue
        net = networks.get(pif["network"])
        if net is None:
            continue
        bridge = net["bridge"]
        if pif["VLAN"] >= 0 and pif["VLAN_master_of"] != NULL_REF:
            vlan = vlans.get(pif["VLAN_master_of"])
            tagged = vlan["tagged_PIF"] if vlan else NULL_REF
            parent = bridge_of_pif(tagged)
            base = pifs[tagged]["device"] if tagged in pifs else pif["device"]
            if parent is None:
                continue
            stacked.setdefault(parent, []).append(net["uuid"])
            out.bridges[bridge] = Bridge(bridge, (net["uuid"],), parent=parent,
                                         tag=pif["VLAN"], managed=net["managed"])
            out.uplinks[f"{base}.{pif['VLAN']}"] = Uplink(
                f"{base}.{pif['VLAN']}", bridge, base=base, tag=pif["VLAN"])
            continue
        out.bridges[bridge] = Bridge(bridge, (net["uuid"],), managed=net["managed"])
        members: tuple[str, ...] = ()
        for bond in pif["bond_master_of"]:
            brec = bonds.get(bond)
            if brec is not None:
                members = tuple(sorted(pifs[s]["device"] for s in brec["slaves"] if s in pifs))
        out.uplinks[pif["device"]] = Uplink(pif["device"], bridge, members=members)
    for parent, uuids in stacked.items():
        if parent in out.bridges:
            br = out.bridges[parent]
            out.bridges[parent] = Bridge(br.name, br.network_uuids + tuple(uuids),
                                         br.parent, br.tag, br.managed)
    internal = {r for r, n in networks.items() if not n["PIFs"]}
    for ref in attached_networks:
        net = networks.get(ref)
        if net is not None and ref in internal:
            out.bridges.setdefault(net["bridge"], Bridge(net["bridge"], (net["uuid"],),
                                                         managed=net["managed"]))
    for vif in vifs:
        if not vif["currently_attached"]:
            continue
        vm = vms.get(vif["VM"])
        net = networks.get(vif["network"])
        if vm is None or net is None:
            continue
        bridge = net["bridge"]
        if vif["network"] in internal:
            out.bridges.setdefault(bridge, Bridge(bridge, (net["uuid"],),
                                                  managed=net["managed"]))
        ids = [("attached-mac", vif["MAC"]), ("xs-network-uuid", net["uuid"]),
               ("xs-vif-uuid", vif["uuid"]), ("xs-vm-uuid", vm["uuid"])]
        # Legacy Nicira integration: the hotplug script copied this key into
        # the interface's iface-id (Nova <= Liberty relied on it).
        if vif["other_config"].get("nicira-iface-id"):
            ids.append(("iface-id", vif["other_config"]["nicira-iface-id"]))
        name = vif_name(vm["domid"], vif["device"])
        out.vifs[name] = Vif(name, bridge, int(vif["MTU"] or net["MTU"] or 1500),
                             tuple(sorted(ids)))
    return out
