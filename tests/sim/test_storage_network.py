"""Storage and network objects: VDI/VBD/SR/PBD and VIF/network/VLAN/Bond."""
from __future__ import annotations

GiB = 1 << 30


def local_sr(x):
    return x.SR.get_by_name_label("Local storage")[0]


def vdi_record(sr, size=GiB, name="disk"):
    return {"name_label": name, "name_description": "", "SR": sr, "virtual_size": str(size),
            "type": "user", "sharable": False, "read_only": False, "other_config": {},
            "xenstore_data": {}, "sm_config": {}, "tags": []}


def test_vdi_lifecycle_and_sr_accounting(x, fail):
    sr = local_sr(x)
    before = int(x.SR.get_virtual_allocation(sr))
    vdi = x.VDI.create(vdi_record(sr, 2 * GiB))
    rec = x.VDI.get_record(vdi)
    assert rec["SR"] == sr and rec["virtual_size"] == str(2 * GiB)
    assert rec["managed"] and not rec["is_a_snapshot"]
    assert rec["sm_config"]["vdi_type"] == "vhd"
    assert vdi in x.SR.get_VDIs(sr)
    assert int(x.SR.get_virtual_allocation(sr)) == before + 2 * GiB
    clone = x.VDI.clone(vdi, {})
    base = x.VDI.get_sm_config(clone)["vhd-parent"]
    assert x.VDI.get_sm_config(vdi)["vhd-parent"] == base != rec["uuid"]
    snap = x.VDI.snapshot(vdi)
    assert x.VDI.get_is_a_snapshot(snap) and x.VDI.get_snapshot_of(snap) == vdi
    assert snap in x.VDI.get_snapshots(vdi)
    x.VDI.resize(vdi, str(3 * GiB))
    assert x.VDI.get_virtual_size(vdi) == str(3 * GiB)
    assert fail(x.VDI.resize, vdi, str(GiB)) == ["SR_BACKEND_FAILURE_79", "", "VDI Invalid size",
                                                 ""]
    copied = x.VDI.copy(vdi, sr)
    assert x.VDI.get_virtual_size(copied) == str(3 * GiB)
    for ref in (clone, snap, copied, vdi):
        x.VDI.destroy(ref)
    assert int(x.SR.get_virtual_allocation(sr)) == before


