"""``host.call_plugin`` backends.

xapi runs ``/etc/xapi.d/plugins/<name>`` as a subprocess.  Part 1 provides
the dispatch point and an in-process registry: a plugin is a mapping of
function names to callables ``fn(session_ref, args) -> str``.  The
subprocess runner of part 2 (which executes the project's ``dom0/`` scripts
unchanged) plugs in with :meth:`PluginRegistry.set_runner`; it is consulted
for any plugin not registered in-process.

Errors follow xapi: an unknown plugin is ``XENAPI_MISSING_PLUGIN [name]``, an
unknown function ``UNKNOWN_XENAPI_PLUGIN_FUNCTION [fn]``, a plugin raising
:class:`~xhost.sim.errors.ApiError` passes its error through verbatim, and any
other exception becomes ``XENAPI_PLUGIN_FAILURE [fn, exception class,
message]`` (what the dom0 ``XenAPIPlugin.dispatch`` prints).
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol

from .errors import ApiError

if TYPE_CHECKING:
    from .simulator import Simulator

PluginFn = Callable[[str, dict[str, str]], str]


class PluginRunner(Protocol):
    def __call__(self, session: str, host_ref: str, plugin: str, fn: str,
                 args: dict[str, str]) -> str: ...


class PluginRegistry:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self._plugins: dict[str, dict[str, PluginFn]] = {}
        self._runner: PluginRunner | None = None
        self._lock = threading.Lock()

    def register(self, name: str, functions: Mapping[str, PluginFn]) -> None:
        """Install an in-process plugin ``name`` with its functions."""
        with self._lock:
            self._plugins[name] = dict(functions)

    def unregister(self, name: str) -> None:
        with self._lock:
            self._plugins.pop(name, None)

    def set_runner(self, runner: PluginRunner | None) -> None:
        """Install the fallback runner (part 2: subprocess execution)."""
        self._runner = runner

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._plugins)

    def call(self, session: str, host_ref: str, plugin: str, fn: str,
             args: dict[str, str]) -> str:
        with self._lock:
            functions = self._plugins.get(plugin)
        if functions is None:
            if self._runner is not None:
                return self._runner(session, host_ref, plugin, fn, args)
            raise ApiError("XENAPI_MISSING_PLUGIN", plugin)
        func = functions.get(fn)
        if func is None:
            raise ApiError("UNKNOWN_XENAPI_PLUGIN_FUNCTION", fn)
        try:
            result = func(session, dict(args))
        except ApiError:
            raise
        except Exception as exc:
            raise ApiError("XENAPI_PLUGIN_FAILURE", fn, type(exc).__name__, str(exc)) from exc
        if not isinstance(result, str):
            raise ApiError("XENAPI_PLUGIN_FAILURE", "failed to parse plugin output",
                           repr(result), "plugin returned a non-string value")
        return result
