"""The simulated hosts' dom0 networks, for real when asked.

Every simulator has a :class:`NetworkMode` (``sim.network``).  By default it
only keeps the records the way xapi does (a VIF plugged on a network brings
the host's PIF on that network up).  In *real-network mode* (root only) each
simulated host also has a network namespace standing for its dom0, in which

* the bridges of its networks really exist -- Linux bridges for
  ``network_backend`` ``bridge``, Open vSwitch bridges (``netdev`` datapath)
  for ``openvswitch``;
* a plugged VIF of a running domain is a real ``vif<domid>.<device>``
  interface on its network's bridge (with XenServer's OVS external ids), as
  the vif hotplug scripts make it, and disappears on unplug, shutdown,
  suspend, migration away;
* physical PIFs are tap devices ``ethN`` on their bridges, VLAN networks are
  fake bridges on Open vSwitch (802.1Q devices on Linux bridges when the
  kernel has them), bonds are OVS bonds;
* ``network.destroy`` (and the last VIF leaving an internal network) removes
  the bridge unless someone else's port is still on it -- as xapi leaves it.

The first host can be given an existing namespace and OVSDB connection
(``Simulator(real_network=True, netns=..., ovsdb=...)``): tests start Open
vSwitch with :class:`xhost.testing.ovs.PrivateOVS` and let the simulator and
the backend under test share it.  Other hosts (and the first, when nothing is
given) get a private namespace and, for ``openvswitch``, a private Open
vSwitch whose ovs-vswitchd runs in it; both are removed when the simulator
stops.  What the simulator created in a namespace or OVSDB it was given is
removed on stop, nothing else.

:meth:`NetworkMode.namespace` and :meth:`NetworkMode.ovsdb_connection` tell
xhost (and its tests) where each host's dom0 network lives; the control
endpoint ``GET /sim/network`` and ``xhost sim network`` show the same.
"""
from __future__ import annotations

import logging
import os
import shutil
import threading
from typing import TYPE_CHECKING, Any

from .desired import HostNetwork, Owned, compute, vif_name
from .linux import LinuxBridgeBackend, Namespace
from .ovs import OvsBackend

if TYPE_CHECKING:
    from ..simulator import Simulator

__all__ = ["NetworkMode", "RealNetworkUnavailable", "HostNetwork", "vif_name"]

LOG = logging.getLogger(__name__)


class RealNetworkUnavailable(RuntimeError):
    """Real-network mode cannot run here (not root, tools missing, bad options)."""


class HostDom0:
    """The dom0 network of one simulated host."""

    def __init__(self, host_ref: str, netns: str, ovsdb: str | None,
                 backend: LinuxBridgeBackend | OvsBackend, private: list[Any]) -> None:
        self.host_ref = host_ref
        self.netns = netns
        self.ovsdb = ovsdb
        self.backend = backend
        self.owned = Owned.empty()
        #: Internal networks given to network.attach for this host.
        self.attached: set[str] = set()
        #: Private resources (NetNamespace, PrivateOVS) to destroy at the end.
        self.private = private

    def info(self) -> dict[str, Any]:
        return {"netns": self.netns, "ovsdb": self.ovsdb, "backend": self.backend.kind,
                "private": bool(self.private)}


