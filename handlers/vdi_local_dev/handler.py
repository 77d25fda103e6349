"""The ``vdi_local_dev`` image handler (Nova's ``VdiThroughDevStore``).

The VDI is attached (``VBD.create`` + ``VBD.plug``) to the VM xhost runs in
-- the *compute VM* -- and its block device is written or read directly:

* downloads: VHD images (a chain in a tarball, or a bare VHD) are flattened
  on the fly into the device, leaf first, parents filling only what the
  layers above left; raw, raw-in-tgz and AMI images are written as Nova did
  (AMI: after a one-partition MBR, the partition at sector 63);
* uploads: the device is read as a dynamic VHD built on the fly (zero blocks
  left out) into a gzipped tarball holding ``0.vhd`` -- the same format the
  other handlers upload, so any handler boots it.

ISO images go into the local ISO SR and kernels/ramdisks into dom0's
``/boot/guest`` through XAPI (no local attach). ``[xenserver]
independent_compute = True`` means xhost is not in a VM of the host, so disk
downloads and uploads are refused (use ``vdi_remote_stream``).

Finding the compute VM and its devices (``[image_vdi_local_dev]``): the VM's
uuid comes from ``compute_vm_uuid``, else the file ``vm_uuid_file`` (a real
domU's ``/sys/hypervisor/uuid``), else the VM whose ``other_config`` has
``xhost_compute_vm=true``; a disk plugged as device ``xvdb`` is
``<device_dir>/xvdb``. With xhost's embedded simulator, unset options point
at the simulated compute domain (``<state_dir>/compute/vm-uuid`` and
``<state_dir>/compute/dev``); for a simulator run apart (``xhost sim
serve``), set ``vm_uuid_file`` and ``device_dir`` to those paths.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator

from oslo_config import cfg

from xhost import exception, hookimpl, imagetransfer
from xhost.dom0 import xhost_vhd
from xhost.imagearchive import ArchiveReader, tarball
from xhost.images import ImageError, InvalidImage
from xhost.objects import Disk, DownloadedImage, ImageHandlerCapabilities
from xhost.vhdstream import LayerMask, write_layer

LOG = logging.getLogger(__name__)
GROUP = cfg.OptGroup("image_vdi_local_dev", title="vdi_local_dev image handler options",
                     help="The vdi_local_dev image handler: disks attached to the VM xhost runs "
                          "in, written as block devices.")
OPTS = [
    cfg.StrOpt("device_dir",
               help="Directory of the compute VM's block devices. Unset: /dev (a real domU), "
                    "or the embedded simulator's <state_dir>/compute/dev."),
    cfg.StrOpt("vm_uuid_file",
               help="File holding the compute VM's uuid. Unset: /sys/hypervisor/uuid (a real "
                    "domU), or the embedded simulator's <state_dir>/compute/vm-uuid."),
    cfg.StrOpt("compute_vm_uuid",
               help="The compute VM's uuid, overriding vm_uuid_file."),
    cfg.IntOpt("max_virtual_size_gb", default=2040, min=1, max=2040,
               help="Refuse images whose disk is larger than this (GiB). The flavor's root "
                    "size limits it further when an image is fetched for an instance."),
]
REAL_DEVICE_DIR = "/dev"
REAL_UUID_FILE = "/sys/hypervisor/uuid"
COMPUTE_KEY = "xhost_compute_vm"
CHUNK = 4 * 1024 * 1024


def list_opts():
    return [(GROUP, OPTS)]


class LocalDevError(ImageError):
    msg_fmt = "vdi_local_dev: {reason}"


class VdiLocalDevHandler:
    """Disks written and read as block devices of the compute VM."""

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        conf.register_group(GROUP)
        conf.register_opts(OPTS, group=GROUP)
        self.root = conf
        self.conf = conf.image_vdi_local_dev

    @hookimpl
    def xhost_image_capabilities(self, ctx):
        return ImageHandlerCapabilities(
            disk_formats=frozenset({"vhd", "raw", "ami", "iso", "aki", "ari"}),
            container_formats=frozenset({"bare", "ovf", "tgz", "ami", "aki", "ari"}),
            sr_types=None, upload_format=("vhd", "ovf"))

    # -- the compute VM ---------------------------------------------------------

    def _refuse_independent(self, what: str) -> None:
        if self.root.xenserver.independent_compute:
            raise LocalDevError(reason=f"cannot {what}: it attaches disks to the VM xhost runs "
                                f"in, and [xenserver] independent_compute = True says xhost "
                                f"does not run in a VM of the host. Use [xenserver] "
                                f"image_handler = vdi_remote_stream")

    def _paths(self, ctx) -> tuple[str, str]:
        device_dir, uuid_file = self.conf.device_dir, self.conf.vm_uuid_file
        connection = ctx.extra.get("connection")
        simulator = getattr(connection, "simulator", None)
        if simulator is not None:
            compute = os.path.join(str(simulator.state_dir), "compute")
            device_dir = device_dir or os.path.join(compute, "dev")
            uuid_file = uuid_file or os.path.join(compute, "vm-uuid")
        return device_dir or REAL_DEVICE_DIR, uuid_file or REAL_UUID_FILE

    def _compute_vm(self, ctx, uuid_file: str) -> str:
        uuid = self.conf.compute_vm_uuid
        if not uuid:
            with contextlib.suppress(OSError):
                with open(uuid_file, encoding="ascii") as f:
                    uuid = f.read().strip()
        if uuid:
            try:
                return ctx.xapi.call("VM.get_by_uuid", uuid)
            except exception.UuidInvalid:
                raise LocalDevError(reason=f"the compute VM {uuid} (from "
                                    f"{'compute_vm_uuid' if self.conf.compute_vm_uuid else uuid_file}"
                                    f") is not on this host") from None
        query = 'field "is_control_domain"="false" and field "is_a_template"="false"'
        for ref, rec in ctx.xapi.call("VM.get_all_records_where", query).items():
            if rec["other_config"].get(COMPUTE_KEY) == "true":
                return ref
        raise LocalDevError(reason=f"cannot find the VM xhost runs in: {uuid_file} is missing "
                            f"and no VM has other_config:{COMPUTE_KEY}=true. Set "
                            f"[image_vdi_local_dev] compute_vm_uuid or vm_uuid_file")

    @contextlib.contextmanager
    def attached(self, ctx, vdi_ref: str, writable: bool) -> Iterator[str]:
        """Plug a VDI into the compute VM; yield its device path."""
        device_dir, uuid_file = self._paths(ctx)
        vm = self._compute_vm(ctx, uuid_file)
        vbd = ctx.xapi.call("VBD.create", {
            "VM": vm, "VDI": vdi_ref, "userdevice": "autodetect", "bootable": False,
            "mode": "RW" if writable else "RO", "type": "Disk", "empty": False,
            "other_config": {"xhost_image_transfer": "true"}, "qos_algorithm_type": "",
            "qos_algorithm_params": {}})
        plugged = failed = False
        try:
            ctx.xapi.call("VBD.plug", vbd)
            plugged = True
            path = os.path.join(device_dir, ctx.xapi.call("VBD.get_device", vbd))
            deadline = time.monotonic() + self.root.xenserver.block_device_creation_timeout
            while not os.path.exists(path):
                if time.monotonic() > deadline:
                    raise LocalDevError(reason=f"{path} did not appear within "
                                        f"{self.root.xenserver.block_device_creation_timeout}"
                                        f"s of plugging the disk (is device_dir right?)")
                time.sleep(0.05)
            yield path
        except BaseException:
            failed = True
            raise
        finally:
            self._release(ctx, vbd, plugged, quietly=failed)

    def _release(self, ctx, vbd: str, plugged: bool, quietly: bool) -> None:
        """Unplug and destroy the transfer VBD. When the transfer already
        failed, a failure here is only logged: the user is told what failed
        first, and the rollback (which removes the VDI's VBDs) retries."""
        try:
            if plugged:
                self._unplug(ctx, vbd)
            with contextlib.suppress(exception.HandleInvalid):
                ctx.xapi.call("VBD.destroy", vbd)
        except exception.XapiError as exc:
            if not quietly:
                raise
            LOG.warning("could not remove the transfer VBD %s yet: %s", vbd, exc)

    def _unplug(self, ctx, vbd: str) -> None:
        retries = self.root.xenserver.num_vbd_unplug_retries
        for attempt in range(retries + 1):
            try:
                ctx.xapi.call("VBD.unplug", vbd)
                return
            except exception.XapiFailure as exc:
                if exc.code == "DEVICE_ALREADY_DETACHED" or isinstance(exc,
                                                                       exception.HandleInvalid):
                    return
                if exc.code not in ("DEVICE_DETACH_REJECTED", "INTERNAL_ERROR") or \
                        attempt == retries:
                    raise
                time.sleep(1)

    # -- download ----------------------------------------------------------------

    @hookimpl
    def xhost_image_download(self, ctx, image, sr_ref, instance):
        special = imagetransfer.download_iso_or_kernel(ctx, image, sr_ref, instance)
        if special is not None:
            return special
        kind = imagetransfer.image_kind(image)
        self._refuse_independent(f"download image {image.id}")
        limit = imagetransfer.max_virtual_size(self.conf.max_virtual_size_gb, instance)
        root = imagetransfer.retrying(ctx, f"download of image {image.id}",
                                      lambda c: self._download(c, image, sr_ref, kind, limit))
        return DownloadedImage(disks={"root": root}, image=image)

    def _new_disk(self, ctx, image, sr_ref: str, size: int) -> Disk:
        ref, uuid = imagetransfer.create_vdi(ctx, sr_ref, size, image.name or image.id, image)
        return Disk(vdi_ref=ref, vdi_uuid=uuid, kind="root", userdevice="0", bootable=True)

    def _download(self, ctx, image, sr_ref: str, kind: str, limit: int) -> Disk:
        chunks = ctx.plugins.image_service_download(ctx, image.id)
        if kind == "vhd":
            return self._download_vhd(ctx, image, sr_ref, chunks, limit)
        if kind == "raw-tgz":
            archive = ArchiveReader(chunks, image.id, "single", max_members=1,
                                    max_expanded=limit + 2 * 1024 * 1024)
            disk = None
            for member in archive.members():
                if member.size > limit:
                    raise InvalidImage(image=image.id, reason=f"{member.name} is {member.size} "
                                       f"bytes, larger than the {limit} bytes allowed")
                disk = self._new_disk(ctx, image, sr_ref, -(-member.size // 512) * 512)
                with self.attached(ctx, disk.vdi_ref, True) as path:
                    _copy(iter(lambda d=member.data: d.read(CHUNK), b""), path, 0, member.size,
                          image.id)
            archive.finish()
            assert disk is not None
            return disk
        size = int(image.size or 0)
        if not size:
            raise InvalidImage(image=image.id, reason="the image service does not give the "
                               "image's size; raw images need it")
        offset = 0
        prefix = b""
        if kind == "ami":
            sectors = -(-size // 512)
            offset = imagetransfer.AMI_PARTITION_SECTOR * 512
            prefix = imagetransfer.mbr_for_partition(imagetransfer.AMI_PARTITION_SECTOR, sectors)
        total = offset + size
        if total > limit:
            raise InvalidImage(image=image.id, reason=f"the disk is {total} bytes, larger than "
                               f"the {limit} bytes allowed")
        disk = self._new_disk(ctx, image, sr_ref, -(-total // 512) * 512)
        with self.attached(ctx, disk.vdi_ref, True) as path:
            if prefix:
                with open(path, "r+b") as dev:
                    dev.write(prefix)
            _copy(chunks, path, offset, size, image.id)
        return disk

    def _download_vhd(self, ctx, image, sr_ref: str, chunks, limit: int) -> Disk:
        mask = LayerMask()
        disk = None
        with contextlib.ExitStack() as stack:
            fd = -1
            for layer in imagetransfer.vhd_layers(ctx, image, chunks, limit):
                if disk is None:
                    disk = self._new_disk(ctx, image, sr_ref, layer.virtual_size)
                    path = stack.enter_context(self.attached(ctx, disk.vdi_ref, True))
                    fd = os.open(path, os.O_WRONLY)
                    stack.callback(os.close, fd)
                write_layer(layer, fd, mask, record=True)
            if fd >= 0:
                os.fsync(fd)
        assert disk is not None
        return disk

    # -- upload -------------------------------------------------------------------

    @hookimpl
    def xhost_image_upload(self, ctx, image, vdi_refs, instance):
        self._refuse_independent(f"upload image {image.id}")
        image = imagetransfer.upload_properties(ctx, image, instance)
        vdi = vdi_refs[0]
        size = int(ctx.xapi.call("VDI.get_virtual_size", vdi))
        level = imagetransfer.compression_level(ctx, instance)
        with self.attached(ctx, vdi, False) as path, \
                xhost_vhd.RawSource(path, size) as device:
            stream = xhost_vhd.DynamicStream(device)
            data = tarball([("0.vhd", stream.size, iter(stream))], level)
            return ctx.plugins.image_service_upload(ctx, image.id, data, None)


def _copy(chunks, path: str, offset: int, size: int, image: str) -> None:
    """Write exactly ``size`` bytes of ``chunks`` at ``offset`` of a fresh
    device, leaving zero chunks unwritten."""
    fd = os.open(path, os.O_WRONLY)
    try:
        written = 0
        for chunk in chunks:
            if written + len(chunk) > size:
                raise InvalidImage(image=image, reason=f"more data than the image's {size} "
                                   f"bytes")
            if chunk.strip(b"\x00"):
                view = memoryview(chunk)
                pos = offset + written
                while view:
                    done = os.pwrite(fd, view, pos)
                    view = view[done:]
                    pos += done
            written += len(chunk)
        if written != size:
            raise InvalidImage(image=image, reason=f"{written} bytes received, the image has "
                               f"{size}")
        os.fsync(fd)
    finally:
        os.close(fd)
