"""The ``sr`` storage backend plugin: its options and hook implementations."""
from __future__ import annotations

from typing import Any

from oslo_config import cfg

from xhost import hookimpl
from xhost.context import Context
from xhost.objects import Disk, ImageMeta, Instance, StorageCapabilities

from . import configdrive, destroy, ephemeral, rootdisk, srchoice, volumes

GROUP = cfg.OptGroup("storage_sr", title="'sr' storage backend options",
                     help="Options of the 'sr' storage backend (instance disks in an SR chosen "
                          "by [xenserver] sr_matching_filter).")

OPTS = [
    cfg.IntOpt("config_drive_size_mb", default=64, min=1,
               help="Size (MiB) of config drive disks, as Nova's 64 MiB; a larger drive gets "
                    "a disk that fits it."),
    cfg.IntOpt("sr_choice_cache_seconds", default=60, min=0,
               help="Seconds the SR chosen by [xenserver] sr_matching_filter is reused before "
                    "the filter is matched again (every spawn that fails matches it again "
                    "too). 0 matches it for every spawn (two XAPI calls)."),
    cfg.IntOpt("disk_script_timeout", default=1800, min=10,
               help="Seconds a dom0 disk script may run (partitioning and formatting a large "
                    "ephemeral disk, e2fsck and resize2fs of a root disk) before xhost gives "
                    "up on it."),
]


def list_opts() -> list[tuple[cfg.OptGroup, list[cfg.Opt]]]:
    return [(GROUP, OPTS)]


class SrStorageBackend:
    """Instance disks in the SR ``[xenserver] sr_matching_filter`` picks
    (``default-sr:true`` or ``other-config:<key>=<value>``, among SRs plugged
    on the host).

    * Root disk: from the image cache (a copy-on-write clone of the cached
      image where the SR keeps VHD files), grown to the flavor's ``root_gb``
      (``VDI.resize``; a flavor smaller than the image is refused, 0 keeps
      the image's size). With auto disk config (image property
      ``hw_auto_disk_config``/``auto_disk_config``) its single ext3/ext4
      partition and filesystem are grown in dom0 with ``e2fsck`` and
      ``resize2fs``; a disk outside Nova's rules (one partition, number 1,
      ext3/ext4) is left as it is, with a warning fault on the instance.
      ISO images boot as a CD (device 1) onto a blank disk of ``root_gb``.
    * Ephemeral disks (device 4 on, ``<name> ephemeral``, ``<name> ephemeral
      (1)``...; one VDI per 2000 GB, 1024 GB chunks when the total is a
      multiple of 1024) and swap (device 2): partitioned from sector 2048 and
      formatted in dom0 by ``sfdisk`` and ``mke2fs``/``mkswap``/``mkfs.*``
      per ``[DEFAULT] default_ephemeral_format`` (unset: ext3; Windows swap:
      vfat).
    * Config drive (device 3, read-only): a ``config-2`` ISO 9660 image with
      Rock Ridge and Joliet names, built with pycdlib and streamed in through
      ``/import_raw_vdi``.
    * Volumes: existing VDIs (``{"driver_volume_type": "vdi", "vdi_uuid":
      ...}``) at the device their mountpoint names.

    dom0 needs ``sfdisk``, ``losetup`` and e2fsprogs (as XenServer and XCP-ng
    ship them), plus ``mkfs.<fs>`` for other ephemeral formats; the dom0
    script is ``xhost_disks``.
    """

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        conf.register_group(GROUP)
        conf.register_opts(OPTS, group=GROUP)
        self.conf = conf
        self.choices = srchoice.ChoiceCache(conf.storage_sr.sr_choice_cache_seconds)

    @hookimpl
    def xhost_storage_choose_sr(self, ctx: Context, instance: Instance | None) -> str:
        return self.choices.choose(ctx)

    @hookimpl
    def xhost_storage_capabilities(self, ctx: Context, sr_ref: str) -> StorageCapabilities:
        return srchoice.capabilities(ctx, sr_ref)

    @hookimpl
    def xhost_storage_create_root_disk(self, ctx: Context, instance: Instance, sr_ref: str,
                                       image: ImageMeta) -> list[Disk]:
        return rootdisk.create_root_disk(ctx, instance, sr_ref, image)

    @hookimpl
    def xhost_storage_create_ephemeral_disks(self, ctx: Context, instance: Instance,
                                             sr_ref: str) -> list[Disk]:
        return ephemeral.create_ephemeral_disks(ctx, instance, sr_ref)

    @hookimpl
    def xhost_storage_create_swap_disk(self, ctx: Context, instance: Instance,
                                       sr_ref: str) -> list[Disk]:
        return ephemeral.create_swap_disk(ctx, instance, sr_ref)

    @hookimpl
    def xhost_storage_create_config_drive(self, ctx: Context, instance: Instance, sr_ref: str,
                                          files: dict[str, bytes]) -> Disk:
        return configdrive.create_config_drive(ctx, instance, sr_ref, files,
                                               self.conf.storage_sr.config_drive_size_mb)

    @hookimpl
    def xhost_storage_attach_volume(self, ctx: Context, instance: Instance, vm_ref: str,
                                    connection_info: dict[str, Any], mountpoint: str) -> str:
        return volumes.attach_volume(ctx, instance, vm_ref, connection_info, mountpoint)

    @hookimpl
    def xhost_storage_detach_volume(self, ctx: Context, instance: Instance, vm_ref: str,
                                    mountpoint: str) -> bool:
        return volumes.detach_volume(ctx, instance, vm_ref, mountpoint)

    @hookimpl
    def xhost_storage_destroy_disks(self, ctx: Context, instance: Instance,
                                    vm_ref: str | None) -> bool:
        return destroy.destroy_disks(ctx, instance, vm_ref)
