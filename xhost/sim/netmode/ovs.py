"""Open vSwitch in the dom0 namespace (``network_backend`` ``openvswitch``).

The simulator talks to the OVSDB it is given (or to a private Open vSwitch it
started) with ``ovs-vsctl``, exactly as XenServer's interface-reconfigure and
vif hotplug scripts do, in one transaction per reconciliation.  Using the
command-line tool rather than an in-process OVSDB client keeps the simulator
from sharing ovsdbapp's process-wide connection with the code under test.

Conventions reproduced from XenServer:

* bridges use the userspace ``netdev`` datapath here (no kernel module) and
  carry ``external_ids:xs-network-uuids`` (``;``-separated, the untagged
  network first);
* a VLAN network is a *fake bridge* ``add-br <bridge> <parent> <tag>``;
* a vif port's interface carries ``xs-vif-uuid``, ``xs-vm-uuid``,
  ``xs-network-uuid`` and ``attached-mac``.

The backend vif and the physical NIC are tap devices created in the
namespace where ovs-vswitchd runs, so ovs-vswitchd can open them.
"""
from __future__ import annotations

import json
import logging
import subprocess
from dataclasses import dataclass, field
from typing import Any

from ..errors import ApiError
from .desired import BACKEND_MAC, HostNetwork, Owned
from .linux import IpError, Namespace

LOG = logging.getLogger(__name__)

NETWORK_UUIDS = "xs-network-uuids"


class VsctlError(RuntimeError):
    """An ``ovs-vsctl`` command failed."""


@dataclass
class OvsBridge:
    name: str
    external_ids: dict[str, str]
    #: Fake (VLAN) bridge: its parent and tag.
    parent: str | None = None
    tag: int | None = None
    #: Port names whose effective bridge (``port-to-br``) is this one.
    ports: set[str] = field(default_factory=set)


@dataclass
class OvsState:
    bridges: dict[str, OvsBridge]
    #: interface name -> external_ids
    interfaces: dict[str, dict[str, str]]
    #: port name -> effective bridge
    port_bridge: dict[str, str]


def _value(v: Any) -> Any:
    if isinstance(v, list) and len(v) == 2 and isinstance(v[0], str):
        kind, payload = v
        if kind == "map":
            return {_value(k): _value(x) for k, x in payload}
        if kind == "set":
            return [_value(x) for x in payload]
        if kind == "uuid":
            return payload
    return v


def _rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [{h: _value(v) for h, v in zip(doc["headings"], row)} for row in doc["data"]]


class Vsctl:
    """``ovs-vsctl --db=<connection>``."""

    def __init__(self, connection: str, timeout: int = 15) -> None:
        self.connection = connection
        self.timeout = timeout

    def __call__(self, *args: str) -> str:
        argv = ["ovs-vsctl", f"--db={self.connection}", f"--timeout={self.timeout}", *args]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True,
                                  timeout=self.timeout + 5, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise VsctlError(f"ovs-vsctl --db={self.connection}: {exc}") from exc
        if proc.returncode != 0:
            raise VsctlError(f"ovs-vsctl --db={self.connection} "
                             f"{' '.join(args)[:300]}: {proc.stderr.strip()}")
        return proc.stdout

    def state(self) -> OvsState:
        out = self("--format=json", "--", "--columns=name,ports,external_ids", "list", "Bridge",
                   "--", "--columns=_uuid,name,tag,fake_bridge,external_ids", "list", "Port",
                   "--", "--columns=name,external_ids", "list", "Interface")
        docs = [json.loads(line) for line in out.splitlines() if line.strip()]
        bridge_rows, port_rows, iface_rows = (_rows(d) for d in docs)
        ports = {p["_uuid"]: p for p in port_rows}
        bridges: dict[str, OvsBridge] = {}
        port_bridge: dict[str, str] = {}
        for b in bridge_rows:
            bridges[b["name"]] = OvsBridge(b["name"], b["external_ids"])
        for b in bridge_rows:
            members = [ports[u] for u in b["ports"] if u in ports]
            fakes = {p["tag"]: p["name"] for p in members if p["fake_bridge"]}
            for p in members:
                if p["fake_bridge"]:
                    bridges[p["name"]] = OvsBridge(
                        p["name"], {k.removeprefix("fake-bridge-"): v
                                    for k, v in p["external_ids"].items()},
                        parent=b["name"], tag=p["tag"])
            for p in members:
                if p["fake_bridge"] or p["name"] == b["name"]:
                    continue
                tag = p["tag"] if isinstance(p["tag"], int) else None
                owner = fakes.get(tag, b["name"]) if tag is not None else b["name"]
                bridges[owner].ports.add(p["name"])
                port_bridge[p["name"]] = owner
        interfaces = {i["name"]: i["external_ids"] for i in iface_rows}
        return OvsState(bridges, interfaces, port_bridge)


