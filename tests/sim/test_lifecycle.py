"""VM lifecycle through the real XenAPI client: power states, allowed and
current operations, devices, consoles, metrics, memory, clones, snapshots."""
from __future__ import annotations

import threading
import time

import pytest
import XenAPI

GiB = 1 << 30


def states_allowed(x, vm):
    return set(x.VM.get_allowed_operations(vm))


def test_power_state_machine(x, new_vm, fail):
    vm = new_vm("machine")
    host = x.host.get_all()[0]
    assert x.VM.get_power_state(vm) == "Halted"
    assert x.VM.get_domid(vm) == "-1"
    assert {"start", "start_on", "clone", "copy", "destroy", "snapshot"} <= states_allowed(x, vm)
    assert "clean_shutdown" not in states_allowed(x, vm)

    x.VM.start(vm, False, False)
    rec = x.VM.get_record(vm)
    assert rec["power_state"] == "Running"
    assert int(rec["domid"]) >= 1
    assert rec["resident_on"] == host
    assert vm in x.host.get_resident_VMs(host)
    assert {"clean_shutdown", "hard_shutdown", "pause", "suspend", "clean_reboot",
            "hard_reboot", "snapshot"} <= set(rec["allowed_operations"])
    assert not {"start", "destroy", "clone"} & set(rec["allowed_operations"])

    x.VM.pause(vm)
    assert x.VM.get_power_state(vm) == "Paused"
    assert fail(x.VM.pause, vm) == ["VM_BAD_POWER_STATE", vm, "running", "paused"]
    x.VM.unpause(vm)
    domid = x.VM.get_domid(vm)
    x.VM.clean_reboot(vm)
    assert x.VM.get_power_state(vm) == "Running"
    assert int(x.VM.get_domid(vm)) > int(domid)
    x.VM.hard_reboot(vm)

    x.VM.suspend(vm)
    rec = x.VM.get_record(vm)
    assert rec["power_state"] == "Suspended"
    assert rec["domid"] == "-1" and rec["resident_on"] == "OpaqueRef:NULL"
    assert x.VDI.get_type(rec["suspend_VDI"]) == "suspend"
    assert states_allowed(x, vm) >= {"resume", "resume_on", "hard_shutdown", "destroy"}
    x.VM.resume(vm, False, False)
    assert x.VM.get_power_state(vm) == "Running"
    assert x.VM.get_suspend_VDI(vm) == "OpaqueRef:NULL"

    x.VM.clean_shutdown(vm)
    rec = x.VM.get_record(vm)
    assert rec["power_state"] == "Halted" and rec["domid"] == "-1"
    assert rec["resident_on"] == "OpaqueRef:NULL"
    x.VM.destroy(vm)
    assert fail(x.VM.get_record, vm) == ["HANDLE_INVALID", "VM", vm]


def test_bad_power_state_lists_expected_states_in_lower_case(x, new_vm, fail):
    vm = new_vm("bps")
    assert fail(x.VM.clean_shutdown, vm) == ["VM_BAD_POWER_STATE", vm, "running", "halted"]
    assert fail(x.VM.hard_shutdown, vm) == ["VM_BAD_POWER_STATE", vm,
                                            "paused, suspended, running", "halted"]
    assert fail(x.VM.resume, vm, False, False) == ["VM_BAD_POWER_STATE", vm, "suspended",
                                                  "halted"]
    x.VM.start(vm, False, False)
    assert fail(x.VM.start, vm, False, False) == ["VM_BAD_POWER_STATE", vm, "halted",
                                                 "running"]
    assert fail(x.VM.destroy, vm) == ["VM_BAD_POWER_STATE", vm, "halted, suspended",
                                      "running"]


def test_start_paused_and_devices(x, new_vm):
    vm = new_vm("devices")
    x.VM.start(vm, True, False)
    assert x.VM.get_power_state(vm) == "Paused"
    vbds = x.VM.get_VBDs(vm)
    assert [x.VBD.get_currently_attached(v) for v in vbds] == [True]
    assert x.VBD.get_device(vbds[0]) == "xvda"
    vifs = x.VM.get_VIFs(vm)
    assert x.VIF.get_currently_attached(vifs[0]) is True
    consoles = x.VM.get_consoles(vm)
    assert consoles and x.console.get_protocol(consoles[0]) == "rfb"
    assert x.console.get_location(consoles[0]).startswith("https://")
    metrics = x.VM_metrics.get_record(x.VM.get_metrics(vm))
    assert metrics["VCPUs_number"] == x.VM.get_VCPUs_at_startup(vm)
    assert metrics["memory_actual"] == x.VM.get_memory_dynamic_max(vm)
    assert metrics["start_time"].value > "2000"
    x.VM.unpause(vm)
    x.VM.hard_shutdown(vm)
    assert [x.VBD.get_currently_attached(v) for v in vbds] == [False]
    assert x.VIF.get_currently_attached(vifs[0]) is False
    assert x.VM.get_consoles(vm) == []


