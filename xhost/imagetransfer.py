"""Moving image bytes through XAPI, shared by the image handlers.

What every handler needs besides its own way of moving disk bytes:

* the retry policy (``[glance] num_retries`` and ``retry_interval``) and
  :func:`retrying`, which runs an attempt under its own undo log so a failed
  attempt leaves nothing before the next one starts;
* VDI creation with its undo, SR facts (type, dom0 path), the ISO SR;
* the streaming download (:func:`stream_disk`): an image's data from the
  image service into a new VDI through ``PUT /import_raw_vdi`` -- VHD chains
  (flattened on the fly, leaf first, through ``format=vhd``), bare VHDs, raw,
  raw-in-tgz and AMI disks -- in bounded memory, never touching local disk;
* ISO images into the ISO SR (:func:`stream_iso`), kernels and ramdisks into
  dom0's ``/boot/guest`` (:func:`kernel_file`);
* the streaming upload (:func:`export_upload`): ``GET
  /export_raw_vdi?format=vhd`` of a disk (its chain flattened by the host)
  into a gzipped tarball holding ``0.vhd``, straight to the image service;
* the image properties an upload carries (:func:`upload_properties`).
"""
from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from xhost import exception
from xhost.compute import vmrecord
from xhost.context import Context, durable
from xhost.dom0 import xhost_vhd
from xhost.imagearchive import ArchiveReader, ChunkReader, tarball
from xhost.images import ImageError, InvalidImage, TransientImageError
from xhost.objects import Disk, DownloadedImage, ImageMeta, Instance
from xhost.vhdstream import ChainCheck, LayerMask, VhdLayer, masked_vhd_stream, sized_export
from xhost.xapi import datapath

LOG = logging.getLogger(__name__)
GiB = 1024 ** 3
NULL = "OpaqueRef:NULL"
#: other_config key of a VDI a download is still filling: its owner
#: (``host:pid:start``), so a killed download is found and removed.
TAG_DOWNLOADING = "xhost_downloading"
TAG_DOWNLOAD_OWNER = "xhost_download_owner"
#: Where partition 1 of an AMI disk starts (sector 63, as Nova wrote it).
AMI_PARTITION_SECTOR = 63
FILE_SR_TYPES = frozenset({"ext", "nfs", "file", "smb", "ext4"})
T = TypeVar("T")


class ImageTransferError(ImageError):
    msg_fmt = "image {image}: {reason}"


# -- policy ---------------------------------------------------------------


def retry_policy(conf: Any) -> tuple[int, float]:
    """``(attempts, first interval)`` from ``[glance]`` (registered by the
    glance image service; 3 retries and 1 s otherwise)."""
    try:
        return conf.glance.num_retries + 1, float(conf.glance.retry_interval)
    except (AttributeError, KeyError, Exception):  # group or options not registered
        return 4, 1.0


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, TransientImageError):
        return True
    return isinstance(exc, exception.XapiFailure) and exc.code == "XHOST_IMAGE_RETRY"


def retrying(ctx: Context, what: str, attempt: Callable[[Context], T]) -> T:
    """Run ``attempt(ctx)`` until it succeeds or fails permanently.

    Each attempt gets a context of its own undo log; a failed attempt is
    rolled back before the next one. On success the attempt's undo log is
    registered in ``ctx.undo`` as one entry.
    """
    attempts, delay = retry_policy(ctx.conf)
    for number in range(1, attempts + 1):
        sub = ctx.undo.child()
        trial = Context(conf=ctx.conf, plugins=ctx.plugins, xapi=ctx.xapi, host_ref=ctx.host_ref,
                        undo=sub, progress=ctx.progress, log=ctx.log, extra=ctx.extra)
        try:
            result = attempt(trial)
        except BaseException as exc:
            sub.rollback(LOG)
            if not is_transient(exc) or number == attempts:
                if is_transient(exc) and attempts > 1:
                    raise ImageTransferError(image=what, reason=f"{_describe(exc)} (gave up "
                                             f"after {attempts} attempts)") from exc
                raise
            LOG.warning("%s: attempt %d of %d failed (%s); retrying in %.1fs", what, number,
                        attempts, _describe(exc), delay)
            time.sleep(delay)
            delay = min(delay * 2, 15.0)
            continue
        if len(sub):
            ctx.undo.push(f"undo {what}", sub.rollback, LOG)
        return result
    raise AssertionError("unreachable")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, exception.XapiFailure) and exc.code.startswith("XHOST_"):
        return " ".join(exc.params) or exc.code
    return str(exc) if isinstance(exc, exception.XhostError) else f"{type(exc).__name__}: {exc}"


