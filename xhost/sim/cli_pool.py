"""``xhost sim pool ...`` and ``xhost sim network``: a running simulator's
pool (hosts, roles, master failover) and dom0 networks.

Like the other control commands they talk to the ``/sim/...`` endpoint of
any host of the pool (``--url`` or ``XHOST_SIM_URL``), so they work when the
master is down.  ``HOST`` is a host's name, uuid, reference, URL or index
(0 = the first host served).
"""
from __future__ import annotations

import argparse
import json
from typing import Any

from cliff.lister import Lister

from .cli import _ControlCommand


def _host(value: str) -> Any:
    return int(value) if value.isdigit() else value


_COLUMNS = ("name", "role", "answers", "live", "url", "uuid")


def _rows(doc: dict[str, Any]) -> tuple[tuple[str, ...], list[tuple[Any, ...]]]:
    return _COLUMNS, [tuple(h[c] for c in _COLUMNS) for h in doc["hosts"]]


class PoolShow(_ControlCommand, Lister):
    """List the hosts of a running simulated pool: role, what they answer, URL."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        return self.add_control_args(super().get_parser(prog_name))

    def take_action(self, parsed_args: argparse.Namespace) -> tuple:
        return _rows(self.request(parsed_args, "GET", "/sim/pool"))


class _PoolAction(_ControlCommand, Lister):
    action = ""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = self.add_control_args(super().get_parser(prog_name))
        parser.add_argument("host", help="host name, uuid, reference, URL or index")
        return parser

    def body(self, parsed_args: argparse.Namespace) -> dict[str, Any]:
        return {"host": _host(parsed_args.host)}

    def take_action(self, parsed_args: argparse.Namespace) -> tuple:
        return _rows(self.request(parsed_args, "POST", f"/sim/pool/{self.action}",
                                  self.body(parsed_args)))


class PoolDesignate(_PoolAction):
    """Make HOST the pool master in an orderly way (pool.designate_new_master)."""

    action = "designate"


class PoolCrash(_PoolAction):
    """Take HOST down: its port refuses connections, host_metrics.live becomes false.
    With the master down, members keep answering HOST_IS_SLAVE with its address."""

    action = "crash"


class PoolRestart(_PoolAction):
    """Bring a crashed HOST back on its port, as a member of the current master."""

    action = "restart"


class PoolEmergencyMaster(_PoolAction):
    """Make member HOST the master after the master died
    (pool.emergency_transition_to_master, then pool.recover_slaves unless
    --no-recover)."""

    action = "emergency-master"

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("--no-recover", action="store_true",
                            help="leave the other members pointing at the old master")
        return parser

    def body(self, parsed_args: argparse.Namespace) -> dict[str, Any]:
        return {"host": _host(parsed_args.host), "recover": not parsed_args.no_recover}


class NetworkShow(_ControlCommand, Lister):
    """Show where each host's dom0 network lives (real-network mode): the
    network namespace and the OVSDB connection."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        return self.add_control_args(super().get_parser(prog_name))

    def take_action(self, parsed_args: argparse.Namespace) -> tuple:
        doc = self.request(parsed_args, "GET", "/sim/network")
        if not doc["real"]:
            raise SystemExit("xhost sim network: this simulator runs without real-network "
                             "mode (start it with --real-network)")
        cols = ("host", "backend", "netns", "ovsdb", "private")
        return cols, [(name, info["backend"], info["netns"], info["ovsdb"] or "",
                       json.dumps(info["private"])) for name, info in doc["hosts"].items()]
