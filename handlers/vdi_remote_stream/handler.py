"""The ``vdi_remote_stream`` image handler (Nova's ``VdiStreamStore``).

xhost streams the image between the image service and XAPI's HTTP data
plane: downloads into ``PUT /import_raw_vdi`` (VHD chains flattened on the
fly, leaf first, as ``format=vhd`` streams), uploads from ``GET
/export_raw_vdi?format=vhd`` (the host flattens the chain) into a gzipped
tarball holding ``0.vhd``. It works on every SR type and with
``[xenserver] independent_compute``; the bytes never touch local disk and
memory stays bounded (one block plus a bitmap per 2 MiB the upper layers
of a chain touched).
"""
from __future__ import annotations

from oslo_config import cfg

from xhost import hookimpl, imagetransfer
from xhost.objects import DownloadedImage, ImageHandlerCapabilities

GROUP = cfg.OptGroup("image_vdi_remote_stream", title="vdi_remote_stream image handler options",
                     help="The vdi_remote_stream image handler: xhost streams through XAPI.")
OPTS = [
    cfg.IntOpt("max_virtual_size_gb", default=2040, min=1, max=2040,
               help="Refuse images whose disk is larger than this (GiB). The flavor's root "
                    "size limits it further when an image is fetched for an instance."),
]


def list_opts():
    return [(GROUP, OPTS)]


class VdiRemoteStreamHandler:
    """Images streamed by xhost through /import_raw_vdi and /export_raw_vdi."""

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        conf.register_group(GROUP)
        conf.register_opts(OPTS, group=GROUP)
        self.conf = conf.image_vdi_remote_stream

    @hookimpl
    def xhost_image_capabilities(self, ctx):
        return ImageHandlerCapabilities(
            disk_formats=frozenset({"vhd", "raw", "ami", "iso", "aki", "ari"}),
            container_formats=frozenset({"bare", "ovf", "tgz", "ami", "aki", "ari"}),
            sr_types=None, upload_format=("vhd", "ovf"))

    @hookimpl
    def xhost_image_download(self, ctx, image, sr_ref, instance):
        special = imagetransfer.download_iso_or_kernel(ctx, image, sr_ref, instance)
        if special is not None:
            return special
        limit = imagetransfer.max_virtual_size(self.conf.max_virtual_size_gb, instance)
        root = imagetransfer.retrying(
            ctx, f"download of image {image.id}",
            lambda c: imagetransfer.stream_disk(c, image, sr_ref, limit))
        return DownloadedImage(disks={"root": root}, image=image)

    @hookimpl
    def xhost_image_upload(self, ctx, image, vdi_refs, instance):
        image = imagetransfer.upload_properties(ctx, image, instance)
        return imagetransfer.export_upload(ctx, image, vdi_refs[0], instance)
