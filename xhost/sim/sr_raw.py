"""``lvm`` SRs: thick raw volumes, no VHD files anywhere dom0 can see.

A VDI is a raw logical volume ``LV-<vdi uuid>`` of the volume group
``VG_XenStorage-<sr uuid>``, i.e. a sparse file
``<dom0 root>/dev/VG_XenStorage-<sr uuid>/LV-<vdi uuid>`` (what
``/dev/VG_XenStorage-…/LV-…`` is on a host).  Sizes round up to LVM's 4 MiB
extents; space is allocated in full (``physical_utilisation`` equals the
virtual size, ``SR_FULL`` against ``physical_size``).  Clone and snapshot
are full copies (``sm_config`` has ``vdi_type: aio`` and no
``vhd-parent``).  ``PBD.device_config`` names the physical ``device`` only:
there is no ``path`` with VHD files, so features that need them (dom0
scripts working on ``/var/run/sr-mount/<sr>/<vdi>.vhd``) must refuse it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xhost.dom0 import xhost_vhd

from .disk_content import RawFileWriter, sparse_copy_file
from .errors import ApiError
from .sr_content import UUID_RE, ContentDriver, backend_failure

if TYPE_CHECKING:
    from .dispatch import CallContext

EXTENT = 4 * 1024 * 1024
LV_PREFIX = "LV-"


def round_extent(size: int) -> int:
    return -(-max(int(size), 1) // EXTENT) * EXTENT


class RawVolumeDriver(ContentDriver):
    """SM's LVM SR with raw (``aio``) volumes."""

    capabilities = ("SR_PROBE", "SR_SCAN", "SR_UPDATE", "VDI_CREATE", "VDI_DELETE",
                    "VDI_ATTACH", "VDI_DETACH", "VDI_UPDATE", "VDI_CLONE", "VDI_SNAPSHOT",
                    "VDI_RESIZE", "VDI_GENERATE_CONFIG", "VDI_RESET_ON_BOOT/2",
                    "ATOMIC_PAUSE", "VDI_ACTIVATE", "VDI_DEACTIVATE")
    thin = False
    vdi_type = "aio"

    def sr_dir(self, sr_rec: dict[str, Any]) -> Path:
        return self.runtime.host_path(f"/dev/VG_XenStorage-{sr_rec['uuid']}")

    def vdi_path(self, sr_rec: dict[str, Any], vdi_rec: dict[str, Any]) -> Path:
        return self.sr_dir(sr_rec) / f"{LV_PREFIX}{vdi_rec['location'] or vdi_rec['uuid']}"

    def sr_attach(self, ctx: CallContext, sr: str) -> None:
        self.sr_dir(ctx.db.get("SR", sr)).mkdir(parents=True, exist_ok=True)

    def usage(self, sr_rec: dict[str, Any], vdi_rec: dict[str, Any]) -> dict[str, Any]:
        try:
            size = self.vdi_path(sr_rec, vdi_rec).stat().st_size
        except OSError:
            return {}
        return {"virtual_size": size, "physical_utilisation": size}

    def _new_volume(self, path: Path, size: int) -> None:
        if path.exists():
            raise backend_failure(43, "The VDI already exists")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, size)
        finally:
            os.close(fd)

    def vdi_create(self, ctx: CallContext, sr: str, vdi: str, record: dict[str, Any]
                   ) -> dict[str, Any]:
        sr_rec = ctx.db.get("SR", sr)
        size = round_extent(record["virtual_size"])
        with self.runtime.sr_lock(sr):
            self._new_volume(self.sr_dir(sr_rec) / f"{LV_PREFIX}{record['uuid']}", size)
        return {"virtual_size": size, "physical_utilisation": size,
                "location": record["uuid"],
                "sm_config": dict(record["sm_config"], vdi_type="aio")}

    def vdi_destroy(self, ctx: CallContext, sr: str, vdi: str, record: dict[str, Any]) -> None:
        uuid = record["location"] or record["uuid"]
        if self.runtime.in_use(uuid):
            raise ApiError("VDI_IN_USE", vdi, "destroy")
        path = self.vdi_path(ctx.db.get("SR", sr), record)
        with self.runtime.sr_lock(sr):
            if path.exists():
                path.unlink()

    def vdi_clone(self, ctx: CallContext, sr: str, src: str, src_record: dict[str, Any],
                  new: str, new_record: dict[str, Any], *, snapshot: bool,
                  driver_params: dict[str, str] | None = None) -> dict[str, Any]:
        sr_rec = ctx.db.get("SR", sr)
        self.runtime.sync(src_record["uuid"])
        source = self.vdi_path(sr_rec, src_record)
        size = source.stat().st_size
        target = self.sr_dir(sr_rec) / f"{LV_PREFIX}{new_record['uuid']}"
        with self.runtime.sr_lock(sr), self.runtime.paused(src_record["uuid"]):
            sparse_copy_file(source, target, size)
        return {"location": new_record["uuid"], "virtual_size": size,
                "physical_utilisation": size,
                "sm_config": {"vdi_type": "aio"}}

    def vdi_resize(self, ctx: CallContext, sr: str, vdi: str, record: dict[str, Any],
                   new_size: int) -> dict[str, Any]:
        size = round_extent(new_size)
        path = self.vdi_path(ctx.db.get("SR", sr), record)
        with self.runtime.paused(record["uuid"]):
            os.truncate(path, max(size, path.stat().st_size))
        from . import compute

        compute.on_resize(ctx, record["uuid"], size)
        return {"virtual_size": size, "physical_utilisation": size}

    def sr_scan(self, ctx: CallContext, sr: str) -> None:
        from .seed import sr_update
        from .sr_vhd import forget_record, refresh_allowed_operations

        db = ctx.db
        sr_rec = db.get("SR", sr)
        directory = self.sr_dir(sr_rec)
        with self.runtime.sr_lock(sr):
            volumes = {}
            if directory.is_dir():
                for entry in os.scandir(directory):
                    uuid = entry.name[len(LV_PREFIX):]
                    if entry.name.startswith(LV_PREFIX) and UUID_RE.match(uuid):
                        volumes[uuid] = entry.stat().st_size
            known = {}
            for ref in sr_rec["VDIs"]:
                rec = db.find("VDI", ref)
                if rec is not None and rec["location"]:
                    known[rec["location"]] = ref
            for location, ref in known.items():
                if location not in volumes:
                    rec = db.get("VDI", ref)
                    if not any(db.exists("VBD", v) and db.get("VBD", v)["currently_attached"]
                               for v in rec["VBDs"]):
                        forget_record(ctx, ref)
            spec = self.sim.schema.classes["VDI"]
            for uuid, size in volumes.items():
                ref = known.get(uuid)
                if ref is None:
                    if uuid in db.uuids["VDI"]:
                        continue
                    ref = db.add("VDI", spec.new_record({
                        "uuid": uuid, "name_label": "", "SR": sr, "type": "user",
                        "location": uuid, "virtual_size": size, "physical_utilisation": size,
                        "managed": True, "sm_config": {"vdi_type": "aio"}}))
                    refresh_allowed_operations(ctx, ref)
                else:
                    rec = db.get("VDI", ref)
                    if (rec["virtual_size"], rec["physical_utilisation"]) != (size, size):
                        db.update("VDI", ref, virtual_size=size, physical_utilisation=size)
            sr_update(self.sim, sr)

    # -- content -------------------------------------------------------------------
    def open_reader(self, ctx: CallContext, vdi_rec: dict[str, Any]) -> xhost_vhd.RawSource:
        path = self.vdi_path(ctx.db.get("SR", vdi_rec["SR"]), vdi_rec)
        try:
            return xhost_vhd.RawSource(path, vdi_rec["virtual_size"])
        except xhost_vhd.VHDError as exc:
            raise backend_failure(46, "The VDI is not available", str(exc)) from None

    def open_writer(self, ctx: CallContext, vdi_ref: str) -> Any:
        return RawVolumeWriter(self, ctx, vdi_ref)


class RawVolumeWriter(RawFileWriter):
    """A raw-file writer that refreshes the VDI record when closed and pauses
    like tapdisk around each write."""

    def __init__(self, driver: ContentDriver, ctx: CallContext, vdi: str) -> None:
        rec = ctx.db.get("VDI", vdi)
        self.driver = driver
        self.ctx = ctx
        self.vdi = vdi
        self.tap = driver.runtime.tap(rec["uuid"])
        path = driver.vdi_path(ctx.db.get("SR", rec["SR"]), rec)
        try:
            super().__init__(path, rec["virtual_size"])
        except OSError as exc:
            raise backend_failure(46, "The VDI is not available",
                                  f"{path.name}: {exc.strerror}") from None

    def write(self, offset: int, data: bytes) -> None:
        if offset + len(data) > self.virtual_size:
            raise ApiError("VDI_TOO_SMALL", self.vdi, offset + len(data))
        with self.tap.lock:
            super().write(offset, data)

    def close(self) -> None:
        super().close()
        self.driver.refresh(self.ctx, self.vdi)
