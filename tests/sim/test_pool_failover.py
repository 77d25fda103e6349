"""Master changes: designate_new_master, a crashed master, emergency
transition, recover_slaves, emergency_reset_master -- through the API, the
Python controls and ``xhost sim pool``."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import XenAPI

from xhost import exception
from xhost.sim import Simulator
from xhost.testing.simfixtures import SIM_PASSWORD, SIM_USER
from xhost.xapi.client import XapiClient


@pytest.fixture
def pool3(tmp_path: Path) -> Iterator[Simulator]:
    sim = Simulator(tmp_path / "pool", users={SIM_USER: SIM_PASSWORD}, hosts=3,
                    flush_interval=0.2).start()
    try:
        yield sim
    finally:
        sim.stop()


def login(url: str) -> XenAPI.Session:
    session = XenAPI.Session(url)
    session.xenapi.login_with_password(SIM_USER, SIM_PASSWORD, "1.0", "failover-tests")
    return session


def failure(fn, *args) -> list[str]:
    with pytest.raises(XenAPI.Failure) as info:
        fn(*args)
    return info.value.details


def endpoint(url: str) -> str:
    return url.removeprefix("http://")


def test_designate_new_master(pool3: Simulator):
    first, second, third = pool3.urls
    x = login(first).xenapi
    hosts = {x.host.get_name_label(h): h for h in x.host.get_all()}
    with XapiClient(third, SIM_USER, SIM_PASSWORD) as client:
        vms_before = client.call("VM.get_all")
        x.pool.designate_new_master(hosts["xcp-ng-sim-2"])
        # The old master now sends everyone to the new one ...
        assert failure(XenAPI.Session(first).xenapi.login_with_password, SIM_USER,
                       SIM_PASSWORD) == ["HOST_IS_SLAVE", endpoint(second)]
        assert failure(XenAPI.Session(third).xenapi.login_with_password, SIM_USER,
                       SIM_PASSWORD) == ["HOST_IS_SLAVE", endpoint(second)]
        # ... and a client follows without noticing.
        assert client.call("VM.get_all") == vms_before
        assert client.url == second
        assert client.call("pool.get_master", client.call("pool.get_all")[0]) == \
            hosts["xcp-ng-sim-2"]
    assert pool3.url == second
    y = login(second).xenapi
    assert failure(y.pool.designate_new_master, "OpaqueRef:nope") == \
        ["HANDLE_INVALID", "host", "OpaqueRef:nope"]
    pool3.crash_host("xcp-ng-sim-3")
    assert failure(y.pool.designate_new_master, hosts["xcp-ng-sim-3"]) == \
        ["HOST_OFFLINE", hosts["xcp-ng-sim-3"]]


def test_master_crash_and_emergency_transition(pool3: Simulator):
    first, second, third = pool3.urls
    x = login(first).xenapi
    hosts = {x.host.get_name_label(h): h for h in x.host.get_all()}
    metrics = x.host.get_metrics(hosts["xcp-ng-sim"])
    pool3.crash_host("xcp-ng-sim")
    with pytest.raises(ConnectionRefusedError):
        XenAPI.Session(first).xenapi.login_with_password(SIM_USER, SIM_PASSWORD)
    # Members still name the dead master; a client following them cannot connect.
    assert failure(XenAPI.Session(second).xenapi.login_with_password, SIM_USER,
                   SIM_PASSWORD) == ["HOST_IS_SLAVE", endpoint(first)]
    with XapiClient(third, SIM_USER, SIM_PASSWORD, login_timeout=2) as client:
        with pytest.raises(exception.XapiConnectionError):
            client.call("pool.get_all")
    # The administrator promotes a member through a slave-local session.
    member = XenAPI.Session(second)
    member.slave_local_login_with_password(SIM_USER, SIM_PASSWORD)
    member.xenapi.pool.emergency_transition_to_master()
    member.xenapi.session.local_logout()
    y = login(second).xenapi
    pool = y.pool.get_all()[0]
    assert y.pool.get_master(pool) == hosts["xcp-ng-sim-2"]
    assert y.host_metrics.get_live(metrics) is False
    # The third host still looks for the old master until recovered.
    assert failure(XenAPI.Session(third).xenapi.login_with_password, SIM_USER,
                   SIM_PASSWORD) == ["HOST_IS_SLAVE", endpoint(first)]
    assert y.pool.recover_slaves() == [hosts["xcp-ng-sim-3"]]
    with XapiClient(third, SIM_USER, SIM_PASSWORD) as client:
        assert client.call("pool.get_master", pool) == hosts["xcp-ng-sim-2"]
        assert client.url == second
    # The old master comes back as a member of the new one.
    pool3.restart_host("xcp-ng-sim")
    assert failure(XenAPI.Session(first).xenapi.login_with_password, SIM_USER,
                   SIM_PASSWORD) == ["HOST_IS_SLAVE", endpoint(second)]
    assert y.host_metrics.get_live(metrics) is True


def test_emergency_reset_master_points_a_member_elsewhere(pool3: Simulator):
    first, second, third = pool3.urls
    pool3.crash_host(0)
    pool3.emergency_transition_to_master(1, recover=False)
    member = XenAPI.Session(third)
    member.slave_local_login_with_password(SIM_USER, SIM_PASSWORD)
    member.xenapi.pool.emergency_reset_master(endpoint(second))
    assert failure(member.xenapi.VM.get_all) == ["HOST_IS_SLAVE", endpoint(second)]
    assert login(second).xenapi.pool.get_all()


def sim_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-P", "-m", "xhost.cli.main", "sim", *args],
                          capture_output=True, text=True, env=env, timeout=60)


def test_failover_from_the_command_line(tmp_path: Path):
    proc = subprocess.Popen(
        [sys.executable, "-P", "-m", "xhost.cli.main", "sim", "serve", "--state-dir",
         str(tmp_path / "cli"), "--hosts", "3", "--password", SIM_PASSWORD,
         "--auth-delay", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        urls = [proc.stdout.readline().strip() for _ in range(3)]
        env = dict(os.environ, XHOST_SIM_URL=urls[2], XHOST_SIM_PASSWORD=SIM_PASSWORD)
        shown = json.loads(sim_cli("pool", "show", "-f", "json", env=env).stdout)
        assert [h["role"] for h in shown] == ["master", "member", "member"]
        assert shown[1]["answers"] == f"HOST_IS_SLAVE {endpoint(urls[0])}"
        out = sim_cli("pool", "crash", "xcp-ng-sim", "-f", "json", env=env)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)[0]["live"] is False
        out = sim_cli("pool", "emergency-master", "xcp-ng-sim-3", "-f", "json", env=env)
        assert out.returncode == 0, out.stderr
        roles = {h["name"]: (h["role"], h["answers"]) for h in json.loads(out.stdout)}
        assert roles["xcp-ng-sim-3"] == ("master", "calls")
        assert roles["xcp-ng-sim-2"] == ("member", f"HOST_IS_SLAVE {endpoint(urls[2])}")
        x = login(urls[2]).xenapi
        assert x.host.get_name_label(x.pool.get_master(x.pool.get_all()[0])) == "xcp-ng-sim-3"
        out = sim_cli("pool", "designate", "xcp-ng-sim", env=env)
        assert out.returncode != 0 and "HOST_OFFLINE" in out.stderr
    finally:
        proc.terminate()
        proc.wait(10)