def max_virtual_size(limit_gb: int | None, instance: Instance | None) -> int:
    """The largest disk an image may hold: the handler's limit, and the
    flavor's root size when there is one (Nova's FlavorDiskSmallerThanImage)."""
    limit = xhost_vhd.MAX_VIRTUAL_SIZE
    if limit_gb:
        limit = min(limit, limit_gb * GiB)
    if instance is not None and instance.flavor.root_gb > 0:
        limit = min(limit, instance.flavor.root_gb * GiB)
    return limit


def download_owner() -> str:
    """``host:pid:start`` of this process (start in clock ticks since boot)."""
    try:
        with open(f"/proc/{os.getpid()}/stat") as f:
            start = f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        start = "0"
    return f"{socket.gethostname()}:{os.getpid()}:{start}"


def owner_alive(owner: str) -> bool:
    """Whether the process of a :func:`download_owner` string still runs
    (owners on other machines are assumed alive)."""
    host, _, rest = owner.partition(":")
    pid, _, start = rest.partition(":")
    if host != socket.gethostname():
        return True
    try:
        with open(f"/proc/{int(pid)}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return False
    return fields[0] != "Z" and fields[19] == start


def download_iso_or_kernel(ctx: Context, image: ImageMeta, sr_ref: str,
                           instance: Instance | None) -> DownloadedImage | None:
    """The downloads every image handler makes alike: an ISO streamed into an
    ISO VDI, a kernel or ramdisk (``aki``/``ari``) copied into dom0's
    ``/boot/guest``. None for a disk image: that is the handler's own work."""
    kind = image_kind(image)
    if kind == "iso":
        return DownloadedImage(disks={"iso": stream_iso(ctx, image, instance)}, image=image)
    if kind in ("aki", "ari"):
        disk = kernel_file(ctx, image, instance, sr_ref)
        return DownloadedImage(disks={disk.kind: disk}, image=image)
    return None


# -- VDIs and SRs -----------------------------------------------------------


@durable
def destroy_vdi(ctx: Context, vdi_ref: str) -> None:
    """Destroy a VDI (unplugging and removing its VBDs first: a download's
    disk may be plugged into dom0 or the compute VM); a VDI that is already
    gone is fine."""
    from xhost.xapi import vbds

    try:
        vbds.remove_all(ctx.xapi, ctx.xapi.call("VDI.get_VBDs", vdi_ref))
    except exception.HandleInvalid:
        return
    with contextlib.suppress(exception.HandleInvalid):
        ctx.xapi.call("VDI.destroy", vdi_ref)


def create_vdi(ctx: Context, sr_ref: str, size: int, name: str, image: ImageMeta,
               sm_config: dict[str, str] | None = None,
               other_config: dict[str, str] | None = None) -> tuple[str, str]:
    """A new VDI (its destruction registered in ``ctx.undo`` at once),
    tagged as being filled by a download of ``image``."""
    tags = {TAG_DOWNLOADING: image.id, TAG_DOWNLOAD_OWNER: download_owner(),
            **(other_config or {})}
    ref = ctx.xapi.call("VDI.create", {
        "name_label": name, "name_description": f"image {image.id}", "SR": sr_ref,
        "virtual_size": str(size), "type": "user", "sharable": False, "read_only": False,
        "other_config": tags, "xenstore_data": {}, "sm_config": sm_config or {}, "tags": []})
    ctx.undo.push(f"destroy VDI {name}", destroy_vdi, ctx, ref)
    return ref, ctx.xapi.call("VDI.get_uuid", ref)


def sr_record(ctx: Context, sr_ref: str) -> dict[str, Any]:
    """The SR's record as first read on this connection: its uuid, type,
    name and content type do not change (its sizes may be stale)."""
    return ctx.xapi.remembered(("SR.record", sr_ref),
                               lambda: ctx.xapi.call("SR.get_record", sr_ref))


def sr_dom0_path(ctx: Context, sr_ref: str, record: dict[str, Any] | None = None) -> str:
    """Where a file-based SR is mounted in dom0 (its PBD's ``path``, else
    ``[xenserver] sr_base_path/<uuid>``); read once per connection."""
    def find() -> str:
        query = f'field "host"="{ctx.host_ref}" and field "SR"="{sr_ref}"'
        for pbd in ctx.xapi.call("PBD.get_all_records_where", query).values():
            path = pbd["device_config"].get("path")
            if path:
                return path
        uuid = (record or sr_record(ctx, sr_ref))["uuid"]
        return f"{ctx.conf.xenserver.sr_base_path.rstrip('/')}/{uuid}"

    return ctx.xapi.remembered(("SR.dom0_path", ctx.host_ref, sr_ref), find)


def find_iso_sr(ctx: Context) -> str:
    """The local ISO SR images of ``disk_format=iso`` go into: an SR of
    content type ``iso`` with ``other_config:i18n-key=local-storage-iso``
    plugged on this host (Nova's rule), not the tools SR."""
    records = ctx.xapi.call("SR.get_all_records_where", 'field "content_type"="iso"')
    for ref, rec in records.items():
        if rec.get("is_tools_sr") or rec["other_config"].get("i18n-key") != "local-storage-iso":
            continue
        for pbd in rec["PBDs"]:
            pbd_rec = ctx.xapi.call("PBD.get_record", pbd)
            if pbd_rec["host"] == ctx.host_ref and pbd_rec["currently_attached"]:
                return ref
    raise ImageTransferError(
        image="iso", reason="there is no local ISO SR on this host to put ISO images in; "
        "create one, e.g. `xe sr-create name-label='Local ISO' type=iso content-type=iso "
        "device-config:location=/var/opt/xen/iso_import device-config:legacy_mode=true "
        "other-config:i18n-key=local-storage-iso`")


# -- downloads through /import_raw_vdi --------------------------------------------


def _expanded_limit(max_size: int, members: int = xhost_vhd.MAX_CHAIN_DEPTH) -> int:
    return members * (max_size + max_size // 256 + 64 * 1024 * 1024) + 1024 * 1024


def image_kind(image: ImageMeta) -> str:
    """``vhd``, ``raw``, ``raw-tgz``, ``ami``, ``iso``, ``aki`` or ``ari``."""
    fmt = (image.disk_format or "").lower()
    container = (image.container_format or "bare").lower()
    if fmt == "raw" and container == "tgz":
        return "raw-tgz"
    if fmt in ("vhd", "raw", "ami", "iso", "aki", "ari"):
        return fmt
    raise InvalidImage(image=image.id, reason=f"disk_format {image.disk_format!r} is not "
                       f"supported (vhd, raw, raw in tgz, ami, aki, ari, iso); convert it, "
                       f"e.g. `qemu-img convert -O vpc -o subformat=dynamic`")


def is_vhd_tarball(image: ImageMeta) -> bool:
    return (image.container_format or "bare").lower() not in ("bare",)


def stream_disk(ctx: Context, image: ImageMeta, sr_ref: str, max_size: int,
                progress: Callable[[int], None] | None = None) -> Disk:
    """Download a disk image (vhd, raw, raw-tgz, ami) into a new VDI of
    ``sr_ref`` through XAPI's data plane; returns the root disk."""
    kind = image_kind(image)
    chunks = ctx.plugins.image_service_download(ctx, image.id)
    if kind == "vhd":
        vdi, uuid = _stream_vhd(ctx, image, sr_ref, chunks, max_size, progress)
    elif kind in ("raw", "ami"):
        vdi, uuid = _stream_raw(ctx, image, sr_ref, chunks, max_size, progress,
                                ami=kind == "ami")
    elif kind == "raw-tgz":
        vdi, uuid = _stream_raw_tgz(ctx, image, sr_ref, chunks, max_size, progress)
    else:
        raise InvalidImage(image=image.id, reason=f"a {kind} image is not a boot disk")
    return Disk(vdi_ref=vdi, vdi_uuid=uuid, kind="root", userdevice="0", bootable=True)


def _counted(chunks: Iterable[bytes], progress: Callable[[int], None] | None) -> Iterator[bytes]:
    for chunk in chunks:
        if progress:
            progress(len(chunk))
        yield chunk


def vhd_layers(ctx: Context, image: ImageMeta, chunks: Iterable[bytes], max_size: int
               ) -> Iterator[VhdLayer]:
    """The layers of a VHD image (tarball or bare), leaf first, checked as
    they come; after the last one the input is drained (and so verified by
    the image service)."""
    check = ChainCheck(image.id)
    if not is_vhd_tarball(image):
        reader = ChunkReader(chunks)
        layer = VhdLayer(reader, "the image", image.id, image.size, max_size)
        check.add(layer)
        yield layer
        check.parent_checked(layer)
        check.done()
        if reader.drain():
            raise InvalidImage(image=image.id, reason="data follows the VHD")
        return
    archive = ArchiveReader(chunks, image.id, "vhd", max_expanded=_expanded_limit(max_size))
    for member in archive.members():
        layer = VhdLayer(member.data, member.name, image.id, member.size, max_size)
        check.add(layer)
        yield layer
        check.parent_checked(layer)
    check.done()
    archive.finish()


def _stream_vhd(ctx: Context, image: ImageMeta, sr_ref: str, chunks: Iterable[bytes],
                max_size: int, progress: Callable[[int], None] | None) -> tuple[str, str]:
    mask = LayerMask()
    vdi = uuid = None
    for layer in vhd_layers(ctx, image, _counted(chunks, progress), max_size):
        if vdi is None:
            vdi, uuid = create_vdi(ctx, sr_ref, layer.virtual_size, image.name or image.id,
                                   image)
        length, body = masked_vhd_stream(layer, mask, record=True)
        datapath.import_raw_vdi(ctx.xapi, vdi, body, length, fmt="vhd")
    assert vdi is not None and uuid is not None
    return vdi, uuid


def mbr_for_partition(start_sector: int, sectors: int) -> bytes:
    """A DOS partition table with one Linux partition (Nova's AMI layout)."""
    entry = struct.pack("<B3sB3sII", 0x80, b"\xfe\xff\xff", 0x83, b"\xfe\xff\xff",
                        start_sector, sectors)
    return bytes(446) + entry + bytes(48) + b"\x55\xaa"


def _raw_size(image: ImageMeta) -> int:
    if not image.size:
        raise InvalidImage(image=image.id, reason="the image service does not give the image's "
                           "size; raw images need it")
    return int(image.size)


def _stream_raw(ctx: Context, image: ImageMeta, sr_ref: str, chunks: Iterable[bytes],
                max_size: int, progress: Callable[[int], None] | None,
                ami: bool = False) -> tuple[str, str]:
    size = _raw_size(image)
    prefix = b""
    if ami:
        sectors = -(-size // 512)
        prefix = mbr_for_partition(AMI_PARTITION_SECTOR, sectors) + bytes(
            (AMI_PARTITION_SECTOR - 1) * 512)
    total = len(prefix) + size
    if total > max_size:
        raise InvalidImage(image=image.id, reason=f"the disk is {total} bytes, larger than the "
                           f"{max_size} bytes allowed")
    vdi, uuid = create_vdi(ctx, sr_ref, -(-total // 512) * 512, image.name or image.id, image)
    body = _counted(_prefixed(prefix, chunks), progress)
    datapath.import_raw_vdi(ctx.xapi, vdi, body, total, fmt="raw")
    return vdi, uuid


def _prefixed(prefix: bytes, chunks: Iterable[bytes]) -> Iterator[bytes]:
    if prefix:
        yield prefix
    yield from chunks


def _stream_raw_tgz(ctx: Context, image: ImageMeta, sr_ref: str, chunks: Iterable[bytes],
                    max_size: int, progress: Callable[[int], None] | None) -> tuple[str, str]:
    def limit(name: str, size: int) -> None:
        if size > max_size:
            raise InvalidImage(image=image.id, reason=f"{name} is {size} bytes, larger than "
                               f"the {max_size} bytes allowed")

    archive = ArchiveReader(_counted(chunks, progress), image.id, "single", max_members=1,
                            max_expanded=max_size + 1024 * 1024 + 1024 * 1024,
                            member_limit=limit)
    vdi = uuid = None
    for member in archive.members():
        vdi, uuid = create_vdi(ctx, sr_ref, -(-member.size // 512) * 512,
                               image.name or image.id, image)
        body = iter(lambda data=member.data: data.read(datapath.CHUNK), b"")
        datapath.import_raw_vdi(ctx.xapi, vdi, _exact(body, member.size, image.id),
                                member.size, fmt="raw")
    archive.finish()
    assert vdi is not None and uuid is not None
    return vdi, uuid


def _exact(chunks: Iterable[bytes], size: int, image: str) -> Iterator[bytes]:
    got = 0
    for chunk in chunks:
        got += len(chunk)
        yield chunk
    if got != size:
        raise InvalidImage(image=image, reason=f"the archive announced {size} bytes and held "
                           f"{got}")


def stream_iso(ctx: Context, image: ImageMeta, instance: Instance | None) -> Disk:
    """An ISO image into the local ISO SR, as a read-only CD of the instance."""
    sr = find_iso_sr(ctx)
    size = _raw_size(image)
    owner = instance.uuid if instance is not None else image.id
    vdi, uuid = create_vdi(ctx, sr, size, image.name or image.id, image,
                           sm_config={"path": f"xhost-{owner}.iso"})
    datapath.import_raw_vdi(ctx.xapi, vdi, ctx.plugins.image_service_download(ctx, image.id),
                            size, fmt="raw")
    return Disk(vdi_ref=vdi, vdi_uuid=uuid, kind="iso", userdevice="1", bootable=True,
                read_only=True, vbd_type="CD")


def kernel_file_name(instance: Instance, kind: str) -> str:
    return f"xhost-{instance.uuid}-{kind}"


def kernel_file(ctx: Context, image: ImageMeta, instance: Instance | None, sr_ref: str) -> Disk:
    """An ``aki``/``ari`` image as a file in dom0's ``/boot/guest``: the
    bytes go into a temporary VDI that the dom0 kernel script copies."""
    kind = "kernel" if image_kind(image) == "aki" else "ramdisk"
    if instance is None:
        raise InvalidImage(image=image.id, reason=f"a {kind} image is only fetched for an "
                           f"instance (it becomes a file of that instance in dom0)")
    size = _raw_size(image)
    limit = ctx.conf.xenserver.max_kernel_ramdisk_size
    if size > limit:
        raise InvalidImage(image=image.id, reason=f"the {kind} is {size} bytes, more than "
                           f"[xenserver] max_kernel_ramdisk_size ({limit})")
    name = kernel_file_name(instance, kind)
    temp = ctx.undo.child()
    scratch = Context(conf=ctx.conf, plugins=ctx.plugins, xapi=ctx.xapi, host_ref=ctx.host_ref,
                      undo=temp, log=ctx.log, extra=ctx.extra)
    try:
        vdi, vdi_uuid = create_vdi(scratch, sr_ref, -(-size // 512) * 512, f"{kind} {image.id}",
                                   image)
        datapath.import_raw_vdi(ctx.xapi, vdi, ctx.plugins.image_service_download(ctx, image.id),
                                size, fmt="raw")
        dom0 = ctx.extra["dom0"]
        ctx.undo.push(f"remove dom0 file {name}", remove_kernel_files, ctx, None, [name])
        answer = dom0.call(ctx.host_ref, "xhost_kernel", "copy_vdi", vdi_uuid=vdi_uuid,
                           size=size, name=name, max_size=limit,
                           device_timeout=ctx.conf.xenserver.block_device_creation_timeout)
    finally:
        temp.rollback(LOG)
    return Disk(vdi_ref=NULL, vdi_uuid="", kind=kind, dom0_path=answer["path"])


@durable
def remove_kernel_files(ctx: Context, instance: Instance | None,
                        names: list[str] | None = None) -> list[str]:
    """Remove an instance's kernel and ramdisk from dom0's ``/boot/guest``
    (what ``xhost_storage_destroy_disks`` calls); returns the paths removed."""
    dom0 = ctx.extra["dom0"]
    answer = dom0.call(ctx.host_ref, "xhost_kernel", "remove_files",
                       instance_uuid=instance.uuid if instance is not None else None,
                       names=names or [])
    return list(answer.get("removed", []))


# -- uploads ----------------------------------------------------------------


def compression_level(ctx: Context, instance: Instance | None) -> int | None:
    """The image's ``img_compression_level``, else ``[xenserver]
    image_compression_level``."""
    props = instance.image.properties if instance is not None and instance.image else {}
    value = vmrecord.image_property(props, "img_compression_level",
                                    "xenapi_image_compression_level")
    if value is not None:
        with contextlib.suppress(ValueError):
            level = int(value)
            if 1 <= level <= 9:
                return level
    return ctx.conf.xenserver.image_compression_level


#: Image properties an upload carries over from the instance's image (new
#: name first, then the legacy names).
CARRIED = (("os_type",), ("hw_auto_disk_config", "auto_disk_config"),
           ("hw_vm_mode", "vm_mode"), ("img_use_agent", "xenapi_use_agent"))


def upload_properties(ctx: Context, image: ImageMeta, instance: Instance | None) -> ImageMeta:
    """Set the formats of an uploaded VHD chain (``vhd``/``ovf``) and the
    properties Nova carried (``os_type``, ``auto_disk_config``, ``vm_mode``,
    ``xenapi_use_agent``, under the names the source image used), unless the
    queued image already has them."""
    changes: dict[str, Any] = {}
    if image.disk_format != "vhd":
        changes["disk_format"] = "vhd"
    if image.container_format != "ovf":
        changes["container_format"] = "ovf"
    source = instance.image.properties if instance is not None and instance.image else {}
    present = set(image.properties)
    for names in CARRIED:
        if present & set(names):
            continue
        for name in names:
            if source.get(name) not in (None, ""):
                changes[name] = source[name]
                break
    if instance is not None:
        if not present & {"os_type"} and "os_type" not in changes:
            changes["os_type"] = instance.os_type or ctx.conf.xenserver.default_os_type
        if not present & {"hw_auto_disk_config", "auto_disk_config"} and \
                "hw_auto_disk_config" not in changes and "auto_disk_config" not in changes:
            changes["auto_disk_config"] = str(bool(instance.auto_disk_config))
        if instance.vm_mode and not present & {"hw_vm_mode", "vm_mode"} and \
                "hw_vm_mode" not in changes and "vm_mode" not in changes:
            changes["vm_mode"] = instance.vm_mode
    if not changes:
        return image
    return ctx.plugins.image_service_update(ctx, image.id, changes, [])


def export_upload(ctx: Context, image: ImageMeta, vdi_ref: str, instance: Instance | None,
                  progress: Callable[[int], None] | None = None) -> ImageMeta:
    """Upload a disk (its whole chain, flattened by the host) as a gzipped
    tarball holding ``0.vhd``."""
    with datapath.export_raw_vdi(ctx.xapi, vdi_ref, fmt="vhd") as stream:
        length, body = sized_export(stream, image.id)
        data = tarball([("0.vhd", length, _counted(body, progress))],
                       compression_level(ctx, instance))
        return ctx.plugins.image_service_upload(ctx, image.id, data, None)


def vdi_chain(ctx: Context, vdi_ref: str) -> list[dict[str, Any]]:
    """The records of a VDI and its VHD parents (``sm_config['vhd-parent']``), leaf first."""
    chain = []
    ref: str | None = vdi_ref
    while ref:
        rec = ctx.xapi.call("VDI.get_record", ref)
        chain.append(rec)
        parent = rec["sm_config"].get("vhd-parent")
        ref = ctx.xapi.call("VDI.get_by_uuid", parent) if parent else None
    return chain
