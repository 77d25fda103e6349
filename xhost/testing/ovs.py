"""A private Open vSwitch: its own ovsdb-server and ovs-vswitchd.

Nothing is shared with a system Open vSwitch: the database file, sockets,
logs and pid files live in a private directory, ovs-vswitchd uses the
userspace ``netdev`` datapath (no kernel module) and runs inside a network
namespace, so the tap devices it creates for bridges and internal ports
exist only there::

    with PrivateOVS() as ovs:                      # makes its own namespace
        api = ovs.ovsdbapp_api()                   # or connect to ovs.tcp_connection
        with api.transaction(check_error=True) as txn:
            txn.add(api.add_br("br-int", datapath_type="netdev"))
        assert "br-int" in ovs.netns.link_names()

Gotchas, learnt the hard way:

* ovsdbapp's Open_vSwitch API waits for ovs-vswitchd to acknowledge every
  transaction (``cur_cfg`` catching up with ``next_cfg``); with ovsdb-server
  alone it times out although the rows were committed.  Likewise
  ``ovs-vsctl`` hangs without ``--no-wait``.  So vswitchd always runs here.
* Bridges must be created with ``datapath_type=netdev``: there is no kernel
  datapath, and vswitchd logs "Generic Netlink family 'ovs_datapath' does
  not exist" (harmless).
* Always pass ``--db=``: the tools default to the system socket
  ``/var/run/openvswitch/db.sock``.  :meth:`PrivateOVS.vsctl` does.
* ovsdbapp keeps its connection in a *class* attribute: the first
  ``impl_idl.OvsdbIdl(conn)`` of a process wins and later instances silently
  reuse it, even when pointed at another server.
  :meth:`PrivateOVS.ovsdbapp_api` works around this with a fresh subclass;
  code under test that builds its own API object must do the same (or
  share one connection per server).
* A port whose device does not exist stays in the database with
  ``ofport = -1`` and an ``error`` column; use ``type=internal`` for a
  port vswitchd should create itself.
"""
from __future__ import annotations

import json
import logging
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from xhost.testing._common import (
    exit_cleanups,
    log_tail,
    make_scratch_dir,
    pdeathsig_prefix,
    reap_stale_scratch_dirs,
    require_binaries,
    require_root,
    run,
    wait_until,
)
from xhost.testing.errors import HarnessError
from xhost.testing.netns import NetNamespace

__all__ = ["DEFAULT_SCHEMA", "PrivateOVS", "ovsdb_value"]

DEFAULT_SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")
_SCRATCH_KIND = "ovs"
LOG = logging.getLogger(__name__)
_BINARIES = {
    "ovsdb-tool": "openvswitch-common",
    "ovsdb-server": "openvswitch-switch",
    "ovs-vswitchd": "openvswitch-switch",
    "ovs-vsctl": "openvswitch-common",
    "ovs-appctl": "openvswitch-common",
    "ip": "iproute2",
}
_LISTENING = re.compile(rb"127\.0\.0\.1: listening on port (\d+)")
# The configuration generation vswitchd must reach before we call it ready.
_READY_CFG = 1


def ovsdb_value(value: Any) -> Any:
    """Convert an OVSDB JSON value (``ovs-vsctl --format=json``) to Python.

    ``["map", [[k, v], ...]]`` becomes a dict, ``["set", [...]]`` a list,
    ``["uuid", u]`` the uuid string; atoms stay as they are.
    """
    if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
        kind, payload = value
        if kind == "map":
            return {ovsdb_value(k): ovsdb_value(v) for k, v in payload}
        if kind == "set":
            return [ovsdb_value(v) for v in payload]
        if kind in ("uuid", "named-uuid"):
            return payload
    return value


