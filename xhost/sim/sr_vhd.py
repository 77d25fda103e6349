"""File-based VHD SRs (``ext``, ``nfs``, ``file``): real VHD chains on disk.

Every VDI is ``<uuid>.vhd`` in the SR directory, which dom0 sees as
``/var/run/sr-mount/<sr uuid>`` (``PBD.device_config["path"]``); for the
shared ``nfs`` type that directory is a link to one export directory shared
by every host of the pool.  What SM's ``FileSR`` does, this driver does on
the simulator's files with :mod:`xhost_vhd`:

* ``VDI.create``: an empty dynamic VHD, the size rounded up to 2 MiB.
* ``VDI.clone`` / ``VDI.snapshot`` (SM's ``SNAPSHOT_DOUBLE``): the leaf file
  is renamed to a new uuid and marked hidden -- the read-only, unmanaged
  "base copy" -- and two empty differencing children are created over it:
  the original VDI (same uuid, now ``sm_config['vhd-parent']`` = the base)
  and the new one.  As ``vhd-util snapshot`` does, an *empty* differencing
  leaf is skipped: the new child links to its parent and no base is made.
  ``driver_params={"type": "single"}`` makes only the original's child and
  returns the base itself.  Chains are limited to 30 files
  (``SR_BACKEND_FAILURE_109``).
* ``VDI.destroy``: the file is deleted (a file that still has children is
  hidden instead), then garbage collection runs in the background.
* ``SR.scan``: a GC pass, then the records follow the files: new
  ``<uuid>.vhd`` files (dropped by dom0 scripts) are introduced with their
  parents, vanished ones forgotten, sizes refreshed.
* Garbage collection (:mod:`xhost.sim.sr_gc`): hidden leaves are deleted, a
  hidden parent left with one child is coalesced (SM's coalesce and
  leaf-coalesce).
* Thin provisioning: ``physical_utilisation`` is the file length; writes
  that would take the SR past ``physical_size`` fail with ``SR_FULL``.
"""
from __future__ import annotations

import logging
import os
import uuid as uuidlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xhost.dom0 import xhost_vhd

from .disk_content import BLOCK, is_zero
from .errors import NULL_REF, ApiError
from .sr_content import UUID_RE, ContentDriver, backend_failure

if TYPE_CHECKING:
    from .dispatch import CallContext
    from .simulator import Simulator

LOG = logging.getLogger(__name__)

#: SM rounds VHD virtual sizes up to the 2 MiB block size.
VHD_ROUNDING = 2 * 1024 * 1024
#: Files a chain may hold (leaf included), as SM's MAX_CHAIN_SIZE.
MAX_CHAIN = xhost_vhd.MAX_CHAIN_DEPTH
BLOCK_SPAN = xhost_vhd.DEFAULT_BLOCK_SIZE + 512
#: Room for a differencing disk's parent locators (3 x 512 B, rounded up).
LOCATOR_ROOM = 4096


