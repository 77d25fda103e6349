"""``xhost sim ...`` commands: run a simulator and steer a running one.

``xhost sim serve`` runs a simulated XCP-ng 8.3 host until interrupted and
prints its URL on stdout once it accepts connections.  The other commands
talk to a running simulator's ``/sim/...`` control endpoint (see
:mod:`xhost.sim.control_http`); they take ``--url`` (or ``XHOST_SIM_URL``)
and the ``root`` password (``--password`` or ``XHOST_SIM_PASSWORD``).  None
of them needs the xhost configuration file.
"""
from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import signal
import ssl
import threading
import urllib.error
import urllib.request
from typing import Any

from cliff.command import Command
from cliff.lister import Lister
from cliff.show import ShowOne

LOG = logging.getLogger(__name__)

PASSWORD_ENV = "XHOST_SIM_PASSWORD"
URL_ENV = "XHOST_SIM_URL"


class Serve(Command):
    """Serve a simulated XCP-ng 8.3 host (XenAPI over HTTP/HTTPS) until interrupted.

    State (objects, sessions, tasks) lives in --state-dir; a restarted
    simulator resumes it.  The URL is printed on stdout once the server
    accepts connections; log in as root with --password.
    """

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("--state-dir", required=True, metavar="DIR",
                            help="directory holding the simulated host's state (created if "
                                 "missing; reused on restart)")
        parser.add_argument("--bind", default="127.0.0.1", metavar="ADDR",
                            help="address to listen on (default 127.0.0.1)")
        parser.add_argument("--port", type=int, default=0, metavar="N",
                            help="TCP port (default 0: any free port; the URL shows it)")
        parser.add_argument("--password", metavar="PW",
                            help=f"password of user root (or set {PASSWORD_ENV})")
        parser.add_argument("--user", action="append", default=[], metavar="NAME:PW[:ROLE]",
                            help="another user, optionally with an RBAC role (pool-admin, "
                                 "pool-operator, vm-power-admin, vm-admin, vm-operator, "
                                 "read-only); repeatable")
        parser.add_argument("--address", metavar="ADDR",
                            help="address clients should use (host.address, console URLs, "
                                 "the printed URL); default: the bind address, or "
                                 "127.0.0.1 when binding 0.0.0.0")
        parser.add_argument("--unix-socket", metavar="PATH",
                            help="also serve the API on this Unix socket (what dom0 tools "
                                 "reach with XenAPI.xapi_local())")
        parser.add_argument("--tls", action="store_true",
                            help="serve HTTPS with a self-signed certificate kept in the "
                                 "state directory")
        parser.add_argument("--speed", type=float, default=0.0, metavar="X",
                            help="latency factor: 0 = instant (default), 1 = like a real "
                                 "host, 0.1 = ten times faster")
        parser.add_argument("--auth-delay", type=float, default=5.0, metavar="SECONDS",
                            help="delay before answering a failed login (xapi: 5, default)")
        parser.add_argument("--host-name", default="xcp-ng-sim", metavar="NAME",
                            help="host name_label/hostname of a freshly seeded state")
        parser.add_argument("--memory-gib", type=int, default=64, metavar="GIB",
                            help="host memory of a freshly seeded state (default 64)")
        parser.add_argument("--cpus", type=int, default=16, metavar="N",
                            help="host CPUs of a freshly seeded state (default 16)")
        parser.add_argument("--network-backend", choices=("openvswitch", "bridge"),
                            default="openvswitch",
                            help="host.software_version network_backend (default openvswitch)")
        parser.add_argument("--flush-interval", type=float, default=1.0, metavar="SECONDS",
                            help="how often changed state is written to disk (default 1)")
        parser.add_argument("--dom0-python", metavar="PATH",
                            help="interpreter of dom0 plugins and tools (default: this "
                                 "Python), e.g. a Python 3.6 like XCP-ng 8.x's dom0")
        parser.add_argument("--plugin-timeout", type=float, default=600.0, metavar="SECONDS",
                            help="kill a dom0 plugin running longer than this (default 600)")
        parser.add_argument("--hosts", type=int, default=1, metavar="N",
                            help="hosts of a freshly seeded pool (default 1); each is served "
                                 "on its own port (--port, --port+1, ... or free ports), "
                                 "members answer HOST_IS_SLAVE; their URLs follow the "
                                 "master's on stdout")
        parser.add_argument("--real-network", action="store_true",
                            help="give each host a network namespace standing for its dom0 "
                                 "with real bridges and vif<domid>.<device> interfaces "
                                 "(root only); see 'xhost sim network'")
        parser.add_argument("--netns", metavar="NAME",
                            help="with --real-network: use this existing namespace for the "
                                 "first host's dom0")
        parser.add_argument("--ovsdb", metavar="CONNECTION",
                            help="with --real-network and --netns: the OVSDB (unix:PATH or "
                                 "tcp:IP:PORT) of the Open vSwitch whose ovs-vswitchd runs "
                                 "in that namespace")
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> int:
        from .persistence import StateDirInUse
        from .simulator import Simulator

        password = parsed_args.password or os.environ.get(PASSWORD_ENV)
        if not password:
            raise SystemExit(f"xhost sim serve: give the root password with --password PW "
                             f"or the {PASSWORD_ENV} environment variable")
        if not 0 <= parsed_args.port <= 65535:
            raise SystemExit("xhost sim serve: --port must be between 0 and 65535")
        users: dict[str, Any] = {"root": password}
        for spec in parsed_args.user:
            name, _, rest = spec.partition(":")
            pw, _, role = rest.partition(":")
            if not name or not pw or name == "root":
                raise SystemExit(f"xhost sim serve: --user {name or spec!r}: expected "
                                 "NAME:PASSWORD[:ROLE] for a user other than root")
            users[name] = (pw, role or "pool-admin")
        try:
            sim = Simulator(
                parsed_args.state_dir, bind=parsed_args.bind, port=parsed_args.port,
                users=users, tls=parsed_args.tls, speed=parsed_args.speed,
                auth_delay=parsed_args.auth_delay, host_name=parsed_args.host_name,
                memory_gib=parsed_args.memory_gib, cpus=parsed_args.cpus,
                network_backend=parsed_args.network_backend,
                flush_interval=parsed_args.flush_interval, hosts=parsed_args.hosts,
                public_address=parsed_args.address, unix_socket=parsed_args.unix_socket,
                real_network=parsed_args.real_network, netns=parsed_args.netns,
                ovsdb=parsed_args.ovsdb, dom0_python=parsed_args.dom0_python,
                plugin_timeout=parsed_args.plugin_timeout)
        except ValueError as exc:
            raise SystemExit(f"xhost sim serve: {exc}") from None
        stop = threading.Event()

        def on_signal(signum: int, frame: Any) -> None:
            stop.set()

        old_int = signal.signal(signal.SIGINT, on_signal)
        old_term = signal.signal(signal.SIGTERM, on_signal)
        try:
            from .netmode import RealNetworkUnavailable

            try:
                sim.start()
            except (StateDirInUse, RealNetworkUnavailable) as exc:
                raise SystemExit(f"xhost sim serve: {exc}") from None
            except RuntimeError as exc:
                raise SystemExit(f"xhost sim serve: {exc}") from None
            except OSError as exc:
                raise SystemExit(f"xhost sim serve: cannot listen on {parsed_args.bind}:"
                                 f"{parsed_args.port}: {exc.strerror or exc}") from None
            self.app.stdout.write("".join(url + "\n" for url in sim.urls))
            self.app.stdout.flush()
            what = (f"a pool of {len(sim.hosts)} simulated XCP-ng 8.3 hosts, master at"
                    if len(sim.hosts) > 1 else "a simulated XCP-ng 8.3 host at")
            self.app.stderr.write(
                f"xhost sim: serving {what} {sim.url} "
                f"(user root, state in {sim.state_dir}); Ctrl-C stops it\n")
            if sim.network.real:
                for name, info in sim.network.info()["hosts"].items():
                    self.app.stderr.write(
                        f"xhost sim: dom0 network of {name}: namespace {info['netns']}"
                        + (f", OVSDB {info['ovsdb']}" if info["ovsdb"] else "") + "\n")
            self.app.stderr.flush()
            while not stop.wait(0.2):
                if sim.joined_pool_url:
                    self.app.stderr.write(
                        f"xhost sim: this host joined the pool at {sim.joined_pool_url}; "
                        "that pool's simulator serves it now\n")
                    break
        finally:
            sim.stop()
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)
        return 0