class OvsBackend:
    """Reconcile Open vSwitch (and its tap devices) with a :class:`HostNetwork`."""

    kind = "openvswitch"

    def __init__(self, netns: str, connection: str) -> None:
        self.ns = Namespace(netns)
        self.vsctl = Vsctl(connection)

    def check(self, desired: HostNetwork, state: OvsState | None = None) -> None:
        state = self._state() if state is None else state
        for br in desired.bridges.values():
            if not br.managed and br.name not in state.bridges:
                raise ApiError("BRIDGE_NOT_AVAILABLE", br.name)

    def _state(self) -> OvsState:
        try:
            return self.vsctl.state()
        except VsctlError as exc:
            raise ApiError("INTERNAL_ERROR", f"dom0 Open vSwitch: {exc}") from None

    def apply(self, desired: HostNetwork, owned: Owned) -> None:
        state = self._state()
        self.check(desired, state)
        links = self.ns.links()
        taps: list[str] = []
        args: list[str] = []
        # Parents before fake bridges, within the one transaction.
        for br in sorted(desired.bridges.values(), key=lambda b: b.parent is not None):
            if not br.managed:
                continue
            uuids = ";".join(br.network_uuids)
            if br.name not in state.bridges:
                if br.parent is None:
                    args += ["--", "add-br", br.name, "--", "set", "Bridge", br.name,
                             "datapath_type=netdev"]
                else:
                    args += ["--", "add-br", br.name, br.parent, str(br.tag)]
                owned.bridges.add(br.name)
            elif state.bridges[br.name].external_ids.get(NETWORK_UUIDS) == uuids:
                continue
            args += ["--", "br-set-external-id", br.name, NETWORK_UUIDS, uuids]
        for up in desired.uplinks.values():
            if up.tag is not None:
                continue  # the fake bridge does the tagging
            devices = list(up.members) or [up.device]
            for dev in devices:
                if dev not in links:
                    taps += self.ns.tap(dev, master=None)
                    owned.links.add(dev)
            if state.port_bridge.get(up.device) == up.bridge:
                continue
            args += ["--", "--if-exists", "del-port", up.device]
            if up.members:
                args += ["--", "add-bond", up.bridge, up.device, *up.members]
            else:
                args += ["--", "add-port", up.bridge, up.device]
            owned.ports.add(up.device)
        for vif in desired.vifs.values():
            if vif.name not in links:
                taps += self.ns.tap(vif.name, master=None, mac=BACKEND_MAC, mtu=vif.mtu)
                owned.links.add(vif.name)
            ids = dict(vif.external_ids)
            current_ids = state.interfaces.get(vif.name)
            if state.port_bridge.get(vif.name) == vif.bridge and current_ids is not None \
                    and all(current_ids.get(k) == v for k, v in ids.items()):
                continue
            args += ["--", "--if-exists", "del-port", vif.name,
                     "--", "add-port", vif.bridge, vif.name,
                     "--", "set", "Interface", vif.name,
                     *(f'external_ids:"{k}"="{v}"' for k, v in sorted(ids.items()))]
            owned.ports.add(vif.name)
        try:
            self.ns.batch(taps)
            if args:
                self.vsctl(*args)
        except (IpError, VsctlError) as exc:
            raise ApiError("INTERNAL_ERROR", f"dom0 Open vSwitch: {exc}") from None
        self._remove_stale(desired, owned)

    def _remove_stale(self, desired: HostNetwork, owned: Owned) -> None:
        wanted_ports = set(desired.vifs) | {u.device for u in desired.uplinks.values()
                                            if u.tag is None}
        wanted_links = set(desired.vifs)
        for up in desired.uplinks.values():
            if up.tag is None:
                wanted_links.update(up.members or (up.device,))
        stale_ports = owned.ports - wanted_ports
        stale_bridges = owned.bridges - set(desired.bridges)
        if not stale_ports and not stale_bridges and owned.links <= wanted_links:
            return
        state = self._state()
        args: list[str] = []
        for port in sorted(stale_ports):
            if port in state.port_bridge:
                args += ["--", "--if-exists", "del-port", port]
        owned.ports -= stale_ports
        # Fake bridges first: a parent cannot go while a VLAN bridge hangs on it.
        gone: set[str] = set()
        for name in sorted(stale_bridges, key=lambda b: state.bridges.get(b) is not None
                           and state.bridges[b].parent is None):
            br = state.bridges.get(name)
            if br is None:
                owned.bridges.discard(name)
                continue
            foreign = br.ports - stale_ports - owned.ports
            children = {b.name for b in state.bridges.values() if b.parent == name} - gone
            if foreign or children:
                continue  # still used by someone else, as xapi would leave it
            args += ["--", "--if-exists", "del-br", name]
            gone.add(name)
            owned.bridges.discard(name)
        links = self.ns.links()
        stale_links = [n for n in owned.links - wanted_links if n in links]
        owned.links &= wanted_links
        try:
            if args:
                self.vsctl(*args)
            self.ns.batch(f"link del {n}" for n in stale_links)
        except (IpError, VsctlError) as exc:
            raise ApiError("INTERNAL_ERROR", f"dom0 Open vSwitch: {exc}") from None

    def teardown(self, owned: Owned) -> None:
        """Remove everything the simulator created (best effort)."""
        args: list[str] = []
        for port in sorted(owned.ports):
            args += ["--", "--if-exists", "del-port", port]
        try:
            state = self.vsctl.state()
            fakes = [b for b in owned.bridges if b in state.bridges
                     and state.bridges[b].parent is not None]
            for br in fakes + sorted(owned.bridges - set(fakes)):
                if br in state.bridges:
                    args += ["--", "--if-exists", "del-br", br]
            if args:
                self.vsctl(*args)
        except VsctlError as exc:
            LOG.warning("cleaning the dom0 Open vSwitch failed: %s", exc)
        try:
            links = self.ns.links()
        except IpError:
            links = {}
        for name in sorted(owned.links):
            if name in links:
                self.ns.try_command(f"link del {name}")
        owned.ports.clear()
        owned.bridges.clear()
        owned.links.clear()
