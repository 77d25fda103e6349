"""Wire protocol: endpoints, envelopes, encodings, malformed requests."""
from __future__ import annotations

import http.client
import json
import urllib.parse
import xmlrpc.client

import pytest

from xhost.testing.simfixtures import SIM_PASSWORD, SIM_USER


def post(url: str, path: str, body: bytes, content_type: str = "text/xml"
         ) -> tuple[int, dict[str, str], bytes]:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    conn.request("POST", path, body=body, headers={"Content-Type": content_type})
    resp = conn.getresponse()
    data = resp.read()
    headers = {k.lower(): v for k, v in resp.getheaders()}
    conn.close()
    return resp.status, headers, data


def xml_call(url: str, method: str, *params, path: str = "/") -> tuple[str, dict]:
    body = xmlrpc.client.dumps(params, method, allow_none=True).encode()
    status, headers, data = post(url, path, body)
    assert status == 200
    assert headers["content-type"] == "text/xml"
    (result,), _ = xmlrpc.client.loads(data)
    return data.decode(), result


def login_xml(url: str) -> str:
    _, result = xml_call(url, "session.login_with_password", SIM_USER, SIM_PASSWORD)
    assert result["Status"] == "Success"
    return result["Value"]


@pytest.mark.parametrize("path", ["/", "/RPC2"])
def test_xmlrpc_endpoints_and_success_envelope(simulator, path):
    text, result = xml_call(simulator.url, "session.login_with_password", SIM_USER,
                            SIM_PASSWORD, path=path)
    assert result["Status"] == "Success"
    assert result["Value"].startswith("OpaqueRef:")
    assert "<fault>" not in text


def test_failure_envelope_never_a_fault(simulator):
    text, result = xml_call(simulator.url, "session.login_with_password", SIM_USER, "wrong")
    assert result == {"Status": "Failure",
                      "ErrorDescription": ["SESSION_AUTHENTICATION_FAILED", SIM_USER,
                                           "Authentication failure"]}
    assert "<fault>" not in text


def test_ints_are_decimal_strings_floats_are_doubles_dates_are_iso(simulator):
    session = login_xml(simulator.url)
    _, result = xml_call(simulator.url, "host.get_all", session)
    host = result["Value"][0]
    text, result = xml_call(simulator.url, "host.get_API_version_major", session, host)
    assert result["Value"] == "2"
    assert "<value>2</value>" in text
    _, result = xml_call(simulator.url, "task.create", session, "t", "d")
    task = result["Value"]
    text, result = xml_call(simulator.url, "task.get_progress", session, task)
    assert "<double>0.0</double>" in text
    text, result = xml_call(simulator.url, "task.get_created", session, task)
    assert "<dateTime.iso8601>" in text and text.count("Z</dateTime.iso8601>") == 1
    text, _ = xml_call(simulator.url, "host.get_enabled", session, host)
    assert "<boolean>1</boolean>" in text
    text, _ = xml_call(simulator.url, "session.logout", session)
    assert "<member><name>Value</name><value></value></member>" in text


def test_native_ints_and_string_ints_are_both_accepted(simulator):
    session = login_xml(simulator.url)
    _, result = xml_call(simulator.url, "VM.get_all", session)
    vm = result["Value"][0]
    for value in (7, "7"):
        _, result = xml_call(simulator.url, "VM.set_user_version", session, vm, value)
        assert result["Status"] == "Success"
        _, result = xml_call(simulator.url, "VM.get_user_version", session, vm)
        assert result["Value"] == "7"


def test_null_ref_and_opaque_ref_format(simulator):
    session = login_xml(simulator.url)
    _, result = xml_call(simulator.url, "pool.get_all_records", session)
    pool = next(iter(result["Value"].values()))
    assert pool["redo_log_vdi"] == "OpaqueRef:NULL"
    assert pool["master"].startswith("OpaqueRef:") and len(pool["master"]) == 46


@pytest.mark.parametrize("body", [b"<methodCall><methodName>x</methodName><params>",
                                  b"not xml at all", b""])
def test_malformed_xmlrpc_is_http_500(simulator, body):
    status, headers, data = post(simulator.url, "/", body)
    assert status == 500
    assert b"HTTP 500 internal server error" in data
    assert headers["content-type"] == "text/html"


def test_body_over_300_kib_is_refused(simulator):
    big = xmlrpc.client.dumps(("x" * (301 * 1024),), "session.login_with_password").encode()
    status, _, data = post(simulator.url, "/", big)
    assert status == 500
    assert b"Client_requested_size_over_limit" in data
    small = xmlrpc.client.dumps(("x" * (290 * 1024), SIM_PASSWORD),
                                "session.login_with_password").encode()
    status, _, data = post(simulator.url, "/", small)
    assert status == 200


