"""The image cache: the disks an instance gets from its image.

:func:`image_disks` is what the storage backend calls to make an instance's
boot disks. With ``[xenserver] cache_images`` = ``all`` (or ``some`` and
the image property ``img_cache_in_nova``/``cache_in_nova`` true) an image is
downloaded once per SR into a *cached base VDI*:

* ``name_label`` ``Glance Image <image id>``, ``other_config`` ``image-id``,
  ``cached-time`` (UNIX seconds) and :data:`TAG_COMPLETE` -- set in one call
  once the download completed and was verified, the marker being the VDI's
  own uuid: a VDI without it is never used (it is removed, under the lock,
  when found), and a clone (which starts with a copy of the cache's tags)
  never passes for the cache;
* never tagged with an instance, never destroyed with one;
* each instance gets a copy-on-write ``VDI.clone`` of it where ``[DEFAULT]
  use_cow_images`` is on and the SR can (else a ``VDI.copy``), tagged
  ``nova_instance_uuid`` / ``nova_disk_type`` (and ``xhost_cached_from``).

Two spawns of the same image on the same SR download it once: the cache is
looked up and filled under an exclusive lock file in ``[compute]
state_dir/locks`` (per image and SR; it serialises xhost processes of this
machine, not several machines sharing an NFS SR), and cloned under the same
lock shared -- clones do not wait for each other, and whoever removes cached
copies (a fill finding leftovers, ``image cache clean``, the cleanup after a
killed process) holds it exclusively, so no clone still untagged is taken
for a leftover. The cached images a connection found or made are
remembered, so a spawn from a cached image does not look it up again.
Everything created goes into ``ctx.undo`` except the completed cached image.

:func:`cached_images` and :func:`clean` back ``xhost image cache list`` and
``xhost image cache clean``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
import random
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from xhost import exception
from xhost.compute import vmrecord
from xhost.context import Context, UndoLog
from xhost.images import ImageError, InvalidImage
from xhost.imagetransfer import (
    TAG_DOWNLOAD_OWNER,
    TAG_DOWNLOADING,
    destroy_vdi,
    image_kind,
    owner_alive,
    remove_kernel_files,
    sr_record,
)
from xhost.objects import Disk, ImageMeta, Instance

LOG = logging.getLogger(__name__)
GiB = 1024 ** 3
NULL = "OpaqueRef:NULL"
CACHE_NAME = "Glance Image {image_id}"
TAG_IMAGE_ID = "image-id"
TAG_CACHED_TIME = "cached-time"
#: Set (with the other cache tags, in one call) only once the download completed.
TAG_COMPLETE = "xhost_image_complete"
#: On instance disks cloned from a cached image: the cached VDI's uuid.
TAG_CACHED_FROM = "xhost_cached_from"
TAG_INSTANCE = vmrecord.VDI_TAG_INSTANCE
TAG_KIND = vmrecord.VDI_TAG_KIND
COW_SR_TYPES = frozenset({"ext", "nfs", "file", "smb", "ext4"})

__all__ = ["CachedImage", "FlavorDiskSmallerThanImage", "ImageCacheError", "cache_wanted",
           "cached_images", "cached_root", "clean", "image_disks", "remove_instance_files"]


class ImageCacheError(ImageError):
    msg_fmt = "image cache: {reason}"


class FlavorDiskSmallerThanImage(ImageError):
    msg_fmt = ("image {image} needs a {size} byte disk but flavor {flavor} has a {root_gb} GiB "
               "root disk; choose a larger flavor")


def cache_wanted(conf: Any, image: ImageMeta) -> bool:
    """Whether ``image`` goes through the cache (never for ISO images)."""
    if image_kind(image) in ("iso", "aki", "ari"):
        return False
    mode = conf.xenserver.cache_images
    if mode == "all":
        return True
    if mode == "some":
        value = vmrecord.image_property(image.properties, "img_cache_in_nova", "cache_in_nova")
        return bool(vmrecord.strict_bool(value))
    return False


@contextlib.contextmanager
def _locked(conf: Any, image_id: str, sr_uuid: str, exclusive: bool = True) -> Iterator[None]:
    """The cache lock of an image in an SR: exclusive to fill the cache or
    remove from it, shared to clone it (clones do not wait for each other,
    and no one removes a clone that is not tagged yet)."""
    directory = os.path.join(conf.compute.state_dir, "locks")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", image_id)
    path = os.path.join(directory, f"image-cache-{safe}-{sr_uuid}.lock")
    # flock locks belong to the open file description: two threads of one
    # process exclude each other as two processes do.
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass(frozen=True)
class _Cached:
    """A completed cached image VDI."""

    ref: str
    uuid: str
    virtual_size: int


def _sub_context(ctx: Context, undo: UndoLog) -> Context:
    return dataclasses.replace(ctx, undo=undo)


def _sr_type(ctx: Context, sr_ref: str) -> str:
    return sr_record(ctx, sr_ref)["type"]


def _sr_uuid(ctx: Context, sr_ref: str) -> str:
    return sr_record(ctx, sr_ref)["uuid"]


def _copy_on_write(ctx: Context, sr_ref: str) -> bool:
    if not ctx.conf.use_cow_images:
        return False

    def ask() -> bool:
        if "storage_backend" in ctx.plugins.selected:
            with contextlib.suppress(exception.NotSupportedByPlugin):
                return bool(ctx.plugins.storage_capabilities(ctx, sr_ref).copy_on_write)
        return _sr_type(ctx, sr_ref) in COW_SR_TYPES

    return ctx.xapi.remembered(("imagecache.cow", sr_ref), ask)


def _check_handler(ctx: Context, image: ImageMeta, sr_ref: str) -> None:
    """Refuse, before anything is created, what the handler cannot do."""
    caps = ctx.plugins.image_capabilities(ctx)
    handler = ctx.plugins.selected.get("image_handler", "?")
    if image.disk_format not in caps.disk_formats:
        raise InvalidImage(image=image.id, reason=f"the {handler} image handler does not "
                           f"download {image.disk_format} images (it does "
                           f"{', '.join(sorted(caps.disk_formats))}); set [xenserver] "
                           f"image_handler to one that does")
    if caps.sr_types is not None:
        sr_type = _sr_type(ctx, sr_ref)
        if sr_type not in caps.sr_types:
            name = sr_record(ctx, sr_ref)["name_label"]
            raise ImageCacheError(reason=f"SR {name!r} is of type {sr_type}; the {handler} "
                                  f"image handler needs a file-based SR "
                                  f"({', '.join(sorted(caps.sr_types))}). Use [xenserver] "
                                  f"image_handler = vdi_remote_stream, which works on every SR "
                                  f"type, or another SR")


def _check_size(instance: Instance | None, image: ImageMeta, virtual_size: int) -> None:
    if instance is None or instance.flavor.root_gb <= 0:
        return
    if virtual_size > instance.flavor.root_gb * GiB:
        raise FlavorDiskSmallerThanImage(image=image.name or image.id, size=virtual_size,
                                         flavor=instance.flavor.name,
                                         root_gb=instance.flavor.root_gb)


def _tag_for_instance(ctx: Context, vdi_ref: str, instance: Instance, kind: str,
                      extra: dict[str, str] | None = None) -> None:
    ctx.xapi.call("VDI.set_other_config", vdi_ref,
                  {TAG_INSTANCE: instance.uuid, TAG_KIND: kind, **(extra or {})})
    ctx.xapi.call("VDI.set_name_label", vdi_ref, instance.name)


def is_complete(record: dict[str, Any]) -> bool:
    """A completed cached image: its marker is its own uuid (a clone of it
    starts with a copy of its tags, so a clone never passes for the cache)."""
    other = record["other_config"]
    return (TAG_IMAGE_ID in other and TAG_INSTANCE not in other
            and other.get(TAG_COMPLETE) == record["uuid"] and not record.get("missing"))


def _candidates(ctx: Context, sr_ref: str | None, image_id: str) -> dict[str, dict[str, Any]]:
    """VDIs named as the image's cache (in ``sr_ref``, or anywhere)."""
    query = f'field "name__label"="{CACHE_NAME.format(image_id=image_id)}"'
    if sr_ref is not None:
        query += f' and field "SR"="{sr_ref}"'
    return ctx.xapi.call("VDI.get_all_records_where", query)


