"""The ``direct_vhd`` image handler (Nova's ``GlanceStore``).

Downloads of VHD images are done by the dom0 script ``xhost_images``: dom0
fetches the image over HTTP(S) from where the image service says
(``xhost_image_service_location``), unpacks and validates the chain in a
staging directory inside the SR and moves it in; xhost then scans the SR.
Uploads go the other way: dom0 streams the disk's VHD chain as a gzipped
tarball (``[xenserver] image_compression_level``) to the image service.
Raw, raw-in-tgz and AMI disks are streamed through XAPI's
``/import_raw_vdi``; ISO images go into the local ISO SR, kernels and
ramdisks into dom0's ``/boot/guest``.

It needs file-based SRs (ext, nfs): on LVM-based SRs there are no VHD files
for dom0 to handle, and the handler refuses them, suggesting
``vdi_remote_stream``. Transient failures (connection errors, a stream cut in
the middle, HTTP 408/5xx) are retried per ``[glance] num_retries``.
"""
from __future__ import annotations

import uuid as uuidlib

from oslo_config import cfg

from xhost import exception, hookimpl, imagetransfer
from xhost.context import durable
from xhost.dom0 import xhost_vhd
from xhost.images import ImageError
from xhost.objects import Disk, DownloadedImage, ImageHandlerCapabilities

GROUP = cfg.OptGroup("image_direct_vhd", title="direct_vhd image handler options",
                     help="The direct_vhd image handler: dom0 moves VHD files itself.")
OPTS = [
    cfg.IntOpt("max_virtual_size_gb", default=2040, min=1, max=2040,
               help="Refuse images whose disk is larger than this (GiB). The flavor's root "
                    "size limits it further when an image is fetched for an instance."),
    cfg.IntOpt("max_chain_length", default=16, min=1, max=xhost_vhd.MAX_CHAIN_DEPTH,
               help="Most VHD files an image (a chain) may hold."),
    cfg.IntOpt("transfer_timeout", default=90, min=1,
               help="Seconds dom0 waits for the image service to send or accept data before "
                    "the attempt fails (and is retried per [glance] num_retries)."),
    cfg.IntOpt("operation_timeout", default=6 * 3600, min=60,
               help="Seconds one dom0 download or upload may take in all."),
]
FILE_SR_TYPES = frozenset({"ext", "nfs", "file", "smb"})


def list_opts():
    return [(GROUP, OPTS)]


@durable
def remove_download(ctx, sr_ref: str, sr_path: str, uuids: list[str]) -> None:
    """Undo a dom0 download: destroy the VDIs its files became and delete
    the files (dom0 waits for a download still running to end first)."""
    try:  # the leaf; its parents are unmanaged base copies, files the SR forgets with them
        imagetransfer.destroy_vdi(ctx, ctx.xapi.call("VDI.get_by_uuid", uuids[0]))
    except exception.UuidInvalid:
        pass
    ctx.extra["dom0"].call(ctx.host_ref, "xhost_images", "remove_vhds", sr_path=sr_path,
                           uuids=uuids)


class DirectVhdError(ImageError):
    msg_fmt = "direct_vhd: {reason}"


def _ca_pem(location) -> str | None:
    if not location.ca_file:
        return None
    with open(location.ca_file, encoding="ascii") as f:
        return f.read()