# -- client side ----------------------------------------------------------------

class _ControlCommand:
    """Mixin: options and HTTP plumbing to reach a running simulator."""

    def add_control_args(self, parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument("--url", default=os.environ.get(URL_ENV),
                            help=f"URL of the running simulator (or set {URL_ENV})")
        parser.add_argument("--user", default="root", help="simulator user (default root)")
        parser.add_argument("--password", default=None,
                            help=f"the user's password (or set {PASSWORD_ENV})")
        parser.add_argument("--ca-file", default=None,
                            help="verify an https simulator against this CA file (default: "
                                 "accept its self-signed certificate)")
        return parser

    def request(self, parsed_args: argparse.Namespace, method: str, path: str,
                body: dict[str, Any] | None = None) -> Any:
        url = parsed_args.url
        if not url:
            raise SystemExit(f"xhost sim: give the simulator URL with --url or {URL_ENV} "
                             "(xhost sim serve prints it)")
        password = parsed_args.password or os.environ.get(PASSWORD_ENV)
        if password is None:
            raise SystemExit(f"xhost sim: give the password with --password or {PASSWORD_ENV}")
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url.rstrip("/") + path, data=data, method=method)
        token = base64.b64encode(f"{parsed_args.user}:{password}".encode()).decode()
        req.add_header("Authorization", "Basic " + token)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        context = None
        if url.startswith("https"):
            context = ssl.create_default_context(cafile=parsed_args.ca_file)
            if parsed_args.ca_file is None:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
        try:
            with urllib.request.urlopen(req, timeout=30, context=context) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            try:
                detail = json.loads(exc.read()).get("error", exc.reason)
            except ValueError:
                detail = exc.reason
            raise SystemExit(f"xhost sim: {method} {path} failed ({exc.code}): {detail}") \
                from None
        except urllib.error.URLError as exc:
            raise SystemExit(f"xhost sim: cannot reach {url}: {exc.reason}") from None


