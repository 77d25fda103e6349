"""Volumes given as existing VDIs, attached at the guest device their
mountpoint names (Nova's numbering: ``xvdb`` -> userdevice 1)."""
from __future__ import annotations

import re
from typing import Any

from xhost import exception
from xhost.context import Context
from xhost.objects import Instance

from .errors import InvalidMountpoint, StorageError, UnsupportedVolume
from .vdis import unplug_vbd

#: other_config mark of a volume's VBD (Nova's name), so that disks and
#: volumes are told apart.
VOLUME_TAG = "osvol"
_MOUNTPOINT = re.compile(r"^(?:x?vd|sd|hd)([a-p])$")


def mountpoint_number(mountpoint: str) -> int:
    """``/dev/xvdb`` -> 1 (``sdb``, ``hdb``, ``vdb`` and ``"1"`` too)."""
    name = mountpoint[len("/dev/"):] if mountpoint.startswith("/dev/") else mountpoint
    match = _MOUNTPOINT.match(name)
    if match:
        number = ord(match.group(1)) - ord("a")
    elif name.isdigit():
        number = int(name)
    else:
        raise InvalidMountpoint(mountpoint=mountpoint, detail="")
    if number == 0:
        raise InvalidMountpoint(mountpoint=mountpoint,
                                detail="; device 0 (xvda) is the instance's root disk")
    if number > 15:
        raise InvalidMountpoint(mountpoint=mountpoint, detail="")
    return number


def _vdi_uuid(connection_info: dict[str, Any]) -> str:
    kind = connection_info.get("driver_volume_type")
    if kind != "vdi":
        raise UnsupportedVolume(kind=kind)
    data = connection_info.get("data") or {}
    uuid = connection_info.get("vdi_uuid") or data.get("vdi_uuid")
    if not uuid:
        raise StorageError(reason="connection_info of a 'vdi' volume needs 'vdi_uuid'")
    return str(uuid)


def attach_volume(ctx: Context, instance: Instance, vm_ref: str,
                  connection_info: dict[str, Any], mountpoint: str) -> str:
    number = mountpoint_number(mountpoint)
    uuid = _vdi_uuid(connection_info)
    try:
        vdi = ctx.xapi.call("VDI.get_by_uuid", uuid)
    except exception.UuidInvalid as exc:
        raise StorageError(reason=f"volume VDI {uuid} does not exist on this host's pool") from exc
    read_only = bool(ctx.xapi.call("VDI.get_read_only", vdi))
    try:
        vbd = ctx.xapi.call("VBD.create", {
            "VM": vm_ref, "VDI": vdi, "userdevice": str(number), "bootable": False,
            "mode": "RO" if read_only else "RW", "type": "Disk", "empty": False,
            "unpluggable": True, "other_config": {VOLUME_TAG: "True"},
            "qos_algorithm_type": "", "qos_algorithm_params": {}})
    except exception.XapiFailure as exc:
        if exc.code == "DEVICE_ALREADY_EXISTS":
            raise StorageError(reason=f"{instance.name} already has a disk at {mountpoint} "
                                      f"(device {number}); choose a free mountpoint") from exc
        raise
    ctx.undo.push(f"remove volume VBD at {mountpoint}", _remove, ctx, vbd)
    try:
        if ctx.xapi.call("VM.get_power_state", vm_ref) == "Running":
            ctx.xapi.call("VBD.plug", vbd)
    except Exception:
        _remove(ctx, vbd)  # the volume itself is never touched
        raise
    return vbd


def _remove(ctx: Context, vbd: str) -> None:
    unplug_vbd(ctx, vbd)
    try:
        ctx.xapi.call("VBD.destroy", vbd)
    except exception.HandleInvalid:
        pass


def detach_volume(ctx: Context, instance: Instance, vm_ref: str, mountpoint: str) -> bool:
    number = str(mountpoint_number(mountpoint))
    vbds = ctx.xapi.call("VBD.get_all_records_where", f'field "VM"="{vm_ref}"')
    found = [(ref, rec) for ref, rec in vbds.items() if rec["userdevice"] == number]
    if not found:
        return True
    ref, rec = found[0]
    if VOLUME_TAG not in rec.get("other_config", {}):
        raise StorageError(reason=f"the disk of {instance.name} at {mountpoint} is one of its "
                                  f"own disks, not a volume; it is not detached")
    if rec["currently_attached"]:
        unplug_vbd(ctx, ref)
    try:
        ctx.xapi.call("VBD.destroy", ref)
    except exception.HandleInvalid:
        pass
    return True
