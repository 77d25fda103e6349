"""Moving VMs in a 3-host pool: VM.pool_migrate, host.migrate_receive,
VM.assert_can_migrate and VM.migrate_send (storage motion)."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from xhost import exception
from xhost.sim import Simulator
from xhost.sim.storage_drivers import RecordOnlyDriver
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


@pytest.fixture
def client(pool3: Simulator) -> Iterator[XapiClient]:
    # Pointed at a member on purpose: the client must follow HOST_IS_SLAVE.
    with XapiClient(pool3.urls[2], SIM_USER, SIM_PASSWORD) as xapi:
        yield xapi


def refused(fn, *args) -> list[str]:
    with pytest.raises(exception.XapiFailure) as info:
        fn(*args)
    return [info.value.code, *info.value.params]


def hosts_by_name(c: XapiClient) -> dict[str, str]:
    return {rec["name_label"]: ref for ref, rec in c.call("host.get_all_records").items()}


def make_vm(c: XapiClient, name: str, nic: bool = True) -> str:
    tpl = c.call("VM.get_by_name_label", "Debian Bookworm 12")[0]
    vm = c.call_async("VM.clone", tpl, name)
    c.call("VM.provision", vm)
    c.call("VM.set_is_a_template", vm, False)
    if nic:
        net = c.call("network.get_by_name_label", "Pool-wide network associated with eth0")[0]
        c.call("VIF.create", {"device": "0", "network": net, "VM": vm, "MAC": "", "MTU": "0",
                              "other_config": {}, "qos_algorithm_type": "",
                              "qos_algorithm_params": {}})
    return vm


def local_sr(c: XapiClient, host: str) -> str:
    return next(ref for ref, sr in c.call("SR.get_all_records").items()
                if sr["name_label"] == "Local storage"
                and c.call("PBD.get_host", sr["PBDs"][0]) == host)


def disks(c: XapiClient, vm: str) -> list[dict[str, Any]]:
    out = []
    for vbd in c.call("VM.get_VBDs", vm):
        rec = c.call("VBD.get_record", vbd)
        if rec["type"] == "Disk":
            out.append(c.call("VDI.get_record", rec["VDI"]))
    return out


def test_live_migration_round_the_pool(pool3: Simulator, client: XapiClient):
    hosts = hosts_by_name(client)
    assert client.url == pool3.url and client.redirects == 1
    vm = make_vm(client, "wanderer")
    client.call_async("VM.start_on", vm, hosts["xcp-ng-sim"], False, False)
    first_domid = client.call("VM.get_domid", vm)
    free_before = {h: client.call("host.compute_free_memory", r) for h, r in hosts.items()}
    for name in ("xcp-ng-sim-2", "xcp-ng-sim-3", "xcp-ng-sim"):
        client.call_async("VM.pool_migrate", vm, hosts[name], {"live": "true"})
        rec = client.call("VM.get_record", vm)
        assert rec["resident_on"] == hosts[name] and rec["power_state"] == "Running"
        assert vm in client.call("host.get_resident_VMs", hosts[name])
        assert rec["domid"] != first_domid
        if name == "xcp-ng-sim-2":
            # The memory moved with the domain.
            assert client.call("host.compute_free_memory", hosts["xcp-ng-sim"]) > \
                free_before["xcp-ng-sim"]
            assert client.call("host.compute_free_memory", hosts[name]) < free_before[name]
    # The guest kept running: same tools, same disks.
    assert client.call("VM.get_guest_metrics", vm) != "OpaqueRef:NULL"


def test_pool_migrate_refusals(pool3: Simulator, client: XapiClient):
    hosts = hosts_by_name(client)
    vm = make_vm(client, "pinned")
    assert refused(client.call, "VM.pool_migrate", vm, hosts["xcp-ng-sim-2"], {}) == \
        ["VM_BAD_POWER_STATE", vm, "running", "halted"]
    # A disk on the first host's local storage cannot follow the VM.
    sr = local_sr(client, hosts["xcp-ng-sim"])
    vdi = client.call("VDI.create", {"SR": sr, "virtual_size": str(1 << 30), "type": "user",
                                     "sharable": False, "read_only": False,
                                     "other_config": {}, "name_label": "scratch"})
    client.call("VBD.create", {"VM": vm, "VDI": vdi, "userdevice": "1", "bootable": False,
                               "mode": "RW", "type": "Disk", "empty": False,
                               "other_config": {}, "qos_algorithm_type": "",
                               "qos_algorithm_params": {}})
    client.call("VM.start", vm, False, False)
    assert client.call("VM.get_resident_on", vm) == hosts["xcp-ng-sim"]
    assert refused(client.call, "VM.pool_migrate", vm, hosts["xcp-ng-sim-2"], {}) == \
        ["VM_REQUIRES_SR", vm, sr]
    other = make_vm(client, "mobile")
    client.call("VM.start_on", other, hosts["xcp-ng-sim"], False, False)
    pool3.crash_host("xcp-ng-sim-3")
    assert refused(client.call, "VM.pool_migrate", other, hosts["xcp-ng-sim-3"], {}) == \
        ["HOST_OFFLINE", hosts["xcp-ng-sim-3"]]
    assert client.call("VM.get_resident_on", other) == hosts["xcp-ng-sim"]


def test_migrate_receive_and_assert_can_migrate(pool3: Simulator, client: XapiClient):
    hosts = hosts_by_name(client)
    target = hosts["xcp-ng-sim-2"]
    mgmt = client.call("network.get_by_name_label", "Pool-wide network associated with eth0")[0]
    dest = client.call("host.migrate_receive", target, mgmt, {})
    port = pool3.host("xcp-ng-sim-2").port
    assert set(dest) == {"SM", "host", "xenops", "session_id", "master"}
    assert dest["host"] == target
    assert dest["xenops"] == f"http://127.0.0.1:{port}/services/xenops?session_id=" \
                             f"{dest['session_id']}"
    assert dest["master"] == pool3.url
    internal = client.call("network.create", {"name_label": "no pifs", "name_description": "",
                                              "MTU": "1500", "other_config": {}})
    assert refused(client.call, "host.migrate_receive", target, internal, {}) == \
        ["HOST_CANNOT_ATTACH_NETWORK", target, internal]
    vm = make_vm(client, "checked")
    client.call("VM.start_on", vm, hosts["xcp-ng-sim"], False, False)
    (disk,) = disks(client, vm)
    shared = disk["SR"]
    vdi = client.call("VDI.get_by_uuid", disk["uuid"])
    assert refused(client.call, "VM.assert_can_migrate", vm, dest, True, {}, {}, {}) == \
        ["VDI_NOT_IN_MAP", vdi]
    vif = client.call("VM.get_VIFs", vm)[0]
    assert refused(client.call, "VM.assert_can_migrate", vm, dest, True, {vdi: shared},
                   {vif: mgmt}, {}) == \
        ["OPERATION_NOT_ALLOWED", "VIF mapping is not allowed for intra-pool migration -all "
                                  "VIFs must be on the same network"]
    wrong_local = local_sr(client, hosts["xcp-ng-sim-3"])
    assert refused(client.call, "VM.assert_can_migrate", vm, dest, True,
                   {vdi: wrong_local}, {}, {}) == ["VM_REQUIRES_SR", vm, wrong_local]
    client.call("VM.assert_can_migrate", vm, dest, True, {vdi: shared}, {}, {})


class CopyRecorder(RecordOnlyDriver):
    """A driver that remembers the content copies asked of it."""

    def __init__(self) -> None:
        self.copies: list[tuple[str, str]] = []

    def vdi_copy(self, ctx, src, src_record, dst, dst_record, **kwargs):
        self.copies.append((src_record["uuid"], dst_record["SR"]))
        return super().vdi_copy(ctx, src, src_record, dst, dst_record, **kwargs)


def test_storage_motion_between_local_srs(pool3: Simulator, client: XapiClient):
    recorder = CopyRecorder()
    pool3.storage.register("ext", recorder)
    hosts = hosts_by_name(client)
    src_host, dst_host = hosts["xcp-ng-sim"], hosts["xcp-ng-sim-3"]
    src_sr, dst_sr = local_sr(client, src_host), local_sr(client, dst_host)
    vm = make_vm(client, "moving house")
    (root,) = disks(client, vm)
    root_vdi = client.call("VDI.get_by_uuid", root["uuid"])
    # Put the root disk on the first host's local SR (a copy), then start there.
    local_copy = client.call_async("VDI.copy", root_vdi, src_sr)
    vbd = client.call("VM.get_VBDs", vm)[0]
    client.call("VBD.destroy", vbd)
    client.call("VBD.create", {"VM": vm, "VDI": local_copy, "userdevice": "0",
                               "bootable": True, "mode": "RW", "type": "Disk",
                               "empty": False, "other_config": {}, "qos_algorithm_type": "",
                               "qos_algorithm_params": {}})
    client.call("VDI.set_name_label", local_copy, "root of moving house")
    snap = client.call("VDI.snapshot", local_copy, {})
    client.call("VM.start", vm, False, False)
    assert client.call("VM.get_resident_on", vm) == src_host
    mgmt = client.call("network.get_by_name_label", "Pool-wide network associated with eth0")[0]
    dest = client.call("host.migrate_receive", dst_host, mgmt, {})
    copied = [client.call("VDI.get_uuid", local_copy), client.call("VDI.get_uuid", snap)]
    recorder.copies.clear()
    new_vm = client.call_async("VM.migrate_send", vm, dest, True, {local_copy: dst_sr}, {},
                               {})
    assert new_vm == vm
    rec = client.call("VM.get_record", vm)
    assert rec["resident_on"] == dst_host and rec["power_state"] == "Running"
    (moved,) = disks(client, vm)
    assert moved["SR"] == dst_sr and moved["name_label"] == "root of moving house"
    assert refused(client.call, "VDI.get_record", local_copy)[0] == "HANDLE_INVALID"
    # The content went through the SR driver (file-backed drivers copy the bytes).
    assert recorder.copies == [(copied[0], dst_sr), (copied[1], dst_sr)]
    # The disk's snapshot followed it and still hangs off it.
    moved_ref = client.call("VDI.get_by_uuid", moved["uuid"])
    snaps = client.call("VDI.get_snapshots", moved_ref)
    assert len(snaps) == 1 and client.call("VDI.get_SR", snaps[0]) == dst_sr
    assert refused(client.call, "VDI.get_record", snap)[0] == "HANDLE_INVALID"
    # only the unmanaged base copy of the snapshot chain is left, for SM's GC
    # Nothing of the VM is left there: only the unmanaged base copy of its
    # snapshot chain (for SM's GC) and the seeded compute VM's own root disk.
    left = [client.call("VDI.get_record", v) for v in client.call("SR.get_VDIs", src_sr)]
    assert [r["name_label"] for r in left if r["managed"]] == ["xhost compute VM root"]


def test_migrate_send_of_a_halted_vm_only_moves_disks(pool3: Simulator, client: XapiClient):
    hosts = hosts_by_name(client)
    vm = make_vm(client, "parked", nic=False)
    (root,) = disks(client, vm)
    vdi = client.call("VDI.get_by_uuid", root["uuid"])
    target = local_sr(client, hosts["xcp-ng-sim-2"])
    mgmt = client.call("network.get_by_name_label", "Pool-wide network associated with eth0")[0]
    dest = client.call("host.migrate_receive", hosts["xcp-ng-sim-2"], mgmt, {})
    client.call_async("VM.migrate_send", vm, dest, False, {vdi: target}, {}, {})
    assert client.call("VM.get_power_state", vm) == "Halted"
    assert [d["SR"] for d in disks(client, vm)] == [target]
    client.call("VM.start", vm, False, False)
    assert client.call("VM.get_resident_on", vm) == hosts["xcp-ng-sim-2"]


def test_cross_pool_destination_is_reported(pool3: Simulator, client: XapiClient):
    vm = make_vm(client, "far away", nic=False)
    (root,) = disks(client, vm)
    vdi = client.call("VDI.get_by_uuid", root["uuid"])
    dest = {"SM": "http://192.0.2.9/services/SM", "host": "OpaqueRef:elsewhere",
            "xenops": "http://192.0.2.9/services/xenops", "session_id": "OpaqueRef:x",
            "master": "http://192.0.2.9"}
    details = refused(client.call, "VM.assert_can_migrate", vm, dest, True,
                      {vdi: root["SR"]}, {}, {})
    assert details[:4] == ["VM_MIGRATE_FAILED", vm, "OpaqueRef:NULL", "OpaqueRef:elsewhere"]
    assert "cross-pool" in details[4]


def test_evacuate(pool3: Simulator, client: XapiClient):
    from xhost.sim.compute import compute_vm

    hosts = hosts_by_name(client)
    busy = hosts["xcp-ng-sim"]
    # the seeded compute VM lives on the master's local storage: it cannot leave
    client.call("VM.hard_shutdown", compute_vm(pool3))
    movers = [make_vm(client, f"mover {i}") for i in range(3)]
    for vm in movers:
        client.call("VM.start_on", vm, busy, False, False)
    assert client.call("host.get_vms_which_prevent_evacuation", busy) == {}
    client.call("host.assert_can_evacuate", busy)
    client.call_async("host.evacuate", busy)
    residents = {client.call("VM.get_resident_on", vm) for vm in movers}
    assert busy not in residents and residents <= set(hosts.values())
    assert client.call("host.get_resident_VMs", busy) == [client.call("host.get_control_domain",
                                                                      busy)]
    # A VM with a disk on the host's local storage cannot leave it.
    stuck = make_vm(client, "stuck", nic=False)
    sr = local_sr(client, busy)
    vdi = client.call("VDI.create", {"SR": sr, "virtual_size": str(1 << 30), "type": "user",
                                     "sharable": False, "read_only": False,
                                     "other_config": {}, "name_label": "local"})
    client.call("VBD.create", {"VM": stuck, "VDI": vdi, "userdevice": "1", "bootable": False,
                               "mode": "RW", "type": "Disk", "empty": False,
                               "other_config": {}, "qos_algorithm_type": "",
                               "qos_algorithm_params": {}})
    client.call("VM.start", stuck, False, False)
    assert client.call("host.get_vms_which_prevent_evacuation", busy) == \
        {stuck: ["VM_REQUIRES_SR", stuck, sr]}
    assert refused(client.call, "host.assert_can_evacuate", busy) == \
        ["CANNOT_EVACUATE_HOST", f"VM_REQUIRES_SR,{stuck},{sr}"]
    assert refused(client.call_async, "host.evacuate", busy) == ["VM_REQUIRES_SR", stuck, sr]
