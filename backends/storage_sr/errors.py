"""Errors of the ``sr`` storage backend, each naming the problem and the fix."""
from __future__ import annotations

from xhost import exception


class StorageError(exception.XhostError):
    msg_fmt = "storage: {reason}"


class InvalidSrFilter(StorageError):
    msg_fmt = ("[xenserver] sr_matching_filter = {value!r} is not valid: {reason}. Use "
               "'default-sr:true' (the pool's default SR) or 'other-config:<key>=<value>' "
               "(e.g. other-config:i18n-key=local-storage)")


class NoMatchingSr(StorageError):
    msg_fmt = ("[xenserver] sr_matching_filter = {value!r} matches no SR that can hold disks "
               "and is plugged on host {host}{why}. SRs: {listing}. Set sr_matching_filter to "
               "match one of them")


class FlavorDiskSmallerThanImage(StorageError):
    msg_fmt = ("flavor {flavor!r} has a {root_gb} GB root disk, smaller than the {size} "
               "virtual disk of image {image!r}; choose a flavor with a root disk of at least "
               "{needed_gb} GB, or one with root_gb 0 to keep the image's size")


class SrNeedsVhdFiles(StorageError):
    msg_fmt = ("{feature} needs VHD files, which SR {sr!r} (type {sr_type}) does not have: "
               "only file-based SRs (ext, nfs) do. {fix}")


class UnsupportedFilesystem(StorageError):
    msg_fmt = ("[DEFAULT] default_ephemeral_format = {value!r} is not supported; use one of "
               "{choices} (unset: ext3)")


class DiskScriptFailed(StorageError):
    msg_fmt = "{what} failed in dom0: {reason}"


class UnsupportedVolume(StorageError):
    msg_fmt = ("volume connection type {kind!r} is not supported by storage backend 'sr'; it "
               "attaches volumes given as existing VDIs: connection_info "
               "{{\"driver_volume_type\": \"vdi\", \"vdi_uuid\": \"<uuid>\"}}")


class InvalidMountpoint(StorageError):
    msg_fmt = ("mountpoint {mountpoint!r} is not a guest disk device; use /dev/xvdb.. "
               "/dev/xvdp (or sdb.., hdb.., a device number 1-15){detail}")
