"""File-based VHD SRs through the real XenAPI client: files on disk, SM's
clone/snapshot semantics, SR.scan, garbage collection, capacity, chains."""
from __future__ import annotations

import os
import time

from xhost.dom0 import xhost_vhd
from xhost.testing.simstorage import GiB, MiB, export, put, sr_path, vdi_record, wait_task


def local_sr(x):
    return x.SR.get_by_name_label("Local storage")[0]


def session_of(xapi_session):
    return xapi_session._session


def write(simulator, xapi_session, vdi, data: bytes, offset_blocks: int = 0) -> None:
    """Write ``data`` at the start of ``vdi`` through /import_raw_vdi."""
    x = xapi_session.xenapi
    task = x.task.create("write", "")
    reply = put(simulator.url, session_of(xapi_session), vdi, data, task_id=task)
    assert reply.status == 200
    rec = wait_task(x, task)
    assert rec["status"] == "success", rec["error_info"]
    x.task.destroy(task)


def vhd_file(simulator, x, vdi):
    rec = x.VDI.get_record(vdi)
    return sr_path(simulator, x.SR.get_uuid(rec["SR"])) / f"{rec['location']}.vhd"


def test_seeded_srs_have_directories_and_paths(simulator, x):
    pool = x.pool.get_all()[0]
    sr = local_sr(x)
    assert x.pool.get_default_SR(pool) == sr
    uuid = x.SR.get_uuid(sr)
    config = x.PBD.get_device_config(x.SR.get_PBDs(sr)[0])
    assert config["path"] == f"/var/run/sr-mount/{uuid}" and config["device"]
    assert (simulator.state_dir / "dom0" / "var/run/sr-mount" / uuid).is_dir()

    nfs = x.SR.get_by_name_label("NFS virtual disk storage")[0]
    assert x.SR.get_type(nfs) == "nfs" and x.SR.get_shared(nfs)
    nfs_config = x.PBD.get_device_config(x.SR.get_PBDs(nfs)[0])
    assert {"server", "serverpath", "path"} <= set(nfs_config)
    mount = simulator.state_dir / "dom0" / nfs_config["path"].lstrip("/")
    assert mount.is_symlink()
    assert mount.resolve() == (simulator.state_dir / "nfs-exports" / x.SR.get_uuid(nfs))

    lvm = x.SR.get_by_name_label("Local LVM storage")[0]
    lvm_config = x.PBD.get_device_config(x.SR.get_PBDs(lvm)[0])
    assert "path" not in lvm_config and lvm_config["device"].startswith("/dev/")
    assert "vdi_type" not in x.SR.get_sm_config(lvm) and x.SR.get_type(lvm) == "lvm"
    sm = {r["type"]: r for r in x.SM.get_all_records().values()}
    assert "VDI_SNAPSHOT" in sm["ext"]["capabilities"]
    assert "THIN_PROVISIONING" in sm["nfs"]["capabilities"]


def test_vdi_create_makes_a_sparse_dynamic_vhd(simulator, x):
    sr = local_sr(x)
    vdi = x.VDI.create(vdi_record(sr, 5 * GiB + 1))
    rec = x.VDI.get_record(vdi)
    # SM rounds VHD sizes up to its 2 MiB blocks.
    assert rec["virtual_size"] == str(5 * GiB + 2 * MiB)
    assert rec["location"] == rec["uuid"] and rec["sm_config"] == {"vdi_type": "vhd"}
    path = vhd_file(simulator, x, vdi)
    info = xhost_vhd.info(path)
    assert info["disk_type"] == "dynamic" and info["virtual_size"] == 5 * GiB + 2 * MiB
    assert info["allocated_blocks"] == 0
    assert int(rec["physical_utilisation"]) == path.stat().st_size < 64 * 1024
    assert path.stat().st_blocks * 512 < 64 * 1024
    x.VDI.destroy(vdi)
    assert not path.exists()


