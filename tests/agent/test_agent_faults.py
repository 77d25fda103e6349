"""Every way the guest agent can fail: each ends within its timeout with a
clear error (or, at boot, a fault on the instance), and no password ever
reaches a log line or an error message."""
from __future__ import annotations

import json
import logging
import time

import pytest

from xhost import exception, hookimpl
from xhost.backends.agent_xenstore.errors import (
    AgentBadReply,
    AgentError,
    AgentRebooted,
    AgentTimeout,
)
from xhost.compute import api

NETWORK = "Pool-wide network associated with eth0"


def agent_spec(compute, server, spec: str) -> None:
    """Change how the simulated guest's agent behaves from now on."""
    compute.xapi.call("VM.remove_from_other_config", server.vm_ref, "xhost_sim_agent")
    compute.xapi.call("VM.add_to_other_config", server.vm_ref, "xhost_sim_agent", spec)


def requests_left(simulator, compute, server) -> list[str]:
    domid = int(compute.xapi.call("VM.get_domid", server.vm_ref))
    home = f"/local/domain/{domid}/data"
    return [f"{side}/{n}" for side in ("host", "guest")
            if simulator.xenstore.exists(f"{home}/{side}")
            for n in simulator.xenstore.directory(f"{home}/{side}")]


class FaultListener:
    def __init__(self):
        self.faults: list[tuple[str, str]] = []

    @hookimpl
    def xhost_instance_fault(self, instance, message):
        self.faults.append((instance.name, message))


@pytest.fixture
def booted(make_compute, images):
    """An instance whose guest runs a well-behaved agent."""
    images.add("agent-img", img_use_agent="true")
    compute = make_compute({"agent_timeout": 1, "agent_resetnetwork_timeout": 1})
    server = compute.create_server("vm1", "agent-img", "m1.tiny", [NETWORK],
                                   admin_password="Initial-1")
    assert server.faults == []
    return compute, server


def test_an_absent_agent_is_a_fault_after_the_version_timeout(make_compute, images,
                                                              simulator):
    images.add("claims-agent", img_use_agent="true", xhost_sim_agent="no")
    listener = FaultListener()
    compute = make_compute({"agent_timeout": 1, "agent_version_timeout": 2},
                           extensions={"listener": listener})
    started = time.monotonic()
    server = compute.create_server("lonely", "claims-agent", "m1.tiny", [NETWORK])
    elapsed = time.monotonic() - started
    assert 2 <= elapsed < 8
    assert server.status == "active" and server.admin_password is None
    assert len(server.faults) == 1
    assert server.faults[0].startswith("guest agent: no answer within 2 s ([xenserver] "
                                       "agent_version_timeout)")
    assert listener.faults == [("lonely", server.faults[0])]
    assert compute.show_server("lonely").faults == server.faults
    record = compute.xapi.call("VM.get_record", server.vm_ref)
    assert json.loads(record["other_config"]["xhost_faults"]) == server.faults
    assert requests_left(simulator, compute, server) == []
    started = time.monotonic()
    with pytest.raises(AgentTimeout, match=r"no answer to keyinit within 1 s; is the agent "
                                           r"running in the guest\? \(\[xenserver\] "
                                           r"agent_timeout"):
        compute.set_admin_password("lonely", "Whatever-1")
    assert time.monotonic() - started < 4


def test_garbage_non_json_and_unknown_return_codes(booted, simulator):
    compute, server = booted
    agent_spec(compute, server, "garbage=password")
    with pytest.raises(AgentBadReply, match=r"unusable answer to password: no returncode in "
                                            r"'\{\"status\": \"fine\""):
        compute.set_admin_password("vm1", "Second-2")
    agent_spec(compute, server, "nonjson=keyinit")
    with pytest.raises(AgentBadReply, match=r"unusable answer to keyinit: not JSON: "
                                            r"'Traceback"):
        compute.set_admin_password("vm1", "Second-2")
    agent_spec(compute, server, "code=resetnetwork:42")
    with pytest.raises(AgentError, match=r"resetnetwork failed: the agent answered return "
                                         r"code '42' \(success is '0' or '500'\)"):
        compute.reset_network("vm1")
    agent_spec(compute, server, "code=keyinit:0")  # keyinit succeeds with D0 only
    with pytest.raises(AgentError, match=r"keyinit failed: the agent answered return code '0'"):
        compute.set_admin_password("vm1", "Second-2")
    assert simulator.guests.get(server.vm_ref).state.password == "Initial-1"
    assert requests_left(simulator, compute, server) == []


