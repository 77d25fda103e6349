"""The root disk: from the image cache, grown to the flavor's size, with its
partition and filesystem grown too under auto disk config."""
from __future__ import annotations

import importlib
import logging
from typing import Any

from xhost import exception
from xhost.context import Context
from xhost.objects import Disk, ImageMeta, Instance

from . import dom0disks, srchoice
from .errors import FlavorDiskSmallerThanImage, SrNeedsVhdFiles, StorageError
from .srchoice import FILE_SR_TYPES
from .vdis import GiB, create_vdi, plugged_in_dom0

LOG = logging.getLogger(__name__)
#: Where an ISO image's CD goes (Nova's number for it).
ISO_USERDEVICE = "1"


def imagecache() -> Any:
    """The image cache module (``xhost.imagecache``): ``image_disks`` gives an
    instance its disks from a cached image, ``remove_instance_files`` removes
    the dom0 kernel/ramdisk files made for one. (Looked up when used, so that
    tests can stand in for it.)"""
    return importlib.import_module("xhost.imagecache")


def _size_text(size: int) -> str:
    return f"{size / GiB:.2f} GiB" if size % GiB else f"{size // GiB} GiB"


def _check_size(instance: Instance, image: ImageMeta, size: int | None) -> None:
    root_gb = instance.flavor.root_gb
    if root_gb and size and size > root_gb * GiB:
        raise FlavorDiskSmallerThanImage(flavor=instance.flavor.name, root_gb=root_gb,
                                         size=_size_text(size), image=image.name or image.id,
                                         needed_gb=-(-size // GiB))


def check_handler_can_use(ctx: Context, sr_ref: str) -> None:
    """Refuse, before anything is made, an SR the image handler cannot write
    into (e.g. ``direct_vhd``, which writes VHD files, and an LVM SR)."""
    try:
        caps = ctx.plugins.image_capabilities(ctx)
    except exception.NotSupportedByPlugin:
        return
    except KeyError:  # no image handler loaded (only the storage role)
        return
    if caps is None or caps.sr_types is None:
        return
    record = srchoice.sr_record(ctx, sr_ref)
    sr_type = record["type"]
    if sr_type in caps.sr_types:
        return
    handler = ctx.plugins.selected.get("image_handler", "?")
    name = record["name_label"]
    if not caps.sr_types & FILE_SR_TYPES or sr_type in FILE_SR_TYPES:
        raise StorageError(reason=f"image handler {handler!r} cannot write into SR {name!r} "
                                  f"(type {sr_type}); it handles SR types "
                                  f"{', '.join(sorted(caps.sr_types))}")
    raise SrNeedsVhdFiles(
        feature=f"image handler {handler!r}", sr=name, sr_type=sr_type,
        fix="Choose an ext or nfs SR with [xenserver] sr_matching_filter (e.g. "
            "other-config:i18n-key=local-storage), or set [xenserver] image_handler = "
            "vdi_remote_stream, which streams into any SR.")


def create_root_disk(ctx: Context, instance: Instance, sr_ref: str,
                     image: ImageMeta) -> list[Disk]:
    check_handler_can_use(ctx, sr_ref)
    _check_size(instance, image, image.virtual_size)  # known: refuse before downloading
    if image.disk_format == "iso" and not instance.flavor.root_gb:
        raise StorageError(reason=f"image {image.name or image.id} is an ISO image: it boots "
                                  f"an installer onto a blank disk of the flavor's root size, "
                                  f"and flavor {instance.flavor.name!r} has root_gb 0; choose "
                                  f"a flavor with a root disk")
    disks = list(imagecache().image_disks(ctx, instance, sr_ref, image))
    root = next((d for d in disks if d.kind == "root"), None)
    iso = next((d for d in disks if d.kind == "iso"), None)
    if root is None and iso is not None:
        return [*disks, blank_root_disk(ctx, instance, sr_ref, iso)]
    if root is None:
        raise StorageError(reason=f"the image cache made no root disk for image "
                                  f"{image.name or image.id}")
    root.userdevice = root.userdevice or "0"
    if iso is not None:
        # An installer CD: the blank root (already the flavor's size) is its target.
        return disks
    root.bootable = True
    target = instance.flavor.root_gb * GiB
    if not target:
        return disks
    size = root.virtual_size
    if size is None:
        size = int(ctx.xapi.call("VDI.get_virtual_size", root.vdi_ref))
    _check_size(instance, image, size)
    if size < target:
        ctx.progress("growing the root disk", 0.45)
        ctx.xapi.call("VDI.resize", root.vdi_ref, str(target))
        root.virtual_size = target
    if instance.auto_disk_config:
        grow_filesystem(ctx, instance, root)
    return disks


def grow_filesystem(ctx: Context, instance: Instance, root: Disk) -> None:
    """Auto disk config: grow the root disk's single ext3/ext4 partition and
    its filesystem to the end of the disk. A disk that does not follow Nova's
    rules (one partition, number 1, ext3/ext4) keeps its layout and the
    instance gets a warning fault; real failures (e2fsck finding damage) fail
    the spawn."""
    ctx.progress("growing the root filesystem (auto disk config)", 0.5)
    with plugged_in_dom0(ctx, root.vdi_ref, "auto disk config") as device:
        result = dom0disks.call(ctx, "grow_partition", "growing the root partition "
                                                       "(auto disk config)", device=device)
    if result.get("resized"):
        LOG.info("%s: root partition grown from %d to %d sectors", instance.name,
                 result["old_size"], result["new_size"])
    elif not result.get("unchanged"):
        message = (f"auto disk config: the root disk was grown to {instance.flavor.root_gb} GB "
                   f"but its partition and filesystem were left as they were: "
                   f"{result.get('reason', 'not resizable')}")
        LOG.warning("%s: %s", instance.name, message)
        ctx.plugins.instance_fault(ctx, instance, message)


def blank_root_disk(ctx: Context, instance: Instance, sr_ref: str, iso: Disk) -> Disk:
    """ISO boot, as Nova: the image is a CD at device 1 that the guest boots
    first (HVM order ``dc``) to install onto a blank disk of the flavor's root
    size at device 0."""
    iso.userdevice, iso.vbd_type, iso.read_only, iso.bootable = ISO_USERDEVICE, "CD", True, True
    vdi, uuid = create_vdi(ctx, sr_ref, instance, instance.name, "root",
                           instance.flavor.root_gb * GiB, description="blank root disk")
    return Disk(vdi_ref=vdi, vdi_uuid=uuid, kind="root", userdevice="0", bootable=False)