def test_snapshot_and_clone_make_a_hidden_base_copy(simulator, xapi_session, x, fail):
    sr = local_sr(x)
    vdi = x.VDI.create(vdi_record(sr, 64 * MiB, "data", other_config={"k": "v"}))
    uuid = x.VDI.get_uuid(vdi)
    write(simulator, xapi_session, vdi, b"A" * MiB)
    snap = x.VDI.snapshot(vdi, {})
    base_uuid = x.VDI.get_sm_config(vdi)["vhd-parent"]
    base = x.VDI.get_by_uuid(base_uuid)
    srec, brec = x.VDI.get_record(snap), x.VDI.get_record(base)
    assert srec["is_a_snapshot"] and srec["snapshot_of"] == vdi
    assert srec["sm_config"]["vhd-parent"] == base_uuid
    assert srec["name_label"] == "data" and srec["other_config"] == {"k": "v"}
    assert snap in x.VDI.get_snapshots(vdi)
    assert brec["name_label"] == "base copy" and brec["read_only"] and not brec["managed"]
    assert "vhd-parent" not in brec["sm_config"] and not brec["is_a_snapshot"]
    assert brec["allowed_operations"] == ["forget"]
    assert fail(x.VDI.destroy, base) == ["VDI_NOT_MANAGED", base]
    assert fail(x.VDI.clone, base, {}) == ["VDI_NOT_MANAGED", base]
    directory = sr_path(simulator, x.SR.get_uuid(sr))
    assert xhost_vhd.get_hidden(directory / f"{base_uuid}.vhd")
    leaf = xhost_vhd.info(directory / f"{uuid}.vhd")
    assert leaf["disk_type"] == "differencing" and leaf["allocated_blocks"] == 0
    assert leaf["parent_name"] == f"{base_uuid}.vhd"
    # Virtual allocation counts user-visible disks only.
    assert int(x.SR.get_physical_utilisation(sr)) >= MiB

    # A second snapshot of the unmodified (empty) leaf links to the same base.
    snap2 = x.VDI.snapshot(vdi, {})
    assert x.VDI.get_sm_config(snap2)["vhd-parent"] == base_uuid
    assert x.VDI.get_sm_config(vdi)["vhd-parent"] == base_uuid
    # After new writes a snapshot stacks a new base on the old one.
    write(simulator, xapi_session, vdi, b"B" * 4096)
    clone = x.VDI.clone(vdi, {})
    base2 = x.VDI.get_sm_config(vdi)["vhd-parent"]
    assert base2 != base_uuid and x.VDI.get_sm_config(clone)["vhd-parent"] == base2
    assert not x.VDI.get_is_a_snapshot(clone)
    assert x.VDI.get_sm_config(x.VDI.get_by_uuid(base2))["vhd-parent"] == base_uuid
    session = session_of(xapi_session)
    assert export(simulator.url, session, snap)[:MiB] == b"A" * MiB
    assert export(simulator.url, session, clone)[:4096] == b"B" * 4096
    assert export(simulator.url, session, snap2)[:4096] == b"A" * 4096


def test_single_snapshot_returns_the_base(simulator, xapi_session, x):
    vdi = x.VDI.create(vdi_record(local_sr(x), 8 * MiB))
    write(simulator, xapi_session, vdi, b"s" * 4096)
    snap = x.VDI.snapshot(vdi, {"type": "single"})
    assert x.VDI.get_sm_config(vdi)["vhd-parent"] == x.VDI.get_uuid(snap)
    assert x.VDI.get_is_a_snapshot(snap) and x.VDI.get_read_only(snap)
    assert xhost_vhd.get_hidden(vhd_file(simulator, x, snap))


def test_chain_depth_is_limited_to_30(simulator, xapi_session, x, fail):
    vdi = x.VDI.create(vdi_record(local_sr(x), 4 * MiB))
    for i in range(29):
        write(simulator, xapi_session, vdi, bytes([i + 1]) * 4096)
        x.VDI.snapshot(vdi, {})
    path = vhd_file(simulator, x, vdi)
    with xhost_vhd.open_chain(path, search_dirs=[path.parent]) as leaf:
        assert len(leaf.chain()) == 30
    write(simulator, xapi_session, vdi, b"\xff" * 4096)
    assert fail(x.VDI.snapshot, vdi, {}) == ["SR_BACKEND_FAILURE_109", "",
                                            "The snapshot chain is too long", ""]
    assert fail(x.VDI.clone, vdi, {})[0] == "SR_BACKEND_FAILURE_109"


