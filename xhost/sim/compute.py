"""The compute domain: the domU where xhost runs, with its disks as files.

The seeded host has a running VM with ``other_config:xhost_compute_vm=true``
(``name_label`` "xhost compute VM"), the guest in which xhost would run on a
real deployment.  Its uuid is also in ``<state_dir>/compute/vm-uuid``, the
way a real domU reads its own uuid from ``/sys/hypervisor/uuid``.

Disks plugged into it (``VBD.create`` + ``VBD.plug``, or while it starts)
appear as raw device files ``<state_dir>/compute/dev/<VBD.device>`` --
``xvda`` is its root disk, the first attached data disk is ``xvdb`` -- that
hold the virtual disk's bytes and can be read and written like
``/dev/xvdb`` in the guest:

* on plug, the VDI (whatever its SR type: VHD chain, raw volume, ISO) is
  materialised into a sparse file (holes where the disk reads zeros); a
  read-only plug gives a read-only file;
* on unplug (or VM shutdown) the blocks that differ from the VDI are
  written back -- only those, so a snapshot taken meanwhile stays small --
  and the file is removed;
* whenever the simulator needs the VDI's bytes while it is plugged
  (snapshot, clone, copy, export, resize) the device is written back first,
  so those operations see what the guest wrote.

Disks plugged into the control domain (dom0) appear the same way at
``<dom0 root>/dev/<VBD.device>`` -- what ``/dev/xvdb`` is in a real dom0 --
so dom0 scripts can partition and format them (sfdisk, mkfs...).

Everything runs in bounded memory (2 MiB blocks).  Which devices are
materialised is kept in ``<state_dir>/compute/devices.json`` so a restarted
simulator carries on.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import uuid as uuidlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xhost.dom0 import xhost_vhd

from .disk_content import RawFileWriter, copy_disk
from .dispatch import CallContext

if TYPE_CHECKING:
    from .simulator import Simulator
    from .sr_content import ContentDriver

LOG = logging.getLogger(__name__)

#: other_config key marking the compute VM.
COMPUTE_KEY = "xhost_compute_vm"
COMPUTE_NAME = "xhost compute VM"
GiB = 1 << 30
_LOCK = threading.Lock()


def compute_dir(sim: Simulator) -> Path:
    """``<state_dir>/compute``."""
    return Path(sim.state_dir) / "compute"


def device_dir(sim: Simulator) -> Path:
    """``<state_dir>/compute/dev``: the compute VM's block devices."""
    return compute_dir(sim) / "dev"


def compute_vm(sim: Simulator) -> str | None:
    """The compute VM's reference (``other_config:xhost_compute_vm=true``)."""
    for ref, rec in sim.db.all("VM").items():
        if rec["other_config"].get(COMPUTE_KEY) == "true" and not rec["is_a_template"] \
                and not rec["is_a_snapshot"]:
            return ref
    return None


def dom0_device_dir(sim: Simulator) -> Path:
    """``<dom0 root>/dev``: block devices of disks plugged into dom0."""
    return Path(sim.dom0.root) / "dev"


def _device_dir_for(sim: Simulator, vm: str) -> Path | None:
    """Where disks plugged into ``vm`` appear, if it is the compute VM or a
    control domain; None for other VMs."""
    if vm == compute_vm(sim):
        return device_dir(sim)
    rec = sim.db.find("VM", vm)
    if rec is not None and rec["is_control_domain"]:
        return dom0_device_dir(sim)
    return None


class Device:
    """One materialised disk of the compute VM or of dom0."""

    def __init__(self, sim: Simulator, vdi_uuid: str, vbd: str, name: str, writable: bool,
                 synced: int, directory: Path | None = None) -> None:
        self.sim = sim
        self.vdi_uuid = vdi_uuid
        self.vbd = vbd
        self.name = name
        self.writable = writable
        #: (mtime_ns, size) of the device file when it last matched the VDI.
        self.synced = synced
        self.directory = directory or device_dir(sim)
        self.lock = threading.Lock()

    @property
    def path(self) -> Path:
        return self.directory / self.name

    def _stamp(self) -> int:
        st = self.path.stat()
        return st.st_mtime_ns ^ (st.st_size << 1)

    def write_back(self) -> None:
        """Write the blocks that differ from the VDI into it."""
        with self.lock:
            if not self.writable or not self.path.exists() or self._stamp() == self.synced:
                return
            db = self.sim.db
            try:
                vdi = db.by_uuid("VDI", self.vdi_uuid)
            except Exception:
                LOG.warning("compute device %s: VDI %s is gone; nothing written back",
                            self.name, self.vdi_uuid)
                return
            rec = db.get("VDI", vdi)
            driver = self.sim.storage.for_sr(rec["SR"])
            ctx = CallContext(self.sim, None, None, "VBD.unplug")
            # Not driver.reading(): that would write this device back first.
            with driver.writing(ctx, vdi) as writer, \
                    xhost_vhd.RawSource(self.path, rec["virtual_size"]) as device:
                current = driver.open_reader(ctx, rec)
                try:
                    copy_disk(device, writer, base=current)
                finally:
                    current.close()
            self.synced = self._stamp()
            _save(self.sim)

    def to_json(self) -> dict[str, Any]:
        return {"vdi": self.vdi_uuid, "vbd": self.vbd, "device": self.name,
                "writable": self.writable, "synced": self.synced,
                "directory": str(self.directory)}


