"""The ``/sim/pool`` and ``/sim/network`` control endpoints (what ``xhost sim
pool ...`` and ``xhost sim network`` use).

=======  =========================  ==============================================
method   path                       effect
=======  =========================  ==============================================
GET      /sim/pool                  hosts, roles, what each answers, ejected hosts
POST     /sim/pool/designate        ``{host}``: orderly master change
POST     /sim/pool/crash            ``{host}``: take the host down
POST     /sim/pool/restart          ``{host}``: bring a crashed host back
POST     /sim/pool/emergency-master ``{host, recover?}``: emergency transition
                                    (+ recover_slaves unless ``recover`` false)
POST     /sim/pool/join             the master's side of ``pool.join``
GET      /sim/network               each host's dom0 namespace and OVSDB
=======  =========================  ==============================================

``host`` is an index, reference, uuid, name or URL.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import control_http
from .errors import ApiError
from .pool import (
    crash_host,
    designate_new_master,
    emergency_transition_to_master,
    recover_slaves,
    restart_host,
    served,
)
from .pool_membership import join_route

if TYPE_CHECKING:
    from .http_server import Request
    from .simulator import SimHost, Simulator


def _host_arg(sim: Simulator, body: dict[str, Any]) -> SimHost:
    which = body.get("host")
    if isinstance(which, bool) or not isinstance(which, (int, str)):
        raise control_http.ControlError(400, "'host' is required: an index, reference, uuid, "
                                             "name or URL of a host")
    try:
        return sim.host(which)
    except (KeyError, IndexError) as exc:
        raise control_http.ControlError(404, str(exc).strip('"')) from None


def describe(sim: Simulator) -> dict[str, Any]:
    hosts = []
    for h in sim.hosts:
        rec = sim.db.find("host", h.host_ref) or {}
        hosts.append({"host": h.host_ref, "uuid": rec.get("uuid", ""),
                      "name": rec.get("name_label", ""), "url": h.url,
                      "role": "master" if h.host_ref == sim.master_ref else "member",
                      "answers": "HOST_IS_SLAVE " + h.master_address if h.master_address
                      else "calls", "live": h.live})
    master = served(sim, sim.master_ref)
    return {"master": master.url if master else None, "hosts": hosts,
            "ejected": {u: s.url for u, s in sim.ejected.items() if s.hosts}}


def _pool_show(host: SimHost, req: Request, body: dict[str, Any]) -> Any:
    return describe(host.sim)


def _pool_action(action: str):
    def route(host: SimHost, req: Request, body: dict[str, Any]) -> Any:
        sim = host.sim
        target = _host_arg(sim, body)
        try:
            if action == "designate":
                designate_new_master(sim, target.host_ref)
            elif action == "crash":
                crash_host(sim, target.host_ref)
            elif action == "restart":
                restart_host(sim, target.host_ref)
            elif action == "emergency-master":
                emergency_transition_to_master(sim, target.host_ref)
                if body.get("recover", True):
                    recover_slaves(sim, target.host_ref)
        except ApiError as exc:
            raise control_http.ControlError(409, " ".join(exc.description)) from None
        except OSError as exc:
            raise control_http.ControlError(409, f"cannot bind port {target.port}: {exc}") \
                from None
        return describe(sim)
    return route


def _network_show(host: SimHost, req: Request, body: dict[str, Any]) -> Any:
    return host.sim.network.info()


control_http.add_route("GET", "/sim/pool", _pool_show)
control_http.add_route("POST", "/sim/pool/join", join_route)
for _action in ("designate", "crash", "restart", "emergency-master"):
    control_http.add_route("POST", f"/sim/pool/{_action}", _pool_action(_action))
control_http.add_route("GET", "/sim/network", _network_show)

