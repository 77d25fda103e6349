"""Talking to a dom0's Open vSwitch database with ovsdbapp.

One :class:`Ovsdb` per connection string, shared by the whole process
(:func:`connect`).  ovsdbapp keeps its connection in a *class* attribute --
the first API object of a class wins and later ones silently reuse its
server -- so every connection gets an API class of its own.

The in-memory replica ovsdbapp keeps is watched for changes, so waiting for
a row (the vif device XAPI's hotplug script adds, an interim bridge) blocks
on the server's update notifications, never on sleeps.
"""
from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from xhost import exception

LOG = logging.getLogger(__name__)
T = TypeVar("T")
#: Tables xhost reads or writes (the replica holds only these).
TABLES = ("Open_vSwitch", "Bridge", "Port", "Interface")

_lock = threading.Lock()
_clients: dict[str, Ovsdb] = {}
_serial = itertools.count(1)


class OvsdbError(exception.XhostError):
    msg_fmt = "Open vSwitch database {connection}: {reason}"


class OvsdbTimeout(OvsdbError):
    pass


def probe(connection: str, timeout: float) -> None:
    """Fail fast, with the fix, when nothing answers at ``connection``
    (ovsdbapp itself would block until the TCP stack gives up)."""
    for target in (c.strip() for c in connection.split(",")):
        kind, _, rest = target.partition(":")
        try:
            if kind == "unix":
                if not os.path.exists(rest):
                    raise OSError(f"no socket {rest}")
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                    sock.settimeout(timeout)
                    sock.connect(rest)
            elif kind in ("tcp", "ssl"):
                host, _, port = rest.rpartition(":")
                with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
                    pass
            else:
                raise OSError(f"unsupported connection type {kind!r} (tcp:, ssl: or unix:)")
            return
        except (OSError, ValueError) as exc:
            last = exc
    raise OvsdbError(
        connection=connection,
        reason=f"cannot connect ({last}). The dom0 must accept OVSDB connections: on the "
               f"host run `ovs-vsctl set-manager ptcp:6640` and open tcp/6640 in its firewall "
               f"(as os-xenapi did for Neutron), or set [network_openvswitch] "
               f"ovsdb_connection")


