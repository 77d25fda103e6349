"""Volumes given as existing VDIs; destroying an instance's disks."""
from __future__ import annotations

import pytest

from xhost.backends.storage_sr.errors import InvalidMountpoint, StorageError, UnsupportedVolume
from xhost.compute.api import instance_from_record
from xhost.objects import Flavor

MiB = 1024 ** 2


def volume(env, name="vol1"):
    vdi = env.xapi.call("VDI.create", {
        "name_label": name, "SR": env.sr("Local storage"), "virtual_size": str(16 * MiB),
        "type": "user", "sharable": False, "read_only": False, "other_config": {}})
    return vdi, env.xapi.call("VDI.get_uuid", vdi)


@pytest.fixture
def server(env):
    compute = env.compute()
    server = compute.create_server("vm1", "plain", Flavor("t", 1, 256, 1, 0, 0))
    rec = env.xapi.call("VM.get_record", server.vm_ref)
    return compute, server, instance_from_record(rec)


def vbd_at(env, vm, userdevice):
    return [(ref, rec) for ref, rec in env.xapi.call("VBD.get_all_records").items()
            if rec["VM"] == vm and rec["userdevice"] == userdevice]


def test_attach_to_running_vm_plugs_and_detach_keeps_the_vdi(env, server):
    _, srv, instance = server
    vdi, uuid = volume(env)
    ctx = env.ctx()
    vbd = env.plugins.storage_attach_volume(ctx, instance, srv.vm_ref,
                                            {"driver_volume_type": "vdi", "vdi_uuid": uuid},
                                            "/dev/xvdf")
    rec = env.xapi.call("VBD.get_record", vbd)
    assert (rec["userdevice"], rec["mode"], rec["currently_attached"], rec["VDI"]) == (
        "5", "RW", True, vdi)
    assert rec["other_config"] == {"osvol": "True"}
    assert env.plugins.storage_detach_volume(ctx, instance, srv.vm_ref, "/dev/xvdf") is True
    assert vbd_at(env, srv.vm_ref, "5") == []
    assert env.xapi.call("VDI.get_uuid", vdi) == uuid
    # Detaching what is not attached is not an error.
    assert env.plugins.storage_detach_volume(ctx, instance, srv.vm_ref, "xvdf") is True


def test_attach_to_halted_vm_and_nested_data_form(env, server):
    _, srv, instance = server
    env.xapi.call("VM.hard_shutdown", srv.vm_ref)
    _, uuid = volume(env)
    vbd = env.plugins.storage_attach_volume(env.ctx(), instance, srv.vm_ref,
                                            {"driver_volume_type": "vdi",
                                             "data": {"vdi_uuid": uuid}}, "sdc")
    rec = env.xapi.call("VBD.get_record", vbd)
    assert (rec["userdevice"], rec["currently_attached"]) == ("2", False)


@pytest.mark.parametrize("info, mountpoint, error, message", [
    ({"driver_volume_type": "iscsi", "data": {}}, "/dev/xvdb", UnsupportedVolume,
     "volume connection type 'iscsi' is not supported by storage backend 'sr'"),
    ({"driver_volume_type": "vdi"}, "/dev/xvdb", StorageError, "needs 'vdi_uuid'"),
    ({"driver_volume_type": "vdi", "vdi_uuid": "00000000-0000-0000-0000-000000000000"},
     "/dev/xvdb", StorageError, "does not exist"),
    ({"driver_volume_type": "vdi", "vdi_uuid": "x"}, "/dev/xvda", InvalidMountpoint,
     "xvda\\) is the instance's root disk"),
    ({"driver_volume_type": "vdi", "vdi_uuid": "x"}, "/dev/nvme0n1", InvalidMountpoint,
     "is not a guest disk device"),
])
def test_bad_volumes_are_refused_clearly(env, server, info, mountpoint, error, message):
    _, srv, instance = server
    before = env.leftovers()
    with pytest.raises(error, match=message):
        env.plugins.storage_attach_volume(env.ctx(), instance, srv.vm_ref, info, mountpoint)
    assert env.leftovers() == before


def test_busy_mountpoint_is_refused(env, server):
    _, srv, instance = server
    _, first = volume(env, "vol1")
    _, second = volume(env, "vol2")
    ctx = env.ctx()
    env.plugins.storage_attach_volume(ctx, instance, srv.vm_ref,
                                      {"driver_volume_type": "vdi", "vdi_uuid": first}, "xvdb")
    before = env.leftovers()
    with pytest.raises(StorageError, match="vm1 already has a disk at /dev/xvdb \\(device 1\\); "
                                           "choose a free mountpoint"):
        env.plugins.storage_attach_volume(ctx, instance, srv.vm_ref,
                                          {"driver_volume_type": "vdi", "vdi_uuid": second},
                                          "/dev/xvdb")
    assert env.leftovers() == before


def test_detach_refuses_an_instance_disk(env, server):
    compute, srv, instance = server
    env.xapi.call("VM.hard_shutdown", srv.vm_ref)
    ctx = env.ctx()
    swap = env.plugins.storage_create_swap_disk(ctx, env.instance(swap_mb=8), env.sr("Local storage"))
    env.xapi.call("VBD.create", {
        "VM": srv.vm_ref, "VDI": swap[0].vdi_ref, "userdevice": "2", "bootable": False,
        "mode": "RW", "type": "Disk", "empty": False, "other_config": {},
        "qos_algorithm_type": "", "qos_algorithm_params": {}})
    with pytest.raises(StorageError, match="is one of its own disks, not a volume"):
        env.plugins.storage_detach_volume(ctx, instance, srv.vm_ref, "/dev/xvdc")


def test_destroy_takes_the_instance_disks_and_nothing_else(env, server):
    compute, srv, instance = server
    vdi, uuid = volume(env)
    env.plugins.storage_attach_volume(env.ctx(), instance, srv.vm_ref,
                                      {"driver_volume_type": "vdi", "vdi_uuid": uuid}, "xvdb")
    # An instance disk left plugged into dom0 by a crashed operation.
    ctx = env.ctx()
    instance.flavor.ephemeral_gb = 1
    (eph,) = env.plugins.storage_create_ephemeral_disks(ctx, instance, env.sr("Local storage"))
    dom0_vm = env.xapi.call("host.get_control_domain", env.connection.host_ref)
    stray = env.xapi.call("VBD.create", {
        "VM": dom0_vm, "VDI": eph.vdi_ref, "userdevice": "autodetect", "bootable": False,
        "mode": "RW", "type": "Disk", "empty": False,
        "other_config": {"xhost_dom0_attach": "crashed"},
        "qos_algorithm_type": "", "qos_algorithm_params": {}})
    env.xapi.call("VBD.plug", stray)
    cached = env.xapi.call("VDI.get_by_name_label", "Glance Image plain")
    assert compute.delete_server("vm1") is True
    mine = [r for r in env.xapi.call("VDI.get_all_records").values()
            if r["other_config"].get("nova_instance_uuid") == instance.uuid]
    assert mine == []
    assert env.xapi.call("VDI.get_uuid", vdi) == uuid  # the volume survives
    assert env.xapi.call("VDI.get_by_name_label", "Glance Image plain") == cached
    assert instance.uuid in [uuid for uuid, _ in env.imagecache.file_calls]
    left = env.leftovers()
    assert left.dom0_devices == [] and left.loops == []
    # Again, with nothing left: fine.
    assert env.plugins.storage_destroy_disks(env.ctx(), instance, None) is True