class DirectVhdHandler:
    """VHD chains moved by dom0, straight between the image service and the SR."""

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        conf.register_group(GROUP)
        conf.register_opts(OPTS, group=GROUP)
        self.conf = conf.image_direct_vhd

    @hookimpl
    def xhost_image_capabilities(self, ctx):
        return ImageHandlerCapabilities(
            disk_formats=frozenset({"vhd", "raw", "ami", "iso", "aki", "ari"}),
            container_formats=frozenset({"bare", "ovf", "tgz", "ami", "aki", "ari"}),
            sr_types=FILE_SR_TYPES, upload_format=("vhd", "ovf"))

    # -- download ------------------------------------------------------------

    def _file_sr(self, ctx, sr_ref: str) -> dict:
        record = imagetransfer.sr_record(ctx, sr_ref)
        if record["type"] not in FILE_SR_TYPES:
            raise DirectVhdError(reason=f"SR {record['name_label']!r} is of type "
                                 f"{record['type']}: it keeps no VHD files for dom0 to handle. "
                                 f"Set [xenserver] image_handler = vdi_remote_stream (any SR "
                                 f"type) or use a file-based SR (ext, nfs)")
        return record

    @hookimpl
    def xhost_image_download(self, ctx, image, sr_ref, instance):
        special = imagetransfer.download_iso_or_kernel(ctx, image, sr_ref, instance)
        if special is not None:
            return special
        kind = imagetransfer.image_kind(image)
        record = self._file_sr(ctx, sr_ref)
        limit = imagetransfer.max_virtual_size(self.conf.max_virtual_size_gb, instance)
        what = f"download of image {image.id}"
        if kind == "vhd":
            root = imagetransfer.retrying(
                ctx, what, lambda c: self._dom0_download(c, image, sr_ref, record, limit))
        else:
            root = imagetransfer.retrying(
                ctx, what, lambda c: imagetransfer.stream_disk(c, image, sr_ref, limit))
        return DownloadedImage(disks={"root": root}, image=image)

    def _dom0_download(self, ctx, image, sr_ref: str, record: dict, limit: int) -> Disk:
        location = ctx.plugins.image_service_location(ctx, image.id, False)
        if location is None:
            raise DirectVhdError(reason=f"the {ctx.plugins.selected.get('image_service')} image "
                                 f"service cannot be reached over HTTP by dom0; use "
                                 f"[xenserver] image_handler = vdi_remote_stream")
        sr_path = imagetransfer.sr_dom0_path(ctx, sr_ref, record)
        uuids = [str(uuidlib.uuid4()) for _ in range(self.conf.max_chain_length)]
        ctx.undo.push(f"remove the files of image {image.id}", remove_download, ctx, sr_ref,
                      sr_path, uuids)
        container = "tgz" if imagetransfer.is_vhd_tarball(image) else "bare"
        dom0 = ctx.extra["dom0"]
        try:
            answer = dom0.call(
                ctx.host_ref, "xhost_images", "download_vhd",
                timeout=self.conf.operation_timeout, url=location.url,
                headers=location.headers, sr_path=sr_path, uuids=uuids, container=container,
                checksum=image.checksum,
                os_hash_algo=image.os_hash_algo if image.os_hash_value else None,
                os_hash_value=image.os_hash_value, size=image.size, max_virtual_size=limit,
                max_members=self.conf.max_chain_length, ca_pem=_ca_pem(location),
                verify_tls=location.verify_tls, io_timeout=self.conf.transfer_timeout)
        finally:
            if location.revoke is not None:  # unused if dom0 never came for it
                location.revoke()
        ctx.xapi.call("SR.scan", sr_ref)
        leaf = ctx.xapi.call("VDI.get_by_uuid", answer["uuids"][0])
        return Disk(vdi_ref=leaf, vdi_uuid=answer["uuids"][0], kind="root", userdevice="0",
                    bootable=True, virtual_size=int(answer["virtual_size"]))

    # -- upload ------------------------------------------------------------------

    @hookimpl
    def xhost_image_upload(self, ctx, image, vdi_refs, instance):
        image = imagetransfer.upload_properties(ctx, image, instance)
        leaf = vdi_refs[0]
        sr_ref = ctx.xapi.call("VDI.get_SR", leaf)
        record = self._file_sr(ctx, sr_ref)
        sr_path = imagetransfer.sr_dom0_path(ctx, sr_ref, record)
        leaf_uuid = ctx.xapi.call("VDI.get_uuid", leaf)
        level = imagetransfer.compression_level(ctx, instance) or 6

        def attempt(c):
            location = c.plugins.image_service_location(c, image.id, True)
            if location is None:
                raise DirectVhdError(reason="the image service cannot be reached over HTTP by "
                                     "dom0; use [xenserver] image_handler = vdi_remote_stream")
            try:
                c.extra["dom0"].call(
                    c.host_ref, "xhost_images", "upload_vhd",
                    timeout=self.conf.operation_timeout, url=location.url,
                    headers=location.headers, sr_path=sr_path, leaf_uuid=leaf_uuid,
                    compression_level=level, ca_pem=_ca_pem(location),
                    verify_tls=location.verify_tls, io_timeout=self.conf.transfer_timeout)
            finally:
                if location.revoke is not None:
                    location.revoke()
            return c.plugins.image_service_show(c, image.id)

        result = imagetransfer.retrying(ctx, f"upload of image {image.id}", attempt)
        if result.status != "active":
            raise DirectVhdError(reason=f"image {image.id} is {result.status} after the upload")
        return result
