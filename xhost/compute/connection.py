"""Reaching "the host": a real XAPI host, or the embedded simulator.

With ``[xenserver] connection_url`` set, xhost talks to that host. Without
it, xhost starts its embedded simulated XCP-ng host in this process, with its
state in ``[simulator] state_dir`` (per user), and says so once.
"""
from __future__ import annotations

import logging
import secrets
import sys
from collections.abc import Callable
from typing import Any

from oslo_config import cfg

from xhost import exception
from xhost.xapi.client import XapiClient
from xhost.xapi.dom0 import Dom0

LOG = logging.getLogger(__name__)
_announced = False


class SimulatorBusy(exception.XhostError):
    msg_fmt = ("the embedded simulator's state in {path} is in use by another process "
               "({detail}); wait for it to finish, or point [simulator] state_dir elsewhere")


class HostConnection:
    """A XAPI client, the host it is bound to, and (embedded) the simulator."""

    def __init__(self, xapi: XapiClient, simulator: Any = None) -> None:
        self.xapi = xapi
        self.simulator = simulator
        self.dom0 = Dom0(xapi)
        self._host_ref: str | None = None

    @property
    def embedded(self) -> bool:
        return self.simulator is not None

    @property
    def host_ref(self) -> str:
        """The host xhost manages (the one its session is on)."""
        if self._host_ref is None:
            self._host_ref = self.xapi.call("session.get_this_host", self.xapi.session_ref())
        return self._host_ref

    def close(self) -> None:
        try:
            self.xapi.close()
        finally:
            if self.simulator is not None:
                self.simulator.stop()
                self.simulator = None

    def __enter__(self) -> HostConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _announce(path: str, notice: Callable[[str], None] | None) -> None:
    global _announced
    if _announced:
        return
    _announced = True
    message = (f"xhost: no [xenserver] connection_url configured; using the embedded simulated "
               f"XCP-ng host (state in {path})")
    (notice or (lambda m: print(m, file=sys.stderr)))(message)


def real_network_possible() -> bool:
    """Whether the embedded simulator can run with real networking here."""
    import os
    import shutil

    return os.geteuid() == 0 and all(shutil.which(t) for t in ("ip", "ovsdb-server",
                                                              "ovs-vswitchd", "ovs-vsctl"))


def connect(conf: cfg.ConfigOpts, notice: Callable[[str], None] | None = None) -> HostConnection:
    """Connect to the configured host, or start the embedded simulator."""
    if conf.xenserver.connection_url:
        return HostConnection(XapiClient.from_conf(conf))
    from xhost.sim import Simulator
    from xhost.sim.persistence import StateDirInUse

    path = conf.simulator.state_dir
    password = secrets.token_urlsafe(24)
    real = real_network_possible() if conf.simulator.real_network == "auto" \
        else conf.simulator.real_network == "on"
    sim = Simulator(path, users={"root": password}, speed=conf.simulator.speed, auth_delay=0.0,
                    real_network=real)
    try:
        sim.start()
    except StateDirInUse as exc:
        raise SimulatorBusy(path=path, detail=str(exc)) from exc
    _announce(path, notice)
    group = conf.xenserver
    client = XapiClient(sim.url, "root", password, concurrent=group.connection_concurrent,
                        login_timeout=group.login_timeout, call_timeout=group.call_timeout)
    return HostConnection(client, sim)
