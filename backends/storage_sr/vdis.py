"""VDIs and VBDs: creating tagged disks, plugging them into dom0, and taking
them apart again whatever state a failure left them in."""
from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any

from xhost import exception
from xhost.compute.vmrecord import VDI_TAG_INSTANCE, VDI_TAG_KIND
from xhost.context import Context, durable
from xhost.objects import Instance
from xhost.xapi.dom0 import Dom0

LOG = logging.getLogger(__name__)

NULL = "OpaqueRef:NULL"
GiB = 1024 ** 3
MiB = 1024 ** 2
#: other_config key on the VBDs this backend plugs into dom0 (what for).
DOM0_ATTACH_TAG = "xhost_dom0_attach"
#: Unplug failures worth retrying (Nova's list): the guest or the backend is busy.
_RETRY_UNPLUG = frozenset({"DEVICE_DETACH_REJECTED", "INTERNAL_ERROR", "VM_MISSING_PV_DRIVERS"})
#: Unplug failures that mean "not plugged": nothing to do.
_NOT_PLUGGED = frozenset({"DEVICE_ALREADY_DETACHED", "VM_BAD_POWER_STATE"})
#: Pause between unplug attempts (seconds).
UNPLUG_RETRY_INTERVAL = 1.0


def dom0(ctx: Context) -> Dom0:
    """The dom0 script caller of the operation (one per connection)."""
    caller = ctx.extra.get("dom0")
    if caller is None:
        caller = ctx.extra["dom0"] = Dom0(ctx.xapi)
    return caller


def control_domain(ctx: Context) -> str:
    """The control domain (dom0) VM of the operation's host."""
    cached = ctx.extra.get("storage_sr.dom0_vm")
    if cached:
        return cached
    vm = ctx.xapi.call("host.get_control_domain", ctx.host_ref)
    if not vm or vm == NULL:  # hosts older than the field
        found = ctx.xapi.call("VM.get_all_records_where",
                              f'field "is_control_domain"="true" and '
                              f'field "resident_on"="{ctx.host_ref}"')
        if not found:
            raise exception.XhostError(f"host {ctx.host_ref} has no control domain (dom0)")
        vm = next(iter(found))
    ctx.extra["storage_sr.dom0_vm"] = vm
    return vm


def create_vdi(ctx: Context, sr_ref: str, instance: Instance, name_label: str, kind: str,
               size: int, description: str = "") -> tuple[str, str]:
    """Create an empty VDI tagged for ``instance`` (undo registered at once);
    returns its ref and uuid."""
    vdi = ctx.xapi.call("VDI.create", {
        "name_label": name_label, "name_description": description or kind, "SR": sr_ref,
        "virtual_size": str(size), "type": "user", "sharable": False, "read_only": False,
        "other_config": {VDI_TAG_INSTANCE: instance.uuid, VDI_TAG_KIND: kind},
        "sm_config": {}, "xenstore_data": {}, "tags": []})
    ctx.undo.push(f"destroy {kind} disk {name_label!r}", destroy_vdi, ctx, vdi)
    return vdi, ctx.xapi.call("VDI.get_uuid", vdi)


def unplug_vbd(ctx: Context, vbd: str, retries: int | None = None, force: bool = False) -> None:
    """``VBD.unplug`` with Nova's retries; "already unplugged" and a VBD that
    is gone count as done. With ``force``, a last ``VBD.unplug_force``."""
    if retries is None:
        retries = ctx.conf.xenserver.num_vbd_unplug_retries
    failure: exception.XapiFailure | None = None
    for attempt in range(retries + 1):
        try:
            ctx.xapi.call("VBD.unplug", vbd)
            return
        except exception.HandleInvalid:
            return
        except exception.XapiFailure as exc:
            if exc.code in _NOT_PLUGGED:
                return
            failure = exc
            if exc.code not in _RETRY_UNPLUG or attempt == retries:
                break
            LOG.info("VBD.unplug of %s: %s; retrying", vbd, exc.code)
            time.sleep(UNPLUG_RETRY_INTERVAL)
    if not force:
        assert failure is not None
        raise failure
    try:
        ctx.xapi.call("VBD.unplug_force", vbd)
    except exception.HandleInvalid:
        return
    except exception.XapiFailure as exc:
        if exc.code not in _NOT_PLUGGED:
            raise


@durable
def remove_vbd(ctx: Context, vbd: str, record: dict[str, Any] | None = None) -> None:
    """Unplug (if plugged; releasing dom0's hold first for dom0 attachments)
    and destroy a VBD. Missing pieces are fine."""
    if record is None:
        try:
            record = ctx.xapi.call("VBD.get_record", vbd)
        except exception.HandleInvalid:
            return
    if record.get("currently_attached"):
        if DOM0_ATTACH_TAG in record.get("other_config", {}) and record.get("device"):
            release_in_dom0(ctx, record["device"])
        unplug_vbd(ctx, vbd, force=True)
    with contextlib.suppress(exception.HandleInvalid):
        ctx.xapi.call("VBD.destroy", vbd)


def release_in_dom0(ctx: Context, device: str) -> None:
    """Best effort: let go of whatever a killed dom0 script left holding the
    device (loop devices), so that it can be unplugged."""
    try:
        dom0(ctx).call(ctx.host_ref, "xhost_disks", "release_device", device=device)
    except Exception as exc:  # the unplug that follows reports a real problem
        LOG.warning("could not release dom0 device %s: %s", device, exc)


@durable
def destroy_vdi(ctx: Context, vdi: str, vbds: list[str] | None = None) -> None:
    """Destroy a VDI, first removing its VBDs (unplugging them if needed).
    A VDI that is gone is fine."""
    if vbds is None:
        try:
            vbds = ctx.xapi.call("VDI.get_VBDs", vdi)
        except exception.HandleInvalid:
            return
    for vbd in vbds:
        remove_vbd(ctx, vbd)
    with contextlib.suppress(exception.HandleInvalid):
        ctx.xapi.call("VDI.destroy", vdi)


@contextlib.contextmanager
def plugged_in_dom0(ctx: Context, vdi: str, purpose: str) -> Iterator[str]:
    """Plug ``vdi`` into dom0 for the block; yields its device name (``xvdb``).

    The VBD's removal is in ``ctx.undo`` from the moment it exists, so a
    failure anywhere (including in this block's body or in the unplug)
    leaves it to the rollback, which unplugs and destroys it whatever its
    state.
    """
    vbd = ctx.xapi.call("VBD.create", {
        "VM": control_domain(ctx), "VDI": vdi, "userdevice": "autodetect", "bootable": False,
        "mode": "RW", "type": "Disk", "empty": False, "unpluggable": True,
        "other_config": {DOM0_ATTACH_TAG: purpose},
        "qos_algorithm_type": "", "qos_algorithm_params": {}})
    ctx.undo.push(f"detach a disk from dom0 ({purpose})", remove_vbd, ctx, vbd)
    ctx.xapi.call("VBD.plug", vbd)
    device = ctx.xapi.call("VBD.get_device", vbd)
    yield device
    unplug_vbd(ctx, vbd)
    ctx.xapi.call("VBD.destroy", vbd)