def test_destroying_a_snapshot_coalesces_the_leaf_on_scan(simulator, xapi_session, x):
    sr = local_sr(x)
    vdi = x.VDI.create(vdi_record(sr, 16 * MiB))
    write(simulator, xapi_session, vdi, b"1" * (3 * MiB))
    snap = x.VDI.snapshot(vdi, {})
    write(simulator, xapi_session, vdi, b"2" * 4096)
    base = x.VDI.get_sm_config(vdi)["vhd-parent"]
    directory = sr_path(simulator, x.SR.get_uuid(sr))
    before = export(simulator.url, session_of(xapi_session), vdi)
    x.VDI.destroy(snap)
    assert (directory / f"{base}.vhd").exists()  # the GC has not run yet
    x.SR.scan(sr)
    assert "vhd-parent" not in x.VDI.get_sm_config(vdi)
    assert not (directory / f"{base}.vhd").exists()
    assert fail_uuid(x, base)
    info = xhost_vhd.info(vhd_file(simulator, x, vdi))
    assert info["disk_type"] == "dynamic" and not info["hidden"]
    assert export(simulator.url, session_of(xapi_session), vdi) == before
    assert int(x.VDI.get_physical_utilisation(vdi)) == vhd_file(simulator, x, vdi).stat().st_size


def fail_uuid(x, uuid) -> bool:
    try:
        x.VDI.get_by_uuid(uuid)
    except Exception as exc:  # XenAPI.Failure
        return exc.details[0] == "UUID_INVALID"
    return False


def test_background_gc_coalesces_a_middle_base(simulator, xapi_session, x):
    simulator.storage_runtime.gc_delay = 0.05
    sr = local_sr(x)
    vdi = x.VDI.create(vdi_record(sr, 16 * MiB))
    write(simulator, xapi_session, vdi, b"a" * (2 * MiB))
    s1 = x.VDI.snapshot(vdi, {})
    b1 = x.VDI.get_sm_config(vdi)["vhd-parent"]
    write(simulator, xapi_session, vdi, b"b" * MiB)
    s2 = x.VDI.snapshot(vdi, {})
    b2 = x.VDI.get_sm_config(vdi)["vhd-parent"]
    assert x.VDI.get_sm_config(x.VDI.get_by_uuid(b2))["vhd-parent"] == b1
    session = session_of(xapi_session)
    want_leaf, want_s2 = export(simulator.url, session, vdi), export(simulator.url, session, s2)
    x.VDI.destroy(s1)  # b1 is left with one child, the hidden b2: coalesce b2 into b1
    deadline = time.monotonic() + 10
    while not fail_uuid(x, b2) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fail_uuid(x, b2)
    assert x.VDI.get_sm_config(vdi)["vhd-parent"] == b1
    assert x.VDI.get_sm_config(s2)["vhd-parent"] == b1
    assert export(simulator.url, session, vdi) == want_leaf
    assert export(simulator.url, session, s2) == want_s2
    path = vhd_file(simulator, x, vdi)
    assert xhost_vhd.check(path, parents=True, search_dirs=[path.parent])


def test_gc_can_be_switched_off(simulator, xapi_session, x):
    sr = local_sr(x)
    x.SR.add_to_other_config(sr, "coalesce", "false")
    vdi = x.VDI.create(vdi_record(sr, 8 * MiB))
    write(simulator, xapi_session, vdi, b"c" * 4096)
    snap = x.VDI.snapshot(vdi, {})
    base = x.VDI.get_sm_config(vdi)["vhd-parent"]
    x.VDI.destroy(snap)
    x.SR.scan(sr)
    assert x.VDI.get_sm_config(vdi)["vhd-parent"] == base
    x.SR.remove_from_other_config(sr, "coalesce")
    x.VDI.add_to_other_config(vdi, "leaf-coalesce", "false")
    x.SR.scan(sr)
    assert x.VDI.get_sm_config(vdi)["vhd-parent"] == base
    x.VDI.remove_from_other_config(vdi, "leaf-coalesce")
    x.SR.scan(sr)
    assert "vhd-parent" not in x.VDI.get_sm_config(vdi)


