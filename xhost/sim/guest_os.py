"""A simulated guest operating system: what runs inside one domain.

After boot it reads its configuration the way guests do (``vm-data/hostname``;
``vm-data/networking/<mac>`` JSON in Nova's format, ``{"mac", "ips": [{"ip",
"netmask", "gateway"}], "ip6s": [...], "gateway", ...}``; Ansible's
``vm-data/networks/<device>/ip``; otherwise a DHCP lease derived from the MAC)
and, when it has PV tools, publishes what xe-guest-utilities publishes: OS
version (``data/os_*``), tools version (``attr/PVAddons/*``), one address per
VIF (``attr/vif/<n>/ipv4/0``), memory, feature flags (``control/feature-*``,
``feature/hotplug/*``), connected frontends, then ``data/updated``.

What the guest has received and applied -- hostname, network, and (through a
guest agent) password, SSH keys, injected files -- is its :class:`GuestState`,
which lives as long as the VM (it survives reboots: it is on the guest's
disk) and is what ``GET /sim/guests/<vm uuid>`` shows.

Guest agents (the agent protocol of the guest-agent issue, or anything else)
plug in through :meth:`xhost.sim.guests.GuestManager.register_agent`; they
get the :class:`SimulatedGuest` with its domain-scoped
:attr:`SimulatedGuest.xenstore` (read, write, watch as the guest).
"""
from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from .guest_domains import XEN_STATE_CONNECTED, connect_backends
from .xenstore import DomainXenStore, XenStoreError

if TYPE_CHECKING:
    from .guests import GuestManager

LOG = logging.getLogger(__name__)

TOOLS_VERSION = {"MajorVersion": "8", "MinorVersion": "3", "MicroVersion": "0",
                 "BuildVersion": "1"}
FEATURES = ("feature-shutdown", "feature-poweroff", "feature-reboot", "feature-suspend",
            "feature-vcpu-hotplug", "feature-balloon")
LINUX = {"os_name": "Debian GNU/Linux 12 (bookworm)", "os_uname": "6.1.0-25-amd64",
         "os_distro": "debian", "os_majorver": "12", "os_minorver": "7"}
WINDOWS = {"os_name": "Microsoft Windows Server 2022 Standard|C:\\Windows|"
                      "\\Device\\Harddisk0\\Partition2",
           "os_distro": "windows", "os_majorver": "10", "os_minorver": "0"}


def lease_for(mac: str, device: str = "") -> str:
    """The deterministic "DHCP lease" of a NIC without configuration."""
    digest = hashlib.sha256(mac.lower().encode()).digest()
    return f"10.{digest[0] % 200 + 20}.{digest[1]}.{digest[2] % 250 + 2}"


def normalise_mac(mac: str) -> str:
    return re.sub(r"[^0-9a-f]", "", mac.lower())


def hostname_from(label: str) -> str:
    """A valid host name made from a VM's name."""
    name = re.sub(r"[^a-z0-9-]+", "-", label.lower()).strip("-")[:63].strip("-")
    return name or "localhost"


class GuestAgent(Protocol):
    """What an agent factory returns; ``stop`` is called when the domain goes."""

    def stop(self) -> None: ...


@dataclass
class GuestState:
    """What a guest has received and applied (kept across reboots)."""

    hostname: str | None = None
    hostname_source: str | None = None
    network: dict[str, dict[str, Any]] = field(default_factory=dict)
    password: str | None = None
    ssh_keys: list[str] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    agent: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    boots: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def record(self, event: str, **detail: Any) -> None:
        """Add ``event`` to the guest's log (what happened, for tests and demos)."""
        with self.lock:
            self.events.append({"time": time.time(), "event": event, **detail})
            del self.events[:-200]

    def to_json(self) -> dict[str, Any]:
        with self.lock:
            return {
                "hostname": self.hostname,
                "hostname_source": self.hostname_source,
                "network": {k: dict(v) for k, v in self.network.items()},
                "password": self.password,
                "ssh_keys": list(self.ssh_keys),
                "files": {path: {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                                 "base64": base64.b64encode(data).decode()}
                          for path, data in self.files.items()},
                "agent": dict(self.agent),
                "events": list(self.events),
                "boots": self.boots,
            }


