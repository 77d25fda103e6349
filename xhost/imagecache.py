"""The image cache: the disks an instance gets from its image.

:func:`image_disks` is what the storage backend calls to make an instance's
boot disks. With ``[xenserver] cache_images`` = ``all`` (or ``some`` and
the image property ``img_cache_in_nova``/``cache_in_nova`` true) an image is
downloaded once per SR into a *cached base VDI*:

* ``name_label`` ``Glance Image <image id>``, ``other_config`` ``image-id``,
  ``cached-time`` (UNIX seconds) and :data:`TAG_COMPLETE` -- all set in one
  call once the download completed and was verified, so a VDI without the
  marker is never used (it is removed, under the lock, when found);
* never tagged with an instance, never destroyed with one;
* each instance gets a copy-on-write ``VDI.clone`` of it where ``[DEFAULT]
  use_cow_images`` is on and the SR can (else a ``VDI.copy``), tagged
  ``nova_instance_uuid`` / ``nova_disk_type`` (and ``xhost_cached_from``).

Two spawns of the same image on the same SR download it once: the cache is
looked up and filled under a lock file in ``[compute] state_dir/locks``
(per image and SR; it serialises xhost processes of this machine, not
several machines sharing an NFS SR). Everything created goes into
``ctx.undo`` except the completed cached image.

:func:`cached_images` and :func:`clean` back ``xhost image cache list`` and
``xhost image cache clean``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
import re
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
def _locked(conf: Any, image_id: str, sr_uuid: str) -> Iterator[None]:
    directory = os.path.join(conf.compute.state_dir, "locks")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", image_id)
    path = os.path.join(directory, f"image-cache-{safe}-{sr_uuid}.lock")
    # flock locks belong to the open file description: two threads of one
    # process exclude each other as two processes do.
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _sub_context(ctx: Context, undo: UndoLog) -> Context:
    return dataclasses.replace(ctx, undo=undo)


def _sr_type(ctx: Context, sr_ref: str) -> str:
    return ctx.xapi.call("SR.get_type", sr_ref)


def _copy_on_write(ctx: Context, sr_ref: str) -> bool:
    if not ctx.conf.use_cow_images:
        return False
    if "storage_backend" in ctx.plugins.selected:
        with contextlib.suppress(exception.NotSupportedByPlugin):
            return bool(ctx.plugins.storage_capabilities(ctx, sr_ref).copy_on_write)
    return _sr_type(ctx, sr_ref) in COW_SR_TYPES


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
            name = ctx.xapi.call("SR.get_name_label", sr_ref)
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
    ctx.xapi.call("VDI.set_name_description", vdi_ref, kind)


def _sr_vdis(ctx: Context, sr_ref: str) -> dict[str, dict[str, Any]]:
    return ctx.xapi.call("VDI.get_all_records_where", f'field "SR"="{sr_ref}"')


def _remove_unusable(ctx: Context, sr_ref: str, image_id: str,
                     records: dict[str, dict[str, Any]]) -> None:
    """Incomplete cached copies of the image, and downloads of it whose
    process died, in this SR (we hold the lock)."""
    for ref, rec in records.items():
        other = rec["other_config"]
        stale = (other.get(TAG_IMAGE_ID) == image_id and other.get(TAG_COMPLETE) != "true") or (
            other.get(TAG_DOWNLOADING) == image_id and
            not owner_alive(other.get(TAG_DOWNLOAD_OWNER, "")))
        if stale and TAG_INSTANCE not in other:
            LOG.warning("removing VDI %s: an unfinished download of image %s", rec["uuid"],
                        image_id)
            with contextlib.suppress(exception.XapiFailure):
                destroy_vdi(ctx, ref)


def _find_cached(ctx: Context, sr_ref: str, image_id: str) -> tuple[str, dict[str, Any]] | None:
    query = f'field "name__label"="{CACHE_NAME.format(image_id=image_id)}" and field "SR"="{sr_ref}"'
    for ref, rec in ctx.xapi.call("VDI.get_all_records_where", query).items():
        other = rec["other_config"]
        if other.get(TAG_IMAGE_ID) == image_id and other.get(TAG_COMPLETE) == "true" \
                and not rec["missing"]:
            return ref, rec
    return None


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


def _cached_locked(ctx: Context, sr_ref: str, image: ImageMeta,
                   instance: Instance | None) -> tuple[str, dict[str, Any]]:
    found = _find_cached(ctx, sr_ref, image.id)
    if found is not None:
        return found
    _remove_unusable(ctx, sr_ref, image.id, _sr_vdis(ctx, sr_ref))
    undo = UndoLog()
    root = _download(ctx, image, sr_ref, instance, undo)
    try:
        ctx.xapi.call("VDI.set_name_label", root.vdi_ref, CACHE_NAME.format(image_id=image.id))
        ctx.xapi.call("VDI.set_name_description", root.vdi_ref, "root")
        ctx.xapi.call("VDI.set_other_config", root.vdi_ref, {
            TAG_IMAGE_ID: image.id, TAG_CACHED_TIME: str(int(time.time())),
            TAG_COMPLETE: "true"})
    except BaseException:
        undo.rollback(LOG)
        raise
    undo.discard()  # a completed cached image outlives the operation
    return root.vdi_ref, ctx.xapi.call("VDI.get_record", root.vdi_ref)


def cached_root(ctx: Context, sr_ref: str, image: ImageMeta,
                instance: Instance | None = None) -> tuple[str, dict[str, Any]]:
    """The completed cached VDI of ``image`` in ``sr_ref``, downloading it
    first if needed (once, whoever else asks meanwhile)."""
    with _locked(ctx.conf, image.id, ctx.xapi.call("SR.get_uuid", sr_ref)):
        return _cached_locked(ctx, sr_ref, image, instance)


def _instance_root(ctx: Context, instance: Instance, sr_ref: str, image: ImageMeta) -> Disk:
    if cache_wanted(ctx.conf, image):
        # The clone starts with the cached VDI's name and tags: make it and
        # re-tag it under the lock, so no one takes it for the cache.
        with _locked(ctx.conf, image.id, ctx.xapi.call("SR.get_uuid", sr_ref)):
            cache_ref, cache = _cached_locked(ctx, sr_ref, image, instance)
            _check_size(instance, image, int(cache["virtual_size"]))
            if _copy_on_write(ctx, sr_ref):
                ref = ctx.xapi.call_async("VDI.clone", cache_ref, {})
            else:
                ref = ctx.xapi.call_async("VDI.copy", cache_ref, sr_ref)
            ctx.undo.push(f"destroy root VDI of {instance.name}", destroy_vdi, ctx, ref)
            _tag_for_instance(ctx, ref, instance, "root", {TAG_CACHED_FROM: cache["uuid"]})
        return Disk(vdi_ref=ref, vdi_uuid=ctx.xapi.call("VDI.get_uuid", ref), kind="root",
                    userdevice="0", bootable=True)
    undo = UndoLog()
    root = _download(ctx, image, sr_ref, instance, undo)
    ctx.undo.push(f"undo the download of image {image.id}", undo.rollback, LOG)
    _check_size(instance, image, int(ctx.xapi.call("VDI.get_virtual_size", root.vdi_ref)))
    _tag_for_instance(ctx, root.vdi_ref, instance, "root")
    return dataclasses.replace(root, kind="root", userdevice="0", bootable=True)


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
            status = "complete" if other.get(TAG_COMPLETE) == "true" else "incomplete"
        elif TAG_DOWNLOADING in other:
            image_id = other[TAG_DOWNLOADING]
            alive = owner_alive(other.get(TAG_DOWNLOAD_OWNER, ""))
            status = "downloading" if alive else "abandoned"
        else:
            continue
        if rec["SR"] not in sr_names:
            sr_names[rec["SR"]] = ctx.xapi.call("SR.get_name_label", rec["SR"])
        cached = other.get(TAG_CACHED_TIME)
        result.append(CachedImage(
            sr=sr_names[rec["SR"]], vdi=rec["uuid"], image_id=image_id, status=status,
            cached_time=int(cached) if cached and cached.isdigit() else None,
            virtual_size=int(rec["virtual_size"]),
            physical_utilisation=int(rec["physical_utilisation"]),
            instances=users.get(rec["uuid"], 0), vdi_ref=ref))
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
                destroy_vdi(ctx, item.vdi_ref)
            except exception.XapiFailure as exc:
                LOG.warning("could not destroy cached image VDI %s: %s", item.vdi, exc)
                continue
        removed.append(item)
    return removed
