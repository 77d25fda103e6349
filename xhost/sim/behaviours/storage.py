"""Storage: SR, PBD, VDI and VBD behaviour.

XAPI semantics live here (errors, operations, relations, utilisation); the
content of disks is the business of the SR's driver
(:mod:`xhost.sim.storage_drivers`), reached through the helpers below, which
are also what the VM behaviours use to clone, copy and snapshot disks.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..dispatch import CallContext
from ..errors import NULL_REF, ApiError
from ..seed import sr_update
from ..xapi_types import now_datetime
from . import behaviour

#: Largest VHD (2 TiB minus the metadata xapi reserves).
VHD_MAX_SIZE = 2040 * (1 << 30)

VDI_OPS = ["clone", "copy", "resize", "resize_online", "snapshot", "mirror", "destroy",
           "forget", "update", "force_unlock", "generate_config", "enable_cbt", "disable_cbt",
           "data_destroy", "list_changed_blocks", "set_on_boot", "blocked"]


# -- helpers used by other behaviours ----------------------------------------------

def sr_of_default(ctx: CallContext) -> str:
    pool = next(iter(ctx.db.all("pool").values()))
    sr = pool["default_SR"]
    if sr == NULL_REF or not ctx.db.exists("SR", sr):
        raise ApiError("DEFAULT_SR_NOT_FOUND", sr)
    return sr


def _check_sr_usable(ctx: CallContext, sr: str) -> dict[str, Any]:
    db = ctx.db
    rec = db.get("SR", sr)
    if not any(db.exists("PBD", p) and db.get("PBD", p)["currently_attached"]
               for p in rec["PBDs"]):
        raise ApiError("SR_NO_PBDS", sr)
    return rec


def vdi_update_allowed_operations(ctx: CallContext, vdi: str) -> None:
    db = ctx.db
    with db.lock:
        rec = db.find("VDI", vdi)
        if rec is None:
            return
        attached = any(db.exists("VBD", v) and db.get("VBD", v)["currently_attached"]
                       for v in rec["VBDs"])
        sr = db.find("SR", rec["SR"])
        iso = sr is not None and sr["content_type"] == "iso"
        ops = []
        for op in VDI_OPS:
            if rec["current_operations"]:
                break
            if not rec["managed"] and op != "forget":
                continue  # xapi: VDI_NOT_MANAGED (hidden "base copy" VDIs)
            if attached and op in ("destroy", "forget", "resize", "data_destroy", "set_on_boot"):
                continue
            if not attached and op == "resize_online":
                continue
            if iso and op in ("clone", "snapshot", "resize", "resize_online", "mirror",
                              "enable_cbt", "disable_cbt", "data_destroy",
                              "list_changed_blocks"):
                continue
            ops.append(op)
        if ops != rec["allowed_operations"]:
            db.update("VDI", vdi, allowed_operations=ops)


def vbd_update_allowed_operations(ctx: CallContext, vbd: str) -> None:
    """xapi's rules: plug/unplug while the VM runs, attach while halted,
    insert/eject for CD drives."""
    db = ctx.db
    with db.lock:
        rec = db.find("VBD", vbd)
        if rec is None:
            return
        vm = db.find("VM", rec["VM"])
        power = vm["power_state"] if vm is not None else "Halted"
        ops: list[str] = []
        if not rec["current_operations"]:
            if power == "Running":
                if rec["currently_attached"]:
                    ops += (["unplug", "unplug_force"] if rec["unpluggable"]
                            else ["unplug_force"])
                else:
                    ops.append("plug")
            elif power == "Halted":
                ops.append("attach")
            if rec["type"] == "CD" and power in ("Running", "Halted"):
                ops.append("insert" if rec["empty"] else "eject")
        if ops != rec["allowed_operations"]:
            db.update("VBD", vbd, allowed_operations=ops)


def _check_size(ctx: CallContext, sr: str, srec: dict[str, Any], size: int,
                vdi: str | None = None) -> None:
    driver = ctx.sim.storage.for_sr(sr)
    if size < 0:
        raise ApiError("INVALID_VALUE", "virtual_size", size)
    if driver.vdi_type == "vhd" and size > VHD_MAX_SIZE:
        raise ApiError("VDI_TOO_LARGE", vdi or NULL_REF, VHD_MAX_SIZE)
    if not driver.thin:
        free = srec["physical_size"] - srec["virtual_allocation"]
        if size > free:
            raise ApiError("SR_FULL", size, free)


def create_vdi(ctx: CallContext, sr: str, values: dict[str, Any]) -> str:
    """Create a VDI record and its storage; returns the new reference."""
    db = ctx.db
    srec = _check_sr_usable(ctx, sr)
    driver = ctx.sim.storage.for_sr(sr)
    size = int(values.get("virtual_size", 0))
    _check_size(ctx, sr, srec, size)
    spec = ctx.sim.schema.classes["VDI"]
    rec = spec.new_record(dict(values, SR=sr, managed=True, missing=False,
                               is_a_snapshot=values.get("is_a_snapshot", False)))
    rec["uuid"] = rec.get("uuid") or __import__("uuid").uuid4().__str__()
    ref = db.add("VDI", rec)
    try:
        updates = driver.vdi_create(ctx, sr, ref, db.get("VDI", ref))
    except BaseException:
        db.remove("VDI", ref)
        raise
    db.update("VDI", ref, **updates)
    vdi_update_allowed_operations(ctx, ref)
    sr_update(ctx.sim, sr)
    return ref


def destroy_vdi(ctx: CallContext, vdi: str) -> None:
    db = ctx.db
    rec = db.get("VDI", vdi)
    driver = ctx.sim.storage.for_sr(rec["SR"])
    driver.vdi_destroy(ctx, rec["SR"], vdi, rec)
    for vbd in list(rec["VBDs"]):
        vrec = db.find("VBD", vbd)
        if vrec is not None:
            if vrec["metrics"] != NULL_REF and db.exists("VBD_metrics", vrec["metrics"]):
                db.remove("VBD_metrics", vrec["metrics"])
            db.remove("VBD", vbd)
    db.remove("VDI", vdi)
    if db.exists("SR", rec["SR"]):
        sr_update(ctx.sim, rec["SR"])


def clone_vdi(ctx: CallContext, vdi: str, *, snapshot: bool,
              driver_params: dict[str, str] | None = None) -> str:
    db = ctx.db
    src = db.get("VDI", vdi)
    sr = src["SR"]
    srec = _check_sr_usable(ctx, sr)
    driver = ctx.sim.storage.for_sr(sr)
    if not driver.thin:
        _check_size(ctx, sr, srec, src["virtual_size"])
    spec = ctx.sim.schema.classes["VDI"]
    values = {k: v for k, v in src.items()
              if k in ("name_label", "name_description", "virtual_size", "type", "sharable",
                       "read_only", "other_config", "xenstore_data", "on_boot",
                       "allow_caching", "metadata_of_pool", "tags")}
    values.update(SR=sr, managed=True, sm_config={}, is_a_snapshot=snapshot,
                  snapshot_of=vdi if snapshot else NULL_REF,
                  snapshot_time=now_datetime() if snapshot else "19700101T00:00:00Z")
    new = db.add("VDI", spec.new_record(values))
    try:
        updates = driver.vdi_clone(ctx, sr, vdi, src, new, db.get("VDI", new),
                                   snapshot=snapshot, driver_params=driver_params or {})
    except BaseException:
        db.remove("VDI", new)
        raise
    db.update("VDI", new, **updates)
    vdi_update_allowed_operations(ctx, new)
    sr_update(ctx.sim, sr)
    return new


def copy_vdi(ctx: CallContext, vdi: str, sr: str, into: str = NULL_REF,
             base: str = NULL_REF) -> str:
    db = ctx.db
    src = db.get("VDI", vdi)
    if into != NULL_REF:
        dst = db.get("VDI", into)
        if dst["read_only"]:
            raise ApiError("VDI_READONLY", into)
        if dst["virtual_size"] < src["virtual_size"]:
            raise ApiError("VDI_TOO_SMALL", into, src["virtual_size"])
        target = into
    else:
        db.get("SR", sr)
        target = create_vdi(ctx, sr, {k: v for k, v in src.items()
                                      if k in ("name_label", "name_description",
                                               "virtual_size", "type", "sharable",
                                               "read_only", "other_config", "xenstore_data",
                                               "on_boot", "allow_caching", "tags")})
    dst_rec = db.get("VDI", target)
    driver = ctx.sim.storage.for_sr(dst_rec["SR"])
    try:
        updates = driver.vdi_copy(ctx, vdi, src, target, dst_rec, base=base)
    except BaseException:
        if into == NULL_REF and db.exists("VDI", target):
            destroy_vdi(ctx, target)  # leave nothing half-made behind
        raise
    if updates:
        db.update("VDI", target, **updates)
    sr_update(ctx.sim, dst_rec["SR"])
    return target


def new_vbd(ctx: CallContext, vm: str, vdi: str, userdevice: str, *, bootable: bool,
            mode: str, vbd_type: str, empty: bool, unpluggable: bool = True,
            other_config: dict[str, str] | None = None, qos_algorithm_type: str = "",
            qos_algorithm_params: dict[str, str] | None = None) -> str:
    return _create_vbd(ctx, {
        "VM": vm, "VDI": vdi, "userdevice": userdevice, "bootable": bootable, "mode": mode,
        "type": vbd_type, "empty": empty, "unpluggable": unpluggable,
        "other_config": other_config or {}, "qos_algorithm_type": qos_algorithm_type,
        "qos_algorithm_params": qos_algorithm_params or {}})


def _create_vbd(ctx: CallContext, values: dict[str, Any]) -> str:
    db = ctx.db
    vm = values["VM"]
    vm_rec = db.get("VM", vm)
    vdi = values["VDI"]
    if vdi != NULL_REF:
        db.get("VDI", vdi)
    elif not (values["type"] == "CD" and values["empty"]):
        raise ApiError("HANDLE_INVALID", "VDI", vdi)
    if values["type"] == "CD" and values["mode"] == "RW":
        raise ApiError("VBD_CDS_MUST_BE_READONLY")
    used = {db.get("VBD", v)["userdevice"] for v in vm_rec["VBDs"] if db.exists("VBD", v)}
    device = values["userdevice"]
    if device == "autodetect":
        device = next(str(i) for i in range(255) if str(i) not in used)
    elif device in used:
        raise ApiError("DEVICE_ALREADY_EXISTS", device)
    elif not device.isdigit() and not device.startswith(("xvd", "hd", "sd")):
        raise ApiError("INVALID_DEVICE", device)
    spec = ctx.sim.schema.classes["VBD"]
    metrics = db.add("VBD_metrics", ctx.sim.schema.classes["VBD_metrics"].new_record(
        {"last_updated": now_datetime()}))
    rec = spec.new_record(dict(values, userdevice=device, metrics=metrics,
                               empty=values["empty"] or vdi == NULL_REF,
                               currently_attached=False, device=""))
    ref = db.add("VBD", rec)
    vbd_update_allowed_operations(ctx, ref)
    if vdi != NULL_REF:
        vdi_update_allowed_operations(ctx, vdi)
    return ref


# -- VDI -------------------------------------------------------------------------

@contextmanager
def vdi_operation(ctx: CallContext, vdi: str, op: str) -> Iterator[dict[str, Any]]:
    """Hold ``op`` in the VDI's current_operations for the call's duration;
    a second operation meanwhile gets OTHER_OPERATION_IN_PROGRESS."""
    db = ctx.db
    key = ctx.op_key
    with db.lock:
        rec = db.get("VDI", vdi)
        if not rec["managed"]:
            raise ApiError("VDI_NOT_MANAGED", vdi)
        if rec["current_operations"]:
            task, cur = next(iter(rec["current_operations"].items()))
            raise ApiError("OTHER_OPERATION_IN_PROGRESS", "VDI", vdi, cur, task)
        db.update("VDI", vdi, current_operations={key: op})
        vdi_update_allowed_operations(ctx, vdi)
    try:
        yield rec
    finally:
        with db.lock:
            if db.exists("VDI", vdi):
                ops = dict(db.get("VDI", vdi)["current_operations"])
                ops.pop(key, None)
                db.update("VDI", vdi, current_operations=ops)
                vdi_update_allowed_operations(ctx, vdi)


@behaviour("VDI.create", latency=True)
def vdi_create(ctx: CallContext, record: dict[str, Any]) -> str:
    ctx.work()
    return create_vdi(ctx, record["SR"], record)


@behaviour("VDI.destroy", latency=True)
def vdi_destroy(ctx: CallContext, vdi: str) -> None:
    db = ctx.db
    rec = db.get("VDI", vdi)
    if not rec["managed"]:
        raise ApiError("VDI_NOT_MANAGED", vdi)
    for vbd in rec["VBDs"]:
        vrec = db.find("VBD", vbd)
        if vrec is not None and vrec["currently_attached"]:
            raise ApiError("VDI_IN_USE", vdi, "destroy")
    if rec["current_operations"]:
        task, op = next(iter(rec["current_operations"].items()))
        raise ApiError("OTHER_OPERATION_IN_PROGRESS", "VDI", vdi, op, task)
    ctx.work()
    destroy_vdi(ctx, vdi)


@behaviour("VDI.clone", latency=True, cancellable=True)
def vdi_clone(ctx: CallContext, vdi: str, driver_params: dict[str, str]) -> str:
    with vdi_operation(ctx, vdi, "clone"):
        ctx.work()
        return clone_vdi(ctx, vdi, snapshot=False, driver_params=driver_params)


@behaviour("VDI.snapshot", latency=True, cancellable=True)
def vdi_snapshot(ctx: CallContext, vdi: str, driver_params: dict[str, str]) -> str:
    with vdi_operation(ctx, vdi, "snapshot"):
        ctx.work()
        return clone_vdi(ctx, vdi, snapshot=True, driver_params=driver_params)


@behaviour("VDI.copy", latency=True, cancellable=True)
def vdi_copy(ctx: CallContext, vdi: str, sr: str, base_vdi: str, into_vdi: str) -> str:
    db = ctx.db
    db.get("VDI", vdi)
    if base_vdi != NULL_REF:
        db.get("VDI", base_vdi)
    if into_vdi == NULL_REF and sr == NULL_REF:
        raise ApiError("HANDLE_INVALID", "SR", sr)
    with vdi_operation(ctx, vdi, "copy"):
        ctx.work()
        return copy_vdi(ctx, vdi, sr, into_vdi, base_vdi)


def _resize(ctx: CallContext, vdi: str, size: int, online: bool) -> None:
    db = ctx.db
    rec = db.get("VDI", vdi)
    attached = any(db.exists("VBD", v) and db.get("VBD", v)["currently_attached"]
                   for v in rec["VBDs"])
    if attached and not online:
        raise ApiError("VDI_IN_USE", vdi, "resize")
    if size < rec["virtual_size"]:
        raise ApiError("SR_BACKEND_FAILURE_79", "", "VDI Invalid size", "")
    srec = db.get("SR", rec["SR"])
    _check_size(ctx, rec["SR"], srec, size - rec["virtual_size"], vdi)
    if size > VHD_MAX_SIZE and ctx.sim.storage.for_sr(rec["SR"]).vdi_type == "vhd":
        raise ApiError("VDI_TOO_LARGE", vdi, VHD_MAX_SIZE)
    with vdi_operation(ctx, vdi, "resize_online" if online else "resize"):
        ctx.work()
        updates = ctx.sim.storage.for_sr(rec["SR"]).vdi_resize(ctx, rec["SR"], vdi, rec, size)
    db.update("VDI", vdi, **updates)
    sr_update(ctx.sim, rec["SR"])


@behaviour("VDI.resize", latency=True)
def vdi_resize(ctx: CallContext, vdi: str, size: int) -> None:
    _resize(ctx, vdi, size, online=False)


@behaviour("VDI.resize_online", latency=True)
def vdi_resize_online(ctx: CallContext, vdi: str, size: int) -> None:
    _resize(ctx, vdi, size, online=True)


@behaviour("VDI.forget")
def vdi_forget(ctx: CallContext, vdi: str) -> None:
    rec = ctx.db.get("VDI", vdi)
    ctx.db.remove("VDI", vdi)
    sr_update(ctx.sim, rec["SR"])


@behaviour("VDI.set_on_boot")
def vdi_set_on_boot(ctx: CallContext, vdi: str, value: str) -> None:
    ctx.db.update("VDI", vdi, on_boot=value)
    vdi_update_allowed_operations(ctx, vdi)


@behaviour("VDI.update")
def vdi_update(ctx: CallContext, vdi: str) -> None:
    ctx.db.get("VDI", vdi)


# -- VBD -------------------------------------------------------------------------

@behaviour("VBD.create")
def vbd_create(ctx: CallContext, record: dict[str, Any]) -> str:
    return _create_vbd(ctx, record)


@behaviour("VBD.destroy")
def vbd_destroy(ctx: CallContext, vbd: str) -> None:
    db = ctx.db
    rec = db.get("VBD", vbd)
    if rec["currently_attached"]:
        raise ApiError("OPERATION_NOT_ALLOWED", "VBD currently attached to a running VM")
    if rec["metrics"] != NULL_REF and db.exists("VBD_metrics", rec["metrics"]):
        db.remove("VBD_metrics", rec["metrics"])
    db.remove("VBD", vbd)
    if rec["VDI"] != NULL_REF:
        vdi_update_allowed_operations(ctx, rec["VDI"])


def _vm_running(ctx: CallContext, vm: str) -> dict[str, Any]:
    rec = ctx.db.get("VM", vm)
    if rec["power_state"] != "Running":
        raise ApiError("VM_BAD_POWER_STATE", vm, "running", rec["power_state"].lower())
    return rec


@behaviour("VBD.plug", latency=True)
def vbd_plug(ctx: CallContext, vbd: str) -> None:
    db = ctx.db
    rec = db.get("VBD", vbd)
    _vm_running(ctx, rec["VM"])
    if rec["currently_attached"]:
        raise ApiError("DEVICE_ALREADY_ATTACHED", vbd)
    ctx.work()
    from .vm import _device_name

    if rec["VDI"] != NULL_REF and not rec["empty"]:
        vdi = db.get("VDI", rec["VDI"])
        ctx.sim.storage.for_sr(vdi["SR"]).vdi_attach(ctx, rec["VDI"], rec["mode"] == "RW",
                                                      vbd=vbd)
    db.update("VBD", vbd, currently_attached=True,
              device=_device_name(rec["userdevice"], rec["type"]))
    vbd_update_allowed_operations(ctx, vbd)
    if rec["VDI"] != NULL_REF:
        vdi_update_allowed_operations(ctx, rec["VDI"])
    ctx.sim.guests.on_devices_changed(rec["VM"])


def _unplug(ctx: CallContext, vbd: str, force: bool) -> None:
    db = ctx.db
    rec = db.get("VBD", vbd)
    if not rec["currently_attached"]:
        raise ApiError("DEVICE_ALREADY_DETACHED", vbd)
    if not force and not rec["unpluggable"]:
        raise ApiError("VBD_NOT_UNPLUGGABLE", vbd)
    ctx.work()
    if rec["VDI"] != NULL_REF and not rec["empty"]:
        vdi = db.find("VDI", rec["VDI"])
        if vdi is not None:
            ctx.sim.storage.for_sr(vdi["SR"]).vdi_detach(ctx, rec["VDI"], vbd=vbd)
    db.update("VBD", vbd, currently_attached=False)
    vbd_update_allowed_operations(ctx, vbd)
    if rec["VDI"] != NULL_REF:
        vdi_update_allowed_operations(ctx, rec["VDI"])
    ctx.sim.guests.on_devices_changed(rec["VM"])


@behaviour("VBD.unplug", latency=True)
def vbd_unplug(ctx: CallContext, vbd: str) -> None:
    _unplug(ctx, vbd, force=False)


@behaviour("VBD.unplug_force", latency=True)
def vbd_unplug_force(ctx: CallContext, vbd: str) -> None:
    _unplug(ctx, vbd, force=True)


@behaviour("VBD.insert", latency=True)
def vbd_insert(ctx: CallContext, vbd: str, vdi: str) -> None:
    db = ctx.db
    rec = db.get("VBD", vbd)
    db.get("VDI", vdi)
    if rec["type"] != "CD":
        raise ApiError("VBD_NOT_REMOVABLE_MEDIA", vbd)
    if not rec["empty"]:
        raise ApiError("VBD_NOT_EMPTY", vbd)
    ctx.work()
    db.update("VBD", vbd, VDI=vdi, empty=False)
    vbd_update_allowed_operations(ctx, vbd)
    vdi_update_allowed_operations(ctx, vdi)


@behaviour("VBD.eject", latency=True)
def vbd_eject(ctx: CallContext, vbd: str) -> None:
    db = ctx.db
    rec = db.get("VBD", vbd)
    if rec["type"] != "CD":
        raise ApiError("VBD_NOT_REMOVABLE_MEDIA", vbd)
    if rec["empty"]:
        raise ApiError("VBD_IS_EMPTY", vbd)
    ctx.work()
    old = rec["VDI"]
    db.update("VBD", vbd, VDI=NULL_REF, empty=True)
    vbd_update_allowed_operations(ctx, vbd)
    if old != NULL_REF:
        vdi_update_allowed_operations(ctx, old)


@behaviour("VBD.assert_attachable")
def vbd_assert_attachable(ctx: CallContext, vbd: str) -> None:
    rec = ctx.db.get("VBD", vbd)
    if rec["VDI"] != NULL_REF and not rec["empty"]:
        _check_sr_usable(ctx, ctx.db.get("VDI", rec["VDI"])["SR"])


# -- SR and PBD ----------------------------------------------------------------

@behaviour("SR.scan", latency=True)
def sr_scan(ctx: CallContext, sr: str) -> None:
    _check_sr_usable(ctx, sr)
    ctx.work()
    ctx.sim.storage.for_sr(sr).sr_scan(ctx, sr)
    sr_update(ctx.sim, sr)


@behaviour("SR.update")
def sr_update_call(ctx: CallContext, sr: str) -> None:
    ctx.db.get("SR", sr)
    sr_update(ctx.sim, sr)


@behaviour("SR.get_supported_types")
def sr_get_supported_types(ctx: CallContext) -> list[str]:
    return ctx.sim.storage.types()


def _new_sr(ctx: CallContext, uuid: str, name_label: str, name_description: str, sr_type: str,
            content_type: str, shared: bool, sm_config: dict[str, str], physical_size: int
            ) -> str:
    if ctx.sim.storage.for_type(sr_type) is None:
        raise ApiError("SR_UNKNOWN_DRIVER", sr_type)
    spec = ctx.sim.schema.classes["SR"]
    values = {"name_label": name_label, "name_description": name_description,
              "type": sr_type, "content_type": content_type, "shared": shared,
              "sm_config": sm_config, "physical_size": physical_size,
              "allowed_operations": list(ctx.sim.schema.enums["storage_operations"])}
    if uuid:
        values["uuid"] = uuid
    return ctx.db.add("SR", spec.new_record(values))


@behaviour("SR.create", latency=True)
def sr_create(ctx: CallContext, host: str, device_config: dict[str, str], physical_size: int,
              name_label: str, name_description: str, sr_type: str, content_type: str,
              shared: bool, sm_config: dict[str, str]) -> str:
    ctx.db.get("host", host)
    ctx.work()
    size = physical_size or 100 * (1 << 30)
    sr = _new_sr(ctx, "", name_label, name_description, sr_type, content_type, shared,
                 sm_config, size)
    spec = ctx.sim.schema.classes["PBD"]
    ctx.db.add("PBD", spec.new_record({"host": host, "SR": sr, "device_config": device_config,
                                       "currently_attached": True}))
    ctx.sim.storage.for_sr(sr).sr_attach(ctx, sr)
    return sr


@behaviour("SR.introduce")
def sr_introduce(ctx: CallContext, uuid: str, name_label: str, name_description: str,
                 sr_type: str, content_type: str, shared: bool, sm_config: dict[str, str]
                 ) -> str:
    return _new_sr(ctx, uuid, name_label, name_description, sr_type, content_type, shared,
                   sm_config, 0)


def _sr_remove(ctx: CallContext, sr: str, destroy_content: bool) -> None:
    db = ctx.db
    rec = db.get("SR", sr)
    for pbd in rec["PBDs"]:
        prec = db.find("PBD", pbd)
        if prec is not None and prec["currently_attached"] and not destroy_content:
            raise ApiError("SR_HAS_PBD", sr)
    if destroy_content:
        if any(db.exists("VDI", v) for v in rec["VDIs"]):
            raise ApiError("SR_NOT_EMPTY")
    for pbd in list(rec["PBDs"]):
        if db.exists("PBD", pbd):
            db.remove("PBD", pbd)
    for vdi in list(rec["VDIs"]):
        if db.exists("VDI", vdi):
            db.remove("VDI", vdi)
    pool_ref, pool = next(iter(db.all("pool").items()))
    for field in ("default_SR", "suspend_image_SR", "crash_dump_SR"):
        if pool[field] == sr:
            db.update("pool", pool_ref, **{field: NULL_REF})
    db.remove("SR", sr)


@behaviour("SR.forget")
def sr_forget(ctx: CallContext, sr: str) -> None:
    _sr_remove(ctx, sr, destroy_content=False)


@behaviour("SR.destroy", latency=True)
def sr_destroy(ctx: CallContext, sr: str) -> None:
    _check_sr_usable(ctx, sr)
    ctx.work()
    _sr_remove(ctx, sr, destroy_content=True)


@behaviour("PBD.plug", latency=True)
def pbd_plug(ctx: CallContext, pbd: str) -> None:
    rec = ctx.db.get("PBD", pbd)
    if rec["currently_attached"]:
        return
    ctx.work()
    ctx.sim.storage.for_sr(rec["SR"]).sr_attach(ctx, rec["SR"])
    ctx.db.update("PBD", pbd, currently_attached=True)


@behaviour("PBD.unplug", latency=True)
def pbd_unplug(ctx: CallContext, pbd: str) -> None:
    db = ctx.db
    rec = db.get("PBD", pbd)
    if not rec["currently_attached"]:
        return
    for vdi in db.get("SR", rec["SR"])["VDIs"]:
        vrec = db.find("VDI", vdi)
        if vrec is None:
            continue
        for vbd in vrec["VBDs"]:
            vbd_rec = db.find("VBD", vbd)
            if vbd_rec is not None and vbd_rec["currently_attached"]:
                raise ApiError("VDI_IN_USE", vdi, "unplug")
    ctx.work()
    ctx.sim.storage.for_sr(rec["SR"]).sr_detach(ctx, rec["SR"])
    db.update("PBD", pbd, currently_attached=False)


@behaviour("PBD.create")
def pbd_create(ctx: CallContext, record: dict[str, Any]) -> str:
    db = ctx.db
    db.get("host", record["host"])
    sr = db.get("SR", record["SR"])
    for pbd in sr["PBDs"]:
        prec = db.find("PBD", pbd)
        if prec is not None and prec["host"] == record["host"]:
            raise ApiError("PBD_EXISTS", record["SR"], record["host"], pbd)
    spec = ctx.sim.schema.classes["PBD"]
    return db.add("PBD", spec.new_record(dict(record, currently_attached=False)))


@behaviour("PBD.destroy")
def pbd_destroy(ctx: CallContext, pbd: str) -> None:
    rec = ctx.db.get("PBD", pbd)
    if rec["currently_attached"]:
        raise ApiError("OPERATION_NOT_ALLOWED", "PBD is currently attached")
    ctx.db.remove("PBD", pbd)


@behaviour("VDI.introduce")
def vdi_introduce(ctx: CallContext, uuid: str, name_label: str, name_description: str,
                  sr: str, vdi_type: str, sharable: bool, read_only: bool,
                  other_config: dict[str, str], location: str, xenstore_data: dict[str, str],
                  sm_config: dict[str, str], managed: bool, virtual_size: int,
                  physical_utilisation: int, metadata_of_pool: str, is_a_snapshot: bool,
                  snapshot_time: str, snapshot_of: str) -> str:
    """Make a record for a disk the storage already has (no content created)."""
    db = ctx.db
    db.get("SR", sr)
    for vdi in db.get("SR", sr)["VDIs"]:
        rec = db.find("VDI", vdi)
        if rec is not None and location and rec["location"] == location:
            raise ApiError("SR_BACKEND_FAILURE_67", "", "The VDI is already introduced", "")
    spec = ctx.sim.schema.classes["VDI"]
    values = {"name_label": name_label, "name_description": name_description, "SR": sr,
              "type": vdi_type, "sharable": sharable, "read_only": read_only,
              "other_config": other_config, "location": location or uuid,
              "xenstore_data": xenstore_data, "sm_config": sm_config, "managed": managed,
              "virtual_size": virtual_size, "physical_utilisation": physical_utilisation,
              "metadata_of_pool": metadata_of_pool, "is_a_snapshot": is_a_snapshot,
              "snapshot_time": snapshot_time, "snapshot_of": snapshot_of, "missing": False}
    if uuid:
        values["uuid"] = uuid
    ref = db.add("VDI", spec.new_record(values))
    vdi_update_allowed_operations(ctx, ref)
    sr_update(ctx.sim, sr)
    return ref
