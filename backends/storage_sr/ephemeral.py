"""Ephemeral and swap disks: blank VDIs partitioned and formatted in dom0."""
from __future__ import annotations

from collections.abc import Iterator

from xhost.context import Context
from xhost.objects import Disk, Instance

from . import dom0disks
from .errors import UnsupportedFilesystem
from .vdis import GiB, MiB, create_vdi, plugged_in_dom0

#: Largest ephemeral VDI (a VHD holds at most ~2 TB), and the chunk used
#: when the total is a multiple of it (Nova's split).
MAX_EPHEMERAL_VDI_GB = 2000
ALIGNED_EPHEMERAL_VDI_GB = 1024
FIRST_EPHEMERAL_USERDEVICE = 4
SWAP_USERDEVICE = "2"
#: Filesystems ``[DEFAULT] default_ephemeral_format`` may name.
EPHEMERAL_FORMATS = ("ext2", "ext3", "ext4", "xfs", "btrfs", "vfat")
DEFAULT_EPHEMERAL_FORMAT = "ext3"


def ephemeral_sizes(total_gb: int) -> Iterator[int]:
    """The sizes (GB) of the VDIs holding ``total_gb`` of ephemeral disk."""
    chunk = MAX_EPHEMERAL_VDI_GB
    if total_gb % ALIGNED_EPHEMERAL_VDI_GB == 0:
        chunk = ALIGNED_EPHEMERAL_VDI_GB
    left = total_gb
    while left > 0:
        size = min(chunk, left)
        yield size
        left -= size


def ephemeral_format(ctx: Context) -> str:
    value = ctx.conf.default_ephemeral_format or DEFAULT_EPHEMERAL_FORMAT
    if value not in EPHEMERAL_FORMATS:
        raise UnsupportedFilesystem(value=value, choices=", ".join(EPHEMERAL_FORMATS))
    return value


def _formatted_disk(ctx: Context, instance: Instance, sr_ref: str, name_label: str, kind: str,
                    size: int, fs_type: str, label: str, userdevice: str) -> Disk:
    vdi, uuid = create_vdi(ctx, sr_ref, instance, name_label, kind, size)
    with plugged_in_dom0(ctx, vdi, f"formatting {kind}") as device:
        dom0disks.call(ctx, "make_filesystem", f"formatting the {kind} disk {name_label!r}",
                       device=device, fs_type=fs_type, label=label)
    return Disk(vdi_ref=vdi, vdi_uuid=uuid, kind=kind, userdevice=userdevice)


def create_ephemeral_disks(ctx: Context, instance: Instance, sr_ref: str) -> list[Disk]:
    """One VDI per chunk at userdevice 4, 5...: named ``<name> ephemeral``,
    ``<name> ephemeral (1)``..., filesystem labels ``ephemeral``,
    ``ephemeral1``..."""
    total = instance.flavor.ephemeral_gb
    if not total:
        return []
    fs_type = ephemeral_format(ctx)
    disks = []
    for index, size_gb in enumerate(ephemeral_sizes(total)):
        suffix = f" ({index})" if index else ""
        disks.append(_formatted_disk(
            ctx, instance, sr_ref, f"{instance.name} ephemeral{suffix}", "ephemeral",
            size_gb * GiB, fs_type, f"ephemeral{index or ''}",
            str(FIRST_EPHEMERAL_USERDEVICE + index)))
    return disks


def create_swap_disk(ctx: Context, instance: Instance, sr_ref: str) -> list[Disk]:
    """The swap disk at userdevice 2 (vfat for Windows guests, as Nova)."""
    swap_mb = instance.flavor.swap_mb
    if not swap_mb:
        return []
    fs_type = "vfat" if (instance.os_type or "").lower() == "windows" else "swap"
    return [_formatted_disk(ctx, instance, sr_ref, f"{instance.name} swap", "swap",
                            swap_mb * MiB, fs_type, "", SWAP_USERDEVICE)]