def test_reboots_in_the_middle_of_a_request(booted, simulator):
    compute, server = booted
    agent_spec(compute, server, "reboot=password")
    compute.set_admin_password("vm1", "After-Reboot-1")  # the key exchange is redone
    state = simulator.guests.get(server.vm_ref).state
    assert state.password == "After-Reboot-1" and state.boots == 2
    agent_spec(compute, server, "reboot-always=file_inject")
    started = time.monotonic()
    with pytest.raises(AgentRebooted, match="rebooted during file injection 4 time"):
        compute.inject_file("vm1", "/etc/motd", b"never")
    assert time.monotonic() - started < 30
    assert state.boots == 6 and "/etc/motd" not in state.files
    assert requests_left(simulator, compute, server) == []


def test_timeouts_end_in_time_and_leave_nothing_behind(booted, simulator):
    compute, server = booted
    agent_spec(compute, server, "silent=resetnetwork")
    started = time.monotonic()
    with pytest.raises(AgentTimeout, match=r"no answer to resetnetwork within 1 s.*"
                                           r"agent_resetnetwork_timeout"):
        compute.reset_network("vm1")
    assert time.monotonic() - started < 4
    agent_spec(compute, server, "slow=2.5")
    started = time.monotonic()
    with pytest.raises(AgentTimeout, match="no answer to file injection within 1 s"):
        compute.inject_file("vm1", "/etc/motd", b"late")
    assert time.monotonic() - started < 4
    time.sleep(2)  # the slow agent notices the request was withdrawn
    assert requests_left(simulator, compute, server) == []
    assert "/etc/motd" not in simulator.guests.get(server.vm_ref).state.files


def test_boot_faults_do_not_fail_the_boot(make_compute, images, guest_view):
    images.add("flaky", img_use_agent="true", xhost_sim_agent="nonjson=features,code=password:7")
    listener = FaultListener()
    compute = make_compute(extensions={"listener": listener})
    server = compute.create_server("flaky", "flaky", "m1.tiny", [NETWORK],
                                   admin_password="Never-Shown-1", key_data="ssh-rsa AAAA k",
                                   files={"/etc/motd": b"hi"})
    assert server.status == "active" and server.admin_password is None
    assert [f.split(" failed:")[0] for f in server.faults] == [
        "guest agent: injecting the SSH key", "guest agent: injecting /etc/motd",
        "guest agent: setting the admin password"]
    assert "unusable answer to features: the answer is not JSON" in server.faults[0]
    assert "return code '7'" in server.faults[2]
    assert [m for _n, m in listener.faults] == server.faults
    assert compute.show_server("flaky").faults == server.faults
    view = guest_view(server.details["vm_uuid"])
    assert view["agent"]["received"][-1] == "resetnetwork"  # later steps still ran
    assert not any("Never-Shown-1" in f for f in server.faults)

    images.add("garbled", img_use_agent="true", xhost_sim_agent="garbage=version")
    server = compute.create_server("garbled", "garbled", "m1.tiny", [NETWORK])
    assert server.status == "active" and len(server.faults) == 1
    assert server.faults[0].startswith("guest agent: asking its version failed, so nothing "
                                       "was configured through it: guest agent of garbled: "
                                       "unusable answer to version: no returncode")