def round_vhd_size(size: int) -> int:
    size = max(int(size), VHD_ROUNDING)
    return -(-size // VHD_ROUNDING) * VHD_ROUNDING


def metadata_size(virtual_size: int) -> int:
    """Bytes an empty VHD of this size occupies (footers, header, BAT, locators)."""
    return xhost_vhd.dynamic_stream_size(virtual_size, 0) + LOCATOR_ROOM


class FileInfo:
    """What a scan learns about one ``<uuid>.vhd`` file."""

    __slots__ = ("uuid", "path", "virtual_size", "size", "hidden", "parent", "blocks",
                 "differencing", "children")

    def __init__(self, uuid: str, path: Path, vhd: xhost_vhd.VHDFile,
                 parent: str | None) -> None:
        self.uuid = uuid
        self.path = path
        self.virtual_size = vhd.virtual_size
        self.size = vhd.physical_size
        self.hidden = vhd.hidden
        self.differencing = vhd.disk_type == xhost_vhd.DISK_DIFFERENCING
        self.blocks = len(vhd.allocated_blocks())
        self.parent = parent
        self.children: list[str] = []


class VhdLeafWriter:
    """Writes into a VDI's leaf VHD, re-opening the chain after a pause and
    reserving SR space for every block it allocates."""

    def __init__(self, driver: VhdFileDriver, ctx: CallContext, vdi: str) -> None:
        self.driver = driver
        self.ctx = ctx
        self.vdi = vdi
        rec = ctx.db.get("VDI", vdi)
        self.sr = rec["SR"]
        self.sr_rec = ctx.db.get("SR", self.sr)
        self.uuid = rec["location"] or rec["uuid"]
        self.path = driver.sr_dir(self.sr_rec) / f"{self.uuid}.vhd"
        self.tap = driver.runtime.tap(self.uuid)
        self.reserved = 0
        self.vhd: xhost_vhd.VHDFile | None = None
        with self.tap.lock:
            self._open()

    def _open(self) -> None:
        if self.vhd is not None:
            self.vhd.close()
        try:
            self.vhd = xhost_vhd.open_chain(self.path, writable=True,
                                            search_dirs=[self.path.parent])
        except xhost_vhd.VHDError as exc:
            raise backend_failure(46, "The VDI is not available", str(exc)) from None
        self.generation = self.tap.generation
        self.virtual_size = self.vhd.virtual_size

    def _reads_zero(self, offset: int, length: int) -> bool:
        first, last = offset // BLOCK, (offset + length - 1) // BLOCK
        for layer in self.vhd.chain():
            if not layer.is_dynamic:
                return False
            if layer.block_size != BLOCK:
                return False
            for index in range(first, min(last + 1, layer.block_count)):
                if layer.block_offset(index) is not None:
                    return False
        return True

    def write(self, offset: int, data: bytes) -> None:
        if not data:
            return
        with self.tap.lock:
            if self.tap.generation != self.generation:
                self._open()
            vhd = self.vhd
            if offset + len(data) > vhd.virtual_size:
                raise ApiError("VDI_TOO_SMALL", self.vdi, offset + len(data))
            if is_zero(data) and self._reads_zero(offset, len(data)):
                return
            new = 0
            if vhd.is_dynamic:  # fixed VHDs (dropped in by dom0 scripts) are preallocated
                size = vhd.block_size
                first, last = offset // size, (offset + len(data) - 1) // size
                new = sum(1 for i in range(first, last + 1) if vhd.block_offset(i) is None)
            if new:
                need = new * (size + 512)
                self.driver.runtime.reserve(self.sr, need)
                self.reserved += need
            try:
                vhd.write(offset, data)
            except xhost_vhd.VHDError as exc:
                raise backend_failure(200, "General IO error", str(exc)) from None
            except OSError as exc:
                raise backend_failure(200, "General IO error",
                                      f"{self.path.name}: {exc.strerror}") from None

    def data_ranges(self):
        with self.tap.lock:
            if self.tap.generation != self.generation:
                self._open()
            return list(self.vhd.data_ranges())

    def close(self) -> None:
        if self.vhd is not None:
            self.vhd.close()
            self.vhd = None
        try:
            self.driver.refresh(self.ctx, self.vdi)
        finally:
            self.driver.runtime.release(self.sr, self.reserved)
            self.reserved = 0


class VhdFileDriver(ContentDriver):
    """SM's FileSR family: ``ext`` (local), ``nfs`` (shared), ``file``."""

    capabilities = ("SR_PROBE", "SR_SCAN", "SR_UPDATE", "VDI_CREATE", "VDI_DELETE",
                    "VDI_ATTACH", "VDI_DETACH", "VDI_UPDATE", "VDI_CLONE", "VDI_SNAPSHOT",
                    "VDI_RESIZE", "VDI_RESIZE_ONLINE", "VDI_MIRROR", "VDI_GENERATE_CONFIG",
                    "VDI_RESET_ON_BOOT/2", "ATOMIC_PAUSE", "VDI_CONFIG_CBT", "VDI_ACTIVATE",
                    "VDI_DEACTIVATE", "THIN_PROVISIONING")
    thin = True
    vdi_type = "vhd"

    def __init__(self, sim: Simulator, shared: bool = False) -> None:
        super().__init__(sim)
        self.shared = shared

    # -- paths ------------------------------------------------------------------
    def sr_dir(self, sr_rec: dict[str, Any]) -> Path:
        return self.runtime.host_path(self.runtime.sr_mount(sr_rec["uuid"]))

    def export_dir(self, sr_rec: dict[str, Any]) -> Path:
        """Where a shared SR's files really live (the 'NFS server')."""
        return Path(self.sim.state_dir) / "nfs-exports" / sr_rec["uuid"]

    def vdi_path(self, sr_rec: dict[str, Any], vdi_rec: dict[str, Any]) -> Path:
        return self.sr_dir(sr_rec) / f"{vdi_rec['location'] or vdi_rec['uuid']}.vhd"

    def _file(self, sr_rec: dict[str, Any], uuid: str) -> Path:
        return self.sr_dir(sr_rec) / f"{uuid}.vhd"

    # -- SR -----------------------------------------------------------------------
    def sr_attach(self, ctx: CallContext, sr: str) -> None:
        db = ctx.db
        rec = db.get("SR", sr)
        mount = self.sr_dir(rec)
        if self.shared:
            target = self.export_dir(rec)
            target.mkdir(parents=True, exist_ok=True)
            if not mount.is_symlink() and not mount.exists():
                mount.parent.mkdir(parents=True, exist_ok=True)
                mount.symlink_to(target, target_is_directory=True)
        else:
            mount.mkdir(parents=True, exist_ok=True)
        path = self.runtime.sr_mount(rec["uuid"])
        for pbd in rec["PBDs"]:
            prec = db.find("PBD", pbd)
            if prec is not None and prec["device_config"].get("path") != path:
                db.update("PBD", pbd, device_config=dict(prec["device_config"], path=path))

    def sr_scan(self, ctx: CallContext, sr: str) -> None:
        from .sr_gc import collect

        with self.runtime.sr_lock(sr):
            collect(self, ctx, sr)
            self.reconcile(ctx, sr, strict=True)

    def survey(self, sr_rec: dict[str, Any], strict: bool) -> dict[str, FileInfo]:
        """Every ``<uuid>.vhd`` of the SR with its parent (by file name)."""
        directory = self.sr_dir(sr_rec)
        files: dict[str, FileInfo] = {}
        if not directory.is_dir():
            if strict:
                raise backend_failure(47, "The SR is not available",
                                      f"no such directory {self.runtime.sr_mount(sr_rec['uuid'])}")
            return files
        for entry in sorted(os.scandir(directory), key=lambda e: e.name):
            if not entry.name.endswith(".vhd") or not UUID_RE.match(entry.name[:-4]):
                continue
            uuid = entry.name[:-4]
            path = directory / entry.name
            try:
                with xhost_vhd.open_vhd(path) as vhd:
                    parent = None
                    if vhd.disk_type == xhost_vhd.DISK_DIFFERENCING:
                        parent = Path(xhost_vhd.find_parent(vhd, [directory])).name[:-4]
                    files[uuid] = FileInfo(uuid, path, vhd, parent)
            except (xhost_vhd.VHDError, OSError) as exc:
                if strict:
                    raise backend_failure(40, "The SR scan failed ",
                                          f"uuid={uuid}: {exc}") from None
                LOG.warning("SR %s: skipping %s: %s", sr_rec["uuid"], entry.name, exc)
        for info in files.values():
            if info.parent in files:
                files[info.parent].children.append(info.uuid)
        return files

    def records(self, ctx: CallContext, sr: str) -> dict[str, str]:
        """location -> VDI ref, for the SR's records that name a file."""
        db = ctx.db
        out: dict[str, str] = {}
        for ref in db.get("SR", sr)["VDIs"]:
            rec = db.find("VDI", ref)
            if rec is not None and rec["location"]:
                out[rec["location"]] = ref
        return out

    def reconcile(self, ctx: CallContext, sr: str, strict: bool = False) -> None:
        """Make the SR's VDI records follow its files (the second half of SR.scan)."""
        from .seed import sr_update

        db = ctx.db
        sr_rec = db.get("SR", sr)
        files = self.survey(sr_rec, strict)
        records = self.records(ctx, sr)
        for location, ref in records.items():
            if location in files:
                continue
            rec = db.find("VDI", ref)
            if rec is None:
                continue
            attached = any(db.exists("VBD", v) and db.get("VBD", v)["currently_attached"]
                           for v in rec["VBDs"])
            if attached:
                if not rec["missing"]:
                    db.update("VDI", ref, missing=True)
            else:
                forget_record(ctx, ref)
        for uuid, info in files.items():
            if info.hidden and not info.children:
                continue  # garbage awaiting the collector: never introduced
            ref = records.get(uuid)
            if ref is None:
                ref = self._introduce(ctx, sr, info)
            else:
                self._update_record(ctx, ref, info)
        sr_update(self.sim, sr)

    def _sm_config(self, old: dict[str, str], info: FileInfo) -> dict[str, str]:
        sm = dict(old, vdi_type="vhd")
        if info.parent:
            sm["vhd-parent"] = info.parent
        else:
            sm.pop("vhd-parent", None)
        return sm

    def _introduce(self, ctx: CallContext, sr: str, info: FileInfo) -> str:
        spec = self.sim.schema.classes["VDI"]
        values = {"uuid": info.uuid, "name_label": "base copy" if info.hidden else "",
                  "SR": sr, "type": "user", "location": info.uuid,
                  "virtual_size": info.virtual_size, "physical_utilisation": info.size,
                  "read_only": info.hidden or bool(info.children),
                  "managed": not info.hidden, "sharable": False,
                  "sm_config": self._sm_config({}, info), "missing": False}
        if info.uuid in ctx.db.uuids["VDI"]:
            LOG.warning("file %s has the uuid of a VDI of another SR; not introduced",
                        info.path)
            return NULL_REF
        ref = ctx.db.add("VDI", spec.new_record(values))
        refresh_allowed_operations(ctx, ref)
        return ref

    def _update_record(self, ctx: CallContext, ref: str, info: FileInfo) -> None:
        db = ctx.db
        rec = db.get("VDI", ref)
        changes: dict[str, Any] = {
            "virtual_size": info.virtual_size, "physical_utilisation": info.size,
            "sm_config": self._sm_config(rec["sm_config"], info), "missing": False}
        if info.hidden:
            changes.update(managed=False, read_only=True)
        elif info.children:
            changes.update(read_only=True)
        changes = {k: v for k, v in changes.items() if rec[k] != v}
        if changes:
            db.update("VDI", ref, **changes)

    # -- VDI ----------------------------------------------------------------------
    def usage(self, sr_rec: dict[str, Any], vdi_rec: dict[str, Any]) -> dict[str, Any]:
        path = self.vdi_path(sr_rec, vdi_rec)
        try:
            with xhost_vhd.open_vhd(path) as vhd:
                return {"virtual_size": vhd.virtual_size,
                        "physical_utilisation": vhd.physical_size}
        except (xhost_vhd.VHDError, OSError):
            return {}

    def vdi_create(self, ctx: CallContext, sr: str, vdi: str, record: dict[str, Any]
                   ) -> dict[str, Any]:
        sr_rec = ctx.db.get("SR", sr)
        size = round_vhd_size(record["virtual_size"])
        path = self._file(sr_rec, record["uuid"])
        overhead = metadata_size(size)
        self.runtime.reserve(sr, overhead)
        try:
            with self.runtime.sr_lock(sr):
                if path.exists():
                    raise backend_failure(43, "The VDI already exists")
                try:
                    xhost_vhd.create_dynamic(path, size, uuid=record["uuid"])
                except (xhost_vhd.VHDError, OSError) as exc:
                    raise backend_failure(78, "VDI Creation failed", str(exc)) from None
            sm = dict(record["sm_config"], vdi_type="vhd")
            sm.pop("vhd-parent", None)
            return {"virtual_size": size, "physical_utilisation": path.stat().st_size,
                    "location": record["uuid"], "sm_config": sm}
        finally:
            self.runtime.release(sr, overhead)

    def vdi_destroy(self, ctx: CallContext, sr: str, vdi: str, record: dict[str, Any]) -> None:
        uuid = record["location"] or record["uuid"]
        if self.runtime.in_use(uuid):
            raise ApiError("VDI_IN_USE", vdi, "destroy")
        sr_rec = ctx.db.get("SR", sr)
        with self.runtime.sr_lock(sr), self.runtime.paused(uuid):
            path = self._file(sr_rec, uuid)
            if path.exists():
                files = self.survey(sr_rec, strict=False)
                if files.get(uuid) is not None and files[uuid].children:
                    # Others still read through it: hide it, the GC removes it later.
                    xhost_vhd.set_hidden(path, True)
                else:
                    path.unlink()
        self.runtime.kick_gc(sr)

    def _chain_depth(self, path: Path) -> int:
        with xhost_vhd.open_chain(path, search_dirs=[path.parent],
                                  max_depth=MAX_CHAIN * 4) as leaf:
            return len(leaf.chain())

    def vdi_clone(self, ctx: CallContext, sr: str, src: str, src_record: dict[str, Any],
                  new: str, new_record: dict[str, Any], *, snapshot: bool,
                  driver_params: dict[str, str] | None = None) -> dict[str, Any]:
        db = ctx.db
        single = (driver_params or {}).get("type") == "single"
        src_uuid = src_record["location"] or src_record["uuid"]
        new_uuid = new_record["uuid"]
        sr_rec = db.get("SR", sr)
        directory = self.sr_dir(sr_rec)
        self.runtime.sync(src_record["uuid"])
        with self.runtime.sr_lock(sr), self.runtime.paused(src_uuid):
            path = directory / f"{src_uuid}.vhd"
            if not path.exists():
                raise backend_failure(46, "The VDI is not available",
                                      f"VDI {src_uuid} unavailable {path.name}")
            try:
                with xhost_vhd.open_vhd(path) as vhd:
                    hidden = vhd.hidden
                    empty_diff = (vhd.disk_type == xhost_vhd.DISK_DIFFERENCING
                                  and not vhd.allocated_blocks())
                    size = vhd.virtual_size
                depth = self._chain_depth(path)
            except xhost_vhd.VHDError as exc:
                raise backend_failure(46, "The VDI is not available", str(exc)) from None
            if hidden:
                raise backend_failure(81, "Failed to clone VDI", "hidden VDI")
            if depth >= MAX_CHAIN:
                raise backend_failure(109, "The snapshot chain is too long")
            files_needed = 1 if (single or empty_diff) else 2
            overhead = metadata_size(size) * files_needed
            self.runtime.reserve(sr, overhead)
            try:
                if empty_diff and not single:
                    return self._clone_over_parent(ctx, sr_rec, path, new_uuid)
                return self._clone_with_base(ctx, sr, sr_rec, src, path, new_uuid, single)
            finally:
                self.runtime.release(sr, overhead)

    def _clone_over_parent(self, ctx: CallContext, sr_rec: dict[str, Any], path: Path,
                           new_uuid: str) -> dict[str, Any]:
        """vhd-util snapshot skips an empty differencing leaf: link to its parent."""
        directory = path.parent
        with xhost_vhd.open_vhd(path) as vhd:
            parent_path = Path(xhost_vhd.find_parent(vhd, [directory]))
        dest = directory / f"{new_uuid}.vhd"
        try:
            xhost_vhd.create_differencing(dest, parent_path, search_dirs=[directory])
        except (xhost_vhd.VHDError, OSError) as exc:
            raise backend_failure(81, "Failed to clone VDI", str(exc)) from None
        return {"location": new_uuid, "physical_utilisation": dest.stat().st_size,
                "sm_config": {"vdi_type": "vhd", "vhd-parent": parent_path.name[:-4]}}

    def _clone_with_base(self, ctx: CallContext, sr: str, sr_rec: dict[str, Any], src: str,
                         path: Path, new_uuid: str, single: bool) -> dict[str, Any]:
        db = ctx.db
        directory = path.parent
        base_uuid = new_uuid if single else str(uuidlib.uuid4())
        base_path = directory / f"{base_uuid}.vhd"
        dest = directory / f"{new_uuid}.vhd"
        os.rename(path, base_path)
        try:
            xhost_vhd.set_hidden(base_path, True)
            xhost_vhd.create_differencing(path, base_path, search_dirs=[directory])
            if not single:
                xhost_vhd.create_differencing(dest, base_path, search_dirs=[directory])
        except (xhost_vhd.VHDError, OSError) as exc:
            for leftover in (path, dest):
                if leftover.exists() and leftover != base_path:
                    leftover.unlink()
            os.rename(base_path, path)
            xhost_vhd.set_hidden(path, False)
            raise backend_failure(81, "Failed to clone VDI", str(exc)) from None
        with xhost_vhd.open_vhd(base_path) as vhd:
            grandparent = (Path(xhost_vhd.find_parent(vhd, [directory])).name[:-4]
                           if vhd.disk_type == xhost_vhd.DISK_DIFFERENCING else None)
            base_size = vhd.physical_size
            virtual = vhd.virtual_size
        base_sm = {"vdi_type": "vhd"}
        if grandparent:
            base_sm["vhd-parent"] = grandparent
        src_rec = db.get("VDI", src)
        db.update("VDI", src, sm_config=dict(src_rec["sm_config"], **{"vhd-parent": base_uuid}),
                  physical_utilisation=path.stat().st_size)
        base_values = {"name_label": "base copy", "name_description": "", "SR": sr,
                       "type": "user", "location": base_uuid, "virtual_size": virtual,
                       "physical_utilisation": base_size, "read_only": True,
                       "managed": False, "sharable": False, "sm_config": base_sm,
                       "missing": False}
        if single:
            # The pre-made record (same uuid) becomes the base copy; xapi names it.
            return {k: base_values[k] for k in ("location", "virtual_size", "read_only",
                                                 "physical_utilisation", "managed",
                                                 "sm_config")}
        base_values["uuid"] = base_uuid
        base = db.add("VDI", self.sim.schema.classes["VDI"].new_record(base_values))
        refresh_allowed_operations(ctx, base)
        return {"location": new_uuid, "physical_utilisation": dest.stat().st_size,
                "sm_config": {"vdi_type": "vhd", "vhd-parent": base_uuid}}

    def vdi_resize(self, ctx: CallContext, sr: str, vdi: str, record: dict[str, Any],
                   new_size: int) -> dict[str, Any]:
        uuid = record["location"] or record["uuid"]
        attached = any(ctx.db.exists("VBD", v) and ctx.db.get("VBD", v)["currently_attached"]
                       for v in record["VBDs"])
        if self.runtime.in_use(uuid) and not attached:
            raise ApiError("VDI_IN_USE", vdi, "resize")
        size = round_vhd_size(new_size)
        sr_rec = ctx.db.get("SR", sr)
        path = self._file(sr_rec, uuid)
        self.runtime.sync(record["uuid"])
        with self.runtime.paused(uuid):
            try:
                with xhost_vhd.open_vhd(path) as vhd:
                    if vhd.hidden:
                        raise backend_failure(46, "The VDI is not available", "hidden VDI")
                xhost_vhd.resize(path, size)
            except xhost_vhd.VHDError as exc:
                raise backend_failure(110, "VDI resize failed", str(exc)) from None
        from . import compute

        compute.on_resize(ctx, record["uuid"], size)
        return {"virtual_size": size, "physical_utilisation": path.stat().st_size}

    # -- content ---------------------------------------------------------------------
    def open_reader(self, ctx: CallContext, vdi_rec: dict[str, Any]) -> xhost_vhd.VHDFile:
        sr_rec = ctx.db.get("SR", vdi_rec["SR"])
        path = self.vdi_path(sr_rec, vdi_rec)
        try:
            return xhost_vhd.open_chain(path, search_dirs=[path.parent])
        except xhost_vhd.VHDError as exc:
            raise backend_failure(46, "The VDI is not available", str(exc)) from None

    def open_writer(self, ctx: CallContext, vdi_ref: str) -> VhdLeafWriter:
        return VhdLeafWriter(self, ctx, vdi_ref)

    def chain_uuids(self, vdi_rec: dict[str, Any]) -> list[str]:
        sr_rec = self.sim.db.get("SR", vdi_rec["SR"])
        path = self.vdi_path(sr_rec, vdi_rec)
        try:
            with xhost_vhd.open_chain(path, search_dirs=[path.parent]) as leaf:
                return [Path(layer.path).name[:-4] for layer in leaf.chain()]
        except xhost_vhd.VHDError:
            return [vdi_rec["location"] or vdi_rec["uuid"]]

    def is_fresh(self, vdi_rec: dict[str, Any]) -> bool:
        sr_rec = self.sim.db.get("SR", vdi_rec["SR"])
        try:
            with xhost_vhd.open_vhd(self.vdi_path(sr_rec, vdi_rec)) as vhd:
                return vhd.disk_type == xhost_vhd.DISK_DYNAMIC and not vhd.allocated_blocks()
        except (xhost_vhd.VHDError, OSError):
            return False


def refresh_allowed_operations(ctx: CallContext, ref: str) -> None:
    from .behaviours.storage import vdi_update_allowed_operations

    vdi_update_allowed_operations(ctx, ref)


def forget_record(ctx: CallContext, vdi: str) -> None:
    """Remove a VDI record and its VBDs (the storage is already gone)."""
    db = ctx.db
    rec = db.find("VDI", vdi)
    if rec is None:
        return
    for vbd in list(rec["VBDs"]):
        vrec = db.find("VBD", vbd)
        if vrec is None:
            continue
        if vrec["metrics"] != NULL_REF and db.exists("VBD_metrics", vrec["metrics"]):
            db.remove("VBD_metrics", vrec["metrics"])
        db.remove("VBD", vbd)
    db.remove("VDI", vdi)
