"""The ``XenAPI`` module of a simulated dom0 (Python >= 3.6, stdlib only).

When the PyPI ``XenAPI`` package is importable by the interpreter running the
plugin, this module *is* that package (its ``Session``, ``Failure`` and the
rest), with one change: :func:`xapi_local` connects to the simulator's
dom0-local socket (``$XHOST_SIM_XAPI_SOCKET``) instead of
``/var/lib/xcp/xapi``.  Otherwise (a bare dom0 Python, e.g. 3.6) a small
stand-in with the same calling conventions is provided.
"""
import http.client
import importlib.machinery
import importlib.util
import os
import socket
import sys
import xmlrpc.client

SOCKET_ENV = "XHOST_SIM_XAPI_SOCKET"
_HERE = os.path.dirname(os.path.abspath(__file__))


def _socket_path():
    path = os.environ.get(SOCKET_ENV)
    if path:
        return path
    root = os.environ.get("XHOST_DOM0_ROOT", "/")
    return os.path.join(root, "var/lib/xcp/xapi")


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=None):
        http.client.HTTPConnection.__init__(self, "localhost")
        self._path = path
        self._timeout = timeout

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if self._timeout is not None:
            sock.settimeout(self._timeout)
        sock.connect(self._path)
        self.sock = sock


class SimUnixTransport(xmlrpc.client.Transport):
    """XML-RPC over the dom0-local Unix socket (any path length)."""

    def __init__(self, path=None):
        xmlrpc.client.Transport.__init__(self)
        self.path = path or _socket_path()

    def make_connection(self, host):
        if self._connection and self._connection[0] == host:
            return self._connection[1]
        self._connection = host, _UnixConnection(self.path)
        return self._connection[1]


def _load_real():
    """The PyPI package, loaded under another name (this module shadows it)."""
    search = [p for p in sys.path if p and os.path.abspath(p) != _HERE]
    spec = importlib.machinery.PathFinder.find_spec("XenAPI", search)
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return None
    alias = "_xhost_sim_real_XenAPI"
    real_spec = importlib.util.spec_from_file_location(
        alias, spec.origin, submodule_search_locations=spec.submodule_search_locations)
    if real_spec is None or real_spec.loader is None:
        return None
    module = importlib.util.module_from_spec(real_spec)
    sys.modules[alias] = module
    try:
        real_spec.loader.exec_module(module)
    except Exception:
        del sys.modules[alias]
        return None
    return module


_real = _load_real()

if _real is not None:
    for _name in dir(_real):
        if not _name.startswith("__"):
            globals()[_name] = getattr(_real, _name)
    IMPLEMENTATION = "pypi"

    def xapi_local():
        """A session to the local XAPI (the simulator), not yet logged in."""
        return _real.Session("http://localhost/", transport=SimUnixTransport())
else:
    IMPLEMENTATION = "stand-in"

    class Failure(Exception):
        """A XAPI error; ``details`` is its ErrorDescription."""

        def __init__(self, details):
            Exception.__init__(self, details)
            self.details = details

        def __str__(self):
            return "XenAPI failure: %s" % (self.details,)

    def _parse_result(result):
        if not isinstance(result, dict) or "Status" not in result:
            raise xmlrpc.client.Fault(500, "Missing Status in response from server")
        if result["Status"] == "Success":
            return result.get("Value")
        raise Failure(result.get("ErrorDescription", ["INTERNAL_ERROR", "no description"]))

    class _Dispatcher:
        def __init__(self, send, name):
            self._send = send
            self._name = name

        def __getattr__(self, name):
            full = name if self._name is None else "%s.%s" % (self._name, name)
            return _Dispatcher(self._send, full)

        def __call__(self, *args):
            return self._send(self._name, args)

    class Session(xmlrpc.client.ServerProxy):
        """A XenAPI session: ``session.xenapi.VM.get_all()`` and friends."""

        def __init__(self, uri, transport=None, encoding=None, verbose=False,
                     allow_none=True, ignore_ssl=False):
            xmlrpc.client.ServerProxy.__init__(self, uri, transport, encoding, verbose,
                                               allow_none)
            self._session = None

        def _request(self, method, params):
            call = xmlrpc.client.ServerProxy._ServerProxy__request
            return call(self, method, params)

        def xenapi_request(self, method, params):
            if method.startswith("login") or method.startswith("slave_local"):
                self._login(method, params)
                return None
            if method in ("logout", "session.logout"):
                try:
                    return _parse_result(self._request("session.logout", (self._session,)))
                finally:
                    self._session = None
            return _parse_result(self._request(method, (self._session,) + tuple(params)))

        def _login(self, method, params):
            self._session = _parse_result(self._request("session.%s" % method, params))

        def __getattr__(self, name):
            if name == "handle":
                return self._session
            if name == "xenapi":
                return _Dispatcher(self.xenapi_request, None)
            if name.startswith("login") or name.startswith("slave_local"):
                return lambda *params: self._login(name, params)
            if name == "logout":
                return lambda: self.xenapi_request("logout", ())
            return xmlrpc.client.ServerProxy.__getattr__(self, name)

    def xapi_local():
        """A session to the local XAPI (the simulator), not yet logged in."""
        return Session("http://localhost/", transport=SimUnixTransport())
