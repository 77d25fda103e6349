"""Base of the SR drivers that keep real bytes (VHD files, raw volumes, ISOs).

:class:`ContentDriver` adds to :class:`~xhost.sim.storage_drivers.SRDriver`
what the data plane, ``VDI.copy`` and the compute domain need from any SR
type: a reader of a VDI's virtual disk, a writer into it, the files a
transfer keeps busy, record refreshes after the bytes changed, and the
attach/detach hooks through which the compute domain materialises plugged
disks as device files.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .disk_content import copy_disk
from .errors import NULL_REF, ApiError
from .storage_drivers import SRDriver

if TYPE_CHECKING:
    from .dispatch import CallContext
    from .simulator import Simulator
    from .storage_runtime import StorageRuntime

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def backend_failure(code: int, message: str, opterr: str = "") -> ApiError:
    """An SM error as xapi reports it: ``SR_BACKEND_FAILURE_<n> ["", msg, ""]``."""
    if opterr:
        message = f"{message} [opterr={opterr}]"
    return ApiError(f"SR_BACKEND_FAILURE_{code}", "", message, "")


class ContentDriver(SRDriver):
    """An SR driver whose VDIs have bytes the simulator can read and write."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    @property
    def runtime(self) -> StorageRuntime:
        return self.sim.storage_runtime

    # -- what subclasses provide ----------------------------------------------
    def sr_dir(self, sr_rec: dict[str, Any]) -> Path:
        """The real directory holding the SR's files."""
        raise NotImplementedError

    def vdi_path(self, sr_rec: dict[str, Any], vdi_rec: dict[str, Any]) -> Path:
        raise NotImplementedError

    def open_reader(self, ctx: CallContext, vdi_rec: dict[str, Any]) -> Any:
        """A reader of the VDI's virtual disk (close() it)."""
        raise NotImplementedError

    def open_writer(self, ctx: CallContext, vdi_ref: str) -> Any:
        """A writer into the VDI (close() it: records are refreshed then)."""
        raise NotImplementedError

    def chain_uuids(self, vdi_rec: dict[str, Any]) -> list[str]:
        """Uuids of the files reading this VDI touches (leaf first)."""
        return [vdi_rec["location"] or vdi_rec["uuid"]]

    def is_fresh(self, vdi_rec: dict[str, Any]) -> bool:
        """True when the VDI is known to read as zeros everywhere."""
        return False

    def usage(self, sr_rec: dict[str, Any], vdi_rec: dict[str, Any]) -> dict[str, Any]:
        """Record fields that follow the bytes (virtual_size, physical_utilisation)."""
        return {}

    # -- shared behaviour -----------------------------------------------------
    @contextmanager
    def reading(self, ctx: CallContext, vdi_rec: dict[str, Any]) -> Iterator[Any]:
        """A reader of the VDI for a transfer: what a compute-domain device
        holds is written back first, and the files stay registered as in use
        (no garbage collection under the reader's feet) until the end."""
        self.runtime.sync(vdi_rec["uuid"])
        sr = vdi_rec["SR"]
        with self.runtime.sr_lock(sr):  # no GC pass between listing and opening
            uuids = self.chain_uuids(vdi_rec)
            self.runtime.acquire(uuids)
            try:
                reader = self.open_reader(ctx, vdi_rec)
            except BaseException:
                self.runtime.release_use(sr, uuids)
                raise
        try:
            yield reader
        finally:
            reader.close()
            self.runtime.release_use(sr, uuids)

    @contextmanager
    def writing(self, ctx: CallContext, vdi: str) -> Iterator[Any]:
        """A writer into the VDI for a transfer (files registered as in use);
        the record follows the bytes when it is closed."""
        rec = ctx.db.get("VDI", vdi)
        sr = rec["SR"]
        with self.runtime.sr_lock(sr):
            uuids = self.chain_uuids(rec)
            self.runtime.acquire(uuids)
            try:
                writer = self.open_writer(ctx, vdi)
            except BaseException:
                self.runtime.release_use(sr, uuids)
                raise
        try:
            yield writer
        finally:
            try:
                writer.close()
            finally:
                self.runtime.release_use(sr, uuids)

    def refresh(self, ctx: CallContext, vdi: str) -> None:
        """Bring a VDI record (and its SR's totals) in line with its files."""
        from .seed import sr_update

        db = ctx.db
        rec = db.find("VDI", vdi)
        if rec is None:
            return
        sr_rec = db.get("SR", rec["SR"])
        changes = {k: v for k, v in self.usage(sr_rec, rec).items() if rec.get(k) != v}
        if changes:
            db.update("VDI", vdi, **changes)
        sr_update(self.sim, rec["SR"])

    def vdi_copy(self, ctx: CallContext, src: str, src_record: dict[str, Any], dst: str,
                 dst_record: dict[str, Any], base: str = NULL_REF) -> dict[str, Any]:
        """sparse_dd: copy the source (or what differs from ``base``) into ``dst``."""
        db = ctx.db
        src_driver = self.sim.storage.for_sr(src_record["SR"])
        if not isinstance(src_driver, ContentDriver):
            raise ApiError("VDI_NOT_SPARSE", src) if base != NULL_REF else \
                ApiError("SR_OPERATION_NOT_SUPPORTED", src_record["SR"])
        base_rec = db.get("VDI", base) if base != NULL_REF else None
        base_driver = (self.sim.storage.for_sr(base_rec["SR"]) if base_rec is not None
                       else None)
        if base_rec is not None and not isinstance(base_driver, ContentDriver):
            raise ApiError("VDI_NOT_SPARSE", base)
        fresh = self.is_fresh(db.get("VDI", dst))
        with ExitStack() as stack:
            reader = stack.enter_context(src_driver.reading(ctx, src_record))
            base_reader = (stack.enter_context(base_driver.reading(ctx, base_rec))
                           if base_rec is not None else None)
            writer = stack.enter_context(self.writing(ctx, dst))
            copy_disk(reader, writer, base=base_reader, dest_fresh=fresh,
                      progress=ctx.progress, check=ctx.check_cancel)
        rec = db.get("VDI", dst)
        return self.usage(db.get("SR", rec["SR"]), rec)

    def vdi_attach(self, ctx: CallContext, vdi: str, writable: bool,
                   vbd: str | None = None) -> None:
        from . import compute

        compute.on_attach(ctx, self, vdi, writable, vbd)

    def vdi_detach(self, ctx: CallContext, vdi: str, vbd: str | None = None) -> None:
        from . import compute

        compute.on_detach(ctx, self, vdi, vbd)