class SimulatedGuest:
    """The guest OS of one running domain."""

    def __init__(self, manager: GuestManager, vm: str, domid: int, state: GuestState,
                 tools: bool, paused: bool) -> None:
        self.manager = manager
        self.sim = manager.sim
        self.vm = vm
        rec = self.sim.db.get("VM", vm)
        self.uuid: str = rec["uuid"]
        self.domid = domid
        self.state = state
        self.tools = tools
        self.windows = rec["platform"].get("viridian") == "true"
        #: Set while the domain runs (cleared while it is paused).
        self.running = threading.Event()
        if not paused:
            self.running.set()
        #: Set until the domain is destroyed.
        self.alive = threading.Event()
        self.alive.set()
        #: Set once the guest finished booting.
        self.booted = threading.Event()
        self.xenstore = DomainXenStore(manager.xenstore, domid, gate=self.running)
        self.published: dict[str, Any] = {}
        self.agents: list[Any] = []
        self._thread: threading.Thread | None = None

    # -- what the guest can learn about itself ------------------------------------
    def vm_record(self) -> dict[str, Any]:
        """A copy of the VM's record (the host's view, for agents' preferences)."""
        return dict(self.sim.db.get("VM", self.vm))

    def preference(self, name: str, default: str | None = None) -> str | None:
        """``other_config["xhost_sim_<name>"]`` of the VM: how tests shape the guest
        (``tools``; an agent's ``agent``, ``agent_version``...)."""
        rec = self.sim.db.find("VM", self.vm)
        if rec is None:
            return default
        return rec["other_config"].get(f"xhost_sim_{name}", default)

    def vm_data(self) -> dict[str, str]:
        """The ``vm-data/...`` keys the host gave this domain (read as the guest)."""
        out: dict[str, str] = {}

        def walk(prefix: str) -> None:
            try:
                children = self.xenstore.list(prefix)
            except XenStoreError:
                return
            for child in children:
                path = f"{prefix}/{child}"
                value = self.xenstore.get(path)
                if value:
                    out[path] = value
                walk(path)
        walk("vm-data")
        return out

    # -- boot ----------------------------------------------------------------------
    def boot(self, delay: float) -> None:
        """Boot now (``delay`` 0 and running) or in the background."""
        if delay <= 0 and self.running.is_set():
            self._boot()
            return
        self._thread = threading.Thread(target=self._boot_later, args=(delay,),
                                        name=f"guest-boot {self.uuid}", daemon=True)
        self._thread.start()

    def _boot_later(self, delay: float) -> None:
        deadline = time.monotonic() + delay
        while self.alive.is_set():
            if not self.running.is_set():
                self.running.wait(0.2)
                deadline = max(deadline, time.monotonic())
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self.alive.wait(min(remaining, 0.2))
        if self.alive.is_set():
            try:
                self._boot()
            except XenStoreError:
                if self.alive.is_set():
                    raise

    def _boot(self) -> None:
        with self.state.lock:
            self.state.boots += 1
        self.apply_configuration()
        if self.tools:
            self.publish_tools()
        self.state.record("booted", domid=self.domid, tools=self.tools)
        self.booted.set()
        self.manager._guest_booted(self)

    def apply_configuration(self) -> None:
        """Read hostname and network configuration from vm-data and apply them
        (what a guest agent's ``resetnetwork`` also does)."""
        hostname = self.xenstore.get("vm-data/hostname")
        if hostname:
            self.set_hostname(hostname, "vm-data/hostname")
        elif self.state.hostname is None:
            self.set_hostname(hostname_from(self.sim.db.get("VM", self.vm)["name_label"]),
                              "default")
        network = self._network_configuration()
        with self.state.lock:
            self.state.network = network
        self.state.record("network configured",
                          addresses={d: n["ipv4"] for d, n in network.items()})
        if self.tools and self.booted.is_set():
            self.publish_addresses()

    def _network_configuration(self) -> dict[str, dict[str, Any]]:
        configs: dict[str, dict[str, Any]] = {}
        try:
            keys = self.xenstore.list("vm-data/networking")
        except XenStoreError:
            keys = []
        for key in keys:
            raw = self.xenstore.get(f"vm-data/networking/{key}") or ""
            try:
                doc = json.loads(raw)
            except ValueError:
                self.state.record("bad network configuration", key=key)
                continue
            if isinstance(doc, dict):
                configs[normalise_mac(str(doc.get("mac") or key))] = doc
        out: dict[str, dict[str, Any]] = {}
        try:
            devices = self.xenstore.list("device/vif")
        except XenStoreError:
            devices = []
        for dev in sorted(devices, key=lambda d: int(d) if d.isdigit() else 0):
            mac = self.xenstore.get(f"device/vif/{dev}/mac") or ""
            out[dev] = self._nic(dev, mac, configs.get(normalise_mac(mac)))
        return out

    def _nic(self, dev: str, mac: str, doc: dict[str, Any] | None) -> dict[str, Any]:
        if doc is not None:
            ips = [ip for ip in doc.get("ips") or [] if isinstance(ip, dict) and ip.get("ip")
                   and str(ip.get("enabled", "1")) != "0"]
            ip6s = [ip for ip in doc.get("ip6s") or [] if isinstance(ip, dict) and ip.get("ip")
                    and str(ip.get("enabled", "1")) != "0"]
            if ips or ip6s:
                first = ips[0] if ips else {}
                return {"mac": mac, "source": "vm-data/networking",
                        "ipv4": [str(ip["ip"]) for ip in ips],
                        "netmask": first.get("netmask"),
                        "gateway": first.get("gateway") or doc.get("gateway"),
                        "ipv6": [str(ip["ip"]) for ip in ip6s],
                        "dns": list(doc.get("dns") or []),
                        "routes": list(doc.get("routes") or [])}
        legacy = (self.xenstore.get(f"vm-data/networks/{dev}/ip")
                  or self.xenstore.get(f"vm-data/networks/{dev}/address"))
        if legacy and _is_ipv4(legacy):
            return {"mac": mac, "source": "vm-data/networks", "ipv4": [legacy],
                    "netmask": self.xenstore.get(f"vm-data/networks/{dev}/netmask"),
                    "gateway": self.xenstore.get(f"vm-data/networks/{dev}/gateway"),
                    "ipv6": [], "dns": [], "routes": []}
        return {"mac": mac, "source": "dhcp", "ipv4": [lease_for(mac, dev)],
                "netmask": "255.255.0.0", "gateway": None, "ipv6": [], "dns": [], "routes": []}

    def publish_tools(self) -> None:
        """Write what xe-guest-utilities writes, ending with ``data/updated``."""
        rec = self.sim.db.get("VM", self.vm)
        os_keys = WINDOWS if self.windows else LINUX
        total_kib = max(1, rec["memory_dynamic_max"] // 1024)
        with self.manager.xenstore.transaction():
            for key, value in os_keys.items():
                self.xenstore.write(f"data/{key}", value)
            for key, value in TOOLS_VERSION.items():
                self.xenstore.write(f"attr/PVAddons/{key}", value)
            self.xenstore.write("attr/PVAddons/Installed", "1")
            self.xenstore.write("data/meminfo_total", str(total_kib))
            self.xenstore.write("data/meminfo_free", str(total_kib * 6 // 10))
            self.xenstore.write("data/host_name_dns", self.state.hostname or "localhost")
            for feature in FEATURES:
                self.xenstore.write(f"control/{feature}", "1")
            for kind in ("vbd", "vif"):
                self.xenstore.write(f"feature/hotplug/{kind}", "1")
            for kind in ("vif", "vbd"):
                for dev in self._list(f"device/{kind}"):
                    self.xenstore.write(f"device/{kind}/{dev}/state", XEN_STATE_CONNECTED)
            self._write_addresses()
            self.xenstore.write("data/updated", "1")
        connect_backends(self.manager.xenstore, self.domid)
        self.published = {"os": dict(os_keys), "pv_drivers": dict(TOOLS_VERSION),
                          "features": list(FEATURES)}

    def devices_changed(self) -> None:
        """A NIC or disk was hot-plugged or unplugged: the PV drivers connect
        new frontends and the guest configures its NICs again."""
        if not self.booted.is_set():
            return
        if self.tools:
            with self.manager.xenstore.transaction():
                for kind in ("vif", "vbd"):
                    for dev in self._list(f"device/{kind}"):
                        self.xenstore.write(f"device/{kind}/{dev}/state", XEN_STATE_CONNECTED)
            connect_backends(self.manager.xenstore, self.domid)
        self.apply_configuration()

    def publish_addresses(self) -> None:
        """(Re)write ``attr/vif/<n>/ipv4|ipv6/<i>`` from the applied network."""
        with self.manager.xenstore.transaction():
            self._write_addresses()
            self.xenstore.write("data/updated", "1")

    def _write_addresses(self) -> None:
        for dev in self._list("attr/vif"):
            self.xenstore.rm(f"attr/vif/{dev}")
        with self.state.lock:
            network = {k: dict(v) for k, v in self.state.network.items()}
        for dev, nic in network.items():
            for i, ip in enumerate(nic["ipv4"]):
                self.xenstore.write(f"attr/vif/{dev}/ipv4/{i}", ip)
            for i, ip in enumerate(nic["ipv6"]):
                self.xenstore.write(f"attr/vif/{dev}/ipv6/{i}", ip)
        self.xenstore.write("data/host_name_dns", self.state.hostname or "localhost")

    def _list(self, path: str) -> list[str]:
        try:
            return self.xenstore.list(path)
        except XenStoreError:
            return []

    # -- what agents apply -----------------------------------------------------------
    def set_hostname(self, name: str, source: str = "agent") -> None:
        with self.state.lock:
            self.state.hostname = name
            self.state.hostname_source = source
        self.state.record("hostname set", hostname=name, source=source)

    def set_password(self, password: str, user: str = "root") -> None:
        """The admin password was changed (never logged)."""
        with self.state.lock:
            self.state.password = password
        self.state.record("password set", user=user)

    def add_ssh_key(self, key: str) -> None:
        with self.state.lock:
            if key not in self.state.ssh_keys:
                self.state.ssh_keys.append(key)
        self.state.record("ssh key added")

    def inject_file(self, path: str, data: bytes) -> None:
        with self.state.lock:
            self.state.files[path] = bytes(data)
        self.state.record("file injected", path=path, size=len(data))

    def set_agent_info(self, **info: Any) -> None:
        """What the guest agent reports about itself (version, features...)."""
        with self.state.lock:
            self.state.agent.update(info)

    # -- the guest acting on its domain ------------------------------------------------
    def reboot(self) -> None:
        """Reboot from inside (as ``reboot`` in the guest): the domain is
        destroyed and a new one, with a new domid, boots."""
        self.state.record("reboot requested by the guest", domid=self.domid)
        threading.Thread(target=self.manager.guest_reboot, args=(self.vm, self.domid),
                         name=f"guest-reboot {self.uuid}", daemon=True).start()

    def shutdown(self) -> None:
        """Power off from inside: the VM halts."""
        self.state.record("poweroff requested by the guest", domid=self.domid)
        threading.Thread(target=self.manager.guest_shutdown, args=(self.vm, self.domid),
                         name=f"guest-poweroff {self.uuid}", daemon=True).start()

    def teardown(self) -> None:
        """The domain is being destroyed: stop agents and watches."""
        self.alive.clear()
        self.running.set()
        for agent in self.agents:
            stop = getattr(agent, "stop", None)
            if stop is not None:
                try:
                    stop()
                except Exception:
                    LOG.exception("stopping the guest agent of %s failed", self.uuid)
        self.agents.clear()
        self.xenstore.close()

    def describe(self) -> dict[str, Any]:
        return {"domid": self.domid, "booted": self.booted.is_set(),
                "paused": not self.running.is_set(), "tools": self.tools,
                "published": dict(self.published)}


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True
