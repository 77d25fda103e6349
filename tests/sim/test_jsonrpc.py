"""A representative subset driven over JSON-RPC (v1 and v2), as XenCenter,
the Go/C#/Java SDKs and Xen Orchestra do."""
from __future__ import annotations

import time

import pytest
import XenAPI


@pytest.mark.parametrize("version", ["1.0", "2.0"])
def test_vm_lifecycle_over_jsonrpc(jsonrpc, version):
    rpc = jsonrpc(version)
    tpl = rpc("VM.get_by_name_label", "Debian Bookworm 12")[0]
    vm = rpc("VM.clone", tpl, "json vm")
    rpc("VM.provision", vm)
    rpc("VM.set_is_a_template", vm, False)
    records = rpc("VM.get_all_records")
    assert records[vm]["memory_static_max"] == 2 << 30
    assert isinstance(records[vm]["VCPUs_max"], int)
    rpc("VM.start", vm, False, False)
    assert rpc("VM.get_power_state", vm) == "Running"
    with pytest.raises(XenAPI.Failure) as info:
        rpc("VM.start", vm, False, False)
    assert info.value.details == ["VM_BAD_POWER_STATE", vm, "halted", "running"]
    task = rpc("Async.VM.clean_shutdown", vm)
    while rpc("task.get_status", task) == "pending":
        time.sleep(0.01)
    rec = rpc("task.get_record", task)
    assert rec["status"] == "success" and rec["progress"] == 1.0
    assert rpc("VM.get_power_state", vm) == "Halted"


def test_events_and_errors_over_jsonrpc(jsonrpc):
    rpc = jsonrpc()
    batch = rpc("event.from", ["vm"], "", 0.0)
    assert batch["events"] and isinstance(batch["valid_ref_counts"]["vm"], int)
    with pytest.raises(XenAPI.Failure) as info:
        rpc("VM.get_record", "OpaqueRef:nope")
    assert info.value.details == ["HANDLE_INVALID", "VM", "OpaqueRef:nope"]
    with pytest.raises(XenAPI.Failure) as info:
        rpc("VM.get_record")
    assert info.value.details == ["MESSAGE_PARAMETER_COUNT_MISMATCH", "VM.get_record", "1", "0"]
    where = rpc("VM.get_all_records_where", 'field "is_control_domain" = "true"')
    assert len(where) == 1
    templates = rpc("VM.get_all_records_where",
                    'field "is_a_template" = "true" and not field "name__label" = "Windows 11"')
    assert len(templates) == 15