def _remove_stale(ctx: Context, image_id: str, records: dict[str, dict[str, Any]]) -> int:
    """Under the exclusive lock: VDIs named as the image's cache that are no
    completed cache -- a download whose tagging did not finish, or a clone
    whose spawn died before tagging it. Returns how many went."""
    removed = 0
    for ref, rec in records.items():
        other = rec["other_config"]
        if TAG_INSTANCE in other or is_complete(rec):
            continue
        if other.get(TAG_IMAGE_ID, other.get(TAG_DOWNLOADING)) not in (image_id, None):
            continue
        if TAG_DOWNLOADING in other and owner_alive(other.get(TAG_DOWNLOAD_OWNER, "")):
            continue
        LOG.warning("removing VDI %s: an unfinished copy of cached image %s", rec["uuid"],
                    image_id)
        with contextlib.suppress(exception.XapiFailure):
            destroy_vdi(ctx, ref)
            removed += 1
    return removed


_known_lock = threading.Lock()


def _known(ctx: Context) -> dict[tuple[str, str], _Cached]:
    """The cached images this connection found or made (per client: refs
    are per host), so a spawn from a cached image does not look it up."""
    return ctx.xapi.remembered("imagecache.known", dict)


def _remember(ctx: Context, key: tuple[str, str], cached: _Cached | None) -> None:
    with _known_lock:
        if cached is None:
            _known(ctx).pop(key, None)
        else:
            _known(ctx)[key] = cached


