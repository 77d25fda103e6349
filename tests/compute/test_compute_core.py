"""The compute layer's own mechanics against the simulator."""
from __future__ import annotations

import json

import pytest

from xhost.compute import api


def vm_count(compute):
    return len(compute._instance_records())


def vdis_of(compute, uuid):
    return [r for r in compute.xapi.call("VDI.get_all_records").values()
            if r["other_config"].get("nova_instance_uuid") == uuid]


def test_create_list_show_delete(compute):
    server = compute.create_server("vm1", "tiny", "m1.tiny", ["Pool-wide network associated with eth0"])
    assert (server.name, server.status, server.power_state) == ("vm1", "active", "Running")
    assert (server.image, server.flavor) == ("tiny", "m1.tiny")
    listed = compute.list_servers()
    assert [(s.name, s.status) for s in listed] == [("vm1", "active")]
    shown = compute.show_server("vm1")
    assert shown.disks[0]["userdevice"] == "0" and shown.disks[0]["kind"] == "root"
    assert len(shown.ports) == 1 and shown.ports[0]["mac"].startswith("fa:16:3e:")
    rec = compute.xapi.call("VM.get_record", server.vm_ref)
    assert rec["other_config"]["nova_uuid"] == server.id
    assert rec["PV_bootloader"] == "pygrub"  # vhd + linux: PV
    assert f"vm-data/networking/{shown.ports[0]['mac'].replace(':', '')}" in rec["xenstore_data"]
    assert compute.delete_server("vm1") is True
    assert compute.list_servers() == [] and not vdis_of(compute, server.id)
    assert compute.delete_server("vm1") is False  # missing: not an error
    assert compute.journal.entries() == []


def test_duplicate_name_refused(compute):
    compute.create_server("dup", "tiny", "m1.tiny", [])
    with pytest.raises(api.ServerExists, match="dup"):
        compute.create_server("dup", "tiny", "m1.tiny", [])


def test_failure_rolls_everything_back_and_names_the_step(compute):
    compute.simulator.controls.add_fault("VM.start_on", ["HOST_NOT_ENOUGH_FREE_MEMORY", "1", "0"])
    with pytest.raises(api.SpawnError) as err:
        compute.create_server("doomed", "tiny", "m1.tiny",
                              ["Pool-wide network associated with eth0"])
    assert "starting the VM failed" in str(err.value)
    assert "HOST_NOT_ENOUGH_FREE_MEMORY" in str(err.value)
    assert vm_count(compute) == 0
    assert not [r for r in compute.xapi.call("VDI.get_all_records").values()
                if "nova_instance_uuid" in r["other_config"]]
    assert not [r for r in compute.xapi.call("VIF.get_all_records").values()]
    assert compute.journal.entries() == []


def test_unknown_network_is_a_clear_error(compute):
    with pytest.raises(api.SpawnError, match="plugging network interfaces failed.*no network"):
        compute.create_server("nonet", "tiny", "m1.tiny", ["nope"])
    assert vm_count(compute) == 0


def test_reconcile_cleans_up_after_a_killed_process(compute):
    server = compute.create_server("half", "tiny", "m1.tiny", [])
    # what a process killed mid-spawn leaves: the VM, its disks, a journal entry
    entry = compute.journal.begin("spawn", instance=server.id, name="half", ports=[])
    with open(f"{compute.journal.path}/{entry}.json") as f:
        data = json.load(f)
    data["pid"] = 999999999  # no such process
    with open(f"{compute.journal.path}/{entry}.json", "w") as f:
        json.dump(data, f)
    assert compute.reconcile() == ["spawn of half cleaned up"]
    assert vm_count(compute) == 0 and not vdis_of(compute, server.id)
    assert compute.journal.entries() == []