def test_guest_metrics_and_no_tools_mode(x, new_vm, fail):
    vm = new_vm("tools")
    x.VM.add_to_xenstore_data(vm, "vm-data/networks/0/ip", "192.0.2.10")
    x.VM.start(vm, False, False)
    gm = x.VM.get_guest_metrics(vm)
    assert x.VM_guest_metrics.get_PV_drivers_detected(gm) is True
    assert x.VM_guest_metrics.get_networks(gm)["0/ip"] == "192.0.2.10"
    x.VM.clean_shutdown(vm)
    assert x.VM.get_guest_metrics(vm) == "OpaqueRef:NULL"

    bare = new_vm("no tools")
    x.VM.add_to_other_config(bare, "xhost_sim_tools", "false")
    x.VM.start(bare, False, False)
    assert x.VM.get_guest_metrics(bare) == "OpaqueRef:NULL"
    assert "clean_shutdown" not in states_allowed(x, bare)
    assert fail(x.VM.clean_shutdown, bare) == ["VM_MISSING_PV_DRIVERS", bare]
    x.VM.hard_shutdown(bare)


def test_templates_and_snapshots_restrictions(x, new_vm, fail):
    tpl = x.VM.get_by_name_label("Debian Bookworm 12")[0]
    assert fail(x.VM.start, tpl, False, False) == ["VM_IS_TEMPLATE", tpl, "start"]
    assert fail(x.VM.destroy, tpl) == ["VM_CANNOT_DELETE_DEFAULT_TEMPLATE", tpl]
    vm = new_vm("snapme")
    x.VM.start(vm, False, False)
    snap = x.VM.snapshot(vm, "snap")
    rec = x.VM.get_record(snap)
    assert rec["is_a_snapshot"] and rec["is_a_template"] and rec["snapshot_of"] == vm
    assert snap in x.VM.get_snapshots(vm)
    assert x.VM.get_parent(vm) == snap
    assert fail(x.VM.start, snap, False, False) == ["VM_IS_SNAPSHOT", snap, "start"]
    assert fail(x.VM.suspend, snap) == ["VM_BAD_POWER_STATE", snap, "running", "halted"]
    assert set(rec["allowed_operations"]) <= {"revert", "clone", "copy", "export", "destroy",
                                              "hard_shutdown", "metadata_export"}
    snap_vdi = x.VBD.get_VDI(rec["VBDs"][0])
    assert x.VDI.get_is_a_snapshot(snap_vdi)
    vm_vdi = x.VBD.get_VDI(x.VM.get_VBDs(vm)[0])
    assert x.VDI.get_snapshot_of(snap_vdi) == vm_vdi
    # SM's snapshot: the disk and its snapshot are both children of a hidden base copy.
    base = x.VDI.get_by_uuid(x.VDI.get_sm_config(snap_vdi)["vhd-parent"])
    assert x.VDI.get_sm_config(vm_vdi)["vhd-parent"] == x.VDI.get_uuid(base)
    assert x.VDI.get_name_label(base) == "base copy" and not x.VDI.get_managed(base)


def test_revert_restores_snapshot_state(x, new_vm):
    vm = new_vm("revert")
    x.VM.set_name_description(vm, "before")
    x.VM.add_to_other_config(vm, "marker", "snapshot-time")
    snap = x.VM.snapshot(vm, "s1")
    x.VM.remove_from_other_config(vm, "marker")
    x.VM.set_VCPUs_max(vm, "4")
    x.VM.start(vm, False, False)
    x.VM.revert(snap)
    rec = x.VM.get_record(vm)
    assert rec["power_state"] == "Halted"
    assert rec["other_config"]["marker"] == "snapshot-time"
    assert rec["VCPUs_max"] == "1"
    assert rec["is_a_template"] is False and rec["name_label"] == "revert"
    assert len(rec["VBDs"]) == 1