def _download(ctx: Context, image: ImageMeta, sr_ref: str, instance: Instance | None,
              undo: UndoLog) -> Disk:
    """The handler's download of a boot disk, its undo kept in ``undo``."""
    try:
        downloaded = ctx.plugins.image_download(_sub_context(ctx, undo), image, sr_ref, instance)
        root = downloaded.root
        if root is None:
            raise ImageCacheError(reason=f"the image handler made no root disk from image "
                                  f"{image.id}")
        return root
    except BaseException:
        undo.rollback(LOG)
        raise


def _fill(ctx: Context, sr_ref: str, image: ImageMeta, instance: Instance | None) -> _Cached:
    """Under the exclusive lock: the completed cached image, downloaded if
    there is none."""
    records = _candidates(ctx, sr_ref, image.id)
    for ref, rec in records.items():
        if is_complete(rec):
            return _Cached(ref, rec["uuid"], int(rec["virtual_size"]))
    _remove_stale(ctx, image.id, records)
    undo = ctx.undo.child()
    root = _download(ctx, image, sr_ref, instance, undo)
    try:
        uuid = root.vdi_uuid or ctx.xapi.call("VDI.get_uuid", root.vdi_ref)
        size = root.virtual_size
        if size is None:
            size = int(ctx.xapi.call("VDI.get_virtual_size", root.vdi_ref))
        # The name first: a process killed in between leaves a VDI named as the
        # cache but not marked complete, which the next fill removes.
        ctx.xapi.call("VDI.set_name_label", root.vdi_ref, CACHE_NAME.format(image_id=image.id))
        ctx.xapi.call("VDI.set_other_config", root.vdi_ref, {
            TAG_IMAGE_ID: image.id, TAG_CACHED_TIME: str(int(time.time())),
            TAG_COMPLETE: uuid})
    except BaseException:
        undo.rollback(LOG)
        raise
    undo.discard()  # a completed cached image outlives the operation
    return _Cached(root.vdi_ref, uuid, size)


def _cached(ctx: Context, sr_ref: str, image: ImageMeta,
            instance: Instance | None) -> _Cached:
    key = (image.id, sr_ref)
    with _known_lock:
        found = _known(ctx).get(key)
    if found is not None:
        return found
    with _locked(ctx.conf, image.id, _sr_uuid(ctx, sr_ref)):
        with _known_lock:  # another thread filled it while we waited
            found = _known(ctx).get(key)
        if found is None:
            found = _fill(ctx, sr_ref, image, instance)
            _remember(ctx, key, found)
    return found