def test_scan_discovers_forgets_and_reports_broken_files(simulator, xapi_session, x, fail):
    sr = local_sr(x)
    directory = sr_path(simulator, x.SR.get_uuid(sr))
    parent_uuid, child_uuid = "11111111-2222-4333-8444-555555555555", \
        "66666666-7777-4888-8999-aaaaaaaaaaaa"
    # What a dom0 script does: files named <uuid>.vhd, the child linked to its parent.
    xhost_vhd.create_dynamic(directory / f"{parent_uuid}.vhd", 32 * MiB)
    with xhost_vhd.open_vhd(directory / f"{parent_uuid}.vhd", writable=True) as vhd:
        vhd.write(0, b"P" * 8192)
    xhost_vhd.create_differencing(directory / f"{child_uuid}.vhd",
                                  directory / f"{parent_uuid}.vhd")
    (directory / "staging-0.vhd").write_bytes(b"not a uuid-named file: ignored")
    x.SR.scan(sr)
    child, parent = x.VDI.get_by_uuid(child_uuid), x.VDI.get_by_uuid(parent_uuid)
    crec, prec = x.VDI.get_record(child), x.VDI.get_record(parent)
    assert crec["sm_config"]["vhd-parent"] == parent_uuid and crec["location"] == child_uuid
    assert crec["virtual_size"] == str(32 * MiB) and crec["managed"]
    assert prec["read_only"] and "vhd-parent" not in prec["sm_config"]
    assert export(simulator.url, session_of(xapi_session), child)[:8192] == b"P" * 8192
    # A file that vanished is forgotten.
    other = x.VDI.create(vdi_record(sr, 4 * MiB))
    vhd_file(simulator, x, other).unlink()
    x.SR.scan(sr)
    assert fail(x.VDI.get_record, other)[0] == "HANDLE_INVALID"
    # A broken chain fails the scan, naming the file.
    (directory / f"{parent_uuid}.vhd").rename(directory / "moved-away.vhd")
    error = fail(x.SR.scan, sr)
    assert error[0] == "SR_BACKEND_FAILURE_40" and child_uuid in error[2]


def test_thin_sr_full(simulator, xapi_session, x, fail):
    sr = local_sr(x)
    used = int(x.SR.get_physical_utilisation(sr))
    x.SR.set_physical_size(sr, str(used + 3 * MiB))
    vdi = x.VDI.create(vdi_record(sr, 100 * GiB))  # thin: the virtual size may exceed
    task = x.task.create("full", "")
    reply = put(simulator.url, session_of(xapi_session), vdi, os.urandom(8 * MiB),
                task_id=task)
    assert reply.status == 200
    rec = wait_task(x, task)
    assert rec["status"] == "failure" and rec["error_info"][0] == "SR_FULL"
    requested, available = map(int, rec["error_info"][1:])
    assert requested > available >= 0
    x.SR.set_physical_size(sr, str(used + 8 * 1024))
    assert fail(x.VDI.create, vdi_record(sr, 100 * GiB))[0] == "SR_FULL"


def test_resize_grows_the_vhd_and_keeps_data(simulator, xapi_session, x, fail):
    vdi = x.VDI.create(vdi_record(local_sr(x), 4 * MiB))
    write(simulator, xapi_session, vdi, b"r" * MiB)
    x.VDI.resize(vdi, str(100 * MiB + 1))
    assert x.VDI.get_virtual_size(vdi) == str(102 * MiB)
    info = xhost_vhd.info(vhd_file(simulator, x, vdi))
    assert info["virtual_size"] == 102 * MiB
    data = export(simulator.url, session_of(xapi_session), vdi)
    assert len(data) == 102 * MiB and data[:MiB] == b"r" * MiB and data[MiB:] == bytes(101 * MiB)
    assert fail(x.VDI.resize, vdi, str(MiB))[0] == "SR_BACKEND_FAILURE_79"


def test_copy_full_into_and_with_base(simulator, xapi_session, x, fail):
    sr = local_sr(x)
    session = session_of(xapi_session)
    vdi = x.VDI.create(vdi_record(sr, 16 * MiB))
    write(simulator, xapi_session, vdi, os.urandom(5 * MiB))
    snap = x.VDI.snapshot(vdi, {})
    copy = x.VDI.copy(vdi, sr)
    assert "vhd-parent" not in x.VDI.get_sm_config(copy)
    assert xhost_vhd.info(vhd_file(simulator, x, copy))["disk_type"] == "dynamic"
    assert export(simulator.url, session, copy) == export(simulator.url, session, vdi)
    # Incremental: the changes since the snapshot go into a disk holding the snapshot.
    write(simulator, xapi_session, vdi, b"new" * 1000)
    replica = x.VDI.copy(snap, sr)
    assert x.VDI.copy(vdi, "OpaqueRef:NULL", snap, replica) == replica
    assert export(simulator.url, session, replica) == export(simulator.url, session, vdi)
    # base + fresh SR: only the changed blocks land in the new disk.
    delta = x.VDI.copy(vdi, sr, snap)
    assert xhost_vhd.info(vhd_file(simulator, x, delta))["allocated_blocks"] == 1
    # Across SR types: VHD -> raw LVM volume and -> the shared NFS SR.
    for name in ("Local LVM storage", "NFS virtual disk storage"):
        other = x.SR.get_by_name_label(name)[0]
        moved = x.VDI.copy(vdi, other)
        assert x.VDI.get_SR(moved) == other
        assert export(simulator.url, session, moved)[:16 * MiB] == \
            export(simulator.url, session, vdi)
    ro = x.VDI.create(vdi_record(sr, 16 * MiB, read_only=True))
    assert fail(x.VDI.copy, vdi, "OpaqueRef:NULL", "OpaqueRef:NULL", ro) == \
        ["VDI_READONLY", ro]


