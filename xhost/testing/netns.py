"""A private network namespace standing for dom0.

Kernel bridges, veth pairs and the tap devices of a userspace Open vSwitch
are created inside a uniquely named namespace, so tests never touch the
host's links and can see exactly what was plugged::

    with NetNamespace() as ns:
        ns.add_bridge("xenbr0")
        ns.add_veth("vif1.0", "vif1.0-p")
        ns.attach("vif1.0", "xenbr0")
        assert ns.bridges() == {"xenbr0": ["vif1.0"]}

pyroute2 is used when it is installed (``pip install pyroute2``), iproute2's
``ip`` command otherwise.  Names are ``xhtest-<owner pid>-<random>``; a
namespace whose owner process is gone (a killed test run) is removed the
next time a namespace is created.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

from xhost.testing._common import (
    exit_cleanups,
    pid_alive,
    require_binaries,
    require_root,
    run,
)
from xhost.testing.errors import HarnessError

try:
    import pyroute2
    from pyroute2 import netns as _pyroute2_netns
    from pyroute2.netlink.exceptions import NetlinkError
except ImportError:  # pragma: no cover - exercised only without pyroute2
    pyroute2 = None
    _pyroute2_netns = None
    NetlinkError = OSError

_LINK_ERRORS = (HarnessError, OSError, NetlinkError)

__all__ = ["Link", "NetNamespace", "host_link_names", "list_namespaces", "reap_stale_namespaces"]

NAME_PREFIX = "xhtest"
NETNS_RUN_DIR = Path("/run/netns")
_STALE_NAME = re.compile(rf"^{NAME_PREFIX}-(\d+)-[0-9a-f]+$")
_IFF_UP = 0x1

Backend = Literal["auto", "pyroute2", "iproute2"]


@dataclass(frozen=True)
class Link:
    """One network interface as seen inside a namespace."""

    name: str
    index: int
    #: rtnetlink kind: ``bridge``, ``veth``, ``tun``, ...; None for ``lo``.
    kind: str | None
    #: Name of the bridge (or bond) this link is enslaved to.
    master: str | None
    #: Administratively up (IFF_UP).
    up: bool
    mac: str


def list_namespaces() -> list[str]:
    """Names of the named network namespaces (``ip netns list``)."""
    try:
        return sorted(p.name for p in NETNS_RUN_DIR.iterdir())
    except FileNotFoundError:
        return []


def host_link_names() -> set[str]:
    """Link names in the namespace of the calling process (the host's)."""
    return {link.name for link in _links(None, _pick_backend("auto"))}


def reap_stale_namespaces() -> list[str]:
    """Delete harness namespaces whose owner process no longer runs.

    Returns the names removed.
    """
    removed = []
    for name in list_namespaces():
        match = _STALE_NAME.match(name)
        if match and not pid_alive(int(match.group(1))):
            NetNamespace(name)._remove(delete_links=True)
            removed.append(name)
    return removed


class NetNamespace:
    """A named network namespace, removed on :meth:`destroy`, on context
    exit, and at interpreter exit if neither happened.

    :param name: namespace name; default ``xhtest-<pid>-<random>``.
    :param backend: ``pyroute2``, ``iproute2`` or ``auto`` (pyroute2 when
        importable) for creating and listing links.
    """

    def __init__(self, name: str | None = None, *, backend: Backend = "auto") -> None:
        self.name = name or f"{NAME_PREFIX}-{os.getpid()}-{secrets.token_hex(3)}"
        self.backend = _pick_backend(backend)
        self._created = False
        self._processes: list[subprocess.Popen] = []

    def __repr__(self) -> str:
        return f"NetNamespace({self.name!r}, backend={self.backend!r})"

    # -- life cycle ---------------------------------------------------------

    def create(self) -> Self:
        """Create the namespace with ``lo`` up; returns self.

        :raises ComponentUnavailable: not root, or ``ip`` missing.
        :raises HarnessError: a namespace of that name exists already.
        """
        require_root("a network namespace")
        require_binaries("a network namespace", {"ip": "iproute2"})
        reap_stale_namespaces()
        if self.exists:
            raise HarnessError(
                f"network namespace {self.name!r} exists already; choose another "
                f"name or remove it with: ip netns del {self.name}"
            )
        if self.backend == "pyroute2":
            _pyroute2_netns.create(self.name)
        else:
            run(["ip", "netns", "add", self.name], what="ip netns add")
        self._created = True
        exit_cleanups.add(self, self.destroy)
        try:
            self.set_up("lo")
        except BaseException:
            self.destroy()
            raise
        return self

    def destroy(self) -> None:
        """Stop processes started with :meth:`popen`, delete every link in
        the namespace and remove it.  Safe to call more than once."""
        exit_cleanups.discard(self)
        for proc in self._processes:
            _terminate(proc)
        self._processes.clear()
        if self._created and self.exists:
            self._remove(delete_links=True)
        self._created = False

    def _remove(self, *, delete_links: bool) -> None:
        # Deleting the links first makes removal immediate and complete even
        # when some stray process keeps the namespace alive, and takes the
        # host-side peer of any veth pair with it.
        if delete_links:
            for link in self._safe_links():
                if link.name != "lo":
                    subprocess.run(["ip", "-n", self.name, "link", "del", link.name],
                                   capture_output=True, check=False)
        if _pyroute2_netns is not None:
            try:
                _pyroute2_netns.remove(self.name)
                return
            except OSError:
                pass
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, check=False)

    def _safe_links(self) -> list[Link]:
        try:
            return self.links()
        except _LINK_ERRORS:  # best effort while tearing down
            return []

    @property
    def exists(self) -> bool:
        """Whether the namespace is currently mounted under /run/netns."""
        return (NETNS_RUN_DIR / self.name).exists()

    def __enter__(self) -> Self:
        return self.create()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.destroy()

    # -- running commands ---------------------------------------------------

    @property
    def exec_prefix(self) -> tuple[str, ...]:
        """Command prefix that runs a program inside the namespace."""
        return ("ip", "netns", "exec", self.name)

    def run(self, argv: Sequence[str], *, check: bool = True, timeout: float = 30,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run *argv* inside the namespace and return its completed process.

        :raises HarnessError: *check* is true and the command failed; the
            message carries its stderr.
        """
        try:
            proc = subprocess.run([*self.exec_prefix, *argv], input=input, text=True,
                                  capture_output=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise HarnessError(f"{' '.join(argv)} in netns {self.name}: timed out "
                               f"after {timeout:g} s") from exc
        if check and proc.returncode != 0:
            raise HarnessError(f"{' '.join(argv)} in netns {self.name} failed "
                               f"(status {proc.returncode}): {proc.stderr.strip()}")
        return proc

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen:
        """Start a long-running *argv* inside the namespace.

        The process is terminated by :meth:`destroy`.
        """
        proc = subprocess.Popen([*self.exec_prefix, *argv], **kwargs)
        self._processes.append(proc)
        return proc

    # -- inspecting links ---------------------------------------------------

    def links(self) -> list[Link]:
        """Every link in the namespace, ordered by interface index."""
        return _links(self.name, self.backend)

    def link_names(self) -> set[str]:
        """Names of every link in the namespace."""
        return {link.name for link in self.links()}

    def link(self, name: str) -> Link:
        """The link called *name*.

        :raises KeyError: no such link in the namespace.
        """
        for link in self.links():
            if link.name == name:
                return link
        raise KeyError(f"no link {name!r} in network namespace {self.name}")

    def bridges(self) -> dict[str, list[str]]:
        """Linux bridges in the namespace mapped to their sorted port names."""
        links = self.links()
        result: dict[str, list[str]] = {
            link.name: [] for link in links if link.kind == "bridge"
        }
        for link in links:
            if link.master in result:
                result[link.master].append(link.name)
        return {bridge: sorted(ports) for bridge, ports in result.items()}

    def ports(self, bridge: str) -> list[str]:
        """Sorted names of the ports of Linux bridge *bridge*.

        :raises KeyError: *bridge* is not a Linux bridge in the namespace.
        """
        bridges = self.bridges()
        if bridge not in bridges:
            raise KeyError(f"no Linux bridge {bridge!r} in network namespace {self.name}")
        return bridges[bridge]

    # -- building topologies ------------------------------------------------

    def add_bridge(self, name: str, *, up: bool = True) -> None:
        """Create Linux bridge *name*."""
        self._ip("link", "add", name, "type", "bridge")
        if up:
            self.set_up(name)

    def add_veth(self, name: str, peer: str, *, up: bool = True) -> None:
        """Create veth pair *name* / *peer*, both ends inside the namespace."""
        self._ip("link", "add", name, "type", "veth", "peer", "name", peer)
        if up:
            self.set_up(name)
            self.set_up(peer)

    def attach(self, port: str, bridge: str) -> None:
        """Enslave link *port* to Linux bridge *bridge*."""
        self._ip("link", "set", port, "master", bridge)

    def set_up(self, name: str) -> None:
        """Bring link *name* administratively up."""
        self._ip("link", "set", name, "up")

    def delete_link(self, name: str) -> None:
        """Delete link *name* (a veth pair goes with its peer)."""
        self._ip("link", "del", name)

    def iproute(self) -> Any:
        """A pyroute2 ``IPRoute`` bound to the namespace (close it after use).

        :raises HarnessError: pyroute2 is not installed.
        """
        if pyroute2 is None:
            raise HarnessError("NetNamespace.iproute() needs pyroute2: pip install pyroute2")
        return pyroute2.IPRoute(netns=self.name)

    def _ip(self, *args: str) -> None:
        # One code path for changes: the iproute2 command line gives the
        # clearest error messages, and each call is a few milliseconds.
        run(["ip", "-n", self.name, *args], what=f"ip {' '.join(args[:2])}")


def _pick_backend(backend: Backend) -> Literal["pyroute2", "iproute2"]:
    if backend == "auto":
        return "pyroute2" if pyroute2 is not None else "iproute2"
    if backend == "pyroute2" and pyroute2 is None:
        raise HarnessError("backend='pyroute2' needs pyroute2: pip install pyroute2")
    if backend not in ("pyroute2", "iproute2"):
        raise ValueError(f"backend must be 'auto', 'pyroute2' or 'iproute2', not {backend!r}")
    return backend


def _links(namespace: str | None, backend: str) -> list[Link]:
    # pyroute2 enters a namespace by forking, which is unsafe in a process that
    # runs threads (Python warns it may deadlock) and refused at interpreter
    # shutdown: the iproute2 command does the same without forking us.
    if backend == "pyroute2" and not (namespace and threading.active_count() > 1):
        try:
            return list(_links_pyroute2(namespace))
        except RuntimeError:
            pass
    return list(_links_iproute2(namespace))


def _links_pyroute2(namespace: str | None) -> Iterator[Link]:
    kwargs = {"netns": namespace} if namespace else {}
    with pyroute2.IPRoute(**kwargs) as ipr:
        raw = list(ipr.get_links())
    names = {msg["index"]: msg.get("ifname") for msg in raw}
    for msg in sorted(raw, key=lambda m: m["index"]):
        master = msg.get("master")
        yield Link(
            name=msg.get("ifname"),
            index=msg["index"],
            kind=msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND"),
            master=names.get(master) if master else None,
            up=bool(msg["flags"] & _IFF_UP),
            mac=msg.get("address") or "",
        )


def _links_iproute2(namespace: str | None) -> Iterator[Link]:
    argv = ["ip", "-j", "-d"] + (["-n", namespace] if namespace else []) + ["link", "show"]
    data = json.loads(run(argv, what="ip link show").stdout or b"[]")
    for item in sorted(data, key=lambda i: i["ifindex"]):
        yield Link(
            name=item["ifname"],
            index=item["ifindex"],
            kind=item.get("linkinfo", {}).get("info_kind"),
            master=item.get("master"),
            up="UP" in item.get("flags", []),
            mac=item.get("address", ""),
        )


def _terminate(proc: subprocess.Popen, timeout: float = 5) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()

