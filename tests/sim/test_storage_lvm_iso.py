"""Raw LVM volumes and ISO libraries through the real XenAPI client."""
from __future__ import annotations

import os
import subprocess

from xhost.testing.simstorage import GiB, MiB, export, put, vdi_record, wait_task


def lvm_sr(x):
    return x.SR.get_by_name_label("Local LVM storage")[0]


def test_lvm_vdis_are_thick_raw_volumes_without_vhd_files(simulator, xapi_session, x, fail):
    sr = lvm_sr(x)
    uuid = x.SR.get_uuid(sr)
    vdi = x.VDI.create(vdi_record(sr, 10 * MiB + 1))
    rec = x.VDI.get_record(vdi)
    assert rec["virtual_size"] == rec["physical_utilisation"] == str(12 * MiB)  # 4 MiB extents
    assert rec["sm_config"] == {"vdi_type": "aio"}
    volume = simulator.state_dir / "dom0" / "dev" / f"VG_XenStorage-{uuid}" / f"LV-{rec['uuid']}"
    assert volume.stat().st_size == 12 * MiB and volume.stat().st_blocks == 0
    assert not (simulator.state_dir / "dom0" / "var/run/sr-mount" / uuid).exists()
    assert not list(simulator.state_dir.rglob(f"{rec['uuid']}.vhd"))

    session = xapi_session._session
    task = x.task.create("lvm", "")
    payload = os.urandom(3 * MiB)
    assert put(simulator.url, session, vdi, payload, task_id=task).status == 200
    assert wait_task(x, task)["status"] == "success"
    with open(volume, "rb") as f:
        assert f.read(3 * MiB) == payload
    snap = x.VDI.snapshot(vdi, {})
    srec = x.VDI.get_record(snap)
    assert srec["is_a_snapshot"] and "vhd-parent" not in srec["sm_config"]
    assert export(simulator.url, session, snap)[:3 * MiB] == payload
    x.VDI.resize(vdi, str(20 * MiB))
    assert volume.stat().st_size == 20 * MiB
    # Thick: the virtual sizes are reserved against physical_size.
    x.SR.set_physical_size(sr, str(int(x.SR.get_virtual_allocation(sr)) + 8 * MiB))
    assert fail(x.VDI.create, vdi_record(sr, 16 * MiB)) == ["SR_FULL", str(16 * MiB),
                                                            str(8 * MiB)]
    x.VDI.destroy(snap)
    x.VDI.destroy(vdi)
    assert not volume.exists()


def test_lvm_scan_picks_up_and_forgets_volumes(simulator, x, fail):
    sr = lvm_sr(x)
    directory = simulator.state_dir / "dom0" / "dev" / f"VG_XenStorage-{x.SR.get_uuid(sr)}"
    uuid = "0a0b0c0d-1111-4222-8333-444455556666"
    with open(directory / f"LV-{uuid}", "wb") as f:
        f.truncate(8 * MiB)
    x.SR.scan(sr)
    vdi = x.VDI.get_by_uuid(uuid)
    assert x.VDI.get_virtual_size(vdi) == str(8 * MiB)
    (directory / f"LV-{uuid}").unlink()
    x.SR.scan(sr)
    assert fail(x.VDI.get_record, vdi)[0] == "HANDLE_INVALID"


def test_tools_iso_is_a_real_read_only_iso(simulator, xapi_session, x, fail):
    tools = x.SR.get_by_name_label("XCP-ng Tools")[0]
    iso = x.VDI.get_by_name_label("guest-tools.iso")[0]
    path = simulator.state_dir / "dom0/opt/xensource/packages/iso/guest-tools.iso"
    assert path.stat().st_size == int(x.VDI.get_virtual_size(iso))
    probe = subprocess.run(["blkid", "-p", "-o", "export", str(path)], capture_output=True,
                           text=True, check=True).stdout
    assert "TYPE=iso9660" in probe and "LABEL=XCP-NG\\ TOOLS" in probe
    data = export(simulator.url, xapi_session._session, iso)
    assert data[32769:32774] == b"CD001" and b"XCP-ng guest tools" in data
    assert fail(x.VDI.create, vdi_record(tools, MiB))[0] == "SR_OPERATION_NOT_SUPPORTED"
    task = x.task.create("ro", "")
    assert put(simulator.url, xapi_session._session, iso, b"x" * 512,
               task_id=task).status == 200
    assert wait_task(x, task)["error_info"] == ["VDI_READONLY", iso]


def test_iso_library_upload_and_scan(simulator, xapi_session, x, fail):
    from xhost.sim.sr_iso import make_iso9660

    host = x.host.get_all()[0]
    sr = x.SR.create(host, {"location": "/var/opt/xen/iso_import", "legacy_mode": "true"},
                     "0", "ISO uploads", "", "iso", "iso", False, {})
    directory = simulator.state_dir / "dom0/var/opt/xen/iso_import"
    assert directory.is_dir()
    # Xen Orchestra's upload: VDI.create with sm_config path, then PUT the bytes.
    image = simulator.state_dir / "src.iso"
    size = make_iso9660(image, "INSTALLER", {"BOOT.CFG": b"label linux\n"})
    vdi = x.VDI.create(vdi_record(sr, size, "installer.iso", sm_config={"path": "inst.iso"}))
    assert x.VDI.get_location(vdi) == "inst.iso"
    task = x.task.create("upload", "")
    assert put(simulator.url, xapi_session._session, vdi, image.read_bytes(),
               task_id=task).status == 200
    assert wait_task(x, task)["status"] == "success"
    assert (directory / "inst.iso").read_bytes() == image.read_bytes()
    assert fail(x.VDI.create, vdi_record(sr, MiB, sm_config={"path": "../evil.iso"}))[0] == \
        "SR_BACKEND_FAILURE_78"
    assert fail(x.VDI.snapshot, vdi, {})[0] in ("SR_OPERATION_NOT_SUPPORTED",
                                                "OPERATION_NOT_ALLOWED")
    # Files copied in by hand appear with SR.scan, read-only, named after the file.
    (directory / "dropped.iso").write_bytes(image.read_bytes())
    x.SR.scan(sr)
    dropped = x.VDI.get_by_name_label("dropped.iso")
    assert len(dropped) == 1 and x.VDI.get_read_only(dropped[0])
    assert x.VDI.get_SR(dropped[0]) == sr and x.VDI.get_virtual_size(dropped[0]) == str(size)
    x.VDI.destroy(vdi)
    assert not (directory / "inst.iso").exists()
    assert GiB > size
