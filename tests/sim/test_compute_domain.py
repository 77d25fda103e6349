"""The compute VM: disks plugged into it are device files with their bytes."""
from __future__ import annotations

import os

from xhost.testing.simstorage import MiB, export, put, vdi_record, wait_task


def compute_vm(x) -> str:
    found = [vm for vm, rec in x.VM.get_all_records().items()
             if rec["other_config"].get("xhost_compute_vm") == "true"]
    assert len(found) == 1
    return found[0]


def attach(x, vm, vdi, mode="RW", userdevice="autodetect"):
    return x.VBD.create({"VM": vm, "VDI": vdi, "userdevice": userdevice, "bootable": False,
                         "mode": mode, "type": "Disk", "empty": False, "other_config": {},
                         "qos_algorithm_type": "", "qos_algorithm_params": {}})


def test_the_compute_vm_is_running_and_discoverable(simulator, x):
    vm = compute_vm(x)
    rec = x.VM.get_record(vm)
    assert rec["power_state"] == "Running" and not rec["is_control_domain"]
    assert rec["resident_on"] == x.host.get_all()[0]
    assert (simulator.state_dir / "compute" / "vm-uuid").read_text().strip() == rec["uuid"]
    root = x.VBD.get_record(rec["VBDs"][0])
    assert root["device"] == "xvda" and root["currently_attached"]
    xvda = simulator.state_dir / "compute" / "dev" / "xvda"
    assert xvda.stat().st_size == int(x.VDI.get_virtual_size(root["VDI"]))
    assert xvda.stat().st_blocks == 0  # sparse: the root disk is empty


def test_plugged_disk_is_a_device_file_written_back_on_unplug(simulator, xapi_session, x, fail):
    session = xapi_session._session
    sr = x.SR.get_by_name_label("Local storage")[0]
    vm = compute_vm(x)
    vdi = x.VDI.create(vdi_record(sr, 32 * MiB))
    original = os.urandom(2 * MiB)
    task = x.task.create("seed", "")
    assert put(simulator.url, session, vdi, original, task_id=task).status == 200
    assert wait_task(x, task)["status"] == "success"
    vbd = attach(x, vm, vdi)
    x.VBD.plug(vbd)
    assert x.VBD.get_device(vbd) == "xvdb"
    dev = simulator.state_dir / "compute" / "dev" / "xvdb"
    assert dev.stat().st_size == 32 * MiB
    with open(dev, "r+b") as f:
        assert f.read(2 * MiB) == original
        f.seek(20 * MiB)
        f.write(b"written by the guest" * 100)
    # The VDI is in use: a host refuses to import into it ...
    task = x.task.create("busy", "")
    put(simulator.url, session, vdi, b"x" * 512, task_id=task)
    assert wait_task(x, task)["error_info"][0] == "VDI_IN_USE"
    # ... but a snapshot sees what the guest wrote so far.
    snap = x.VDI.snapshot(vdi, {})
    assert export(simulator.url, session, snap)[20 * MiB:20 * MiB + 20] == b"written by the guest"
    with open(dev, "r+b") as f:
        f.seek(0)
        f.write(b"\0" * MiB)  # zeros over data must reach the VDI too
    x.VBD.unplug(vbd)
    assert not dev.exists()
    data = export(simulator.url, session, vdi)
    assert data[:MiB] == bytes(MiB) and data[MiB:2 * MiB] == original[MiB:]
    assert data[20 * MiB:20 * MiB + 2000] == b"written by the guest" * 100
    # The snapshot kept the state at snapshot time.
    assert export(simulator.url, session, snap)[:MiB] == original[:MiB]
    x.VBD.destroy(vbd)


def test_read_only_plug_and_online_resize(simulator, xapi_session, x):
    vm = compute_vm(x)
    sr = x.SR.get_by_name_label("Local LVM storage")[0]
    vdi = x.VDI.create(vdi_record(sr, 8 * MiB))
    ro = attach(x, vm, vdi, mode="RO", userdevice="5")
    x.VBD.plug(ro)
    dev = simulator.state_dir / "compute" / "dev" / "xvdf"
    assert x.VBD.get_device(ro) == "xvdf"
    assert oct(dev.stat().st_mode & 0o777) == "0o444"
    x.VBD.unplug(ro)
    rw = attach(x, vm, vdi, userdevice="6")
    x.VBD.plug(rw)
    dev = simulator.state_dir / "compute" / "dev" / "xvdg"
    x.VDI.resize_online(vdi, str(16 * MiB))
    assert dev.stat().st_size == 16 * MiB
    with open(dev, "r+b") as f:
        f.seek(12 * MiB)
        f.write(b"grown")
    x.VBD.unplug(rw)
    assert export(simulator.url, xapi_session._session, vdi)[12 * MiB:12 * MiB + 5] == b"grown"


def test_devices_survive_a_restart(tmp_path):
    import XenAPI

    from xhost.sim import Simulator

    state = tmp_path / "state"
    with Simulator(state, users={"root": "pw"}) as sim:
        session = XenAPI.Session(sim.url)
        session.xenapi.login_with_password("root", "pw")
        x = session.xenapi
        vm = compute_vm(x)
        vdi = x.VDI.create(vdi_record(x.SR.get_by_name_label("Local storage")[0], 4 * MiB))
        vbd = attach(x, vm, vdi)
        x.VBD.plug(vbd)
        with open(state / "compute" / "dev" / "xvdb", "r+b") as f:
            f.write(b"before restart")
    with Simulator(state, users={"root": "pw"}) as sim:
        session = XenAPI.Session(sim.url)
        session.xenapi.login_with_password("root", "pw")
        x = session.xenapi
        x.VBD.unplug(vbd)
        assert export(sim.url, session._session, vdi)[:14] == b"before restart"


def test_disk_plugged_into_dom0_is_a_device_file_for_dom0_scripts(simulator, xapi_session, x):
    """What dom0 scripts partition and format: /dev/<device> in the dom0 root."""
    session = xapi_session._session
    sr = x.SR.get_by_name_label("Local storage")[0]
    dom0 = next(vm for vm, rec in x.VM.get_all_records().items() if rec["is_control_domain"])
    vdi = x.VDI.create(vdi_record(sr, 8 * MiB))
    vbd = attach(x, dom0, vdi)
    x.VBD.plug(vbd)
    device = x.VBD.get_device(vbd)
    dev = simulator.state_dir / "dom0" / "dev" / device
    assert dev.stat().st_size == 8 * MiB
    with open(dev, "r+b") as f:
        f.seek(MiB)
        f.write(b"formatted in dom0")
    x.VBD.unplug(vbd)
    assert not dev.exists()
    assert export(simulator.url, session, vdi)[MiB:MiB + 17] == b"formatted in dom0"
    x.VBD.destroy(vbd)