def cached_root(ctx: Context, sr_ref: str, image: ImageMeta,
                instance: Instance | None = None) -> tuple[str, dict[str, Any]]:
    """The completed cached VDI of ``image`` in ``sr_ref``, downloading it
    first if needed (once, whoever else asks meanwhile)."""
    found = _cached(ctx, sr_ref, image, instance)
    try:
        return found.ref, ctx.xapi.call("VDI.get_record", found.ref)
    except exception.HandleInvalid:
        _remember(ctx, (image.id, sr_ref), None)
        found = _cached(ctx, sr_ref, image, instance)
        return found.ref, ctx.xapi.call("VDI.get_record", found.ref)


#: Attempts at cloning a cached image someone removes meanwhile.
_CLONE_ATTEMPTS = 3


#: Attempts at a clone XAPI refuses because another one of the same VDI is
#: in progress (an xhost of another process, or host, is cloning it too).
_BUSY_ATTEMPTS = 12
_clone_locks: dict[str, threading.Lock] = {}


def _clone_call(ctx: Context, cache_ref: str, sr_ref: str) -> str:
    """``VDI.clone`` (else ``VDI.copy``) of the cached image. XAPI runs one
    such operation of a VDI at a time (``OTHER_OPERATION_IN_PROGRESS``):
    this process's threads take turns, other processes' clones are waited
    out."""
    with _known_lock:
        lock = _clone_locks.setdefault(cache_ref, threading.Lock())
    for attempt in range(_BUSY_ATTEMPTS):
        with lock:
            try:
                if _copy_on_write(ctx, sr_ref):
                    return ctx.xapi.call("VDI.clone", cache_ref, {})
                return ctx.xapi.call_async("VDI.copy", cache_ref, sr_ref)
            except exception.XapiFailure as exc:
                if exc.code != "OTHER_OPERATION_IN_PROGRESS" or attempt + 1 == _BUSY_ATTEMPTS:
                    raise
        time.sleep(min(0.02 * 2 ** attempt, 1.0) * random.uniform(0.5, 1.0))
    raise AssertionError("unreachable")


def _clone(ctx: Context, instance: Instance, sr_ref: str, image: ImageMeta) -> Disk:
    """A copy-on-write clone (else a copy) of the cached image, tagged for
    the instance; made and tagged under the shared lock."""
    for attempt in range(_CLONE_ATTEMPTS):
        cache = _cached(ctx, sr_ref, image, instance)
        _check_size(instance, image, cache.virtual_size)
        with _locked(ctx.conf, image.id, _sr_uuid(ctx, sr_ref), exclusive=False):
            try:
                ref = _clone_call(ctx, cache.ref, sr_ref)
            except exception.HandleInvalid:
                # The cached image was removed (`xhost image cache clean`): fill again.
                _remember(ctx, (image.id, sr_ref), None)
                if attempt + 1 == _CLONE_ATTEMPTS:
                    raise
                continue
            ctx.undo.push(f"destroy root VDI of {instance.name}", destroy_vdi, ctx, ref)
            _tag_for_instance(ctx, ref, instance, "root", {TAG_CACHED_FROM: cache.uuid})
        return Disk(vdi_ref=ref, vdi_uuid="", kind="root", userdevice="0", bootable=True,
                    virtual_size=cache.virtual_size)
    raise AssertionError("unreachable")


def _instance_root(ctx: Context, instance: Instance, sr_ref: str, image: ImageMeta) -> Disk:
    if cache_wanted(ctx.conf, image):
        return _clone(ctx, instance, sr_ref, image)
    undo = ctx.undo.child()
    root = _download(ctx, image, sr_ref, instance, undo)
    ctx.undo.push(f"undo the download of image {image.id}", undo.rollback, LOG)
    size = root.virtual_size
    if size is None:
        size = int(ctx.xapi.call("VDI.get_virtual_size", root.vdi_ref))
    _check_size(instance, image, size)
    _tag_for_instance(ctx, root.vdi_ref, instance, "root")
    return dataclasses.replace(root, kind="root", userdevice="0", bootable=True,
                               virtual_size=size)


