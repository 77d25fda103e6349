"""HTTP handlers for the API endpoints: XML-RPC at ``/`` and ``/RPC2`` (any
POST path not claimed by another handler, like xapi's prefix routing) and
JSON-RPC at ``/jsonrpc``."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .errors import ApiError
from .http_server import DropConnection, HttpServer, Request, Response
from .wire import (
    MalformedRequest,
    error_page,
    json_failure,
    json_success,
    parse_json_call,
    parse_xml_call,
    xml_bare,
    xml_failure,
    xml_success,
)

if TYPE_CHECKING:
    from .simulator import SimHost

LOG = logging.getLogger(__name__)

MAX_RPC_BODY = 300 * 1024
CORS = [("Access-Control-Allow-Origin", "*")]


def _error_page(extra: str) -> Response:
    return Response(500, error_page(extra), content_type="text/html", close=True)


def _read(req: Request) -> bytes:
    try:
        return req.read_body(limit=MAX_RPC_BODY)
    except ValueError:
        raise _TooLarge() from None


class _TooLarge(Exception):
    pass


def make_xml_handler(host: SimHost):
    dispatcher = host.sim.dispatcher
    controls = host.sim.controls

    def handle_xmlrpc(req: Request) -> Response:
        try:
            body = _read(req)
        except _TooLarge:
            return _error_page("Client_requested_size_over_limit")
        try:
            method, params = parse_xml_call(body)
        except MalformedRequest as exc:
            return _error_page(str(exc))
        if controls.drops and controls.should_drop(method):
            raise DropConnection()
        try:
            value, encode = dispatcher.call(method, params, host)
            if method == "system.listMethods":
                out = xml_bare(encode(value))
            else:
                out = xml_success(encode(value))
        except ApiError as exc:
            out = xml_failure(exc.description)
        except Exception as exc:
            LOG.exception("%s failed", method)
            out = xml_failure(["INTERNAL_ERROR", f"{type(exc).__name__}: {exc}"])
        return Response(200, out, CORS, content_type="text/xml")

    return handle_xmlrpc


def make_json_handler(host: SimHost):
    dispatcher = host.sim.dispatcher
    controls = host.sim.controls

    def handle_jsonrpc(req: Request) -> Response:
        try:
            body = _read(req)
        except _TooLarge:
            return _error_page("Client_requested_size_over_limit")
        try:
            call = parse_json_call(body)
        except MalformedRequest as exc:
            return _error_page(str(exc))
        if controls.drops and controls.should_drop(call.method):
            raise DropConnection()
        try:
            value, _encode = dispatcher.call(call.method, call.params, host)
            out = json_success(call, value)
        except ApiError as exc:
            out = json_failure(call, exc.description)
        except Exception as exc:
            LOG.exception("%s failed", call.method)
            out = json_failure(call, ["INTERNAL_ERROR", f"{type(exc).__name__}: {exc}"])
        return Response(200, out, CORS, content_type="application/json")

    return handle_jsonrpc


def handle_options(req: Request) -> Response:
    return Response(200, b"", CORS + [("Access-Control-Allow-Headers", "X-Requested-With"),
                                      ("Access-Control-Allow-Methods", "POST, GET, OPTIONS"),
                                      ("Access-Control-Max-Age", "86400")])


def make_welcome_handler(host: SimHost):
    def welcome(req: Request) -> Response:
        if req.path != "/":
            return Response(404, b"<html><body><h1>HTTP 404 not found</h1></body></html>",
                            content_type="text/html")
        rec = host.sim.db.get("host", host.host_ref)
        page = (f"<html><head><title>XCP-ng</title></head><body><h1>XCP-ng "
                f"{rec['software_version'].get('product_version_text', '')}</h1>"
                f"<p>{rec['name_label']} ({rec['address']}): simulated by xhost. "
                f"XenAPI at <code>/</code> (XML-RPC) and <code>/jsonrpc</code>.</p>"
                f"</body></html>")
        return Response(200, page.encode(), content_type="text/html")
    return welcome


def install(host: SimHost, server: HttpServer | None = None) -> None:
    """Serve the API of ``host`` on its server (or on ``server``)."""
    server = server or host.server
    xml = make_xml_handler(host)
    server.route("POST", "/", xml)
    server.route("POST", "/RPC2", xml)
    server.route("POST", "/jsonrpc", make_json_handler(host))
    server.route("OPTIONS", "/", handle_options)
    server.route("GET", "/", make_welcome_handler(host))
