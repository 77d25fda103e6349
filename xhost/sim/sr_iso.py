"""``iso`` SRs: ISO (and ``.img``) files in a directory, content type ``iso``.

A local ISO library keeps its files in the dom0 directory named by
``PBD.device_config["location"]`` (the tools SR:
``/opt/xensource/packages/iso``); a remote one (``server:/path``) is mounted
at ``/var/run/sr-mount/<sr uuid>``.  ``SR.scan`` introduces every ``*.iso``
/ ``*.img`` file as a read-only VDI named after the file; ``VDI.create``
makes an empty file named by ``sm_config['path']`` (or ``<uuid>.img``) for an
upload through ``/import_raw_vdi`` -- except on the tools SR, which is
read-only.  :func:`make_iso9660` writes a small real ISO 9660 image (the
seeded ``guest-tools.iso``).
"""
from __future__ import annotations

import os
import re
import struct
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xhost.dom0 import xhost_vhd

from .errors import ApiError
from .sr_content import ContentDriver, backend_failure
from .sr_raw import RawVolumeWriter

if TYPE_CHECKING:
    from .dispatch import CallContext

ISO_NAME = re.compile(r"^[^/\x00]+\.(iso|img)$", re.IGNORECASE)
SECTOR = 2048


class IsoFileDriver(ContentDriver):
    """SM's ISOSR."""

    capabilities = ("VDI_CREATE", "VDI_DELETE", "VDI_ATTACH", "VDI_DETACH", "SR_SCAN",
                    "SR_ATTACH", "SR_DETACH")
    thin = True
    vdi_type = "file"

    def sr_dir(self, sr_rec: dict[str, Any]) -> Path:
        location = ""
        for pbd in sr_rec["PBDs"]:
            prec = self.sim.db.find("PBD", pbd)
            if prec is not None:
                location = prec["device_config"].get("location", "")
                break
        if location.startswith("/"):
            return self.runtime.host_path(location)
        return self.runtime.host_path(self.runtime.sr_mount(sr_rec["uuid"]))

    def vdi_path(self, sr_rec: dict[str, Any], vdi_rec: dict[str, Any]) -> Path:
        return self.sr_dir(sr_rec) / vdi_rec["location"]

    def _read_only_sr(self, sr_rec: dict[str, Any]) -> bool:
        return bool(sr_rec["is_tools_sr"]) or \
            sr_rec["other_config"].get("xenserver_tools_sr") == "true"

    def sr_attach(self, ctx: CallContext, sr: str) -> None:
        self.sr_dir(ctx.db.get("SR", sr)).mkdir(parents=True, exist_ok=True)

    def usage(self, sr_rec: dict[str, Any], vdi_rec: dict[str, Any]) -> dict[str, Any]:
        try:
            st = self.vdi_path(sr_rec, vdi_rec).stat()
        except OSError:
            return {}
        return {"virtual_size": st.st_size, "physical_utilisation": st.st_size}

    def vdi_create(self, ctx: CallContext, sr: str, vdi: str, record: dict[str, Any]
                   ) -> dict[str, Any]:
        sr_rec = ctx.db.get("SR", sr)
        if self._read_only_sr(sr_rec):
            raise ApiError("SR_OPERATION_NOT_SUPPORTED", sr)
        name = record["sm_config"].get("path") or f"{record['uuid']}.img"
        if not ISO_NAME.match(name):
            raise backend_failure(78, "VDI Creation failed", f'Invalid path "{name}"')
        path = self.sr_dir(sr_rec) / name
        if path.exists():
            raise backend_failure(43, "The VDI already exists")
        with open(path, "xb") as handle:
            handle.truncate(int(record["virtual_size"]))
        sm = dict(record["sm_config"], created=time.strftime("%Y%m%dT%H:%M:%SZ",
                                                                 time.gmtime()))
        return {"location": name, "virtual_size": int(record["virtual_size"]),
                "physical_utilisation": 0, "read_only": False, "sm_config": sm}

    def vdi_destroy(self, ctx: CallContext, sr: str, vdi: str, record: dict[str, Any]) -> None:
        sr_rec = ctx.db.get("SR", sr)
        if self._read_only_sr(sr_rec):
            raise ApiError("SR_OPERATION_NOT_SUPPORTED", sr)
        if self.runtime.in_use(record["uuid"]):
            raise ApiError("VDI_IN_USE", vdi, "destroy")
        path = self.vdi_path(sr_rec, record)
        if record["location"] and path.exists():
            path.unlink()

    def vdi_clone(self, ctx: CallContext, sr: str, src: str, src_record: dict[str, Any],
                  new: str, new_record: dict[str, Any], *, snapshot: bool,
                  driver_params: dict[str, str] | None = None) -> dict[str, Any]:
        raise ApiError("SR_OPERATION_NOT_SUPPORTED", sr)

    def vdi_resize(self, ctx: CallContext, sr: str, vdi: str, record: dict[str, Any],
                   new_size: int) -> dict[str, Any]:
        raise ApiError("SR_OPERATION_NOT_SUPPORTED", sr)

    def chain_uuids(self, vdi_rec: dict[str, Any]) -> list[str]:
        return [vdi_rec["uuid"]]

    def sr_scan(self, ctx: CallContext, sr: str) -> None:
        from .seed import sr_update
        from .sr_vhd import forget_record, refresh_allowed_operations

        db = ctx.db
        sr_rec = db.get("SR", sr)
        directory = self.sr_dir(sr_rec)
        with self.runtime.sr_lock(sr):
            images = {}
            if directory.is_dir():
                for entry in os.scandir(directory):
                    if entry.is_file() and ISO_NAME.match(entry.name):
                        images[entry.name] = entry.stat().st_size
            known = {}
            for ref in sr_rec["VDIs"]:
                rec = db.find("VDI", ref)
                if rec is not None and rec["location"]:
                    known[rec["location"]] = ref
            for location, ref in known.items():
                if location not in images:
                    rec = db.get("VDI", ref)
                    if not any(db.exists("VBD", v) and db.get("VBD", v)["currently_attached"]
                               for v in rec["VBDs"]):
                        forget_record(ctx, ref)
            spec = self.sim.schema.classes["VDI"]
            for name, size in sorted(images.items()):
                ref = known.get(name)
                if ref is None:
                    ref = db.add("VDI", spec.new_record({
                        "name_label": name, "SR": sr, "type": "user", "location": name,
                        "virtual_size": size, "physical_utilisation": size,
                        "read_only": True, "managed": True, "sm_config": {}}))
                    refresh_allowed_operations(ctx, ref)
                else:
                    rec = db.get("VDI", ref)
                    changes = {"virtual_size": size, "physical_utilisation": size,
                               "read_only": True}
                    changes = {k: v for k, v in changes.items() if rec[k] != v}
                    if changes:
                        db.update("VDI", ref, **changes)
            sr_update(self.sim, sr)

    def open_reader(self, ctx: CallContext, vdi_rec: dict[str, Any]) -> xhost_vhd.RawSource:
        path = self.vdi_path(ctx.db.get("SR", vdi_rec["SR"]), vdi_rec)
        try:
            return xhost_vhd.RawSource(path, -(-vdi_rec["virtual_size"] // 512) * 512)
        except xhost_vhd.VHDError as exc:
            raise backend_failure(144, "VDI could not be found", str(exc)) from None

    def open_writer(self, ctx: CallContext, vdi_ref: str) -> RawVolumeWriter:
        return RawVolumeWriter(self, ctx, vdi_ref)


# -- a minimal ISO 9660 image --------------------------------------------------------

def _both16(value: int) -> bytes:
    return struct.pack("<H", value) + struct.pack(">H", value)


def _both32(value: int) -> bytes:
    return struct.pack("<I", value) + struct.pack(">I", value)


def _dir_record(identifier: bytes, extent: int, length: int, is_dir: bool,
                when: time.struct_time) -> bytes:
    stamp = bytes([when.tm_year - 1900, when.tm_mon, when.tm_mday, when.tm_hour,
                   when.tm_min, when.tm_sec, 0])
    body = (bytes([0]) + _both32(extent) + _both32(length) + stamp
            + bytes([2 if is_dir else 0, 0, 0]) + _both16(1) + bytes([len(identifier)])
            + identifier)
    record = bytes([len(body) + 1]) + body
    return record + (b"\x00" if len(record) % 2 else b"")


def _text(value: str, width: int) -> bytes:
    return value.upper().encode("ascii")[:width].ljust(width, b" ")


def _date(when: time.struct_time) -> bytes:
    return time.strftime("%Y%m%d%H%M%S00", when).encode() + b"\x00"


def make_iso9660(path: str | os.PathLike[str], label: str, files: dict[str, bytes],
                 size: int | None = None) -> int:
    """Write an ISO 9660 image with ``files`` (8.3 upper-case names) in its
    root directory; ``size`` pads it (sparsely) to that many bytes.  Returns
    the image size."""
    when = time.gmtime()
    names = sorted(files)
    for name in names:
        if not re.match(r"^[A-Z0-9_]{1,8}\.[A-Z0-9_]{0,3}$", name):
            raise ValueError(f"ISO 9660 level 1 needs 8.3 upper-case names, not {name!r}")
    root_sector, first_file = 20, 21
    extents: list[tuple[str, int, int]] = []
    sector = first_file
    for name in names:
        extents.append((name, sector, len(files[name])))
        sector += max(1, -(-len(files[name]) // SECTOR))
    total = sector if size is None else max(sector, -(-size // SECTOR))
    root = (_dir_record(b"\x00", root_sector, SECTOR, True, when)
            + _dir_record(b"\x01", root_sector, SECTOR, True, when)
            + b"".join(_dir_record(f"{n};1".encode(), s, ln, False, when)
                       for n, s, ln in extents))
    if len(root) > SECTOR:
        raise ValueError("too many files for a one-sector root directory")
    path_entry_l = bytes([1, 0]) + struct.pack("<I", root_sector) + struct.pack("<H", 1) \
        + b"\x00\x00"
    path_entry_m = bytes([1, 0]) + struct.pack(">I", root_sector) + struct.pack(">H", 1) \
        + b"\x00\x00"
    pvd = bytearray(SECTOR)
    pvd[0:7] = b"\x01CD001\x01"
    pvd[8:40] = _text("LINUX", 32)
    pvd[40:72] = _text(label, 32)
    pvd[80:88] = _both32(total)
    pvd[120:124] = _both16(1)
    pvd[124:128] = _both16(1)
    pvd[128:132] = _both16(SECTOR)
    pvd[132:140] = _both32(len(path_entry_l))
    pvd[140:144] = struct.pack("<I", 18)
    pvd[148:152] = struct.pack(">I", 19)
    pvd[156:190] = _dir_record(b"\x00", root_sector, SECTOR, True, when)
    for start, width in ((190, 128), (318, 128), (446, 128), (574, 128)):
        pvd[start:start + width] = b" " * width
    pvd[574:574 + 128] = _text("XHOST SIMULATOR", 128)
    for start in (702, 739, 776):
        pvd[start:start + 37] = b" " * 37
    pvd[813:830] = _date(when)
    pvd[830:847] = _date(when)
    pvd[847:864] = b"0" * 16 + b"\x00"
    pvd[864:881] = _date(when)
    pvd[881] = 1
    terminator = bytearray(SECTOR)
    terminator[0:7] = b"\xffCD001\x01"
    with open(path, "wb") as out:
        out.truncate(total * SECTOR)
        out.seek(16 * SECTOR)
        out.write(bytes(pvd) + bytes(terminator))
        out.write(path_entry_l.ljust(SECTOR, b"\x00"))
        out.write(path_entry_m.ljust(SECTOR, b"\x00"))
        out.write(root.ljust(SECTOR, b"\x00"))
        for name, sector_no, _length in extents:
            out.seek(sector_no * SECTOR)
            out.write(files[name])
    return total * SECTOR
