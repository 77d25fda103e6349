"""Fault injection, connection drops, pool-member mode, latency, counters --
from Python and through the authenticated /sim control endpoint."""
from __future__ import annotations

import base64
import http.client
import json
import time
import urllib.error
import urllib.request

import pytest
import XenAPI

from xhost.testing.simfixtures import SIM_PASSWORD, SIM_USER


def control(sim, method, path, body=None, auth=(SIM_USER, SIM_PASSWORD)):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(sim.url + path, data=data, method=method)
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        req.add_header("Authorization", "Basic " + token)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_fail_the_nth_call(simulator, x, fail):
    vm = x.VM.get_all()[0]
    simulator.controls.add_fault("VM.get_name_label", ["SR_BACKEND_FAILURE_47", "",
                                                      "The SR is not available", ""], nth=2)
    x.VM.get_name_label(vm)
    assert fail(x.VM.get_name_label, vm) == ["SR_BACKEND_FAILURE_47", "",
                                             "The SR is not available", ""]
    x.VM.get_name_label(vm)
    assert simulator.controls.state()["faults"] == []


def test_fail_every_call_and_async_tasks(simulator, x, new_vm, fail):
    vm = new_vm("faulty")
    rule = simulator.controls.add_fault("VM.start", ["HOST_NOT_ENOUGH_FREE_MEMORY", "1", "0"])
    assert fail(x.VM.start, vm, False, False)[0] == "HOST_NOT_ENOUGH_FREE_MEMORY"
    task = x.Async.VM.start(vm, False, False)
    while x.task.get_status(task) == "pending":
        time.sleep(0.01)
    assert x.task.get_status(task) == "failure"
    assert x.task.get_error_info(task) == ["HOST_NOT_ENOUGH_FREE_MEMORY", "1", "0"]
    simulator.controls.clear_faults(rule.id)
    x.VM.start(vm, False, False)


def test_fault_on_a_named_plugin_function(simulator, x, fail):
    host = x.host.get_all()[0]
    simulator.plugins.register("xhost_echo", {"echo": lambda session, args: json.dumps(args)})
    assert json.loads(x.host.call_plugin(host, "xhost_echo", "echo", {"a": "1"})) == {"a": "1"}
    simulator.controls.add_fault("host.call_plugin", ["XENAPI_PLUGIN_FAILURE", "echo", "IOError",
                                                     "disk full"], plugin="xhost_echo",
                                 fn="echo", times=1)
    assert fail(x.host.call_plugin, host, "xhost_echo", "other", {}) == \
        ["UNKNOWN_XENAPI_PLUGIN_FUNCTION", "other"]
    assert fail(x.host.call_plugin, host, "xhost_echo", "echo", {}) == \
        ["XENAPI_PLUGIN_FAILURE", "echo", "IOError", "disk full"]
    assert x.host.call_plugin(host, "xhost_echo", "echo", {}) == "{}"
    assert fail(x.host.call_plugin, host, "missing", "f", {}) == ["XENAPI_MISSING_PLUGIN",
                                                                 "missing"]


def test_plugin_exceptions_become_plugin_failures(simulator, x, fail):
    def boom(session, args):
        raise OSError("no space left")

    simulator.plugins.register("bad", {"boom": boom})
    host = x.host.get_all()[0]
    assert fail(x.host.call_plugin, host, "bad", "boom", {}) == \
        ["XENAPI_PLUGIN_FAILURE", "boom", "OSError", "no space left"]


def test_dropped_connections(simulator, xapi_session):
    # xmlrpc.client retries once on a closed keep-alive connection: drop twice.
    simulator.controls.add_drop(2, "pool.get_all")
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError, OSError)):
        xapi_session.xenapi.pool.get_all()
    fresh = XenAPI.Session(simulator.url)
    fresh.xenapi.login_with_password(SIM_USER, SIM_PASSWORD)
    assert fresh.xenapi.pool.get_all()


def test_pool_member_mode(simulator, fail):
    simulator.set_member("192.0.2.1")
    session = XenAPI.Session(simulator.url)
    assert fail(session.xenapi.login_with_password, SIM_USER, SIM_PASSWORD) == \
        ["HOST_IS_SLAVE", "192.0.2.1"]
    simulator.set_member(None)
    session.xenapi.login_with_password(SIM_USER, SIM_PASSWORD)


def test_speed_and_latency_model(simulator, x, new_vm):
    vm = new_vm("timed")
    start = time.monotonic()
    x.VM.start(vm, False, False)
    assert time.monotonic() - start < 0.3
    simulator.speed = 0.05
    start = time.monotonic()
    x.VM.hard_shutdown(vm)
    x.VM.start(vm, False, False)
    elapsed = time.monotonic() - start
    assert 0.05 * (1.0 + 3.0) * 0.9 < elapsed < 2.0
    simulator.speed = 0.0


def test_counters(simulator, x):
    simulator.controls.reset_counters()
    for _ in range(3):
        x.pool.get_all()
    x.Async.host.compute_free_memory(x.host.get_all()[0])
    counts = simulator.controls.read_counters(reset=True)
    assert counts["pool.get_all"] == 3
    assert counts["Async.host.compute_free_memory"] == 1
    assert simulator.controls.read_counters() == {}


def test_control_endpoint(simulator, x, fail):
    assert control(simulator, "GET", "/sim/status", auth=None)[0] == 401
    assert control(simulator, "GET", "/sim/status", auth=(SIM_USER, "wrong"))[0] == 401
    status, doc = control(simulator, "GET", "/sim/status")
    assert status == 200 and doc["role"] == "master" and doc["objects"]["VM"] >= 17
    x.pool.get_all()
    status, doc = control(simulator, "GET", "/sim/counters?reset=1")
    assert doc["pool.get_all"] >= 1
    status, rule = control(simulator, "POST", "/sim/faults",
                           {"method": "pool.get_all", "error": ["INTERNAL_ERROR", "boom"],
                            "times": 1})
    assert status == 200 and rule["id"] >= 1
    assert fail(x.pool.get_all) == ["INTERNAL_ERROR", "boom"]
    assert x.pool.get_all()
    status, doc = control(simulator, "POST", "/sim/faults", {"method": "pool.get_all",
                                                             "error": ["lower_case"]})
    assert status == 400 and "not a XAPI error code" in doc["error"]
    assert control(simulator, "POST", "/sim/faults", {"error": ["X"]})[0] == 400
    status, doc = control(simulator, "POST", "/sim/latency", {"speed": 0.5})
    assert doc["speed"] == 0.5
    control(simulator, "POST", "/sim/latency", {"speed": 0})
    status, doc = control(simulator, "POST", "/sim/latency", {"method": "VM.start",
                                                              "seconds": 2})
    assert doc["overrides"] == {"VM.start": 2.0}
    status, doc = control(simulator, "POST", "/sim/role", {"master": "192.0.2.9"})
    assert doc["role"] == "member"
    assert fail(x.pool.get_all) == ["HOST_IS_SLAVE", "192.0.2.9"]
    control(simulator, "POST", "/sim/role", {"master": None})
    status, doc = control(simulator, "POST", "/sim/sessions/expire", {})
    assert doc["expired"] >= 1
    assert x.pool.get_all()
    assert control(simulator, "POST", "/sim/flush", {})[1]["flushed"] is True
    assert control(simulator, "GET", "/sim/nothing")[0] == 404
    assert control(simulator, "DELETE", "/sim/faults")[1] == {"removed": 0}
