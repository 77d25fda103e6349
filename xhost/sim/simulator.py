"""The simulator: one simulated pool, served by one HTTP server per host.

::

    from xhost.sim import Simulator

    with Simulator("/tmp/state", users={"root": "secret"}) as sim:
        session = XenAPI.Session(sim.url)
        session.xenapi.login_with_password("root", "secret")

A :class:`Simulator` owns the pool-wide pieces (schema, database, sessions,
tasks, events, controls, SR drivers, plugin registry, persistence); each
:class:`SimHost` is one host of the pool with its own server and port.  Part
1 simulates a single host; a pool adds more ``SimHost`` objects sharing the
database, members answering ``HOST_IS_SLAVE [master address]``.
"""
from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import storage_setup
from .controls import Controls
from .db import Database
from .dispatch import Dispatcher
from .events import EventManager, install_encoders
from .guests import SimpleGuests
from .http_server import HttpServer, Request
from .persistence import Persistence
from .plugins import PluginRegistry
from .schema import Schema, load_schema
from .sessions import SessionManager, UserSpec
from .storage_drivers import StorageDrivers
from .tasks import TaskManager

LOG = logging.getLogger(__name__)


class SimHost:
    """One simulated host: its ``host`` record and the server answering for it."""

    def __init__(self, sim: Simulator, host_ref: str, server: HttpServer, scheme: str,
                 public_address: str) -> None:
        self.sim = sim
        self.host_ref = host_ref
        self.server = server
        self.scheme = scheme
        self.public_address = public_address
        #: None for the master; the master's address for a pool member.
        self.master_address: str | None = None
        #: The dom0-local Unix socket server (``unix_socket=``), if any.
        self.local_server: HttpServer | None = None

    @property
    def url(self) -> str:
        host = self.public_address
        if ":" in host:
            host = f"[{host}]"
        return f"{self.scheme}://{host}:{self.server.port}"

    def route(self, method: str, prefix: str, handler: Callable[[Request], Any]) -> None:
        """Register an HTTP handler on this host (e.g. ``/import_raw_vdi``)."""
        self.server.route(method, prefix, handler)


class Simulator:
    """A simulated XCP-ng 8.3 host (pool of one), served over HTTP(S).

    :param state_dir: directory of the persistent state (created if missing;
        a previous state is resumed).  One running simulator per directory.
    :param bind: address to listen on; ``port`` 0 picks a free port.
    :param users: user name -> password, or -> ``(password, role)`` with an
        RBAC role (``pool-admin`` ... ``read-only``; default pool-admin; root
        always has every permission).  Default ``{"root": "secret"}``.
    :param tls: serve HTTPS with a self-signed certificate kept in the state
        directory.
    :param speed: latency factor (0: no waiting; 1: like a real host).
    :param auth_delay: seconds before a failed login is answered (xapi: 5).
    :param flush_interval: seconds between writes of changed state.
    :param host_name, memory_gib, cpus, network_backend: shape of a freshly
        seeded host (ignored when resuming a state directory).
    :param session_timeout, max_sessions_per_originator, max_anonymous_sessions:
        xapi's session limits (24 h, 500, 400).
    :param public_address: address advertised to clients (``host.address``,
        console URLs, :attr:`url`); default: the bind address.
    :param unix_socket: also serve the API on this Unix socket path.
    """

    def __init__(self, state_dir: str | Path, *, bind: str = "127.0.0.1", port: int = 0,
                 users: dict[str, UserSpec] | None = None, tls: bool = False,
                 speed: float = 0.0,
                 auth_delay: float = 0.0, flush_interval: float = 1.0,
                 host_name: str = "xcp-ng-sim", memory_gib: int = 64, cpus: int = 16,
                 network_backend: str = "openvswitch",
                 session_timeout: float = 24 * 3600.0, max_sessions_per_originator: int = 500,
                 max_anonymous_sessions: int = 400, public_address: str | None = None,
                 unix_socket: str | Path | None = None) -> None:
        if speed < 0:
            raise ValueError("speed must be >= 0 (0 = no latency, 1 = real host)")
        if users is not None and not users:
            raise ValueError("users must name at least one user, e.g. {'root': 'secret'}")
        if network_backend not in ("openvswitch", "bridge"):
            raise ValueError("network_backend must be 'openvswitch' or 'bridge'")
        self.state_dir = Path(state_dir)
        self.unix_socket = str(unix_socket) if unix_socket else None
        self.bind = bind
        self.port = port
        self.tls = tls
        self.host_name = host_name
        self.memory_gib = memory_gib
        self.cpus = cpus
        self.network_backend = network_backend
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
        self.guests = SimpleGuests(self)
        self.dispatcher = Dispatcher(self)
        self.persistence = Persistence(self.state_dir, self.db, interval=flush_interval)
        self.hosts: list[SimHost] = []
        self.master_ref = "OpaqueRef:NULL"
        self._started = False
        self._stop_event = threading.Event()
        self._gc_thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> Simulator:
        """Load or seed the state and start serving (returns at once)."""
        if self._started:
            raise RuntimeError("simulator already started")
        from . import seed

        self.persistence.acquire()
        try:
            state = self.persistence.load()
            if state is None:
                seed.seed_pool(self)
                self.persistence.flush(force=True)
            else:
                self.db.load(state)
                seed.after_restart(self)
                storage_setup.bring_up(self)
            self.sessions.restore()
            self.tasks.restore()
            ssl_context = self._ssl_context() if self.tls else None
            server = HttpServer(self.bind, self.port, ssl_context)
            master_ref = seed.master_host(self)
            self.master_ref = master_ref
            host = SimHost(self, master_ref, server, "https" if self.tls else "http",
                           self.public_address)
            self.hosts.append(host)
            from . import control_http, dataplane, rpc_server

            rpc_server.install(host)
            control_http.install(host)
            dataplane.install(host)
            seed.update_host_address(self, host)
            server.start()
            if self.unix_socket:
                local = HttpServer("", 0, None, name="xapi-sim-local",
                                   unix_path=self.unix_socket)
                rpc_server.install(host, local)
                dataplane.install(host, local)
                local.start()
                host.local_server = local
            self.persistence.start()
            self._gc_thread = threading.Thread(target=self._gc_loop, name="sim-gc", daemon=True)
            self._gc_thread.start()
            self._started = True
        except BaseException:
            self.persistence.release()
            raise
        LOG.debug("XAPI simulator serving %s (state in %s)", self.url, self.state_dir)
        return self

    def stop(self) -> None:
        """Stop serving and write the state; idempotent."""
        if not self._started:
            return
        self._started = False
        self._stop_event.set()
        self.storage_runtime.stop()
        for host in self.hosts:
            host.server.stop()
            if host.local_server is not None:
                host.local_server.stop()
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
        if not self.hosts:
            raise RuntimeError("simulator not started")
        return self.hosts[0].url

    @property
    def master(self) -> SimHost:
        return self.hosts[0]

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
        (None makes it a master again)."""
        self.hosts[host].master_address = master_address