def _companion(ctx: Context, image_id: str, kind: str, sr_ref: str, instance: Instance) -> Disk:
    """The kernel or ramdisk of an AMI image, as a dom0 file."""
    meta = ctx.plugins.image_service_show(ctx, image_id)
    expected = "aki" if kind == "kernel" else "ari"
    if meta.disk_format != expected:
        raise InvalidImage(image=image_id, reason=f"it is the {kind} of an AMI image, so its "
                           f"disk_format must be {expected}, not {meta.disk_format}")
    downloaded = ctx.plugins.image_download(ctx, meta, sr_ref, instance)
    disk = downloaded.disks.get(kind)
    if disk is None or not disk.dom0_path:
        raise ImageCacheError(reason=f"the image handler made no {kind} file from image "
                              f"{image_id}")
    return disk


def _blank_root(ctx: Context, instance: Instance, sr_ref: str) -> Disk:
    size = max(instance.flavor.root_gb, 1) * GiB
    ref = ctx.xapi.call("VDI.create", {
        "name_label": instance.name, "name_description": "root", "SR": sr_ref,
        "virtual_size": str(size), "type": "user", "sharable": False, "read_only": False,
        "other_config": {TAG_INSTANCE: instance.uuid, TAG_KIND: "root"}, "xenstore_data": {},
        "sm_config": {}, "tags": []})
    ctx.undo.push(f"destroy root VDI of {instance.name}", destroy_vdi, ctx, ref)
    return Disk(vdi_ref=ref, vdi_uuid=ctx.xapi.call("VDI.get_uuid", ref), kind="root",
                userdevice="0", bootable=False)


def image_disks(ctx: Context, instance: Instance, sr_ref: str, image: ImageMeta) -> list[Disk]:
    """The disks an instance gets from its image (see the module docstring).

    * ``vhd``, ``raw``, raw-in-tgz: ``[root]`` (userdevice ``"0"``, bootable),
      through the cache as configured;
    * ``ami``: ``[root, kernel, ramdisk]`` -- the kernel and ramdisk (from the
      image properties ``kernel_id``/``ramdisk_id``) are files in dom0
      (``Disk.dom0_path``, no VDI), removed by :func:`remove_instance_files`;
    * ``iso``: ``[root, iso]`` -- a blank root of the flavor's size (not
      bootable) and the ISO as a read-only bootable CD (userdevice ``"1"``)
      in the local ISO SR, both owned by the instance.

    Instance disks are tagged ``nova_instance_uuid``/``nova_disk_type`` and
    registered in ``ctx.undo``. The root is not grown to the flavor's size
    (the storage backend does that); an image larger than the flavor's root
    disk is refused.
    """
    kind = image_kind(image)
    if kind in ("aki", "ari"):
        raise InvalidImage(image=image.id, reason=f"a {image.disk_format} image is a kernel "
                           f"or ramdisk, not a bootable disk; boot the AMI image that names it")
    _check_handler(ctx, image, sr_ref)
    if kind == "iso":
        downloaded = ctx.plugins.image_download(ctx, image, sr_ref, instance)
        iso = downloaded.disks.get("iso")
        if iso is None:
            raise ImageCacheError(reason=f"the image handler made no ISO disk from image "
                                  f"{image.id}")
        _tag_for_instance(ctx, iso.vdi_ref, instance, "iso")
        return [_blank_root(ctx, instance, sr_ref), iso]
    disks = [_instance_root(ctx, instance, sr_ref, image)]
    if kind == "ami":
        for key, disk_kind in (("kernel_id", "kernel"), ("ramdisk_id", "ramdisk")):
            companion = image.properties.get(key)
            if companion:
                disks.append(_companion(ctx, companion, disk_kind, sr_ref, instance))
    return disks


def remove_leftovers(ctx: Context, image_id: str, owner: str | None = None) -> int:
    """What a spawn killed mid-way may have left of the image cache: a clone
    of the cached image not yet tagged for its instance, a cached copy whose
    tagging did not finish, and the downloads of ``owner`` (a
    :func:`~xhost.imagetransfer.download_owner`, the dead process).
    Returns how many VDIs were removed."""
    removed = 0
    by_sr: dict[str, dict[str, dict[str, Any]]] = {}
    for ref, rec in _candidates(ctx, None, image_id).items():
        if not is_complete(rec) and TAG_INSTANCE not in rec["other_config"]:
            by_sr.setdefault(rec["SR"], {})[ref] = rec
    for sr_ref in by_sr:
        with _locked(ctx.conf, image_id, _sr_uuid(ctx, sr_ref)):
            removed += _remove_stale(ctx, image_id, _candidates(ctx, sr_ref, image_id))
    if owner:
        for ref, rec in ctx.xapi.call("VDI.get_all_records").items():
            other = rec["other_config"]
            if other.get(TAG_DOWNLOAD_OWNER) == owner and TAG_INSTANCE not in other \
                    and not is_complete(rec):
                LOG.warning("removing VDI %s: a download of a process that died",
                            rec["uuid"])
                with contextlib.suppress(exception.XapiFailure):
                    destroy_vdi(ctx, ref)
                    removed += 1
    return removed


