"""Calling xhost's dom0 scripts through ``host.call_plugin``.

Arguments travel as one JSON object in the ``args`` key, results come back
as JSON. Before the first call to a host, xhost checks that the host's
scripts speak a compatible protocol version (``xhost_version.get_version``):
same major version, and a minor version at least the one shipped with this
xhost (scripts are upgraded together with xhost).
"""
from __future__ import annotations

import json
import re
import threading
from importlib import resources
from typing import Any

from xhost import exception
from xhost.xapi.client import XapiClient

VERSION_PLUGIN = "xhost_version"


def shipped_version() -> str:
    """``PLUGIN_VERSION`` of the dom0 scripts shipped with this xhost."""
    text = resources.files("xhost.dom0").joinpath("xhost_version.py").read_text()
    match = re.search(r'^PLUGIN_VERSION\s*=\s*"(\d+)\.(\d+)"', text, re.MULTILINE)
    if not match:
        raise exception.XhostError("xhost_version.py has no PLUGIN_VERSION")
    return f"{match.group(1)}.{match.group(2)}"


def compatible(required: str, found: str) -> bool:
    try:
        req_major, req_minor = (int(x) for x in required.split(".")[:2])
        major, minor = (int(x) for x in found.split(".")[:2])
    except ValueError:
        return False
    return major == req_major and minor >= req_minor


class Dom0Error(exception.XapiError):
    """A dom0 script failed."""

    msg_fmt = "dom0 {plugin}.{fn} failed: {reason}"


class Dom0:
    """Calls dom0 functions on the hosts of one :class:`XapiClient`."""

    def __init__(self, client: XapiClient, required: str | None = None) -> None:
        self.client = client
        self.required = required or shipped_version()
        self._checked: set[str] = set()
        self._lock = threading.Lock()

    def _raw(self, host_ref: str, plugin: str, fn: str, kwargs: dict[str, Any],
             timeout: float | None) -> Any:
        name = plugin if plugin.endswith(".py") else f"{plugin}.py"
        try:
            raw = self.client.call("host.call_plugin", host_ref, name, fn,
                                   {"args": json.dumps(kwargs)}, timeout=timeout)
        except exception.XapiFailure as exc:
            if exc.code == "XHOST_DOM0_BAD_ARGS":
                raise Dom0Error(plugin=plugin, fn=fn,
                                reason="bad arguments: " + " ".join(exc.params)) from exc
            if exc.code == "XHOST_DOM0_ERROR":
                reason = ": ".join(exc.params) if exc.params else "unknown error"
                raise Dom0Error(plugin=plugin, fn=fn, reason=reason) from exc
            # The same error (code, class), saying which dom0 function failed.
            raise type(exc)(exc.details, f"host.call_plugin {plugin}.{fn}") from exc
        try:
            return json.loads(raw) if raw else None
        except ValueError as exc:
            raise Dom0Error(plugin=plugin, fn=fn, reason=f"answer is not JSON: {raw!r:.200}") from exc

    def check_version(self, host_ref: str) -> str:
        """Check (once per host) that the host's dom0 scripts are compatible.

        :raises Dom0VersionMismatch: they are not, or they are missing.
        """
        with self._lock:
            if host_ref in self._checked:
                return self.required
        try:
            answer = self._raw(host_ref, VERSION_PLUGIN, "get_version", {}, None)
            found = str(answer.get("version", "?")) if isinstance(answer, dict) else "?"
        except exception.MissingPlugin:
            found = "none (xhost_version.py is not installed)"
        if not compatible(self.required, found):
            raise exception.Dom0VersionMismatch(host=host_ref, client=self.required,
                                                required=self.required, found=found)
        with self._lock:
            self._checked.add(host_ref)
        return found

    def call(self, host_ref: str, plugin: str, fn: str, timeout: float | None = None,
             **kwargs: Any) -> Any:
        """Call ``fn`` of dom0 script ``plugin`` with JSON ``kwargs``."""
        self.check_version(host_ref)
        return self._raw(host_ref, plugin, fn, kwargs, timeout)
