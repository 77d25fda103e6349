"""Async calls and task records."""
from __future__ import annotations

import time
import xmlrpc.client

from xhost.sim import Simulator


def wait(x, task, timeout=10.0):
    deadline = time.time() + timeout
    while x.task.get_status(task) in ("pending", "cancelling"):
        assert time.time() < deadline, "task did not finish"
        time.sleep(0.01)
    return x.task.get_record(task)


def test_async_success_result_is_an_xmlrpc_value_fragment(x, new_vm):
    vm = new_vm("async")
    task = x.Async.VM.clone(vm, "async clone")
    rec = wait(x, task)
    assert rec["status"] == "success" and rec["progress"] == 1.0
    assert rec["name_label"] == "Async.VM.clone"
    assert rec["allowed_operations"] == [] and rec["error_info"] == []
    assert rec["result"].startswith("<value>OpaqueRef:") and rec["result"].endswith("</value>")
    (clone,), _ = xmlrpc.client.loads(
        "<methodResponse><params><param>" + rec["result"] + "</param></params></methodResponse>")
    assert x.VM.get_name_label(clone) == "async clone"
    assert rec["finished"].value >= rec["created"].value
    void = wait(x, x.Async.VM.start(vm, False, False))
    assert void["result"] == ""
    x.task.destroy(task)


def test_async_failure_goes_to_error_info(x, new_vm):
    vm = new_vm("fails")
    task = x.Async.VM.clean_shutdown(vm)
    rec = wait(x, task)
    assert rec["status"] == "failure"
    assert rec["error_info"] == ["VM_BAD_POWER_STATE", vm, "running", "halted"]


def test_async_forms_and_their_errors(x, fail):
    vm = x.VM.get_all()[0]
    assert fail(x.Async.VM.no_such, vm) == ["MESSAGE_METHOD_UNKNOWN", "VM.no_such"]
    assert fail(x.Async.VM.get_name_label, vm) == \
        ["Fault", "No async mode for this operation (rpc: VM.get_name_label)"]
    assert fail(x.Async.VM.start, vm) == \
        ["MESSAGE_PARAMETER_COUNT_MISMATCH", "VM.start", "3", "1"]
    task = x.Async.host.compute_free_memory(x.host.get_all()[0])
    assert wait(x, task)["status"] == "success"


def test_cancel_a_long_task(simulator, x, new_vm):
    vm = new_vm("slow")
    simulator.controls.set_latency("VM.start", 5.0)
    task = x.Async.VM.start(vm, False, False)
    time.sleep(0.2)
    assert "cancel" in x.task.get_allowed_operations(task)
    x.task.cancel(task)
    rec = wait(x, task)
    assert rec["status"] == "cancelled"
    assert rec["error_info"] == ["TASK_CANCELLED", task]
    assert x.VM.get_power_state(vm) == "Halted"
    assert x.VM.get_current_operations(vm) == {}


def test_progress_advances(simulator, x, new_vm):
    vm = new_vm("progress")
    simulator.controls.set_latency("VM.clone", 0.6)
    task = x.Async.VM.clone(vm, "c")
    time.sleep(0.35)
    mid = float(x.task.get_progress(task))
    assert 0.0 < mid < 1.0
    assert wait(x, task)["progress"] == 1.0


def test_cancel_refused_when_not_cancellable(x, fail):
    task = x.Async.host.compute_free_memory(x.host.get_all()[0])
    wait(x, task)
    details = fail(x.task.cancel, task)
    assert details[0] == "OPERATION_NOT_ALLOWED"


def test_task_create_and_destroy(x, fail):
    task = x.task.create("import", "pre-created for an HTTP handler")
    rec = x.task.get_record(task)
    assert rec["status"] == "pending" and rec["name_label"] == "import"
    assert rec["name_description"] == "pre-created for an HTTP handler"
    x.task.cancel(task)
    assert x.task.get_status(task) == "cancelled"
    x.task.destroy(task)
    assert fail(x.task.get_record, task) == ["HANDLE_INVALID", "task", task]


def test_sync_calls_of_async_capable_messages_have_transient_tasks(x, new_vm):
    before = set(x.task.get_all())
    vm = new_vm("sync")
    x.VM.start(vm, False, False)
    assert set(x.task.get_all()) == before


def test_finished_tasks_are_garbage_collected(tmp_path):
    import XenAPI

    with Simulator(tmp_path / "s", users={"root": "pw"}) as sim:
        sim.tasks.completed_ttl = 0.0
        session = XenAPI.Session(sim.url)
        session.xenapi.login_with_password("root", "pw")
        x = session.xenapi
        task = x.Async.host.compute_free_memory(x.host.get_all()[0])
        wait(x, task)
        time.sleep(0.05)
        assert sim.tasks.gc() >= 1
        assert task not in x.task.get_all()