def test_operations_without_an_agent_fail_clearly(make_compute, images, booted):
    images.add("plain")
    compute = make_compute()
    compute.create_server("plain", "plain", "m1.tiny", [NETWORK])
    with pytest.raises(api.NoGuestAgent, match=r"cannot set the password of server 'plain': it "
                                               r"has no guest agent: its image \(plain\) has "
                                               r"img_use_agent=unset and \[xenserver\] "
                                               r"use_agent_default is false"):
        compute.set_admin_password("plain", "x-Y-1")
    with pytest.raises(api.NoGuestAgent, match="cannot inject a file"):
        compute.inject_file("plain", "/etc/motd", b"x")
    with pytest.raises(api.NoGuestAgent, match="cannot reset the network"):
        compute.reset_network("plain")
    disabled = make_compute({"disable_agent": True})
    assert disabled.plugins.selected["guest_agent"] == "none"
    with pytest.raises(api.NoGuestAgent, match=r"xhost talks to no guest agent \(\[xenserver\] "
                                               r"guest_agent = none, or disable_agent = true\)"):
        disabled.set_admin_password("vm1", "x-Y-1")
    with pytest.raises(api.ServerNotFound):
        compute.reset_network("nope")
    with pytest.raises(exception.XhostError, match="not absolute"):
        compute.inject_file("vm1", "etc/motd", b"x")
    agent_compute, server = booted
    agent_compute.xapi.call("VM.hard_shutdown", server.vm_ref)
    with pytest.raises(api.ServerNotRunning, match="it is halted; start it first"):
        agent_compute.set_admin_password("vm1", "x-Y-1")


def test_a_file_too_large_for_xenstore_is_refused_before_sending(booted, simulator):
    compute, server = booted
    simulator.controls.read_counters(reset=True)
    with pytest.raises(AgentError, match=r"/etc/big is 4000 bytes, but a request through "
                                         r"XenStore holds at most \d+ bytes"):
        compute.inject_file("vm1", "/etc/big", b"x" * 4000)
    assert simulator.controls.read_counters().get("host.call_plugin", 0) == 0
    compute.inject_file("vm1", "/etc/fits", b"y" * 2800)
    assert simulator.guests.get(server.vm_ref).state.files["/etc/fits"] == b"y" * 2800


def test_reset_network_applies_what_the_vm_record_says_now(booted, guest_view):
    compute, server = booted
    mac = server.ports[0]["mac"]
    key = f"vm-data/networking/{mac.replace(':', '')}"
    x = compute.xapi
    x.call("VM.remove_from_xenstore_data", server.vm_ref, key)
    x.call("VM.add_to_xenstore_data", server.vm_ref, key, json.dumps({
        "mac": mac, "ips": [{"ip": "198.51.100.7", "netmask": "255.255.255.128",
                             "gateway": "198.51.100.1", "enabled": "1"}],
        "dns": ["198.51.100.53"]}))
    x.call("VM.remove_from_xenstore_data", server.vm_ref, "vm-data/hostname")
    x.call("VM.add_to_xenstore_data", server.vm_ref, "vm-data/hostname", "renamed")
    compute.reset_network("vm1")
    view = guest_view(server.details["vm_uuid"])
    assert view["network"]["0"]["ipv4"] == ["198.51.100.7"]
    assert view["network"]["0"]["gateway"] == "198.51.100.1"
    assert view["hostname"] == "renamed"
    assert view["vm_data"]["vm-data/hostname"] == "renamed"


def test_passwords_never_reach_logs_or_errors(make_compute, images, simulator, guest_view,
                                              caplog):
    caplog.set_level(logging.DEBUG)
    secrets = ["Boot-Secret-One", "Second-Secret-Two", "Third-Secret-3", "Fourth-Secret-4"]
    images.add("img", img_use_agent="true")
    compute = make_compute({"agent_timeout": 1},
                           text="[agent_xenstore]\npassword_digest = md5\n")
    server = compute.create_server("vm1", "img", "m1.tiny", [NETWORK],
                                   admin_password=secrets[0])
    compute.set_admin_password("vm1", secrets[1])
    errors = []
    for spec, secret in (("sha256", secrets[2]), ("garbage=password", secrets[3]),
                         ("silent=password", secrets[3]), ("nonjson=password", secrets[3])):
        agent_spec(compute, server, spec)
        with pytest.raises(exception.XhostError) as err:
            compute.set_admin_password("vm1", secret)
        errors.append(str(err.value))
    generated = compute.create_server("vm2", "img", "m1.tiny", [NETWORK]).admin_password
    assert generated
    view = guest_view(server.details["vm_uuid"])
    assert view["password"] == secrets[1]
    text = caplog.text + "\n".join(errors) + json.dumps(view["events"])
    assert "XAPI host.call_plugin" in caplog.text  # the calls were logged, redacted
    for secret in [*secrets, generated]:
        assert secret not in text
