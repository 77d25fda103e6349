"""Garbage collection of VHD SRs, the way SM's ``cleanup.py`` does it.

One run repeats, until nothing is left to do:

1. **garbage**: a hidden file without children is deleted (and its "base
   copy" record forgotten) -- what is left of a destroyed chain;
2. **coalesce**: a hidden file ``V`` with children whose hidden parent ``P``
   has no other child is merged into ``P``; ``V``'s children are re-pointed
   at ``P`` and ``V`` is deleted;
3. **leaf-coalesce**: a visible leaf ``L`` whose hidden parent ``P`` has no
   other child (its sibling snapshot was destroyed) is merged into ``P``,
   which is then renamed to ``L``'s file name: ``L`` keeps its uuid and
   reference, its ``sm_config['vhd-parent']`` becomes ``P``'s parent and
   ``P``'s record is forgotten.

SR ``other_config:coalesce=false`` disables coalescing (garbage is still
deleted); VDI ``other_config:leaf-coalesce=false`` keeps a leaf apart.
Files that a data-plane transfer is using are left alone; the run is
repeated when the transfer releases them.
"""
from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from xhost.dom0 import xhost_vhd

from .dispatch import CallContext
from .sr_content import backend_failure
from .sr_vhd import FileInfo, forget_record
from .storage_runtime import fsync_dir

if TYPE_CHECKING:
    from .simulator import Simulator
    from .sr_vhd import VhdFileDriver

LOG = logging.getLogger(__name__)

MAX_STEPS = 10_000


def collect(driver: VhdFileDriver, ctx: CallContext, sr: str) -> int:
    """Run GC on ``sr`` until it is clean; returns the number of steps taken.

    The caller holds (or gets here) the SR lock.
    """
    runtime = driver.runtime
    steps = 0
    with runtime.sr_lock(sr):
        sr_rec = ctx.db.get("SR", sr)
        coalescing = sr_rec["other_config"].get("coalesce", "") != "false"
        while steps < MAX_STEPS:
            files = driver.survey(sr_rec, strict=False)
            if not (_garbage(driver, ctx, sr, files)
                    or (coalescing and _coalesce(driver, ctx, sr, files))
                    or (coalescing and _leaf_coalesce(driver, ctx, sr, files))):
                break
            steps += 1
    return steps


def _busy(driver: VhdFileDriver, sr: str, *uuids: str) -> bool:
    if driver.runtime.in_use(*uuids):
        driver.runtime.defer_gc(sr)
        return True
    return False


def _forget_location(driver: VhdFileDriver, ctx: CallContext, sr: str, uuid: str) -> None:
    ref = driver.records(ctx, sr).get(uuid)
    if ref is not None:
        forget_record(ctx, ref)


def _garbage(driver: VhdFileDriver, ctx: CallContext, sr: str,
             files: dict[str, FileInfo]) -> bool:
    for info in files.values():
        if info.hidden and not info.children and not _busy(driver, sr, info.uuid):
            LOG.debug("GC: deleting hidden leaf %s", info.path)
            info.path.unlink()
            _forget_location(driver, ctx, sr, info.uuid)
            return True
    return False


def _coalesce(driver: VhdFileDriver, ctx: CallContext, sr: str,
              files: dict[str, FileInfo]) -> bool:
    for info in files.values():
        parent = files.get(info.parent or "")
        if not (info.hidden and info.children and parent is not None and parent.hidden
                and parent.children == [info.uuid]):
            continue
        if _busy(driver, sr, info.uuid, parent.uuid, *info.children):
            continue
        LOG.debug("GC: coalescing %s into %s", info.uuid, parent.uuid)
        directory = info.path.parent
        with driver.runtime.paused(*info.children):
            try:
                xhost_vhd.coalesce(info.path, search_dirs=[directory])
                for child in info.children:
                    xhost_vhd.set_parent(files[child].path, parent.path)
            except (xhost_vhd.VHDError, OSError) as exc:
                raise backend_failure(200, "General IO error",
                                      f"coalescing {info.uuid}: {exc}") from None
            info.path.unlink()
            fsync_dir(directory)
        _forget_location(driver, ctx, sr, info.uuid)
        records = driver.records(ctx, sr)
        for uuid in (parent.uuid, *info.children):
            if uuid in records:
                _repoint(driver, ctx, records[uuid], parent.uuid if uuid != parent.uuid
                         else parent.parent)
        return True
    return False


def _leaf_coalesce(driver: VhdFileDriver, ctx: CallContext, sr: str,
                   files: dict[str, FileInfo]) -> bool:
    records = driver.records(ctx, sr)
    for info in files.values():
        parent = files.get(info.parent or "")
        if (info.hidden or info.children or parent is None or not parent.hidden
                or parent.children != [info.uuid]):
            continue
        ref = records.get(info.uuid)
        if ref is not None and \
                ctx.db.get("VDI", ref)["other_config"].get("leaf-coalesce") == "false":
            continue
        if _busy(driver, sr, info.uuid, parent.uuid):
            continue
        LOG.debug("GC: leaf-coalescing %s into %s", info.uuid, parent.uuid)
        directory = info.path.parent
        scratch = directory / f".gc-{info.uuid}.vhd"
        with driver.runtime.paused(info.uuid):
            try:
                xhost_vhd.coalesce(info.path, search_dirs=[directory])
                xhost_vhd.set_hidden(parent.path, False)
                os.rename(info.path, scratch)
                os.rename(parent.path, info.path)
                scratch.unlink()
                fsync_dir(directory)
            except (xhost_vhd.VHDError, OSError) as exc:
                if scratch.exists() and not info.path.exists():
                    os.rename(scratch, info.path)
                raise backend_failure(200, "General IO error",
                                      f"leaf-coalescing {info.uuid}: {exc}") from None
        _forget_location(driver, ctx, sr, parent.uuid)
        if ref is not None and ctx.db.exists("VDI", ref):
            _repoint(driver, ctx, ref, parent.parent)
        return True
    return False


def _repoint(driver: VhdFileDriver, ctx: CallContext, ref: str, parent: str | None) -> None:
    db = ctx.db
    rec = db.get("VDI", ref)
    sm = dict(rec["sm_config"])
    if parent:
        sm["vhd-parent"] = parent
    else:
        sm.pop("vhd-parent", None)
    changes = dict(driver.usage(db.get("SR", rec["SR"]), rec), sm_config=sm)
    db.update("VDI", ref, **changes)


def background_runner(sim: Simulator):
    """The runtime's ``gc_runner``: a GC run plus record reconciliation."""
    from .sr_vhd import VhdFileDriver

    def run(sr: str) -> None:
        driver = sim.storage.for_sr(sr)
        if not isinstance(driver, VhdFileDriver):
            return
        ctx = CallContext(sim, None, None, "SR.scan")
        with driver.runtime.sr_lock(sr):
            collect(driver, ctx, sr)
            driver.reconcile(ctx, sr)
    return run
