"""The control domain of a simulated host: its file tree, sockets and tools.

The dom0 root is ``<state dir>/dom0``; absolute dom0 paths resolve under it
(``/etc/xapi.d/plugins``, ``/var/run/sr-mount``, ``/images``, ``/boot/guest``,
``/var/log/xen/guest``, ``/tmp``...).  On start the simulator

* installs xhost's ``dom0/xhost_*.py`` scripts into ``/etc/xapi.d/plugins``
  (executable, refreshed on every start; tests add their own files with
  :meth:`Dom0Env.install_plugin`);
* puts a ``XenAPIPlugin`` module and a ``XenAPI`` module (the PyPI package
  when the dom0 interpreter has it, else a stand-in) in
  ``/usr/lib/xhost-sim/python``;
* installs ``xenstore-read``, ``-write``, ``-rm``, ``-exists``, ``-list``,
  ``-ls`` (and ``xenstore <mode>``) in ``/usr/bin``;
* serves the XenAPI on the dom0-local socket ``/var/lib/xcp/xapi`` (where,
  as in xapi, ``root`` logs in without a valid password) and the
  XenStore on ``/var/run/xenstored/socket`` (when the state directory is so
  deep that a socket path would pass the kernel's 107-byte limit, the sockets
  live in a short temporary directory and those paths are symbolic links).

Processes started "in dom0" (plugins, the xenstore commands) get
:meth:`Dom0Env.environment`: ``PATH`` with the dom0 tools first,
``XHOST_DOM0_ROOT``, ``PYTHONPATH`` to the modules above, ``TMPDIR``, and
the socket locations.  They write no bytecode; but when the dom0 interpreter
is the simulator's own, xhost's scripts are installed with their bytecode in
``__pycache__``, as a real host has it after their first use, so a plugin
call does not compile the modules it imports (``xhost_vhd``...) every time.
"""
from __future__ import annotations

import functools
import importlib.util
import logging
import os
import py_compile
import shutil
import stat
import subprocess
import sys
import tempfile
import xmlrpc.client
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..http_server import HttpServer, Request
from ..rpc_server import MAX_RPC_BODY
from ..wire import MalformedRequest, parse_xml_call
from ..xenstore import XenStore
from .runner import PluginRunner
from .xenstored import make_handler

if TYPE_CHECKING:
    from ..simulator import SimHost, Simulator

LOG = logging.getLogger(__name__)

#: Directories every simulated dom0 has.
LAYOUT = ("etc/xapi.d/plugins", "var/run/sr-mount", "images", "boot/guest",
          "var/log/xen/guest", "tmp", "var/lib/xcp", "var/run/xenstored", "usr/bin",
          "usr/lib/xhost-sim/python")
XENSTORE_COMMANDS = ("read", "write", "rm", "exists", "list", "ls")
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_SUN_PATH_MAX = 107
_PYLIB = ("XenAPIPlugin.py", "XenAPI.py", "xhost_sim_xenstore.py")


@functools.lru_cache(maxsize=32)
def _bytecode(source: bytes) -> bytes:
    """The ``.pyc`` of a script, checked against its source by hash (not by
    modification time), so one compilation serves every simulator started by
    this process."""
    with tempfile.TemporaryDirectory(prefix="xhost-sim-pyc-") as tmp:
        script, cached = Path(tmp, "script.py"), Path(tmp, "script.pyc")
        script.write_bytes(source)
        py_compile.compile(str(script), cfile=str(cached), doraise=True,
                           invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)
        return cached.read_bytes()


_LOGINS = ("session.login_with_password", "session.slave_local_login_with_password")


def _trusting_root_login(sim: Simulator, handler: Callable[[Request], Any]
                         ) -> Callable[[Request], Any]:
    """xapi trusts its Unix socket: ``root`` logs in there with any password
    (``XenAPI.xapi_local().xenapi.login_with_password("root", "")``)."""
    def handle(req: Request) -> Any:
        try:
            body = req.read_body(limit=MAX_RPC_BODY)
        except ValueError:
            return handler(req)
        try:
            method, params = parse_xml_call(body)
        except MalformedRequest:
            method, params = "", []
        if method in _LOGINS and len(params) >= 2 and params[0] == "root":
            params[1] = sim.sessions.users.get("root", "")
            body = xmlrpc.client.dumps(tuple(params), method).encode()
        return handler(_Replayed(req, body))
    return handle


