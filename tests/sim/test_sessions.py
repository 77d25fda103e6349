"""Sessions: login, logout, expiry, limits, the client's re-login path."""
from __future__ import annotations

import time

import pytest
import XenAPI

from xhost.sim import Simulator
from xhost.testing.simfixtures import SIM_PASSWORD, SIM_USER


def test_login_record_and_logout(simulator, fail):
    session = XenAPI.Session(simulator.url)
    session.xenapi.login_with_password(SIM_USER, SIM_PASSWORD, "2.21", "my-tool")
    ref = session._session
    rec = session.xenapi.session.get_record(ref)
    assert rec["originator"] == "my-tool" and rec["is_local_superuser"] is True
    assert rec["this_host"] == session.xenapi.host.get_all()[0]
    assert rec["auth_user_name"] == SIM_USER
    session.xenapi.session.logout()
    other = XenAPI.Session(simulator.url)
    other.xenapi.login_with_password(SIM_USER, SIM_PASSWORD)
    assert fail(other.xenapi.session.get_record, ref) == ["HANDLE_INVALID", "session", ref]
    raw = XenAPI.xmlrpclib.ServerProxy(simulator.url)
    reply = raw.VM.get_all(ref)
    assert reply == {"Status": "Failure", "ErrorDescription": ["SESSION_INVALID", ref]}


def test_two_argument_login_and_bad_password(simulator, fail):
    session = XenAPI.Session(simulator.url)
    session.xenapi.login_with_password(SIM_USER, SIM_PASSWORD)
    assert session.xenapi.pool.get_all()
    bad = XenAPI.Session(simulator.url)
    assert fail(bad.xenapi.login_with_password, SIM_USER, "nope") == \
        ["SESSION_AUTHENTICATION_FAILED", SIM_USER, "Authentication failure"]
    assert fail(bad.xenapi.login_with_password, "mallory", SIM_PASSWORD) == \
        ["SESSION_AUTHENTICATION_FAILED", "mallory", "Authentication failure"]
    assert fail(bad.xenapi.login_with_password, SIM_USER) == \
        ["MESSAGE_PARAMETER_COUNT_MISMATCH", "session.login_with_password", "2", "1"]


def test_failed_login_waits_the_configured_delay(tmp_path, fail):
    with Simulator(tmp_path / "s", users={"root": "pw"}, auth_delay=0.3) as sim:
        session = XenAPI.Session(sim.url)
        start = time.monotonic()
        fail(session.xenapi.login_with_password, "root", "bad")
        assert time.monotonic() - start >= 0.3
        start = time.monotonic()
        session.xenapi.login_with_password("root", "pw")
        assert time.monotonic() - start < 0.3


def test_local_logout(simulator):
    raw = XenAPI.xmlrpclib.ServerProxy(simulator.url)
    ref = raw.session.slave_local_login_with_password(SIM_USER, SIM_PASSWORD)["Value"]
    assert raw.session.local_logout(ref)["Status"] == "Success"
    assert raw.pool.get_all(ref)["ErrorDescription"] == ["SESSION_INVALID", ref]


def test_expired_session_is_invalid_and_the_client_relogs_in(simulator, xapi_session):
    x = xapi_session.xenapi
    old = xapi_session._session
    assert simulator.sessions.expire(old) == 1
    raw = XenAPI.xmlrpclib.ServerProxy(simulator.url)
    assert raw.pool.get_all(old)["ErrorDescription"] == ["SESSION_INVALID", old]
    # The PyPI client re-logs in transparently on SESSION_INVALID.
    assert x.pool.get_all()
    assert xapi_session._session != old
    assert simulator.controls.read_counters()["session.login_with_password"] == 2


def test_inactivity_timeout(tmp_path):
    with Simulator(tmp_path / "s", users={"root": "pw"}, session_timeout=0.2) as sim:
        raw = XenAPI.xmlrpclib.ServerProxy(sim.url)
        ref = raw.session.login_with_password("root", "pw")["Value"]
        assert raw.pool.get_all(ref)["Status"] == "Success"
        time.sleep(0.3)
        assert raw.pool.get_all(ref)["ErrorDescription"] == ["SESSION_INVALID", ref]


@pytest.mark.parametrize("originator", ["tool", ""])
def test_per_originator_limit_invalidates_the_oldest(tmp_path, originator):
    with Simulator(tmp_path / "s", users={"root": "pw"}, max_sessions_per_originator=3,
                   max_anonymous_sessions=3) as sim:
        raw = XenAPI.xmlrpclib.ServerProxy(sim.url)
        refs = [raw.session.login_with_password("root", "pw", "1.0", originator)["Value"]
                for _ in range(4)]
        assert raw.pool.get_all(refs[0])["ErrorDescription"] == ["SESSION_INVALID", refs[0]]
        for ref in refs[1:]:
            assert raw.pool.get_all(ref)["Status"] == "Success"
        other = raw.session.login_with_password("root", "pw", "1.0", "someone-else")["Value"]
        assert raw.pool.get_all(refs[1])["Status"] == "Success"
        assert raw.pool.get_all(other)["Status"] == "Success"


def test_unknown_method_with_bad_session_reports_session_first(simulator):
    raw = XenAPI.xmlrpclib.ServerProxy(simulator.url)
    assert raw.VM.frobnicate("OpaqueRef:bad")["ErrorDescription"] == \
        ["SESSION_INVALID", "OpaqueRef:bad"]
    assert raw.VM.frobnicate()["ErrorDescription"] == ["MESSAGE_METHOD_UNKNOWN", "VM.frobnicate"]


def test_rbac_roles_of_non_root_users(tmp_path, fail):
    users = {"root": "pw", "viewer": ("v", "read-only"), "op": ("o", "vm-operator")}
    with Simulator(tmp_path / "s", users=users) as sim:
        viewer = XenAPI.Session(sim.url)
        viewer.xenapi.login_with_password("viewer", "v")
        vm = viewer.xenapi.VM.get_by_name_label("Debian Bookworm 12")[0]
        assert viewer.xenapi.VM.get_record(vm)["name_label"] == "Debian Bookworm 12"
        details = fail(viewer.xenapi.VM.clone, vm, "nope")
        assert details[0] == "RBAC_PERMISSION_DENIED" and details[1] == "vm.clone"
        assert details[2].startswith("No permission in user session. (Roles with this "
                                     "permission: pool-admin, pool-operator")
        assert "read-only" not in details[2]
        op = XenAPI.Session(sim.url)
        op.xenapi.login_with_password("op", "o")
        assert fail(op.xenapi.VM.set_name_label, vm, "x")[0] == "RBAC_PERMISSION_DENIED"
        assert sim.sessions.role(op._session) == "vm-operator"
    with pytest.raises(ValueError, match="unknown role"):
        Simulator(tmp_path / "t", users={"x": ("y", "superuser")})