def test_copy_failing_for_space_leaves_nothing_behind(simulator, xapi_session, x, fail):
    sr = local_sr(x)
    vdi = x.VDI.create(vdi_record(sr, 16 * MiB))
    write(simulator, xapi_session, vdi, os.urandom(6 * MiB))
    before = set(x.SR.get_VDIs(sr))
    used = int(x.SR.get_physical_utilisation(sr))
    x.SR.set_physical_size(sr, str(used + 3 * MiB))
    assert fail(x.VDI.copy, vdi, sr)[0] == "SR_FULL"
    assert set(x.SR.get_VDIs(sr)) == before
    files = {p.name for p in sr_path(simulator, x.SR.get_uuid(sr)).iterdir()}
    assert files == {f"{x.VDI.get_location(v)}.vhd" for v in before}


def test_destroy_refused_while_attached_or_streaming(simulator, xapi_session, x, new_vm, fail):
    import http.client
    import urllib.parse

    sr = local_sr(x)
    vdi = x.VDI.create(vdi_record(sr, 256 * MiB))
    write(simulator, xapi_session, vdi, os.urandom(4 * MiB))
    parts = urllib.parse.urlsplit(simulator.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    conn.request("GET", "/export_raw_vdi?" + urllib.parse.urlencode(
        {"session_id": session_of(xapi_session), "vdi": vdi}))
    resp = conn.getresponse()
    assert resp.status == 200
    resp.read(MiB)  # the export is under way and blocked on our socket
    assert fail(x.VDI.destroy, vdi) == ["VDI_IN_USE", vdi, "destroy"]
    assert fail(x.VDI.resize, vdi, str(512 * MiB)) == ["VDI_IN_USE", vdi, "resize"]
    resp.close()
    conn.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            x.VDI.destroy(vdi)
            break
        except Exception:
            time.sleep(0.05)
    assert fail(x.VDI.get_record, vdi)[0] == "HANDLE_INVALID"
    # Attached to a running VM: refused too.
    vm = new_vm("holder", nic=False)
    disk = x.VDI.create(vdi_record(sr, 8 * MiB))
    x.VBD.create({"VM": vm, "VDI": disk, "userdevice": "1", "bootable": False, "mode": "RW",
                  "type": "Disk", "empty": False, "other_config": {},
                  "qos_algorithm_type": "", "qos_algorithm_params": {}})
    x.VM.start(vm, False, False)
    assert fail(x.VDI.destroy, disk) == ["VDI_IN_USE", disk, "destroy"]


def test_dropped_fixed_vhd_is_read_and_written(simulator, xapi_session, x):
    sr = local_sr(x)
    directory = sr_path(simulator, x.SR.get_uuid(sr))
    uuid = "f1f2f3f4-0000-4000-8000-000000000001"
    xhost_vhd.create_fixed(directory / f"{uuid}.vhd", 6 * MiB)
    x.SR.scan(sr)
    vdi = x.VDI.get_by_uuid(uuid)
    write(simulator, xapi_session, vdi, b"fixed!" * 1000)
    assert export(simulator.url, session_of(xapi_session), vdi)[:6000] == b"fixed!" * 1000
    assert xhost_vhd.info(directory / f"{uuid}.vhd")["disk_type"] == "fixed"
    snap = x.VDI.snapshot(vdi, {})  # a fixed base under differencing children
    assert export(simulator.url, session_of(xapi_session), snap)[:6] == b"fixed!"