class _Replayed:
    """A request whose body was already read (and possibly rewritten)."""

    def __init__(self, req: Request, body: bytes) -> None:
        self._req = req
        self._body = body

    def read_body(self, limit: int | None = None) -> bytes:
        if limit is not None and len(self._body) > limit:
            raise ValueError("Client_requested_size_over_limit")
        return self._body

    def __getattr__(self, name: str) -> Any:
        return getattr(self._req, name)


def _check_interpreter(path: str) -> None:
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise ValueError(f"dom0 interpreter {path!r} is not an executable file; give the "
                         "path of a Python >= 3.6")


class Dom0Env:
    """dom0 of one simulated host (see the module documentation).

    :param interpreter: Python that runs Python plugins and the xenstore
        commands (default: the simulator's own).  Assigning
        :attr:`interpreter` later reinstalls the commands.
    :param plugin_timeout: seconds after which a plugin is killed.
    """

    def __init__(self, sim: Simulator, root: str | Path, *, interpreter: str | None = None,
                 plugin_timeout: float = 600.0) -> None:
        if plugin_timeout <= 0:
            raise ValueError("plugin_timeout must be positive (seconds)")
        if interpreter is not None:
            _check_interpreter(interpreter)
        self.sim = sim
        self.root = Path(root).absolute()
        self._interpreter = interpreter or sys.executable
        self.plugin_timeout = float(plugin_timeout)
        self.xenstore = XenStore()
        self.runner = PluginRunner(self)
        self.xapi_socket = ""
        self.xenstored_socket = ""
        self._servers: list[HttpServer] = []
        self._short_dir: str | None = None
        self._started = False

    # -- paths -------------------------------------------------------------------
    def path(self, dom0_path: str) -> Path:
        """Where the absolute dom0 path ``dom0_path`` lives on this machine."""
        return self.root / dom0_path.lstrip("/")

    @property
    def plugins_dir(self) -> Path:
        return self.path("/etc/xapi.d/plugins")

    @property
    def lib_dir(self) -> Path:
        return self.path("/usr/lib/xhost-sim/python")

    @property
    def bin_dir(self) -> Path:
        return self.path("/usr/bin")

    @property
    def interpreter(self) -> str:
        return self._interpreter

    @interpreter.setter
    def interpreter(self, value: str) -> None:
        _check_interpreter(value)
        self._interpreter = value
        if self._started:
            self._install_xenstore_commands()

    # -- lifecycle ---------------------------------------------------------------
    def start(self, host: SimHost) -> None:
        """Create the tree, install scripts and tools, open the sockets."""
        for sub in LAYOUT:
            self.path(sub).mkdir(parents=True, exist_ok=True)
        self._install_pylib()
        self.install_xhost_scripts()
        self.xapi_socket = self._socket_location("/var/lib/xcp/xapi", "xapi")
        self.xenstored_socket = self._socket_location("/var/run/xenstored/socket", "xenstored")
        from .. import rpc_server

        api = HttpServer("", 0, None, name="dom0-xapi", unix_path=self.xapi_socket)
        rpc_server.install(host, api)
        local_login = _trusting_root_login(self.sim, rpc_server.make_xml_handler(host))
        api.route("POST", "/", local_login)
        api.route("POST", "/RPC2", local_login)
        store = HttpServer("", 0, None, name="dom0-xenstored", unix_path=self.xenstored_socket)
        store.route("POST", "/xenstore", make_handler(self.xenstore))
        for server in (api, store):
            server.start()
            self._servers.append(server)
        self._install_xenstore_commands()
        self.sim.plugins.set_runner(self.runner)
        self._started = True

    def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        self.sim.plugins.set_runner(None)
        for server in self._servers:
            server.stop()
        self._servers.clear()
        if self._short_dir is not None:
            shutil.rmtree(self._short_dir, ignore_errors=True)
            self._short_dir = None

    def _socket_location(self, dom0_path: str, name: str) -> str:
        link = self.path(dom0_path)
        if link.is_symlink() or link.exists():
            link.unlink()
        if len(os.fsencode(str(link))) <= _SUN_PATH_MAX:
            return str(link)
        if self._short_dir is None:
            self._short_dir = tempfile.mkdtemp(prefix="xhost-dom0-")
        real = os.path.join(self._short_dir, name)
        link.symlink_to(real)
        return real

    # -- installed files ---------------------------------------------------------
    def _install_pylib(self) -> None:
        source = resources.files("xhost.sim.dom0env.pylib")
        for name in _PYLIB:
            target = self.lib_dir / name
            target.write_bytes(source.joinpath(name).read_bytes())

    def install_xhost_scripts(self) -> list[str]:
        """Copy xhost's dom0 scripts into the plugins directory (executable)."""
        from xhost import dom0 as dom0_pkg

        names = dom0_pkg.scripts()
        for name in names:
            target = self.install_plugin(name, Path(dom0_pkg.DIRECTORY, name))
            if self._interpreter == sys.executable:
                cached = Path(importlib.util.cache_from_source(str(target)))
                cached.parent.mkdir(exist_ok=True)
                cached.write_bytes(_bytecode(target.read_bytes()))
        return names

    def install_plugin(self, name: str, source: str | bytes | Path, mode: int = 0o755) -> Path:
        """Put a plugin file ``name`` into ``/etc/xapi.d/plugins``.

        ``source`` is the file's text or bytes, or a :class:`~pathlib.Path`
        to copy.
        """
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"plugin name {name!r} must be a plain file name")
        data = source.read_bytes() if isinstance(source, Path) else (
            source.encode() if isinstance(source, str) else bytes(source))
        target = self.plugins_dir / name
        tmp = target.with_name(f".{name}.tmp")
        tmp.write_bytes(data)
        tmp.chmod(mode)
        os.replace(tmp, target)
        return target

    def remove_plugin(self, name: str) -> None:
        """Delete plugin ``name`` (no error if it is not there)."""
        try:
            (self.plugins_dir / name).unlink()
        except FileNotFoundError:
            pass

    def _install_xenstore_commands(self) -> None:
        main = self.bin_dir / "xenstore"
        main.write_text(
            # -S: the client needs the standard library only, and starts faster.
            f"#!{self._interpreter} -S\n"
            "# xenstore client of the simulated dom0 (generated by the XAPI simulator)\n"
            "import sys\n"
            f"sys.path.insert(0, {str(self.lib_dir)!r})\n"
            "import xhost_sim_xenstore\n"
            f"xhost_sim_xenstore.DEFAULT_SOCKET = {self.xenstored_socket!r}\n"
            "sys.exit(xhost_sim_xenstore.main())\n")
        main.chmod(main.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        for mode in XENSTORE_COMMANDS:
            link = self.bin_dir / f"xenstore-{mode}"
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to("xenstore")

    # -- processes -----------------------------------------------------------------
    def environment(self) -> dict[str, str]:
        """The environment of a process running in this dom0."""
        return {
            "PATH": f"{self.path('/usr/sbin')}:{self.bin_dir}:{SYSTEM_PATH}",
            "XHOST_DOM0_ROOT": str(self.root),
            "PYTHONPATH": str(self.lib_dir),
            "PYTHONDONTWRITEBYTECODE": "1",
            "TMPDIR": str(self.path("/tmp")),
            "XHOST_SIM_XAPI_SOCKET": self.xapi_socket,
            "XHOST_SIM_XENSTORED_SOCKET": self.xenstored_socket,
            # Real-network mode: dom0's network is this namespace; scripts that
            # touch bridges or interfaces run their commands in it (see
            # xhost_dom0lib.net_command), the rest keep the host's network.
            **({"XHOST_DOM0_NETNS": self.sim.network.namespace()}
               if self.sim.network.real else {}),
        }

    def run(self, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess:
        """Run a command in dom0 (its environment, cwd the dom0 root), e.g.
        ``sim.dom0.run(["xenstore-ls", "/local/domain/1"])``; keyword arguments
        go to :func:`subprocess.run` (output is captured as text by default)."""
        env = self.environment()
        env.update(kwargs.pop("env", None) or {})
        argv = list(argv)
        if argv and "/" not in argv[0]:
            found = shutil.which(argv[0], path=env["PATH"])
            if found:
                argv[0] = found
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        kwargs.setdefault("timeout", 60)
        return subprocess.run(argv, env=env, cwd=self.root, **kwargs)