def test_vdi_copy_arities_and_into(x, fail):
    sr = local_sr(x)
    vdi = x.VDI.create(vdi_record(sr, GiB))
    assert fail(x.VDI.copy) == ["MESSAGE_PARAMETER_COUNT_MISMATCH", "VDI.copy", "1", "0"]
    small = x.VDI.create(vdi_record(sr, GiB // 2))
    assert fail(x.VDI.copy, vdi, "OpaqueRef:NULL", "OpaqueRef:NULL", small) == \
        ["VDI_TOO_SMALL", small, str(GiB)]
    big = x.VDI.create(vdi_record(sr, 2 * GiB))
    assert x.VDI.copy(vdi, "OpaqueRef:NULL", "OpaqueRef:NULL", big) == big


def test_vdi_in_use_and_vbd_plugging(x, new_vm, fail):
    vm = new_vm("disks")
    sr = local_sr(x)
    vdi = x.VDI.create(vdi_record(sr))
    vbd = x.VBD.create({"VM": vm, "VDI": vdi, "userdevice": "autodetect", "bootable": False,
                        "mode": "RW", "type": "Disk", "empty": False, "other_config": {},
                        "qos_algorithm_type": "", "qos_algorithm_params": {}})
    assert x.VBD.get_userdevice(vbd) == "1"
    assert fail(x.VBD.plug, vbd) == ["VM_BAD_POWER_STATE", vm, "running", "halted"]
    x.VM.start(vm, False, False)
    assert x.VBD.get_currently_attached(vbd) is True
    assert fail(x.VDI.destroy, vdi) == ["VDI_IN_USE", vdi, "destroy"]
    assert "destroy" not in x.VDI.get_allowed_operations(vdi)
    x.VBD.unplug(vbd)
    assert fail(x.VBD.unplug, vbd) == ["DEVICE_ALREADY_DETACHED", vbd]
    x.VBD.plug(vbd)
    assert fail(x.VBD.plug, vbd) == ["DEVICE_ALREADY_ATTACHED", vbd]
    assert x.VBD.get_device(vbd) == "xvdb"
    x.VM.hard_shutdown(vm)
    x.VDI.destroy(vdi)
    assert fail(x.VBD.get_record, vbd) == ["HANDLE_INVALID", "VBD", vbd]


def test_cd_insert_and_eject(x, new_vm, fail):
    vm = new_vm("cd")
    iso_sr = x.SR.get_by_name_label("XCP-ng Tools")[0]
    iso = x.SR.get_VDIs(iso_sr)[0]
    assert x.VDI.get_name_label(iso) == "guest-tools.iso"
    cd = x.VBD.create({"VM": vm, "VDI": "OpaqueRef:NULL", "userdevice": "3", "bootable": False,
                       "mode": "RO", "type": "CD", "empty": True, "other_config": {},
                       "qos_algorithm_type": "", "qos_algorithm_params": {}})
    assert fail(x.VBD.eject, cd) == ["VBD_IS_EMPTY", cd]
    x.VBD.insert(cd, iso)
    assert fail(x.VBD.insert, cd, iso) == ["VBD_NOT_EMPTY", cd]
    x.VBD.eject(cd)
    disk = x.VM.get_VBDs(vm)[0]
    assert fail(x.VBD.insert, disk, iso) == ["VBD_NOT_REMOVABLE_MEDIA", disk]
    assert fail(x.VBD.create, {"VM": vm, "VDI": "OpaqueRef:NULL", "userdevice": "3",
                               "bootable": False, "mode": "RO", "type": "CD", "empty": True,
                               "other_config": {}, "qos_algorithm_type": "",
                               "qos_algorithm_params": {}}) == ["DEVICE_ALREADY_EXISTS", "3"]


def test_iso_sr_refuses_vdi_create_and_sr_lifecycle(x, fail):
    iso_sr = x.SR.get_by_name_label("XCP-ng Tools")[0]
    assert fail(x.VDI.create, vdi_record(iso_sr)) == ["SR_OPERATION_NOT_SUPPORTED", iso_sr]
    host = x.host.get_all()[0]
    sr = x.SR.create(host, {"server": "nfs.example", "serverpath": "/export"}, "0", "shared",
                     "", "nfs", "user", True, {})
    pbd = x.SR.get_PBDs(sr)[0]
    assert x.PBD.get_currently_attached(pbd) and x.PBD.get_host(pbd) == host
    vdi = x.VDI.create(vdi_record(sr))
    assert fail(x.SR.destroy, sr) == ["SR_NOT_EMPTY"]
    x.VDI.destroy(vdi)
    x.SR.scan(sr)
    x.PBD.unplug(pbd)
    assert fail(x.VDI.create, vdi_record(sr)) == ["SR_NO_PBDS", sr]
    x.PBD.plug(pbd)
    x.SR.destroy(sr)
    assert fail(x.SR.get_record, sr) == ["HANDLE_INVALID", "SR", sr]
    assert "nfs" in x.SR.get_supported_types()


def test_thick_sr_gets_full(x, fail):
    host = x.host.get_all()[0]
    sr = x.SR.create(host, {"device": "/dev/sdb"}, str(10 * GiB), "lvm", "", "lvm", "user",
                     False, {})
    x.VDI.create(vdi_record(sr, 6 * GiB))
    assert fail(x.VDI.create, vdi_record(sr, 6 * GiB)) == ["SR_FULL", str(6 * GiB), str(4 * GiB)]


def test_networks_vifs_vlans_bonds(x, new_vm, fail):
    net = x.network.create({"name_label": "internal", "name_description": "", "MTU": "9000",
                            "other_config": {}})
    assert x.network.get_bridge(net).startswith("xapi")
    net2 = x.network.create({"name_label": "internal2", "name_description": "", "MTU": "1500",
                             "other_config": {}})
    assert x.network.get_bridge(net2) != x.network.get_bridge(net)
    vm = new_vm("nets", nic=False)
    vif = x.VIF.create({"device": "0", "network": net, "VM": vm, "MAC": "", "MTU": "0",
                        "other_config": {}, "qos_algorithm_type": "", "qos_algorithm_params": {}})
    mac = x.VIF.get_MAC(vif)
    assert len(mac.split(":")) == 6 and x.VIF.get_MAC_autogenerated(vif)
    assert x.VIF.get_MTU(vif) == "9000"
    assert vif in x.network.get_VIFs(net)
    assert fail(x.VIF.create, {"device": "0", "network": net, "VM": vm, "MAC": "",
                               "MTU": "1500", "other_config": {}, "qos_algorithm_type": "",
                               "qos_algorithm_params": {}}) == ["DEVICE_ALREADY_EXISTS", "0"]
    x.VM.start(vm, False, False)
    assert fail(x.network.destroy, net) == ["NETWORK_CONTAINS_VIF", vif]
    x.VIF.unplug(vif)
    x.VIF.plug(vif)
    x.VM.hard_shutdown(vm)
    eth0 = [p for p in x.PIF.get_all() if x.PIF.get_device(p) == "eth0"][0]
    vlan_net = x.network.create({"name_label": "v100", "name_description": "", "MTU": "1500",
                                 "other_config": {}})
    vlan = x.VLAN.create(eth0, "100", vlan_net)
    untagged = x.VLAN.get_untagged_PIF(vlan)
    assert x.PIF.get_VLAN(untagged) == "100" and x.PIF.get_network(untagged) == vlan_net
    assert vlan in x.PIF.get_VLAN_slave_of(eth0)
    host = x.PIF.get_host(eth0)
    assert fail(x.VLAN.create, eth0, "100", vlan_net) == ["NETWORK_ALREADY_CONNECTED", host,
                                                          untagged]
    other_net = x.network.create({"name_label": "v100 again", "name_description": "",
                                  "MTU": "1500", "other_config": {}})
    assert fail(x.VLAN.create, eth0, "100", other_net) == ["PIF_VLAN_EXISTS", "eth0"]
    assert fail(x.VLAN.create, eth0, "5000", other_net) == ["VLAN_TAG_INVALID", "5000"]
    assert fail(x.VLAN.create, untagged, "7", other_net) == ["PIF_IS_VLAN", untagged]
    mgmt = x.network.get_by_name_label("Pool-wide network associated with eth0")[0]
    assert fail(x.network.destroy, mgmt) == ["NETWORK_CONTAINS_PIF", *x.network.get_PIFs(mgmt)]
    assert fail(x.PIF.unplug, eth0) == ["PIF_IS_MANAGEMENT_IFACE", eth0]
    host = x.host.get_all()[0]
    assert x.host.get_management_interface(host) == eth0
    sv = x.host.get_software_version(host)
    assert sv["network_backend"] == "openvswitch" and sv["product_version"] == "8.3.0"


def test_vdi_introduce_and_forget(x, fail):
    sr = local_sr(x)
    vdi = x.VDI.introduce("0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b", "found", "", sr, "user",
                          False, False, {}, "0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b", {}, {})
    rec = x.VDI.get_record(vdi)
    assert rec["uuid"] == "0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b" and rec["managed"] is True
    assert x.VDI.get_by_uuid(rec["uuid"]) == vdi
    x.VDI.forget(vdi)
    assert fail(x.VDI.get_record, vdi) == ["HANDLE_INVALID", "VDI", vdi]


def test_device_allowed_operations_follow_the_vm(x, new_vm):
    vm = new_vm("devops")
    vbd = x.VM.get_VBDs(vm)[0]
    vif = x.VM.get_VIFs(vm)[0]
    assert x.VBD.get_allowed_operations(vbd) == ["attach"]
    assert x.VIF.get_allowed_operations(vif) == ["attach"]
    x.VM.start(vm, False, False)
    assert set(x.VBD.get_allowed_operations(vbd)) == {"unplug", "unplug_force"}
    assert x.VIF.get_allowed_operations(vif) == ["unplug"]
    x.VBD.unplug(vbd)
    assert x.VBD.get_allowed_operations(vbd) == ["plug"]
    x.VM.hard_shutdown(vm)
    assert x.VBD.get_allowed_operations(vbd) == ["attach"]


def test_vdi_operations_are_exclusive(simulator, x, fail):
    import time

    sr = local_sr(x)
    vdi = x.VDI.create(vdi_record(sr))
    simulator.controls.set_latency("VDI.copy", 0.8)
    task = x.Async.VDI.copy(vdi, sr)
    deadline = time.time() + 5
    while not x.VDI.get_current_operations(vdi) and time.time() < deadline:
        time.sleep(0.01)
    assert x.VDI.get_current_operations(vdi) == {task: "copy"}
    assert fail(x.VDI.snapshot, vdi) == ["OTHER_OPERATION_IN_PROGRESS", "VDI", vdi, "copy", task]
    assert fail(x.VDI.destroy, vdi) == ["OTHER_OPERATION_IN_PROGRESS", "VDI", vdi, "copy", task]
    while x.task.get_status(task) == "pending":
        time.sleep(0.02)
    assert x.task.get_status(task) == "success"
    assert x.VDI.get_current_operations(vdi) == {}
    assert "snapshot" in x.VDI.get_allowed_operations(vdi)