class PrivateOVS:
    """ovsdb-server plus ovs-vswitchd in a private directory.

    :param netns: namespace for ovs-vswitchd; by default a fresh one is
        created and destroyed with the instance (see :attr:`netns`).
    :param tcp: also listen on ``tcp:127.0.0.1:<free port>``
        (:attr:`tcp_connection`), as a dom0's ``ovsdb_connection`` would.
    :param vswitchd: start ovs-vswitchd (ovsdbapp needs it, see module doc).
    :param schema: the Open_vSwitch schema file.
    """

    def __init__(self, *, netns: NetNamespace | None = None, tcp: bool = True,
                 vswitchd: bool = True, schema: Path = DEFAULT_SCHEMA) -> None:
        self._given_netns = netns
        self.netns: NetNamespace | None = netns
        self.tcp = tcp
        self.with_vswitchd = vswitchd
        self.schema = Path(schema)
        self.base_dir: Path | None = None
        self.tcp_port: int | None = None
        #: Seconds spent per start-up phase: ``netns``, ``ovsdb``,
        #: ``vswitchd``, ``total``.
        self.times: dict[str, float] = {}
        self._ovsdb: subprocess.Popen | None = None
        self._vswitchd: subprocess.Popen | None = None
        self._api_connections: list[Any] = []

    def __repr__(self) -> str:
        return f"PrivateOVS(base_dir={self.base_dir}, netns={self.netns and self.netns.name})"

    # -- paths and connection strings ---------------------------------------

    def _dir(self) -> Path:
        if self.base_dir is None:
            raise HarnessError("PrivateOVS is not started; call start() first")
        return self.base_dir

    @property
    def db_path(self) -> Path:
        return self._dir() / "conf.db"

    @property
    def db_socket(self) -> Path:
        return self._dir() / "db.sock"

    @property
    def unix_connection(self) -> str:
        """``unix:<dir>/db.sock``: OVSDB connection string over the unix socket."""
        return f"unix:{self.db_socket}"

    @property
    def tcp_connection(self) -> str:
        """``tcp:127.0.0.1:<port>``, like a dom0's ``ovsdb_connection``.

        :raises HarnessError: started with ``tcp=False``.
        """
        self._dir()
        if self.tcp_port is None:
            raise HarnessError("this PrivateOVS was started with tcp=False")
        return f"tcp:127.0.0.1:{self.tcp_port}"

    @property
    def connection(self) -> str:
        """The TCP connection string when enabled, else the unix one."""
        return self.tcp_connection if self.tcp_port is not None else self.unix_connection

    @property
    def ovsdb_log(self) -> Path:
        return self._dir() / "ovsdb-server.log"

    @property
    def vswitchd_log(self) -> Path:
        return self._dir() / "ovs-vswitchd.log"

    @property
    def pids(self) -> dict[str, int]:
        """pids of the running daemons, by program name."""
        found = {}
        for name, proc in (("ovsdb-server", self._ovsdb), ("ovs-vswitchd", self._vswitchd)):
            if proc is not None and proc.poll() is None:
                found[name] = proc.pid
        return found

    # -- life cycle ---------------------------------------------------------

    def start(self, timeout: float = 20) -> Self:
        """Create the database, start the daemons and wait until vswitchd
        has applied the configuration; returns self.

        :raises ComponentUnavailable: not root, or Open vSwitch not installed.
        :raises HarnessError: a daemon failed to start (with its log tail).
        """
        if self.base_dir is not None:
            raise HarnessError("PrivateOVS is already started")
        require_root("a private Open vSwitch")
        require_binaries("a private Open vSwitch", _BINARIES)
        if not self.schema.is_file():
            raise HarnessError(f"Open vSwitch schema {self.schema} not found; "
                               f"install openvswitch-common or pass schema=")
        reap_stale_scratch_dirs(_SCRATCH_KIND)
        t0 = time.monotonic()
        self.base_dir = make_scratch_dir(_SCRATCH_KIND)
        exit_cleanups.add(self, self.stop)
        try:
            if self.with_vswitchd and self.netns is None:
                self.netns = NetNamespace().create()
            t1 = time.monotonic()
            self.times["netns"] = t1 - t0
            self._start_ovsdb(timeout)
            t2 = time.monotonic()
            self.times["ovsdb"] = t2 - t1
            if self.with_vswitchd:
                self._start_vswitchd(timeout)
            self.times["vswitchd"] = time.monotonic() - t2
        except BaseException:
            self.stop()
            raise
        self.times["total"] = time.monotonic() - t0
        return self

    def _start_ovsdb(self, timeout: float) -> None:
        base = self._dir()
        run(["ovsdb-tool", "create", str(self.db_path), str(self.schema)], what="ovsdb-tool create")
        remotes = [f"--remote=punix:{self.db_socket}"]
        if self.tcp:
            # Port 0: the kernel picks a free port, read back from the log; no race.
            remotes.append("--remote=ptcp:0:127.0.0.1")
        argv = [*pdeathsig_prefix(), "ovsdb-server", str(self.db_path), *remotes,
                "-vconsole:off", "-vfile:info", f"--log-file={self.ovsdb_log}",
                f"--pidfile={base / 'ovsdb-server.pid'}",
                f"--unixctl={base / 'ovsdb-server.ctl'}"]
        self._ovsdb = _spawn(argv, base / "ovsdb-server.out")
        wait_until(self._db_socket_accepts, timeout=timeout, what="ovsdb-server",
                   process=self._ovsdb, log=self.ovsdb_log)
        if self.tcp:
            self.tcp_port = wait_until(self._logged_tcp_port, timeout=timeout,
                                       what="ovsdb-server TCP remote", process=self._ovsdb,
                                       log=self.ovsdb_log)
        # Arm the readiness check: vswitchd copies next_cfg to cur_cfg once it
        # has applied the configuration.
        self.vsctl("--", "init", "--", "set", "Open_vSwitch", ".",
                   f"next_cfg={_READY_CFG}", wait=False)

    def _db_socket_accepts(self) -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            try:
                sock.connect(str(self.db_socket))
            except OSError:
                return False
        return True

    def _logged_tcp_port(self) -> int | None:
        try:
            match = _LISTENING.search(self.ovsdb_log.read_bytes())
        except OSError:
            return None
        return int(match.group(1)) if match else None

    def _start_vswitchd(self, timeout: float) -> None:
        base = self._dir()
        assert self.netns is not None
        argv = [*pdeathsig_prefix(), *self.netns.exec_prefix, "ovs-vswitchd",
                self.unix_connection, "-vconsole:off", f"--log-file={self.vswitchd_log}",
                f"--pidfile={base / 'ovs-vswitchd.pid'}",
                f"--unixctl={base / 'ovs-vswitchd.ctl'}"]
        self._vswitchd = _spawn(argv, base / "ovs-vswitchd.out")
        # ovs-vsctl wait-until blocks on the database's change notifications,
        # so this returns the moment vswitchd reports the configuration applied.
        waiter = subprocess.Popen(
            ["ovs-vsctl", f"--db={self.unix_connection}", f"--timeout={max(1, int(timeout))}",
             "wait-until", "Open_vSwitch", ".", f"cur_cfg>={_READY_CFG}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_until(lambda: waiter.poll() is not None, timeout=timeout + 1,
                       what="ovs-vswitchd", process=self._vswitchd, log=self.vswitchd_log)
        finally:
            if waiter.poll() is None:
                waiter.kill()
            waiter.wait()
            waiter.stderr.close()
        if waiter.returncode != 0:
            raise HarnessError(f"ovs-vswitchd did not apply its configuration within "
                               f"{timeout:g} s\n{log_tail(self.vswitchd_log)}")

    def stop(self, timeout: float = 10) -> None:
        """Stop the daemons, remove the private directory and, if this
        instance created it, the namespace.  Safe to call more than once."""
        exit_cleanups.discard(self)
        for conn in self._api_connections:
            try:
                conn.stop(timeout=timeout)
            except Exception:  # keep tearing down
                LOG.debug("stopping an ovsdbapp connection failed", exc_info=True)
        self._api_connections.clear()
        base = self.base_dir
        # --cleanup makes vswitchd delete its datapath and tap devices.
        self._stop_daemon(self._vswitchd, "ovs-vswitchd.ctl", ["exit", "--cleanup"], timeout)
        self._vswitchd = None
        self._stop_daemon(self._ovsdb, "ovsdb-server.ctl", ["exit"], timeout)
        self._ovsdb = None
        if self.netns is not None and self._given_netns is None:
            self.netns.destroy()
            self.netns = None
        if base is not None:
            shutil.rmtree(base, ignore_errors=True)
        self.base_dir = None
        self.tcp_port = None

    def _stop_daemon(self, proc: subprocess.Popen | None, ctl: str, command: list[str],
                     timeout: float) -> None:
        if proc is None or proc.poll() is not None:
            return
        if self.base_dir is not None:
            subprocess.run(["ovs-appctl", f"--timeout={max(1, int(timeout))}",
                            "-t", str(self.base_dir / ctl), *command],
                           capture_output=True, check=False)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def reset(self) -> None:
        """Delete every bridge (with its ports), for reuse between tests."""
        bridges = self.bridges()
        if bridges:
            args: list[str] = []
            for bridge in bridges:
                args += ["--", "--if-exists", "del-br", bridge]
            self.vsctl(*args)

    # -- queries ------------------------------------------------------------

    def vsctl(self, *args: str, wait: bool = True, timeout: float = 10) -> str:
        """Run ``ovs-vsctl --db=<unix socket> ARGS`` and return its stdout.

        :param wait: wait for vswitchd to apply the change (``--no-wait`` if false).
        :raises HarnessError: the command failed; the message carries stderr.
        """
        argv = ["ovs-vsctl", f"--db={self.unix_connection}", f"--timeout={max(1, int(timeout))}"]
        if not wait or not self.pids.get("ovs-vswitchd"):
            argv.append("--no-wait")
        return run([*argv, *args], timeout=timeout + 5, what="ovs-vsctl").stdout.decode()

    def bridges(self) -> list[str]:
        """Names of the bridges, sorted."""
        return sorted(self.vsctl("list-br").split())

    def ports(self, bridge: str) -> list[str]:
        """Names of the ports on *bridge* (not the bridge's own port), sorted."""
        return sorted(self.vsctl("list-ports", bridge).split())

    def record(self, table: str, record: str, *columns: str) -> dict[str, Any]:
        """Columns of one row as Python values (all columns when none given).

        :raises HarnessError: no such table or row.
        """
        args = ["--format=json"]
        if columns:
            args.append("--columns=" + ",".join(columns))
        data = json.loads(self.vsctl(*args, "list", table, record))
        if not data["data"]:
            raise HarnessError(f"no {table} row {record!r}")
        return {h: ovsdb_value(v) for h, v in zip(data["headings"], data["data"][0])}

    def external_ids(self, table: str, record: str) -> dict[str, str]:
        """The ``external_ids`` map of row *record* in *table*."""
        return self.record(table, record, "external_ids")["external_ids"]

    def interface_external_ids(self, name: str) -> dict[str, str]:
        """``external_ids`` of Interface *name* (iface-id, attached-mac, ...)."""
        return self.external_ids("Interface", name)

    def port_external_ids(self, name: str) -> dict[str, str]:
        """``external_ids`` of Port *name*."""
        return self.external_ids("Port", name)

    def ovsdbapp_api(self, connection: str | None = None, timeout: float = 10) -> Any:
        """A connected ovsdbapp Open_vSwitch API for this instance.

        Its connection is closed by :meth:`stop`.  Each call returns an API
        with a connection of its own (see the module doc about ovsdbapp's
        class-level connection).

        :param connection: OVSDB connection string (default :attr:`connection`).
        :raises HarnessError: ovsdbapp is not installed.
        """
        try:
            from ovsdbapp.backend.ovs_idl import connection as ovs_connection
            from ovsdbapp.schema.open_vswitch import impl_idl
        except ImportError as exc:
            raise HarnessError("PrivateOVS.ovsdbapp_api() needs ovsdbapp: "
                               "pip install ovsdbapp") from exc
        target = connection or self.connection
        idl = ovs_connection.OvsdbIdl.from_server(target, "Open_vSwitch")
        conn = ovs_connection.Connection(idl=idl, timeout=timeout)
        api_class = type(f"PrivateOvsdbIdl_{id(conn):x}", (impl_idl.OvsdbIdl,), {})
        api = api_class(conn)
        self._api_connections.append(conn)
        return api


def _spawn(argv: list[str], output: Path) -> subprocess.Popen:
    with open(output, "ab") as out:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)