def _flatten(doc: dict[str, Any]) -> tuple[tuple[str, ...], tuple[Any, ...]]:
    keys = tuple(sorted(doc))
    return keys, tuple(json.dumps(doc[k]) if isinstance(doc[k], (dict, list)) else doc[k]
                       for k in keys)


class Status(_ControlCommand, ShowOne):
    """Show a running simulator's state: URL, speed, object counts, faults, role."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        return self.add_control_args(super().get_parser(prog_name))

    def take_action(self, parsed_args: argparse.Namespace) -> tuple:
        return _flatten(self.request(parsed_args, "GET", "/sim/status"))


class Counters(_ControlCommand, Lister):
    """List per-method call counters of a running simulator."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = self.add_control_args(super().get_parser(prog_name))
        parser.add_argument("--reset", action="store_true", help="reset them after reading")
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> tuple:
        path = "/sim/counters" + ("?reset=1" if parsed_args.reset else "")
        counters = self.request(parsed_args, "GET", path)
        return ("Method", "Calls"), sorted(counters.items())


class FaultAdd(_ControlCommand, ShowOne):
    """Make calls of METHOD fail with the XAPI error CODE [PARAM ...].

    Examples: ``xhost sim fault add VM.start HOST_NOT_ENOUGH_FREE_MEMORY 1 0 --nth 2``;
    ``xhost sim fault add host.call_plugin XENAPI_PLUGIN_FAILURE x y z --plugin
    xhost_glance --fn download_vhd``.
    """

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = self.add_control_args(super().get_parser(prog_name))
        parser.add_argument("method", help="Class.name (Async. prefix optional) or *")
        parser.add_argument("code", help="XAPI error code, e.g. SR_BACKEND_FAILURE_47")
        parser.add_argument("params", nargs="*", help="error parameters")
        parser.add_argument("--nth", type=int, help="fail only the N-th matching call")
        parser.add_argument("--times", type=int, help="fail at most N calls")
        parser.add_argument("--plugin", help="only host.call_plugin of this plugin")
        parser.add_argument("--fn", help="only this plugin function")
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> tuple:
        body = {"method": parsed_args.method, "error": [parsed_args.code, *parsed_args.params],
                "nth": parsed_args.nth, "times": parsed_args.times,
                "plugin": parsed_args.plugin, "fn": parsed_args.fn}
        return _flatten(self.request(parsed_args, "POST", "/sim/faults", body))


