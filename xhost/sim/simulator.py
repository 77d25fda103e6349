"""The simulator: one simulated pool, served by one HTTP server per host.

::

    from xhost.sim import Simulator

    with Simulator("/tmp/state", users={"root": "secret"}) as sim:
        session = XenAPI.Session(sim.url)
        session.xenapi.login_with_password("root", "secret")

A :class:`Simulator` owns the pool-wide pieces (schema, database, sessions,
tasks, events, controls, SR drivers, plugin registry, persistence, dom0
networks); each :class:`SimHost` is one host of the pool with its own server
and port, all sharing the database.  Members answer ``HOST_IS_SLAVE
["<ip>:<port>"]`` (see :mod:`xhost.sim.pool` for joins, ejects and master
failover).
"""
from __future__ import annotations

import json
import logging
import ssl
import threading
import uuid as uuidlib
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import storage_setup
from .controls import Controls
from .db import Database
from .dispatch import Dispatcher
from .dom0env import Dom0Env
from .events import EventManager, install_encoders
from .guests import GuestManager
from .http_server import HttpServer, Request
from .netmode import NetworkMode
from .persistence import Persistence
from .plugins import PluginRegistry
from .schema import Schema, load_schema
from .sessions import SessionManager, UserSpec
from .storage_drivers import StorageDrivers
from .tasks import TaskManager

LOG = logging.getLogger(__name__)


#: Simulators of this process by token (a joining host hands its server over
#: directly when its pool's simulator lives in the same process).
LIVE: weakref.WeakValueDictionary[str, Simulator] = weakref.WeakValueDictionary()
HOSTS_FILE = "hosts.json"


class SimHost:
    """One simulated host: its ``host`` record and the server answering for it."""

    def __init__(self, sim: Simulator, host_ref: str, server: HttpServer, scheme: str,
                 public_address: str, *, local: bool = False) -> None:
        self.sim = sim
        self.host_ref = host_ref
        self.server = server
        self.scheme = scheme
        self.public_address = public_address
        #: None when this host answers calls; else the ``HOST_IS_SLAVE``
        #: parameter (kept up to date by :func:`xhost.sim.pool.refresh_roles`).
        self.master_address: str | None = None
        #: The host this one believes is the pool master (None: the pool's).
        self.believed_master: str | None = None
        #: Set by ``set_member`` / ``xhost sim role``: answer HOST_IS_SLAVE
        #: with this address whatever the pool says.
        self.forced_master: str | None = None
        #: False while the host is "down" (crash_host): its port refuses connections.
        self.live = True
        #: The dom0-local Unix socket server (``unix_socket=``), if any.
        self.local_server: HttpServer | None = None
        #: The Unix-socket view forwards every call, as a member's xapi does.
        self.local = local
        self.port = server.port

    @property
    def url(self) -> str:
        host = self.public_address
        if ":" in host:
            host = f"[{host}]"
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def endpoint(self) -> str:
        """``<ip>:<port>``: how pool members name this host in ``HOST_IS_SLAVE``."""
        host = self.public_address
        if ":" in host:
            host = f"[{host}]"
        return f"{host}:{self.port}"

    @property
    def is_master(self) -> bool:
        return self.master_address is None

    def route(self, method: str, prefix: str, handler: Callable[[Request], Any]) -> None:
        """Register an HTTP handler on this host (e.g. ``/import_raw_vdi``)."""
        self.server.route(method, prefix, handler)

    def set_forced_master(self, address: str | None) -> None:
        self.forced_master = address
        from . import pool

        pool.refresh_roles(self.sim)

    def __repr__(self) -> str:
        return f"SimHost({self.host_ref}, {self.url}, {'master' if self.is_master else 'member'})"


