"""Kernel links in the dom0 namespace: Linux bridges (``network_backend``
``bridge``) and the tap devices standing for netback vifs and physical NICs.

Everything goes through iproute2's ``ip -n <namespace>``, batched so that one
reconciliation costs one or two processes.  The kernel of the machine may
lack modules (``8021q`` for VLAN devices, ``bonding``); such optional
devices are attempted one by one and their absence is logged, never fatal:
the bridges and vifs -- what network backends are tested against -- do not
depend on them.
"""
from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import ApiError
from .desired import BACKEND_MAC, HostNetwork, Owned

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class KernelLink:
    name: str
    kind: str | None
    master: str | None


class IpError(RuntimeError):
    """An ``ip`` command failed."""


class Namespace:
    """``ip`` commands in one named network namespace."""

    def __init__(self, name: str) -> None:
        self.name = name
        #: Optional commands the kernel refused once (not retried).
        self.refused: set[str] = set()

    def links(self) -> dict[str, KernelLink]:
        out = self._run(["-j", "-d", "link", "show"]).stdout
        data = json.loads(out or "[]")
        return {i["ifname"]: KernelLink(i["ifname"], i.get("linkinfo", {}).get("info_kind"),
                                        i.get("master")) for i in data}

    def batch(self, commands: Iterable[str]) -> None:
        """Run ``ip`` commands in one process; stop at the first failure."""
        script = "".join(c + "\n" for c in commands)
        if script:
            self._run(["-batch", "-"], script)

    def try_command(self, command: str) -> bool:
        """Run one optional command; False (logged once) when the kernel refuses it."""
        if command in self.refused:
            return False
        try:
            self._run(command.split())
        except IpError as exc:
            LOG.warning("dom0 namespace %s: %s (the kernel lacks the feature; "
                        "continuing without this device)", self.name, exc)
            self.refused.add(command)
            return False
        return True

    def tap(self, name: str, *, master: str | None, mac: str | None = None,
            mtu: int | None = None) -> list[str]:
        """Commands creating a tap device ``name`` (optionally on ``master``)."""
        attrs = ""
        if mac:
            attrs += f" address {mac}"
        if mtu:
            attrs += f" mtu {mtu}"
        if master:
            attrs += f" master {master}"
        return [f"tuntap add dev {name} mode tap", f"link set dev {name}{attrs} up"]

    def _run(self, args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
        try:
            proc = subprocess.run(["ip", "-n", self.name, *args], input=stdin, text=True,
                                  capture_output=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise IpError(f"ip -n {self.name} {' '.join(args)}: {exc}") from exc
        if proc.returncode != 0:
            what = " ".join(args) if stdin is None else "batch: " + stdin.strip().replace(
                "\n", "; ")
            raise IpError(f"ip -n {self.name} {what}: {proc.stderr.strip()}")
        return proc


class LinuxBridgeBackend:
    """Reconcile Linux bridges and taps with a :class:`HostNetwork`."""

    kind = "bridge"

    def __init__(self, netns: str) -> None:
        self.ns = Namespace(netns)

    def check(self, desired: HostNetwork, current: dict[str, KernelLink] | None = None) -> None:
        """BRIDGE_NOT_AVAILABLE for an unmanaged network whose bridge is missing."""
        current = self.ns.links() if current is None else current
        for br in desired.bridges.values():
            if not br.managed and br.name not in current:
                raise ApiError("BRIDGE_NOT_AVAILABLE", br.name)

    def apply(self, desired: HostNetwork, owned: Owned) -> None:
        current = self.ns.links()
        self.check(desired, current)
        create: list[str] = []
        optional: list[tuple[str, str]] = []  # (uplink device, command)
        for br in desired.bridges.values():
            if br.managed and br.name not in current:
                create += [f"link add {br.name} type bridge", f"link set {br.name} up"]
                owned.bridges.add(br.name)
        for up in desired.uplinks.values():
            if up.device in current:
                if current[up.device].master != up.bridge:
                    create.append(f"link set dev {up.device} master {up.bridge}")
                continue
            if up.tag is not None and up.base is not None:
                # 802.1Q device on the tagged PIF's device (needs the 8021q module).
                if up.base not in current and up.base not in owned.links:
                    create += self.ns.tap(up.base, master=None)
                    owned.links.add(up.base)
                optional.append((up.device, f"link add link {up.base} name {up.device} "
                                             f"type vlan id {up.tag}"))
            elif up.members:
                optional.append((up.device, f"link add {up.device} type bond"))
                for member in up.members:
                    if member not in current:
                        create += self.ns.tap(member, master=None)
                        owned.links.add(member)
            else:
                create += self.ns.tap(up.device, master=up.bridge)
            owned.links.add(up.device)
        for vif in desired.vifs.values():
            if vif.name in current:
                if current[vif.name].master != vif.bridge:
                    create.append(f"link set dev {vif.name} master {vif.bridge}")
                continue
            create += self.ns.tap(vif.name, master=vif.bridge, mac=BACKEND_MAC, mtu=vif.mtu)
            owned.links.add(vif.name)
        try:
            self.ns.batch(create)
        except IpError as exc:
            raise ApiError("INTERNAL_ERROR", f"dom0 network: {exc}") from None
        for device, command in optional:
            if self.ns.try_command(command):
                up = desired.uplinks[device]
                members = [f"link set dev {m} master {up.device}" for m in up.members]
                self.ns.batch(members + [f"link set dev {up.device} master {up.bridge}",
                                         f"link set dev {up.device} up"])
        self._remove_stale(desired, owned)

    def _remove_stale(self, desired: HostNetwork, owned: Owned) -> None:
        current = self.ns.links()
        wanted_links = set(desired.vifs) | set(desired.uplinks)
        for up in desired.uplinks.values():
            wanted_links.update(up.members)
            if up.base:
                wanted_links.add(up.base)
        gone = [name for name in owned.links - wanted_links if name in current]
        owned.links &= wanted_links
        remaining = {n: link for n, link in current.items() if n not in gone}
        stale_bridges = []
        for br in sorted(owned.bridges - set(desired.bridges)):
            ports = [n for n, link in remaining.items() if link.master == br]
            if br not in current:
                owned.bridges.discard(br)
            elif not ports:
                # Like xapi, a bridge someone else still uses (a backend's
                # patch port) is left alone.
                stale_bridges.append(br)
                owned.bridges.discard(br)
        commands = [f"link del {n}" for n in gone] + [f"link del {b}" for b in stale_bridges]
        try:
            self.ns.batch(commands)
        except IpError as exc:
            raise ApiError("INTERNAL_ERROR", f"dom0 network: {exc}") from None

    def teardown(self, owned: Owned) -> None:
        """Remove everything the simulator created (best effort)."""
        try:
            current = self.ns.links()
        except IpError:
            return
        for name in sorted(owned.links) + sorted(owned.bridges):
            if name in current:
                self.ns.try_command(f"link del {name}")
        owned.links.clear()
        owned.bridges.clear()

    def ports(self, bridge: str) -> list[str]:
        return sorted(n for n, link in self.ns.links().items() if link.master == bridge)
