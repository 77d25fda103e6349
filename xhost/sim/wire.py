"""Wire codecs: XML-RPC and JSON-RPC (v1 and v2) requests and responses.

Responses always use XAPI's envelope: ``{Status: Success, Value}`` or
``{Status: Failure, ErrorDescription: [code, params...]}`` for XML-RPC (never
a ``<fault>``); JSON-RPC v1 answers ``{result, error, id}`` with ``error`` the
description list, v2 answers ``{jsonrpc, result | error, id}`` with ``error``
``{code, message, data}``.  Malformed requests raise :class:`MalformedRequest`,
which the server turns into an HTTP 500 page, as xapi does.
"""
from __future__ import annotations

import html
import json
import re
import xmlrpc.client
from typing import Any
from xml.parsers.expat import ExpatError

from .xapi_types import xml_escape

XML_SUCCESS_HEAD = (
    '<?xml version="1.0"?><methodResponse><params><param><value><struct>'
    "<member><name>Status</name><value>Success</value></member>"
    "<member><name>Value</name>")
XML_SUCCESS_TAIL = "</member></struct></value></param></params></methodResponse>"


class MalformedRequest(Exception):
    """The body is not a well-formed call; answered with HTTP 500."""


_SIMPLE_CALL = re.compile(
    rb"\s*(?:<\?xml[^>]*\?>)?\s*<methodCall>\s*<methodName>([^<]*)</methodName>\s*"
    rb"(?:<params>((?:\s*<param>\s*<value>(?:<string>[^<]*</string>|[^<]*)</value>"
    rb"\s*</param>)*)\s*</params>|<params\s*/>)?\s*</methodCall>\s*", re.S)
_SIMPLE_PARAM = re.compile(rb"<value>(?:<string>([^<]*)</string>|([^<]*))</value>")
_ENCODING = re.compile(rb"<\?xml[^>]*encoding=[\"']([^\"']+)")


def _text(raw: bytes) -> str:
    text = raw.decode("utf-8")
    return html.unescape(text) if "&" in text else text


def parse_xml_call(body: bytes) -> tuple[str, list[Any]]:
    """``(method, params)`` of an XML-RPC ``methodCall``.

    Calls whose parameters are all strings (most calls: a session and
    references) are matched by a regular expression, several times cheaper
    than a general XML-RPC unmarshaller; everything else goes through
    ``xmlrpc.client.loads``.
    """
    simple = _SIMPLE_CALL.fullmatch(body)
    if simple is not None and b"<![CDATA[" not in body:
        enc = _ENCODING.match(body)
        if enc is None or enc.group(1).lower() in (b"utf-8", b"utf8", b"us-ascii"):
            try:
                method = _text(simple.group(1)).strip()
                params = [_text(typed or bare)
                          for typed, bare in _SIMPLE_PARAM.findall(simple.group(2) or b"")]
            except UnicodeDecodeError as exc:
                raise MalformedRequest(f"XML-RPC parse error: {exc}") from exc
            if not method:
                raise MalformedRequest("XML-RPC parse error: methodCall has no methodName")
            return method, params
    try:
        params, method = xmlrpc.client.loads(body, use_builtin_types=False)
    except (ExpatError, ValueError, TypeError, IndexError, KeyError,
            xmlrpc.client.ResponseError) as exc:
        raise MalformedRequest(f"XML-RPC parse error: {exc}") from exc
    if not isinstance(method, str) or not method:
        raise MalformedRequest("XML-RPC parse error: methodCall has no methodName")
    return method, list(params)


def xml_success(value_xml: str) -> bytes:
    return (XML_SUCCESS_HEAD + value_xml + XML_SUCCESS_TAIL).encode("utf-8")


def xml_failure(description: list[str]) -> bytes:
    items = "".join("<value>" + xml_escape(str(p)) + "</value>" for p in description)
    return ('<?xml version="1.0"?><methodResponse><params><param><value><struct>'
            "<member><name>Status</name><value>Failure</value></member>"
            "<member><name>ErrorDescription</name><value><array><data>"
            + items + "</data></array></value></member>"
            "</struct></value></param></params></methodResponse>").encode("utf-8")


def xml_bare(value_xml: str) -> bytes:
    """A response without the envelope (``system.listMethods``, like xapi)."""
    return ('<?xml version="1.0"?><methodResponse><params><param>' + value_xml
            + "</param></params></methodResponse>").encode("utf-8")


class JsonCall:
    __slots__ = ("method", "params", "id", "version")

    def __init__(self, method: str, params: list[Any], id_: Any, version: str) -> None:
        self.method = method
        self.params = params
        self.id = id_
        self.version = version


def parse_json_call(body: bytes) -> JsonCall:
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedRequest(f"JSON-RPC parse error: {exc}") from exc
    if not isinstance(obj, dict):
        raise MalformedRequest("JSON-RPC parse error: the request is not an object")
    method = obj.get("method")
    if not isinstance(method, str):
        raise MalformedRequest("JSON-RPC parse error: missing 'method'")
    params = obj.get("params", [])
    if not isinstance(params, list):
        raise MalformedRequest("JSON-RPC parse error: 'params' must be an array")
    if "id" not in obj or obj["id"] is None:
        raise MalformedRequest("JSON-RPC parse error: 'id' is missing or null")
    version = "2.0" if obj.get("jsonrpc") == "2.0" else "1.0"
    return JsonCall(method, params, obj["id"], version)


def json_success(call: JsonCall, value: Any) -> bytes:
    if call.version == "2.0":
        doc = {"jsonrpc": "2.0", "result": value, "id": call.id}
    else:
        doc = {"result": value, "error": None, "id": call.id}
    return json.dumps(doc, separators=(",", ":")).encode("utf-8")


def json_failure(call: JsonCall | None, description: list[str]) -> bytes:
    if call is None or call.version == "2.0":
        doc: dict[str, Any] = {
            "jsonrpc": "2.0",
            "error": {"code": 1, "message": description[0], "data": description[1:]},
            "id": call.id if call else None,
        }
    else:
        doc = {"result": None, "error": description, "id": call.id}
    return json.dumps(doc, separators=(",", ":")).encode("utf-8")


def error_page(extra: str) -> bytes:
    """xapi's HTML body for an HTTP 500 answer."""
    return ("<html><body><h1>HTTP 500 internal server error</h1>An unexpected error "
            "occurred; please wait a while and try again. If the problem persists, "
            "please contact your support representative.<h1> Additional information "
            "</h1>" + xml_escape(extra) + "</body></html>").encode("utf-8")
