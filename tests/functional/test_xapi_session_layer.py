"""The XAPI session layer over real HTTP(S) against a small XML-RPC server."""
from __future__ import annotations

import logging
import threading
import time

import pytest

from xhost import exception
from xhost.xapi.client import XapiClient, decode_task_result, master_url


def test_login_uses_originator_and_calls_return_values(mini_xapi):
    url, xapi = mini_xapi()
    with XapiClient(url, "root", "secret") as client:
        assert client.call("VM.get_all") == ["OpaqueRef:11111111-1111-1111-1111-111111111111"]
        assert client.counters["VM.get_all"] == 1
        assert client.counters["session.login_with_password"] == 1
    assert xapi.originators == ["xhost"]


def test_large_ints_travel_as_strings(mini_xapi):
    url, _ = mini_xapi()
    with XapiClient(url, "root", "secret") as client:
        assert client.call("test.echo", 10 * 2**30, True, {"size": 5}) == \
            [str(10 * 2**30), True, {"size": "5"}]


def test_failures_are_typed_with_code_and_params(mini_xapi):
    url, _ = mini_xapi()
    with XapiClient(url, "root", "secret") as client:
        with pytest.raises(exception.XapiFailure) as err:
            client.call("VM.nonsense")
    assert err.value.code == "MESSAGE_METHOD_UNKNOWN" and err.value.params == ["VM.nonsense"]


def test_bad_password_is_authentication_failed_without_the_password(mini_xapi):
    url, _ = mini_xapi()
    with XapiClient(url, "root", "wrong-password-123") as client:
        with pytest.raises(exception.AuthenticationFailed) as err:
            client.call("VM.get_all")
    assert "wrong-password-123" not in str(err.value)


def test_pool_is_bounded_by_connection_concurrent(mini_xapi):
    url, xapi = mini_xapi()
    with XapiClient(url, "root", "secret", concurrent=3) as client:
        threads = [threading.Thread(target=client.call, args=("test.sleep", 0.2))
                   for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert xapi.max_in_flight == 3
        assert xapi.logins == 3 and client.open_sessions == 3
    assert xapi.logouts == 3 and not xapi.sessions  # every session logged out on close


def test_call_timeout_is_applied(mini_xapi):
    url, _ = mini_xapi()
    with XapiClient(url, "root", "secret", call_timeout=0.3) as client:
        started = time.monotonic()
        with pytest.raises(exception.XapiTimeout, match="test.sleep"):
            client.call("test.sleep", 3)
        assert time.monotonic() - started < 2
        assert client.call("test.echo", 1) == ["1"]  # the pool recovers


def test_expired_session_is_renewed_transparently(mini_xapi):
    url, xapi = mini_xapi()
    with XapiClient(url, "root", "secret", concurrent=1) as client:
        client.call("VM.get_all")
        xapi.expire_next = 1
        assert client.call("VM.get_all")
        assert client.relogins == 1 and xapi.logins == 2


def test_host_is_slave_reconnects_to_master(mini_xapi):
    master_url_, master = mini_xapi()
    member_url, member = mini_xapi(master=master_url_.split("//")[1])
    with XapiClient(member_url, "root", "secret") as client:
        assert client.call("VM.get_all")
        assert client.url == master_url_ and client.redirects == 1
    assert master.logins == 1 and member.logins == 0


def test_master_url_keeps_scheme_and_port_unless_given():
    assert master_url("https://10.0.0.2", "10.0.0.1") == "https://10.0.0.1"
    assert master_url("http://10.0.0.2:8080", "10.0.0.1") == "http://10.0.0.1:8080"
    assert master_url("http://127.0.0.1:1", "127.0.0.1:2") == "http://127.0.0.1:2"
    assert master_url("https://h", "fd00::1") == "https://[fd00::1]"


def test_tls_is_verified_by_default(mini_xapi, self_signed):
    url, _ = mini_xapi(tls=self_signed)
    with XapiClient(url, "root", "secret") as client:
        with pytest.raises(exception.XapiConnectionError, match="connection_ca_file"):
            client.call("VM.get_all")
    with XapiClient(url, "root", "secret", ca_file=self_signed[0]) as client:
        assert client.call("VM.get_all")
    with XapiClient(url, "root", "secret", insecure=True) as client:
        assert client.call("VM.get_all")


def test_unreachable_host_is_a_connection_error():
    with XapiClient("http://127.0.0.1:9", "root", "x", login_timeout=2) as client:
        with pytest.raises(exception.XapiConnectionError, match="127.0.0.1:9"):
            client.call("VM.get_all")


def test_debug_trace_never_shows_password_or_session(mini_xapi, caplog):
    url, xapi = mini_xapi()
    with caplog.at_level(logging.DEBUG, logger="xhost"):
        with XapiClient(url, "root", "secret") as client:
            client.call("VM.get_all")
            with pytest.raises(exception.XapiFailure):  # the mini server has no plugins
                client.call("host.call_plugin", "OpaqueRef:h", "p.py", "fn", {"password": "hunter2"})
    assert "VM.get_all" in caplog.text
    assert "secret" not in caplog.text.replace("<secret>", "") and "hunter2" not in caplog.text
    for ref in xapi.sessions or []:
        assert ref not in caplog.text


def test_task_result_fragments_are_decoded():
    assert decode_task_result("<value>OpaqueRef:abc</value>") == "OpaqueRef:abc"
    assert decode_task_result(
        "<value><array><data><value>OpaqueRef:a</value></data></array></value>") == ["OpaqueRef:a"]
    assert decode_task_result("") is None


def test_closed_client_refuses_calls(mini_xapi):
    url, _ = mini_xapi()
    client = XapiClient(url, "root", "secret")
    client.close()
    with pytest.raises(exception.XapiError, match="closed"):
        client.call("VM.get_all")


def test_remembered_facts_last_for_their_time_and_can_be_forgotten():
    client = XapiClient("http://127.0.0.1:9", "root", "pw")  # no call is made
    computed = []

    def compute(value):
        def make():
            computed.append(value)
            return value
        return make

    assert client.remembered("forever", compute(1)) == 1
    assert client.remembered("forever", compute(2)) == 1
    assert client.remembered("brief", compute(3), 0.05) == 3
    assert client.remembered("brief", compute(4), 0.05) == 3
    time.sleep(0.06)
    assert client.remembered("brief", compute(5), 0.05) == 5
    assert client.remembered("never", compute(6), 0) == 6
    assert client.remembered("never", compute(7), 0) == 7
    client.forget("forever")
    assert client.remembered("forever", compute(8)) == 8
    assert computed == [1, 3, 5, 6, 7, 8]