class FaultList(_ControlCommand, Lister):
    """List the fault rules of a running simulator."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        return self.add_control_args(super().get_parser(prog_name))

    def take_action(self, parsed_args: argparse.Namespace) -> tuple:
        rules = self.request(parsed_args, "GET", "/sim/faults")
        cols = ("id", "method", "error", "nth", "times", "plugin", "fn", "seen", "fired")
        return cols, [tuple(json.dumps(r[c]) if isinstance(r[c], list) else r[c] for c in cols)
                      for r in rules]


class FaultClear(_ControlCommand, Command):
    """Remove one fault rule (--id) or all of them."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = self.add_control_args(super().get_parser(prog_name))
        parser.add_argument("--id", type=int, help="rule number (default: all rules)")
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> int:
        path = "/sim/faults" + (f"?id={parsed_args.id}" if parsed_args.id is not None else "")
        result = self.request(parsed_args, "DELETE", path)
        self.app.stdout.write(f"removed {result['removed']} rule(s)\n")
        return 0


class ExpireSessions(_ControlCommand, Command):
    """Invalidate one session (--session) or all: clients then get SESSION_INVALID."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = self.add_control_args(super().get_parser(prog_name))
        parser.add_argument("--session", help="session reference (default: every session)")
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> int:
        result = self.request(parsed_args, "POST", "/sim/sessions/expire",
                              {"session": parsed_args.session})
        self.app.stdout.write(f"expired {result['expired']} session(s)\n")
        return 0


class DropConnections(_ControlCommand, Command):
    """Close the next COUNT API connections without answering (optionally only --method)."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = self.add_control_args(super().get_parser(prog_name))
        parser.add_argument("--count", type=int, default=1, help="how many (default 1)")
        parser.add_argument("--method", help="only calls of this method")
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> int:
        self.request(parsed_args, "POST", "/sim/connections/drop",
                     {"count": parsed_args.count, "method": parsed_args.method})
        self.app.stdout.write(f"dropping the next {parsed_args.count} connection(s)\n")
        return 0


class Latency(_ControlCommand, ShowOne):
    """Show or set latency: --speed X scales the model; --method M --seconds S fixes one
    method (--seconds omitted clears it)."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = self.add_control_args(super().get_parser(prog_name))
        parser.add_argument("--speed", type=float, help="0 = instant, 1 = real host")
        parser.add_argument("--method", help="Class.name to fix")
        parser.add_argument("--seconds", type=float, help="fixed duration for --method")
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> tuple:
        body: dict[str, Any] = {}
        if parsed_args.speed is not None:
            body["speed"] = parsed_args.speed
        if parsed_args.method:
            body["method"] = parsed_args.method
            body["seconds"] = parsed_args.seconds
        elif parsed_args.seconds is not None:
            raise SystemExit("xhost sim latency: --seconds needs --method")
        if body:
            result = self.request(parsed_args, "POST", "/sim/latency", body)
        else:
            result = self.request(parsed_args, "GET", "/sim/latency")
        return _flatten(result)


class Role(_ControlCommand, ShowOne):
    """Make the simulator answer as a pool member (HOST_IS_SLAVE) or as master again."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = self.add_control_args(super().get_parser(prog_name))
        group = parser.add_mutually_exclusive_group(required=True)
        group.add_argument("--member-of", metavar="MASTER_ADDRESS",
                           help="answer every call with HOST_IS_SLAVE [MASTER_ADDRESS]")
        group.add_argument("--master", action="store_true", help="answer normally again")
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> tuple:
        master = None if parsed_args.master else parsed_args.member_of
        return _flatten(self.request(parsed_args, "POST", "/sim/role", {"master": master}))


class Flush(_ControlCommand, Command):
    """Write the running simulator's state directory now."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        return self.add_control_args(super().get_parser(prog_name))

    def take_action(self, parsed_args: argparse.Namespace) -> int:
        result = self.request(parsed_args, "POST", "/sim/flush", {})
        self.app.stdout.write(f"state written to {result['path']}\n")
        return 0