class Simulator:
    """A simulated XCP-ng 8.3 pool (of one host by default), served over HTTP(S).

    :param state_dir: directory of the persistent state (created if missing;
        a previous state is resumed).  One running simulator per directory.
    :param bind: address to listen on; ``port`` 0 picks a free port.  A pool
        of N hosts listens on N ports of that address (``port``,
        ``port + 1``, ... when ``port`` is given).
    :param users: user name -> password, or -> ``(password, role)`` with an
        RBAC role (``pool-admin`` ... ``read-only``; default pool-admin; root
        always has every permission).  Default ``{"root": "secret"}``.
    :param tls: serve HTTPS with a self-signed certificate kept in the state
        directory.
    :param speed: latency factor (0: no waiting; 1: like a real host).
    :param auth_delay: seconds before a failed login is answered (xapi: 5).
    :param flush_interval: seconds between writes of changed state.
    :param host_name, memory_gib, cpus, network_backend, hosts: shape of a
        freshly seeded pool (ignored when resuming a state directory): ``hosts``
        hosts (``host_name``, ``host_name-2``, ...), with a shared NFS SR as the
        pool's default SR when there is more than one.
    :param session_timeout, max_sessions_per_originator, max_anonymous_sessions:
        xapi's session limits (24 h, 500, 400).
    :param public_address: address advertised to clients (``host.address``,
        console URLs, :attr:`url`); default: the bind address.
    :param unix_socket: also serve the master's API on this Unix socket path.
    :param real_network: give every host a network namespace standing for its
        dom0 in which bridges and vif interfaces really exist (root only; see
        :mod:`xhost.sim.netmode`).
    :param netns, ovsdb: the namespace (and, for ``openvswitch``, the OVSDB
        connection of the Open vSwitch running in it) to use for the first
        host's dom0 instead of private ones.
    :param dom0_python: interpreter of dom0 processes (plugins, xenstore
        commands); default: this Python.
    :param plugin_timeout: seconds after which a dom0 plugin is killed.
    """

    def __init__(self, state_dir: str | Path, *, bind: str = "127.0.0.1", port: int = 0,
                 users: dict[str, UserSpec] | None = None, tls: bool = False,
                 speed: float = 0.0,
                 auth_delay: float = 0.0, flush_interval: float = 1.0,
                 host_name: str = "xcp-ng-sim", memory_gib: int = 64, cpus: int = 16,
                 network_backend: str = "openvswitch", hosts: int = 1,
                 session_timeout: float = 24 * 3600.0, max_sessions_per_originator: int = 500,
                 max_anonymous_sessions: int = 400, public_address: str | None = None,
                 unix_socket: str | Path | None = None, real_network: bool = False,
                 netns: str | None = None, ovsdb: str | None = None,
                 dom0_python: str | None = None, plugin_timeout: float = 600.0) -> None:
        if speed < 0:
            raise ValueError("speed must be >= 0 (0 = no latency, 1 = real host)")
        if users is not None and not users:
            raise ValueError("users must name at least one user, e.g. {'root': 'secret'}")
        if network_backend not in ("openvswitch", "bridge"):
            raise ValueError("network_backend must be 'openvswitch' or 'bridge'")
        if not 1 <= hosts <= 64:
            raise ValueError("hosts must be between 1 and 64")
        if port and port + hosts - 1 > 65535:
            raise ValueError(f"ports {port}..{port + hosts - 1} do not fit below 65536")
        self.state_dir = Path(state_dir)
        self.unix_socket = str(unix_socket) if unix_socket else None
        self.bind = bind
        self.port = port
        self.tls = tls
        self.host_name = host_name
        self.memory_gib = memory_gib
        self.cpus = cpus
        self.network_backend = network_backend
        self.n_hosts = hosts
        self.public_address = public_address or (
            "127.0.0.1" if bind in ("0.0.0.0", "") else "::1" if bind == "::" else bind)
        self.schema: Schema = load_schema()
        self.db = Database(self.schema)
        install_encoders(self.schema.types,
                         {c.name.lower(): c.name for c in self.schema.classes.values()})
        self.controls = Controls(speed=speed)
        self.events = EventManager(self)
        self.sessions = SessionManager(
            self, users if users is not None else {"root": "secret"}, auth_delay=auth_delay,
            inactive_timeout=session_timeout, max_per_originator=max_sessions_per_originator,
            max_anonymous=max_anonymous_sessions)
        self.tasks = TaskManager(self)
        self.storage = StorageDrivers(self)
        storage_setup.install(self)
        self.plugins = PluginRegistry(self)
        #: The control domain: file tree under ``<state_dir>/dom0``, plugins, XenStore.
        self.dom0 = Dom0Env(self, self.state_dir / "dom0", interpreter=dom0_python,
                            plugin_timeout=plugin_timeout)
        self.xenstore = self.dom0.xenstore
        self.guests = GuestManager(self)
        self.dispatcher = Dispatcher(self)
        self.persistence = Persistence(self.state_dir, self.db, interval=flush_interval)
        #: Dom0 networks (records always; real bridges/interfaces on request).
        self.network = NetworkMode(self, real=real_network, netns=netns, ovsdb=ovsdb)
        from .netmode import hooks

        hooks.install(self)
        self.hosts: list[SimHost] = []
        self.master_ref = "OpaqueRef:NULL"
        #: Functions called with every SimHost this simulator serves (data-plane
        #: routes and the like must be installed on every host of a pool).
        self.host_installers: list[Callable[[SimHost], None]] = []
        #: Standalone simulators made from hosts ejected from this pool, by host uuid.
        self.ejected: dict[str, Simulator] = {}
        #: Set when this simulator's host joined another pool (its server moved there).
        self.joined_pool_url: str | None = None
        self.token = str(uuidlib.uuid4())
        self._adopt: list[HttpServer] = []
        self._started = False
        self._stop_event = threading.Event()
        self._gc_thread: threading.Thread | None = None
        self._ssl: ssl.SSLContext | None = None

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> Simulator:
        """Load or seed the state and start serving (returns at once)."""
        if self._started:
            raise RuntimeError("simulator already started")
        from . import pool, pool_control, seed  # noqa: F401 (pool_control: /sim/pool routes)

        self.persistence.acquire()
        try:
            if (self.state_dir / pool.JOINED_FILE).exists():
                raise RuntimeError(pool.joined_message(self.state_dir))
            state = self.persistence.load()
            if state is None:
                seed.seed_pool(self)
                if self.n_hosts > 1:
                    pool.seed_members(self, self.n_hosts - 1)
                self.persistence.flush(force=True)
            else:
                self.db.load(state)
                seed.after_restart(self)
                storage_setup.bring_up(self)
            self.sessions.restore()
            self.tasks.restore()
            self._ssl = self._ssl_context() if self.tls else None
            self.master_ref = seed.master_host(self)
            refs = pool.host_order(self)
            ports = self._port_plan(refs)
            for ref in refs:
                self._serve_host(ref, ports[ref], start=False)
            pool.refresh_roles(self)
            self.network.start([h.host_ref for h in self.hosts])
            self.dom0.start(self.master)
            self.guests.start()
            for host in self.hosts:
                _ensure_started(host.server)
            if self.unix_socket:
                local = HttpServer("", 0, None, name="xapi-sim-local",
                                   unix_path=self.unix_socket)
                master = self.master
                view = SimHost(self, master.host_ref, local, "unix", master.public_address,
                               local=True)
                from . import dataplane, rpc_server

                rpc_server.install(view, local)
                dataplane.install(view, local)
                local.start()
                master.local_server = local
            self._write_ports()
            self.persistence.start()
            self._gc_thread = threading.Thread(target=self._gc_loop, name="sim-gc", daemon=True)
            self._gc_thread.start()
            self._started = True
            LIVE[self.token] = self
        except BaseException:
            self.guests.stop()
            self.dom0.stop()
            for host in self.hosts:
                host.server.stop()
            self.hosts.clear()
            self.network.stop()
            self.persistence.release()
            raise
        LOG.debug("XAPI simulator serving %s (state in %s)", self.url, self.state_dir)
        return self

    def _port_plan(self, refs: list[str]) -> dict[str, int]:
        """Ports per host: each host keeps its port of the last run (when that
        run used the same ``port`` range); else ``port``, ``port + 1``... in
        host order, or free ports."""
        remembered: dict[str, int] = {}
        try:
            remembered = json.loads((self.state_dir / HOSTS_FILE).read_text())
        except (OSError, ValueError):
            pass
        uuids = [self.db.get("host", ref)["uuid"] for ref in refs]
        known = [int(remembered[u]) for u in uuids if u in remembered]
        if self.port:
            wanted = set(range(self.port, self.port + len(refs)))
            if len(known) == len(refs) and set(known) == wanted:
                return {ref: int(remembered[u]) for ref, u in zip(refs, uuids)}
            return {ref: self.port + i for i, ref in enumerate(refs)}
        return {ref: int(remembered.get(u, 0)) for ref, u in zip(refs, uuids)}

    def _write_ports(self) -> None:
        doc = {self.db.get("host", h.host_ref)["uuid"]: h.port for h in self.hosts
               if self.db.exists("host", h.host_ref)}
        try:
            (self.state_dir / HOSTS_FILE).write_text(json.dumps(doc, indent=1) + "\n")
        except OSError:
            LOG.warning("cannot write %s", self.state_dir / HOSTS_FILE)

    def _new_server(self, port: int) -> HttpServer:
        try:
            return HttpServer(self.bind, port, self._ssl)
        except OSError:
            if port == 0 or self.port:
                raise
            # The port of the last run is taken: any free one will do.
            return HttpServer(self.bind, 0, self._ssl)

    def _serve_host(self, host_ref: str, port: int = 0, *, server: HttpServer | None = None,
                    start: bool = True) -> SimHost:
        """Serve ``host_ref`` on ``server`` (adopted, its routes replaced) or on
        a new server at ``port``."""
        from . import seed

        if server is None:
            server = self._adopt.pop(0) if self._adopt else self._new_server(port)
        host = SimHost(self, host_ref, server, "https" if self.tls else "http",
                       self.public_address)
        self._install(host)
        self.hosts.append(host)
        seed.update_host_address(self, host)
        if start:
            _ensure_started(server)
        return host

    def _install(self, host: SimHost) -> None:
        """(Re)install every route of ``host`` on its server."""
        from . import control_http, dataplane, rpc_server

        host.server.routes.clear()
        rpc_server.install(host)
        control_http.install(host)
        dataplane.install(host)
        for installer in self.host_installers:
            installer(host)

    def _hand_over(self) -> HttpServer:
        """Give up this (standalone) host's server after joining a pool:
        returns it, still accepting connections, for the pool to serve."""
        host = self.hosts[0]
        if host.local_server is not None:
            host.local_server.stop()
            host.local_server = None
        self.hosts.clear()
        self._started = False
        LIVE.pop(self.token, None)
        self._stop_event.set()
        self.network.stop()
        self.persistence.stop()
        self.persistence.release()
        return host.server

    def add_host_installer(self, installer: Callable[[SimHost], None]) -> None:
        """Call ``installer(host)`` for every host served now and later."""
        self.host_installers.append(installer)
        for host in self.hosts:
            installer(host)

    def stop(self) -> None:
        """Stop serving and write the state; idempotent."""
        for sim in list(self.ejected.values()):
            sim.stop()
        if not self._started:
            return
        self._started = False
        LIVE.pop(self.token, None)
        self._stop_event.set()
        self.storage_runtime.stop()
        for host in self.hosts:
            host.server.stop()
            if host.local_server is not None:
                host.local_server.stop()
        self.guests.stop()
        self.dom0.stop()
        self.network.stop()
        if self.joined_pool_url is None:
            self._write_ports()
            self.persistence.stop()
        self.persistence.release()
        self.hosts.clear()

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _gc_loop(self) -> None:
        while not self._stop_event.wait(30.0):
            try:
                self.sessions.reap()
                self.tasks.gc()
            except Exception:
                LOG.exception("simulator garbage collection failed")

    def _ssl_context(self) -> ssl.SSLContext:
        from .tls import ensure_certificate

        cert, key = ensure_certificate(self.state_dir / "tls", self.public_address)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        return ctx

    # -- conveniences ------------------------------------------------------------
    @property
    def url(self) -> str:
        """URL of the pool master, e.g. ``http://127.0.0.1:40123``."""
        if self.joined_pool_url is not None:
            raise RuntimeError(f"this host joined the pool at {self.joined_pool_url}; that "
                               "pool's simulator serves it now")
        if not self.hosts:
            raise RuntimeError("simulator not started")
        return self.master.url

    @property
    def urls(self) -> list[str]:
        """URL of every host, the master first."""
        return [self.master.url] + [h.url for h in self.hosts if h is not self.master]

    @property
    def master(self) -> SimHost:
        """The host serving the pool master (the first host if it is not served here)."""
        for host in self.hosts:
            if host.host_ref == self.master_ref:
                return host
        return self.hosts[0]

    def host(self, which: int | str) -> SimHost:
        """A served host by index (0 = first started), reference, uuid, name or URL."""
        if isinstance(which, int):
            return self.hosts[which]
        for host in self.hosts:
            rec = self.db.find("host", host.host_ref) or {}
            if which in (host.host_ref, rec.get("uuid"), rec.get("name_label"), host.url,
                         host.endpoint):
                return host
        raise KeyError(f"no host {which!r} in this simulator (hosts: "
                       + ", ".join(self.db.get("host", h.host_ref)["name_label"]
                                   for h in self.hosts if self.db.exists("host", h.host_ref))
                       + ")")

    @property
    def speed(self) -> float:
        return self.controls.speed

    @speed.setter
    def speed(self, value: float) -> None:
        if value < 0:
            raise ValueError("speed must be >= 0")
        self.controls.speed = float(value)

    def flush(self) -> None:
        """Write the state directory now."""
        self.persistence.flush(force=True)

    def set_member(self, master_address: str | None, host: int = 0) -> None:
        """Make host ``host`` answer every call with HOST_IS_SLAVE [master_address]
        (None makes it follow the pool again)."""
        self.hosts[host].set_forced_master(master_address)

    # -- pool operations (see xhost.sim.pool) ---------------------------------------
    def designate_new_master(self, host: int | str) -> None:
        """``pool.designate_new_master``: an orderly master change."""
        from . import pool

        pool.designate_new_master(self, self.host(host).host_ref)

    def crash_host(self, host: int | str) -> None:
        """Take a host down: its port refuses connections, ``host_metrics.live``
        becomes false.  Crashing the master leaves the pool without one until
        :meth:`emergency_transition_to_master`."""
        from . import pool

        pool.crash_host(self, self.host(host).host_ref)

    def restart_host(self, host: int | str) -> None:
        """Bring a crashed host back (as a member of the current master)."""
        from . import pool

        pool.restart_host(self, self.host(host).host_ref)

    def emergency_transition_to_master(self, host: int | str, recover: bool = True
                                       ) -> list[str]:
        """``pool.emergency_transition_to_master`` on ``host`` and, with
        ``recover``, ``pool.recover_slaves``; returns the recovered hosts."""
        from . import pool

        ref = self.host(host).host_ref
        pool.emergency_transition_to_master(self, ref)
        return pool.recover_slaves(self, ref) if recover else []


def _ensure_started(server: HttpServer) -> None:
    # An adopted server is already accepting connections.
    if getattr(server, "_thread", None) is None:
        server.start()