def test_clone_copy_and_provision(x, new_vm):
    tpl = x.VM.get_by_name_label("Debian Bookworm 12")[0]
    clone = x.VM.clone(tpl, "from template")
    assert x.VM.get_is_a_template(clone) is True
    assert x.VM.get_is_default_template(clone) is False
    assert x.VM.get_VBDs(clone) == []
    x.VM.provision(clone)
    vbds = x.VM.get_VBDs(clone)
    assert len(vbds) == 1
    vdi = x.VBD.get_VDI(vbds[0])
    assert x.VDI.get_virtual_size(vdi) == str(10 * GiB)
    default_sr = x.pool.get_default_SR(x.pool.get_all()[0])
    assert x.VDI.get_SR(vdi) == default_sr
    assert "disks" not in x.VM.get_other_config(clone)

    vm = new_vm("orig")
    vif_mac = x.VIF.get_MAC(x.VM.get_VIFs(vm)[0])
    copy = x.VM.copy(vm, "a copy", default_sr)
    copy_vdi = x.VBD.get_VDI(x.VM.get_VBDs(copy)[0])
    assert copy_vdi != x.VBD.get_VDI(x.VM.get_VBDs(vm)[0])
    assert "vhd-parent" not in x.VDI.get_sm_config(copy_vdi)
    assert x.VIF.get_MAC(x.VM.get_VIFs(copy)[0]) != vif_mac
    fast = x.VM.clone(vm, "fast clone")
    fast_vdi = x.VBD.get_VDI(x.VM.get_VBDs(fast)[0])
    # A fast clone shares the (now hidden) base copy of the original's disk.
    assert x.VDI.get_sm_config(fast_vdi)["vhd-parent"] == \
        x.VDI.get_sm_config(x.VBD.get_VDI(x.VM.get_VBDs(vm)[0]))["vhd-parent"]


def test_blocked_operations(x, new_vm, fail):
    vm = new_vm("blocked")
    x.VM.add_to_blocked_operations(vm, "start", "maintenance")
    assert "start" not in states_allowed(x, vm)
    assert fail(x.VM.start, vm, False, False) == ["OPERATION_BLOCKED", vm, "maintenance"]
    x.VM.remove_from_blocked_operations(vm, "start")
    assert "start" in states_allowed(x, vm)
    assert fail(x.VM.add_to_blocked_operations, vm, "nonsense", "x") == \
        ["INVALID_VALUE", "key", "nonsense"]


def test_concurrent_operation_is_refused_while_in_progress(simulator, x, new_vm, fail):
    vm = new_vm("busy")
    simulator.controls.set_latency("VM.start", 1.0)
    task = x.Async.VM.start(vm, False, False)
    deadline = time.time() + 5
    while not x.VM.get_current_operations(vm) and time.time() < deadline:
        time.sleep(0.01)
    ops = x.VM.get_current_operations(vm)
    assert list(ops.values()) == ["start"] and list(ops) == [task]
    assert x.VM.get_allowed_operations(vm) == [] or "start" not in states_allowed(x, vm)
    details = fail(x.VM.clone, vm, "meanwhile")
    assert details == ["OTHER_OPERATION_IN_PROGRESS", "VM", vm, "start", task]
    while x.task.get_status(task) == "pending":
        time.sleep(0.02)
    assert x.task.get_status(task) == "success"
    assert x.VM.get_current_operations(vm) == {}
    assert x.VM.get_power_state(vm) == "Running"


def test_host_memory_accounting(simulator, x, new_vm, fail):
    host = x.host.get_all()[0]
    free = int(x.host.compute_free_memory(host))
    vm = new_vm("big")
    x.VM.set_memory_limits(vm, str(GiB), str(4 * GiB), str(4 * GiB), str(4 * GiB))
    x.VM.start(vm, False, False)
    after = int(x.host.compute_free_memory(host))
    assert free - after >= 4 * GiB
    metrics = x.host.get_metrics(host)
    assert int(x.host_metrics.get_memory_free(metrics)) == after
    huge = new_vm("huge")
    x.VM.set_memory_limits(huge, str(GiB), str(200 * GiB), str(200 * GiB), str(200 * GiB))
    details = fail(x.VM.start, huge, False, False)
    assert details[0] == "HOST_NOT_ENOUGH_FREE_MEMORY"
    assert int(details[1]) > 200 * GiB and int(details[2]) == after
    x.VM.hard_shutdown(vm)
    assert int(x.host.compute_free_memory(host)) == free