class NetworkMode:
    """Network records and, in real-network mode, the dom0 networks of a
    simulator's hosts.

    :param real: create real bridges and interfaces (root only).
    :param netns: namespace standing for the first host's dom0 (default: a
        private one).  With ``openvswitch`` it must be the namespace in which
        the given Open vSwitch's ovs-vswitchd runs.
    :param ovsdb: OVSDB connection (``unix:...``/``tcp:...``) of the first
        host's Open vSwitch (``openvswitch`` only; needs ``netns``).
    """

    def __init__(self, sim: Simulator, *, real: bool = False, netns: str | None = None,
                 ovsdb: str | None = None) -> None:
        if not real and (netns or ovsdb):
            raise ValueError("netns/ovsdb only make sense with real_network=True")
        if ovsdb and sim.network_backend != "openvswitch":
            raise ValueError("ovsdb is for network_backend 'openvswitch'; the 'bridge' "
                             "backend uses Linux bridges in the namespace")
        if ovsdb and not netns:
            raise ValueError("ovsdb needs netns: the namespace in which that Open vSwitch's "
                             "ovs-vswitchd runs (the simulator creates the vif devices there)")
        self.sim = sim
        self.real = real
        self._given_netns = netns
        self._given_ovsdb = ovsdb
        self.hosts: dict[str, HostDom0] = {}
        self._lock = threading.RLock()
        self._given_used = False

    # -- life cycle ----------------------------------------------------------
    def check_available(self) -> None:
        """Raise :class:`RealNetworkUnavailable` unless real mode can run here."""
        if not self.real:
            return
        if os.geteuid() != 0:
            raise RealNetworkUnavailable(
                "real-network mode needs root (network namespaces, bridges and taps need "
                "CAP_NET_ADMIN); run as root or drop --real-network")
        tools = {"ip": "iproute2"}
        if self.sim.network_backend == "openvswitch":
            tools["ovs-vsctl"] = "openvswitch-common"
            if not self._given_ovsdb:
                tools.update({"ovsdb-server": "openvswitch-switch",
                              "ovs-vswitchd": "openvswitch-switch"})
        missing = sorted(t for t in tools if shutil.which(t) is None)
        if missing:
            raise RealNetworkUnavailable(
                f"real-network mode needs {', '.join(missing)}: apt-get install -y "
                + " ".join(sorted({tools[t] for t in missing})))
        if self._given_netns and not os.path.exists(f"/run/netns/{self._given_netns}"):
            raise RealNetworkUnavailable(
                f"network namespace {self._given_netns!r} does not exist (ip netns list); "
                "create it or omit netns to let the simulator make a private one")

    def add_host(self, host_ref: str) -> None:
        """Give ``host_ref`` a dom0 network (real mode; idempotent)."""
        if not self.real or host_ref in self.hosts:
            return
        with self._lock:
            private: list[Any] = []
            try:
                if not self._given_used and self._given_netns:
                    netns, ovsdb = self._given_netns, self._given_ovsdb
                    self._given_used = True
                else:
                    netns, ovsdb = None, None
                if netns is None:
                    from xhost.testing.netns import NetNamespace

                    ns = NetNamespace().create()
                    private.append(ns)
                    netns = ns.name
                if self.sim.network_backend == "openvswitch":
                    if ovsdb is None:
                        from xhost.testing.netns import NetNamespace
                        from xhost.testing.ovs import PrivateOVS

                        ovs = PrivateOVS(netns=NetNamespace(netns), tcp=True).start()
                        private.insert(0, ovs)
                        ovsdb = ovs.unix_connection
                    backend: LinuxBridgeBackend | OvsBackend = OvsBackend(netns, ovsdb)
                else:
                    backend = LinuxBridgeBackend(netns)
            except Exception as exc:
                for res in private:
                    _destroy(res)
                raise RealNetworkUnavailable(f"cannot set up the dom0 network of host "
                                             f"{host_ref}: {exc}") from exc
            self.hosts[host_ref] = HostDom0(host_ref, netns, ovsdb, backend, private)
            LOG.info("host %s: dom0 network in namespace %s (%s)", host_ref, netns,
                     ovsdb or "Linux bridges")

    def remove_host(self, host_ref: str) -> None:
        """Tear down a host's dom0 network (eject, stop)."""
        with self._lock:
            dom0 = self.hosts.pop(host_ref, None)
        if dom0 is None:
            return
        dom0.backend.teardown(dom0.owned)
        for res in dom0.private:
            _destroy(res)

    def start(self, host_refs: list[str]) -> None:
        self.check_available()
        for ref in host_refs:
            self.add_host(ref)
        self.sync()

    def stop(self) -> None:
        for ref in list(self.hosts):
            try:
                self.remove_host(ref)
            except Exception:
                LOG.exception("tearing down the dom0 network of %s failed", ref)

    # -- queries ---------------------------------------------------------------
    def _dom0(self, host: str | None) -> HostDom0:
        if not self.real:
            raise RealNetworkUnavailable("this simulator runs without real-network mode "
                                         "(Simulator(real_network=True) / --real-network)")
        ref = host or self.sim.master_ref
        if ref not in self.hosts:
            for dom0 in self.hosts.values():
                rec = self.sim.db.find("host", dom0.host_ref)
                if rec is not None and host in (rec["uuid"], rec["name_label"]):
                    return dom0
            raise KeyError(f"no dom0 network for host {host!r}")
        return self.hosts[ref]

    def namespace(self, host: str | None = None) -> str:
        """Name of the network namespace standing for ``host``'s dom0 (a host
        reference, uuid or name; default: the pool master)."""
        return self._dom0(host).netns

    def ovsdb_connection(self, host: str | None = None) -> str | None:
        """OVSDB connection of ``host``'s Open vSwitch (None for Linux bridges)."""
        return self._dom0(host).ovsdb

    def exec_prefix(self, host: str | None = None) -> tuple[str, ...]:
        """Command prefix running a program in ``host``'s dom0 network
        (``ip netns exec <ns>``), or ``()`` without real-network mode -- what
        a dom0 script runner prepends so that scripts touching the network
        (bridges, veth pairs, ovs-vsctl) act on the simulated dom0."""
        if not self.real:
            return ()
        return ("ip", "netns", "exec", self.namespace(host))

    def desired(self, host: str | None = None) -> HostNetwork:
        """What ``host``'s dom0 network should contain now."""
        dom0 = self._dom0(host)
        return compute(self.sim.db, dom0.host_ref, frozenset(dom0.attached))

    def info(self) -> dict[str, Any]:
        out: dict[str, Any] = {"real": self.real, "backend": self.sim.network_backend,
                               "hosts": {}}
        for ref, dom0 in self.hosts.items():
            rec = self.sim.db.find("host", ref)
            name = rec["name_label"] if rec else ref
            out["hosts"][name] = dict(dom0.info(), host=ref,
                                      uuid=rec["uuid"] if rec else "")
        return out

    def links(self, host: str | None = None) -> set[str]:
        """Names of the links in ``host``'s dom0 namespace."""
        return set(Namespace(self.namespace(host)).links())

    # -- changes -------------------------------------------------------------------
    def sync(self, hosts: list[str] | None = None) -> None:
        """Bring the dom0 networks (all, or ``hosts``) in line with the database."""
        if not self.real:
            return
        with self._lock:
            for ref, dom0 in list(self.hosts.items()):
                if hosts is not None and ref not in hosts:
                    continue
                if not self.sim.db.exists("host", ref):
                    continue
                desired = compute(self.sim.db, ref, frozenset(dom0.attached))
                dom0.backend.apply(desired, dom0.owned)

    def check(self, host: str) -> None:
        """Fail like xapi if ``host`` cannot give its VIFs their bridges
        (``BRIDGE_NOT_AVAILABLE`` for a missing unmanaged bridge)."""
        if not self.real or host not in self.hosts:
            return
        dom0 = self.hosts[host]
        dom0.backend.check(compute(self.sim.db, host, frozenset(dom0.attached)))

    def attach(self, host: str, network: str) -> None:
        """``network.attach``: keep the network's bridge up on ``host``."""
        if host in self.hosts:
            self.hosts[host].attached.add(network)

    def forget_network(self, network: str) -> None:
        for dom0 in self.hosts.values():
            dom0.attached.discard(network)


def _destroy(resource: Any) -> None:
    try:
        if hasattr(resource, "stop"):
            resource.stop()
        else:
            resource.destroy()
    except Exception:
        LOG.exception("removing %r failed", resource)

