"""Read-only control endpoints of the simulated guests.

``GET /sim/guests``
    ``[{uuid, domid, booted, tools, hostname}]`` of the running guests.
``GET /sim/guests/<vm uuid>``
    What that VM's guest has received and applied: hostname, network per VIF
    (addresses and where they came from), password, SSH keys, injected files
    (size, SHA-256, base64), agent information, an event log, the ``vm-data``
    it was given, and the guest metrics its keys define; ``domain`` is null
    while the VM has no domain.  404 for an unknown VM.

Same authentication as every ``/sim/`` endpoint.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .control_http import ControlError, add_route
from .http_server import Request

if TYPE_CHECKING:
    from .simulator import SimHost


def _list(host: SimHost, req: Request, body: dict[str, Any]) -> Any:
    return host.sim.guests.summary()


def _show(host: SimHost, req: Request, body: dict[str, Any]) -> Any:
    uuid = req.path[len("/sim/guests/"):].strip("/")
    if not uuid or "/" in uuid:
        raise ControlError(404, f"no control endpoint GET {req.path}")
    doc = host.sim.guests.describe(uuid)
    if doc is None:
        raise ControlError(404, f"no VM with UUID {uuid!r}")
    return doc


def install() -> None:
    add_route("GET", "/sim/guests", _list)
    add_route("GET", "/sim/guests/", _show)