def test_memory_constraints(x, new_vm, fail):
    vm = new_vm("mem")
    details = fail(x.VM.set_memory_limits, vm, str(4 * GiB), str(GiB), str(GiB), str(GiB))
    assert details[0] == "MEMORY_CONSTRAINT_VIOLATION"


def test_allowed_device_lists(x, new_vm):
    vm = new_vm("devs")
    vbd_devices = x.VM.get_allowed_VBD_devices(vm)
    assert "0" not in vbd_devices and "1" in vbd_devices and len(vbd_devices) == 254
    vif_devices = x.VM.get_allowed_VIF_devices(vm)
    assert "0" not in vif_devices and vif_devices[0] == "1" and len(vif_devices) == 15


def test_vm_create_with_record(x, fail):
    record = {
        "name_label": "raw", "user_version": "1", "is_a_template": False, "affinity": "",
        "memory_static_max": str(GiB), "memory_dynamic_max": str(GiB),
        "memory_dynamic_min": str(GiB), "memory_static_min": str(GiB // 2),
        "VCPUs_params": {}, "VCPUs_max": "2", "VCPUs_at_startup": "2",
        "actions_after_shutdown": "destroy", "actions_after_reboot": "restart",
        "actions_after_crash": "restart", "PV_bootloader": "", "PV_kernel": "",
        "PV_ramdisk": "", "PV_args": "", "PV_bootloader_args": "", "PV_legacy_args": "",
        "HVM_boot_policy": "BIOS order", "HVM_boot_params": {"order": "dc"},
        "platform": {}, "PCI_bus": "", "other_config": {}, "recommendations": ""}
    vm = x.VM.create(record)
    rec = x.VM.get_record(vm)
    assert rec["power_state"] == "Halted" and rec["metrics"] != "OpaqueRef:NULL"
    assert "mac_seed" in rec["other_config"]
    assert rec["affinity"] == "OpaqueRef:NULL"
    bad = dict(record, actions_after_crash="explode")
    assert fail(x.VM.create, bad) == ["INVALID_VALUE", "actions_after_crash", "explode"]
    missing = dict(record)
    del missing["PV_kernel"]
    details = fail(x.VM.create, missing)
    assert details[0] == "INTERNAL_ERROR" and "PV_kernel" in details[1]
    worse = dict(record, VCPUs_at_startup="3")
    assert fail(x.VM.create, worse)[0] == "VALUE_NOT_SUPPORTED"


def test_async_start_of_many_vms_in_parallel(x, new_vm):
    vms = [new_vm(f"par{i}") for i in range(5)]
    tasks = [x.Async.VM.start(vm, False, False) for vm in vms]
    for task in tasks:
        while x.task.get_status(task) == "pending":
            time.sleep(0.01)
        assert x.task.get_status(task) == "success"
    domids = {x.VM.get_domid(vm) for vm in vms}
    assert len(domids) == 5


def test_other_clients_see_consistent_state_under_load(simulator, x, new_vm):
    vm = new_vm("load")
    errors: list[BaseException] = []

    def reader():
        try:
            session = XenAPI.Session(simulator.url)
            session.xenapi.login_with_password("root", "xhost-sim-password", "1.0", "reader")
            for _ in range(50):
                session.xenapi.VM.get_all_records()
            session.xenapi.session.logout()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for _ in range(5):
        x.VM.start(vm, False, False)
        x.VM.hard_shutdown(vm)
    for t in threads:
        t.join()
    assert not errors


@pytest.mark.parametrize("template", ["Other install media", "Windows 11",
                                      "Ubuntu Noble Numbat 24.04"])
def test_seeded_templates_look_like_xcp_ng(x, template):
    tpl = x.VM.get_by_name_label(template)[0]
    rec = x.VM.get_record(tpl)
    assert rec["is_a_template"] and rec["is_default_template"]
    assert rec["other_config"]["default_template"] == "true"
    assert "install-methods" in rec["other_config"]
    assert rec["recommendations"].startswith("<restrictions>")
    assert rec["HVM_boot_policy"] == "BIOS order"
    assert rec["reference_label"]