def test_system_list_methods(simulator):
    body = xmlrpc.client.dumps((), "system.listMethods").encode()
    status, _, data = post(simulator.url, "/", body)
    (methods,), _ = xmlrpc.client.loads(data)
    assert status == 200
    assert "VM.start" in methods and "VM.get_record" in methods and "event.from" in methods
    assert "Async.VM.start" not in methods
    assert len(methods) > 1800


def test_keep_alive_serves_many_calls_on_one_connection(simulator):
    parts = urllib.parse.urlsplit(simulator.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    for _ in range(20):
        body = xmlrpc.client.dumps((SIM_USER, SIM_PASSWORD), "session.login_with_password")
        conn.request("POST", "/", body=body.encode(), headers={"Content-Type": "text/xml"})
        resp = conn.getresponse()
        assert resp.status == 200
        resp.read()
        assert resp.getheader("Connection") is None and not resp.will_close
    conn.close()


def test_jsonrpc_v2_envelope(simulator, jsonrpc):
    client = jsonrpc("2.0", login=False)
    reply, ctype = client.raw("session.login_with_password", [SIM_USER, SIM_PASSWORD])
    assert ctype == "application/json"
    assert reply["jsonrpc"] == "2.0" and reply["result"].startswith("OpaqueRef:")
    reply, _ = client.raw("session.login_with_password", [SIM_USER, "bad"])
    assert set(reply) == {"jsonrpc", "error", "id"}
    assert reply["error"]["message"] == "SESSION_AUTHENTICATION_FAILED"
    assert reply["error"]["data"] == [SIM_USER, "Authentication failure"]
    assert isinstance(reply["error"]["code"], int) and reply["error"]["code"] != 0


def test_jsonrpc_v1_envelope_and_native_types(simulator, jsonrpc):
    client = jsonrpc("1.0", login=False)
    reply, ctype = client.raw("session.login_with_password", [SIM_USER, SIM_PASSWORD])
    assert ctype == "application/json"
    assert reply["error"] is None and reply["id"] == 1
    session = reply["result"]
    reply, _ = client.raw("host.get_all_records", [session])
    host = next(iter(reply["result"].values()))
    assert host["API_version_major"] == 2 and isinstance(host["API_version_major"], int)
    assert host["enabled"] is True
    reply, _ = client.raw("VM.get_by_uuid", [session, "nope"])
    assert reply["result"] is None and reply["error"] == ["UUID_INVALID", "VM", "nope"]


def test_jsonrpc_and_xmlrpc_share_sessions(simulator, jsonrpc):
    session = login_xml(simulator.url)
    client = jsonrpc(login=False)
    client.session = session
    assert client("pool.get_all")


def test_jsonrpc_null_id_and_bad_json_are_http_500(simulator):
    status, _, _ = post(simulator.url, "/jsonrpc",
                        json.dumps({"method": "x", "params": [], "id": None}).encode(),
                        "application/json")
    assert status == 500
    status, _, _ = post(simulator.url, "/jsonrpc", b"{not json", "application/json")
    assert status == 500


def test_cors_preflight(simulator):
    parts = urllib.parse.urlsplit(simulator.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    conn.request("OPTIONS", "/jsonrpc")
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 200
    assert resp.getheader("Access-Control-Allow-Origin") == "*"


def test_unix_socket_for_dom0_local_clients(tmp_path):
    import os
    import shutil

    import XenAPI

    from xhost.sim import Simulator

    # XenAPI's UDS transport turns "_" in the host name into "/": no "_" in the path.
    sockdir = f"/tmp/xhostsimsock-{os.getpid()}"
    os.makedirs(sockdir, exist_ok=True)
    path = f"{sockdir}/xapi.sock"
    try:
        with Simulator(tmp_path / "state", users={"root": "pw"}, unix_socket=path):
            session = XenAPI.Session("http://" + path.replace("/", "_"),
                                     transport=XenAPI.UDSTransport())
            session.xenapi.login_with_password("root", "pw")
            assert len(session.xenapi.pool.get_all()) == 1
        assert not os.path.exists(path)
    finally:
        shutil.rmtree(sockdir, ignore_errors=True)


def test_expect_100_continue(simulator):
    import socket

    parts = urllib.parse.urlsplit(simulator.url)
    body = xmlrpc.client.dumps((SIM_USER, SIM_PASSWORD), "session.login_with_password").encode()
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\n"
                     b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(body)
        reply = sock.recv(65536)
        assert reply.startswith(b"HTTP/1.1 200 OK") and b"Success" in reply


def test_get_root_serves_a_page_and_unknown_paths_404(simulator):
    import urllib.error
    import urllib.request

    with urllib.request.urlopen(simulator.url + "/", timeout=10) as resp:
        assert resp.status == 200 and b"XCP-ng 8.3" in resp.read()
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(simulator.url + "/nothing-here", timeout=10)
    assert info.value.code == 404