def _devices(sim: Simulator) -> dict[str, Device]:
    return sim.__dict__.setdefault("_compute_devices", {})


def _save(sim: Simulator) -> None:
    path = compute_dir(sim) / "devices.json"
    doc = [d.to_json() for d in _devices(sim).values()]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, path)


def _register(sim: Simulator, device: Device) -> None:
    _devices(sim)[device.vdi_uuid] = device
    sim.storage_runtime.syncers[device.vdi_uuid] = device.write_back


def on_attach(ctx: CallContext, driver: ContentDriver, vdi: str, writable: bool,
              vbd: str | None) -> None:
    """VBD ``vbd`` of ``vdi`` is being plugged; materialise it if its VM is the
    compute VM or dom0."""
    from .behaviours.vm import _device_name

    sim = ctx.sim
    db = ctx.db
    vrec = db.find("VBD", vbd) if vbd else None
    directory = _device_dir_for(sim, vrec["VM"]) if vrec is not None else None
    if directory is None:
        return
    rec = db.get("VDI", vdi)
    name = _device_name(vrec["userdevice"], vrec["type"])
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    with _LOCK:
        old = _devices(sim).get(rec["uuid"])
        if old is not None:
            old.write_back()
        sim.storage_runtime.sync(rec["uuid"])
        if path.exists():
            path.chmod(0o600)
            path.unlink()
        size = int(rec["virtual_size"])
        with open(path, "xb") as handle:
            handle.truncate(size)
        with driver.reading(ctx, rec) as reader, RawFileWriter(path, size) as writer:
            copy_disk(reader, writer, dest_fresh=True, check=ctx.check_cancel)
        if not writable:
            path.chmod(0o444)
        device = Device(sim, rec["uuid"], vbd, name, writable, 0, directory)
        device.synced = device._stamp()
        _register(sim, device)
        _save(sim)


def on_detach(ctx: CallContext, driver: ContentDriver, vdi: str, vbd: str | None) -> None:
    """VBD ``vbd`` of ``vdi`` is being unplugged: write its device back, remove it."""
    sim = ctx.sim
    rec = ctx.db.find("VDI", vdi)
    if rec is None:
        return
    with _LOCK:
        device = _devices(sim).get(rec["uuid"])
        if device is None or (vbd is not None and device.vbd != vbd):
            return
        device.write_back()
        del _devices(sim)[rec["uuid"]]
        sim.storage_runtime.syncers.pop(rec["uuid"], None)
        if device.path.exists():
            device.path.chmod(0o600)
            device.path.unlink()
        _save(sim)


def on_resize(ctx: CallContext, vdi_uuid: str, size: int) -> None:
    """VDI.resize_online of a plugged disk: the device grows too."""
    device = _devices(ctx.sim).get(vdi_uuid)
    if device is not None and device.path.exists():
        with device.lock:
            if device.path.stat().st_size < size:
                os.truncate(device.path, size)
            device.synced = device._stamp()
        _save(ctx.sim)


def restore(sim: Simulator) -> None:
    """After a restart: pick up the devices still materialised."""
    path = compute_dir(sim) / "devices.json"
    if not path.exists():
        return
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        LOG.warning("ignoring unreadable %s", path)
        return
    for entry in doc:
        directory = Path(entry["directory"]) if entry.get("directory") else None
        device = Device(sim, entry["vdi"], entry["vbd"], entry["device"], entry["writable"],
                        entry["synced"], directory)
        if device.path.exists():
            _register(sim, device)


def seed(sim: Simulator, host: str, sr: str) -> str:
    """Create the running compute VM with an 8 GiB root disk on ``sr``."""
    from .behaviours import vm as vm_behaviours
    from .behaviours.storage import create_vdi, new_vbd
    from .seed import TEMPLATES, template_record

    ctx = CallContext(sim, None, None, "VM.create")
    template = next(t for t in TEMPLATES if t["ref"] == "debian-12")
    values = template_record(template)
    memory = 2 * GiB
    values.update(
        uuid=str(uuidlib.uuid4()), name_label=COMPUTE_NAME,
        name_description="The domU in which xhost runs; its plugged disks are device "
                         "files in the simulator's state directory (compute/dev/)",
        is_a_template=False, is_default_template=False, reference_label="",
        memory_static_min=memory, memory_static_max=memory, memory_dynamic_min=memory,
        memory_dynamic_max=memory, VCPUs_max=2, VCPUs_at_startup=2,
        other_config={COMPUTE_KEY: "true", "mac_seed": str(uuidlib.uuid4())})
    vm = vm_behaviours.create(ctx, values)
    root = create_vdi(ctx, sr, {"name_label": f"{COMPUTE_NAME} root", "name_description": "",
                                "virtual_size": 8 * GiB, "type": "system", "sharable": False,
                                "read_only": False, "other_config": {}})
    new_vbd(ctx, vm, root, "0", bootable=True, mode="RW", vbd_type="Disk", empty=False)
    vm_behaviours.domain_started(ctx, vm, host, False)
    directory = compute_dir(sim)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vm-uuid").write_text(sim.db.get("VM", vm)["uuid"] + "\n")
    return vm
