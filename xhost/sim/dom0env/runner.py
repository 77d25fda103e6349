"""``host.call_plugin`` as xapi does it: one process per call.

The plugin must be an entry of ``/etc/xapi.d/plugins`` (else
``XENAPI_MISSING_PLUGIN [name]``); it runs with the XML-RPC ``methodCall`` as
its only argument, and its output becomes the result or error as described in
:mod:`.plugin_protocol`.  A non-zero exit is ``XENAPI_PLUGIN_FAILURE
["non-zero exit", stdout, stderr]`` and death by a signal ``["signal:
SIGKILL", stdout, stderr]`` (also what a plugin overrunning the simulator's
timeout gets: it is killed, with its whole process group).

Python plugins (a ``python`` shebang, or a ``.py`` name without a shebang)
run under the dom0 interpreter chosen for the simulator, so a test can run
the project's scripts under Python 3.6; anything else is executed directly.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ApiError
from .plugin_protocol import encode_call, parse_response

if TYPE_CHECKING:
    from .environment import Dom0Env

LOG = logging.getLogger(__name__)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _is_python(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            first = f.readline(256)
    except OSError:
        return False
    if first.startswith(b"#!"):
        return b"python" in first
    return path.name.endswith(".py")


class PluginRunner:
    """Runs plugins from the plugins directory of one dom0."""

    def __init__(self, dom0: Dom0Env) -> None:
        self.dom0 = dom0

    def find(self, plugin: str) -> Path:
        """The plugin's file, if ``plugin`` is an entry of the plugins directory."""
        try:
            entries = os.listdir(self.dom0.plugins_dir)
        except OSError:
            entries = []
        if plugin not in entries:
            raise ApiError("XENAPI_MISSING_PLUGIN", plugin)
        return self.dom0.plugins_dir / plugin

    def command(self, path: Path) -> list[str]:
        if _is_python(path):
            return [self.dom0.interpreter, str(path)]
        return [str(path)]

    def __call__(self, session: str, host_ref: str, plugin: str, fn: str,
                 args: dict[str, str]) -> str:
        path = self.find(plugin)
        argv = [*self.command(path), encode_call(fn, session, args)]
        timeout = self.dom0.plugin_timeout
        started = time.monotonic()
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, cwd=self.dom0.root,
                                    env=self.dom0.environment(), start_new_session=True)
        except OSError as exc:
            raise ApiError("XENAPI_PLUGIN_FAILURE", "non-zero exit", "",
                           f"{path}: {exc.strerror or exc}") from None
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            LOG.warning("dom0 plugin %s.%s still running after %.0f s: killed", plugin, fn,
                        timeout)
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            out, err = proc.communicate()
        LOG.debug("dom0 plugin %s.%s exited %s after %.3f s", plugin, fn, proc.returncode,
                  time.monotonic() - started)
        stdout = out.decode("utf-8", "replace")
        stderr = err.decode("utf-8", "replace")
        if proc.returncode < 0:
            raise ApiError("XENAPI_PLUGIN_FAILURE", f"signal: {_signal_name(-proc.returncode)}",
                           stdout, stderr)
        if proc.returncode > 0:
            raise ApiError("XENAPI_PLUGIN_FAILURE", "non-zero exit", stdout, stderr)
        return parse_response(stdout, stderr)