def remove_instance_files(ctx: Context, instance: Instance) -> list[str]:
    """Remove the dom0 files (kernel, ramdisk) :func:`image_disks` made for an
    instance; for ``xhost_storage_destroy_disks``. Missing files are fine.
    Returns the dom0 paths removed."""
    return remove_kernel_files(ctx, instance)


# -- the CLI's view -----------------------------------------------------------------


@dataclass
class CachedImage:
    """One cached image VDI (or an unfinished download)."""

    sr: str
    vdi: str
    image_id: str
    status: str
    cached_time: int | None
    virtual_size: int
    physical_utilisation: int
    instances: int
    vdi_ref: str = ""
    sr_ref: str = ""


def cached_images(ctx: Context) -> list[CachedImage]:
    """Every cached image and unfinished download on the host's SRs."""
    records = ctx.xapi.call("VDI.get_all_records")
    users: dict[str, int] = {}
    for rec in records.values():
        source = rec["other_config"].get(TAG_CACHED_FROM)
        if source and TAG_INSTANCE in rec["other_config"]:
            users[source] = users.get(source, 0) + 1
    sr_names: dict[str, str] = {}
    result = []
    for ref, rec in records.items():
        other = rec["other_config"]
        if TAG_INSTANCE in other:
            continue
        if TAG_IMAGE_ID in other:
            image_id = other[TAG_IMAGE_ID]
            status = "complete" if is_complete(rec) else "incomplete"
        elif TAG_DOWNLOADING in other:
            image_id = other[TAG_DOWNLOADING]
            alive = owner_alive(other.get(TAG_DOWNLOAD_OWNER, ""))
            status = "downloading" if alive else "abandoned"
        else:
            continue
        if rec["SR"] not in sr_names:
            sr_names[rec["SR"]] = sr_record(ctx, rec["SR"])["name_label"]
        cached = other.get(TAG_CACHED_TIME)
        result.append(CachedImage(
            sr=sr_names[rec["SR"]], vdi=rec["uuid"], image_id=image_id, status=status,
            cached_time=int(cached) if cached and cached.isdigit() else None,
            virtual_size=int(rec["virtual_size"]),
            physical_utilisation=int(rec["physical_utilisation"]),
            instances=users.get(rec["uuid"], 0), vdi_ref=ref, sr_ref=rec["SR"]))
    return sorted(result, key=lambda c: (c.sr, c.image_id, c.vdi))


def clean(ctx: Context, keep_days: float = 0.0, include_used: bool = False,
          now: float | None = None, dry_run: bool = False) -> list[CachedImage]:
    """Destroy cached images cached more than ``keep_days`` ago that no
    instance disk was cloned from (all of them with ``include_used``; the
    instances keep their data), and every incomplete or abandoned download.
    Returns what was (or, with ``dry_run``, would be) removed."""
    now = time.time() if now is None else now
    removed = []
    for item in cached_images(ctx):
        if item.status == "downloading":
            continue
        if item.status == "complete":
            age_days = (now - (item.cached_time or 0)) / 86400.0
            if age_days < keep_days or (item.instances and not include_used):
                continue
        if not dry_run:
            try:
                # Exclusive: no spawn is cloning it meanwhile.
                with _locked(ctx.conf, item.image_id, _sr_uuid(ctx, item.sr_ref)):
                    destroy_vdi(ctx, item.vdi_ref)
            except exception.XapiFailure as exc:
                LOG.warning("could not destroy cached image VDI %s: %s", item.vdi, exc)
                continue
            finally:
                _remember(ctx, (item.image_id, item.sr_ref), None)
        removed.append(item)
    return removed
