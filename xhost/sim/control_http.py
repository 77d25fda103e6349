"""The control endpoint of a running simulator: ``/sim/...`` (JSON).

Authentication: HTTP basic auth with a pool-admin simulator user (``root``
and its password) or ``?session_id=`` of such a user's live session.  Endpoints:

=======  ==========================  ===================================================
method   path                        effect
=======  ==========================  ===================================================
GET      /sim/status                 url, speed, object counts, faults, drops, role
GET      /sim/counters[?reset=1]     per-method call counters (optionally reset them)
POST     /sim/counters/reset         reset the counters
GET      /sim/faults                 the fault rules
POST     /sim/faults                 add ``{method, error, nth?, times?, plugin?, fn?}``
DELETE   /sim/faults[?id=N]          remove one rule or all
POST     /sim/sessions/expire        ``{session?}``: invalidate one or every session
POST     /sim/connections/drop       ``{count?, method?}``: close the next connections
GET      /sim/latency                speed and per-method overrides
POST     /sim/latency                ``{speed?}`` and/or ``{method, seconds}`` (null clears)
POST     /sim/role                   ``{master: "addr"}`` -> HOST_IS_SLAVE; ``null`` undoes
POST     /sim/flush                  write the state directory now
=======  ==========================  ===================================================

Errors are ``{"error": "..."}`` with status 400 (bad input), 401 (no or bad
credentials) or 404 (unknown path).  ``xhost sim ...`` commands use this API.
Later parts register more paths under ``/sim/`` with :func:`add_route`.
"""
from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import ApiError
from .http_server import Request, Response

if TYPE_CHECKING:
    from .simulator import SimHost

Route = Callable[["SimHost", Request, dict[str, Any]], Any]
_ROUTES: dict[tuple[str, str], Route] = {}


class ControlError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def add_route(method: str, path: str, fn: Route) -> None:
    """Register ``fn(host, request, body) -> JSON-able`` for ``method path``;
    a path ending in ``/`` also serves every path below it
    (``/sim/guests/`` -> ``/sim/guests/<uuid>``)."""
    _ROUTES[(method.upper(), path)] = fn


def _find_route(method: str, path: str) -> Route | None:
    route = _ROUTES.get((method, path.rstrip("/")))
    if route is not None:
        return route
    prefixes = [p for (m, p) in _ROUTES if m == method and p.endswith("/") and path.startswith(p)]
    return _ROUTES[(method, max(prefixes, key=len))] if prefixes else None


def _json(status: int, doc: Any) -> Response:
    return Response(status, json.dumps(doc, indent=1, sort_keys=True).encode() + b"\n",
                    content_type="application/json")