class Ovsdb:
    """An ovsdbapp Open_vSwitch API on one connection, with waits on its replica."""

    def __init__(self, connection: str, timeout: float) -> None:
        from ovsdbapp.backend.ovs_idl import connection as ovs_connection
        from ovsdbapp.backend.ovs_idl import idlutils
        from ovsdbapp.schema.open_vswitch import impl_idl

        changed = threading.Condition()
        state = {"seq": 0}

        class WatchedIdl(ovs_connection.OvsdbIdl):
            def notify(self, event: str, row: Any, updates: Any = None) -> None:
                with changed:
                    state["seq"] += 1
                    changed.notify_all()

        self.connection = connection
        self.timeout = timeout
        self._changed = changed
        self._state = state
        self._idlutils = idlutils
        probe(connection, timeout)
        try:
            idl = WatchedIdl.from_server(connection, "Open_vSwitch", helper_tables=TABLES)
            self.conn = ovs_connection.Connection(idl=idl, timeout=timeout)
            api_class = type(f"XhostOvsdbApi{next(_serial)}", (impl_idl.OvsdbIdl,), {})
            self.api = api_class(self.conn)
        except Exception as exc:
            raise OvsdbError(connection=connection, reason=f"cannot open: {exc}") from exc

    @property
    def alive(self) -> bool:
        return bool(self.conn.is_running)

    def close(self) -> None:
        try:
            self.conn.stop(timeout=self.timeout)
        except Exception:  # closing is best effort
            LOG.debug("closing OVSDB connection %s failed", self.connection, exc_info=True)

    # -- reading the replica ----------------------------------------------------

    def _row(self, table: str, name: str) -> Any | None:
        try:
            return self._idlutils.row_by_value(self.api.idl, table, "name", name)
        except self._idlutils.RowNotFound:
            return None

    def read(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the replica while ovsdbapp cannot change it."""
        with self.conn.lock:
            return fn()

    def wait_for(self, predicate: Callable[[], T | None], timeout: float, what: str) -> T:
        """Block until ``predicate()`` (run on the replica) returns a value,
        re-checking on every update the server sends."""
        deadline = time.monotonic() + timeout
        while True:
            with self._changed:
                seen = self._state["seq"]
            result = self.read(predicate)
            if result is not None and result is not False:
                return result
            with self._changed:
                while self._state["seq"] == seen:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise OvsdbTimeout(connection=self.connection,
                                           reason=f"{what} did not appear within {timeout:g} s")
                    self._changed.wait(remaining)

    def interface(self, name: str) -> dict[str, Any] | None:
        """An Interface row as a dict (name, external_ids, ofport, error, bridge)."""
        def get() -> dict[str, Any] | None:
            iface = self._row("Interface", name)
            if iface is None:
                return None
            return {"name": iface.name, "external_ids": dict(iface.external_ids),
                    "ofport": iface.ofport[0] if iface.ofport else None,
                    "error": iface.error[0] if iface.error else None,
                    "bridge": self._bridge_of_port(name)}
        return self.read(get)

    def _bridge_of_port(self, name: str) -> str | None:
        port = self._row("Port", name)
        if port is None:
            return None
        for bridge in self.api.tables["Bridge"].rows.values():
            if any(p.uuid == port.uuid for p in bridge.ports):
                return bridge.name
        return None

    def wait_for_port(self, name: str, timeout: float) -> str:
        """Wait until interface ``name`` is a port of some bridge; return the bridge."""
        return self.wait_for(lambda: self._bridge_of_port(name) if self._row(
            "Interface", name) is not None else None, timeout, f"port {name}")

    def wait_for_interface_with(self, key: str, value: str, timeout: float,
                                prefix: str = "") -> tuple[str, str]:
        """Wait until an interface named ``prefix...`` whose
        ``external_ids[key] == value`` is a port of some bridge; return
        ``(interface, bridge)``."""
        def find() -> tuple[str, str] | None:
            for iface in self.api.tables["Interface"].rows.values():
                if iface.name.startswith(prefix) and iface.external_ids.get(key) == value:
                    bridge = self._bridge_of_port(iface.name)
                    if bridge is not None:
                        return iface.name, bridge
            return None
        return self.wait_for(find, timeout, f"an interface with {key}={value}")

    def wait_for_bridge(self, name: str, timeout: float) -> bool:
        return self.wait_for(lambda: self._row("Bridge", name) is not None, timeout,
                             f"bridge {name}")

    def bridge_exists(self, name: str) -> bool:
        return self.read(lambda: self._row("Bridge", name) is not None)

    def bridge_ports(self, name: str) -> list[str] | None:
        """Names of the ports on bridge ``name`` (not its own), ``None`` if no such bridge."""
        def get() -> list[str] | None:
            row = self._row("Bridge", name)
            if row is None:
                return None
            return sorted(p.name for p in row.ports if p.name != name)
        return self.read(get)

    def interfaces_with(self, key: str, value: str) -> list[str]:
        """Names of the interfaces whose ``external_ids[key] == value``."""
        return self.read(lambda: sorted(
            i.name for i in self.api.tables["Interface"].rows.values()
            if i.external_ids.get(key) == value))

    # -- changes ------------------------------------------------------------------

    def _commit(self, what: str, build: Callable[[Any, Any], None]) -> None:
        try:
            with self.api.transaction(check_error=True) as txn:
                build(self.api, txn)
        except OvsdbError:
            raise
        except Exception as exc:
            raise OvsdbError(connection=self.connection, reason=f"{what} failed: {exc}") from exc

    def set_external_ids(self, interface: str, ids: dict[str, str]) -> None:
        """Merge ``ids`` into an interface's ``external_ids``."""
        self._commit(f"setting external_ids on {interface}",
                     lambda api, txn: txn.add(api.db_set("Interface", interface,
                                                         ("external_ids", ids),
                                                         if_exists=False)))

    def add_ports(self, ports: list[tuple[str, str, dict[str, str]]]) -> None:
        """Add ``(bridge, name, external_ids)`` ports in one transaction and
        check that Open vSwitch could open each device (``add-port`` accepts
        a missing device silently, leaving ``ofport`` -1)."""
        def build(api: Any, txn: Any) -> None:
            for bridge, name, ids in ports:
                txn.add(api.add_port(bridge, name, may_exist=True))
                if ids:
                    txn.add(api.db_set("Interface", name, ("external_ids", ids)))
        self._commit("adding ports " + ", ".join(p[1] for p in ports), build)
        for bridge, name, _ids in ports:
            row = self.interface(name)
            if row is None or row["bridge"] != bridge:
                raise OvsdbError(connection=self.connection,
                                 reason=f"port {name} is not on {bridge} after adding it")
            if row["ofport"] is None or row["ofport"] < 0 or row["error"]:
                raise OvsdbError(connection=self.connection,
                                 reason=f"Open vSwitch cannot use device {name} on {bridge}: "
                                        f"{row['error'] or 'no OpenFlow port'}")

    def delete_ports(self, names: list[str]) -> list[str]:
        """Delete ports (missing ones are fine); returns the ones that existed."""
        present = self.read(lambda: [n for n in names if self._row("Port", n) is not None])
        if present:
            self._commit("deleting ports " + ", ".join(present), lambda api, txn: [
                txn.add(api.del_port(n, if_exists=True)) for n in present])
        return present

    def delete_bridge(self, name: str) -> bool:
        if not self.bridge_exists(name):
            return False
        self._commit(f"deleting bridge {name}",
                     lambda api, txn: txn.add(api.del_br(name, if_exists=True)))
        return True


def connect(connection: str, timeout: float) -> Ovsdb:
    """The process-wide client of ``connection`` (opened on first use, and
    again if its connection died)."""
    with _lock:
        client = _clients.get(connection)
        if client is not None and client.alive:
            return client
        if client is not None:
            client.close()
        client = Ovsdb(connection, timeout)
        _clients[connection] = client
        return client


def forget(connection: str) -> None:
    """Close and drop the client of ``connection`` (tests, shutdown)."""
    with _lock:
        client = _clients.pop(connection, None)
    if client is not None:
        client.close()