def _authenticated(host: SimHost, req: Request) -> bool:
    sim = host.sim
    auth = req.headers.get("authorization", "")
    if auth.lower().startswith("basic "):
        try:
            user, _, pwd = base64.b64decode(auth[6:]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return (user in sim.sessions.users and sim.sessions.users[user] == pwd
                and sim.sessions.roles.get(user) == "pool-admin")
    session = req.query.get("session_id")
    if session:
        try:
            sim.sessions.check(session)
        except ApiError:
            return False
        return sim.sessions.role(session) == "pool-admin"
    return False


def _opt_int(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ControlError(400, f"'{key}' must be an integer")
    return value


def make_handler(host: SimHost) -> Callable[[Request], Response]:
    def handle(req: Request) -> Response:
        if not _authenticated(host, req):
            resp = _json(401, {"error": "authentication required: HTTP basic auth with a "
                                        "simulator user, or ?session_id="})
            resp.headers.append(("WWW-Authenticate", 'Basic realm="xapi"'))
            return resp
        route = _find_route(req.method, req.path)
        if route is None:
            return _json(404, {"error": f"no control endpoint {req.method} {req.path}"})
        try:
            raw = req.read_body(limit=1 << 20) if req.method in ("POST", "PUT") else b""
            body = json.loads(raw) if raw.strip() else {}
            if not isinstance(body, dict):
                raise ControlError(400, "the request body must be a JSON object")
            return _json(200, route(host, req, body))
        except ControlError as exc:
            return _json(exc.status, {"error": str(exc)})
        except (ValueError, TypeError) as exc:
            return _json(400, {"error": str(exc)})
    return handle


# -- routes ---------------------------------------------------------------------

def _status(host: SimHost, req: Request, body: dict[str, Any]) -> Any:
    sim = host.sim
    return {"url": host.url, "state_dir": str(sim.state_dir), "speed": sim.controls.speed,
            "role": "member" if host.master_address else "master",
            "master_address": host.master_address,
            "objects": {k: v for k, v in sim.db.counts().items() if v},
            "generation": sim.db.generation, "flushes": sim.persistence.writes,
            **sim.controls.state()}


def _counters(host: SimHost, req: Request, body: dict[str, Any]) -> Any:
    reset = req.query.get("reset", "") in ("1", "true", "yes")
    return host.sim.controls.read_counters(reset=reset)


def _counters_reset(host: SimHost, req: Request, body: dict[str, Any]) -> Any:
    host.sim.controls.reset_counters()
    return {"reset": True}


def _faults(host: SimHost, req: Request, body: dict[str, Any]) -> Any:
    return host.sim.controls.state()["faults"]


def _fault_add(host: SimHost, req: Request, body: dict[str, Any]) -> Any:
    method = body.get("method")
    error = body.get("error")
    if not isinstance(method, str) or not method:
        raise ControlError(400, "'method' is required, e.g. \"VM.start\" or \"*\"")
    if isinstance(error, str):
        error = [error]
    if not isinstance(error, list) or not error:
        raise ControlError(400, "'error' is required: an XAPI error list such as "
                                "[\"SR_BACKEND_FAILURE_47\", \"\", \"The SR is not available\", \"\"]")
    rule = host.sim.controls.add_fault(
        method, [str(e) for e in error], nth=_opt_int(body, "nth"), times=_opt_int(body, "times"),
        plugin=body.get("plugin"), fn=body.get("fn"))
    return rule.to_dict()


def _fault_clear(host: SimHost, req: Request, body: dict[str, Any]) -> Any:
    rule_id = req.query.get("id")
    if rule_id is not None and not rule_id.isdigit():
        raise ControlError(400, "id must be a rule number")
    return {"removed": host.sim.controls.clear_faults(int(rule_id) if rule_id else None)}


def _expire(host: SimHost, req: Request, body: dict[str, Any]) -> Any:
    return {"expired": host.sim.sessions.expire(body.get("session"))}


def _drop(host: SimHost, req: Request, body: dict[str, Any]) -> Any:
    count = _opt_int(body, "count") or 1
    host.sim.controls.add_drop(count, body.get("method"))
    return {"dropping": count, "method": body.get("method")}


def _latency_get(host: SimHost, req: Request, body: dict[str, Any]) -> Any:
    state = host.sim.controls.state()
    return {"speed": state["speed"], "overrides": state["latency_overrides"]}


def _latency_set(host: SimHost, req: Request, body: dict[str, Any]) -> Any:
    sim = host.sim
    if "speed" in body:
        speed = body["speed"]
        if not isinstance(speed, (int, float)) or isinstance(speed, bool) or speed < 0:
            raise ControlError(400, "'speed' must be a number >= 0 (0 = instant, 1 = real host)")
        sim.speed = float(speed)
    if "method" in body:
        seconds = body.get("seconds")
        if seconds is not None and (not isinstance(seconds, (int, float)) or seconds < 0):
            raise ControlError(400, "'seconds' must be a number >= 0 or null")
        sim.controls.set_latency(str(body["method"]), seconds)
    return _latency_get(host, req, body)


def _role(host: SimHost, req: Request, body: dict[str, Any]) -> Any:
    if "master" not in body:
        raise ControlError(400, "'master' is required: the master's address, or null")
    master = body["master"]
    if master is not None and not isinstance(master, str):
        raise ControlError(400, "'master' must be a string or null")
    host.set_forced_master(master or None)
    return {"role": "member" if host.master_address else "master",
            "master_address": host.master_address}


def _flush(host: SimHost, req: Request, body: dict[str, Any]) -> Any:
    host.sim.flush()
    return {"flushed": True, "path": str(host.sim.persistence.path)}


for _m, _p, _f in (("GET", "/sim/status", _status), ("GET", "/sim/counters", _counters),
                   ("POST", "/sim/counters/reset", _counters_reset),
                   ("GET", "/sim/faults", _faults), ("POST", "/sim/faults", _fault_add),
                   ("DELETE", "/sim/faults", _fault_clear),
                   ("POST", "/sim/sessions/expire", _expire),
                   ("POST", "/sim/connections/drop", _drop),
                   ("GET", "/sim/latency", _latency_get), ("POST", "/sim/latency", _latency_set),
                   ("POST", "/sim/role", _role), ("POST", "/sim/flush", _flush)):
    add_route(_m, _p, _f)


def install(host: SimHost) -> None:
    handler = make_handler(host)
    for method in ("GET", "POST", "DELETE", "PUT"):
        host.server.route(method, "/sim", handler)
