"""VM lifecycle: the power-state machine and the operations on VMs.

Every operation takes the VM through :func:`operation`, which checks it
exactly like xapi (:mod:`xhost.sim.lifecycle`: blocked operations, allowed
power states, concurrency, templates, snapshots), records it in
``current_operations`` under the call's task for its whole duration (so a
concurrent call sees ``OTHER_OPERATION_IN_PROGRESS``) and recomputes
``allowed_operations`` before and after.
"""
from __future__ import annotations

import re
import uuid as uuidlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .. import latency as latency_model
from .. import lifecycle
from ..dispatch import CallContext
from ..errors import NULL_REF, ApiError
from ..guests import has_tools
from ..placement import choose_host
from ..xapi_types import now_datetime
from . import behaviour
from .network import remove_vif, vif_update_allowed_operations
from .storage import (
    clone_vdi,
    copy_vdi,
    create_vdi,
    destroy_vdi,
    new_vbd,
    sr_of_default,
    vbd_update_allowed_operations,
    vdi_update_allowed_operations,
)

MiB = 1 << 20

#: Fields a clone/copy/snapshot does not take from its source.
_NOT_COPIED = {"uuid", "allowed_operations", "current_operations", "power_state",
               "resident_on", "scheduled_to_be_resident_on", "domid", "consoles", "VIFs",
               "VBDs", "VUSBs", "crash_dumps", "VTPMs", "metrics", "guest_metrics",
               "is_a_snapshot", "snapshot_of", "snapshots", "snapshot_time",
               "transportable_snapshot_id", "parent", "children", "is_control_domain",
               "suspend_VDI", "VGPUs", "attached_PCIs", "is_default_template", "blobs"}


@contextmanager
def operation(ctx: CallContext, vm: str, op: str) -> Iterator[dict[str, Any]]:
    """Check ``op`` on ``vm`` and hold it in current_operations meanwhile."""
    db = ctx.db
    key = ctx.op_key
    with db.lock:
        rec = lifecycle.assert_valid(db, vm, op)
        ops = dict(rec["current_operations"])
        ops[key] = op
        db.update("VM", vm, current_operations=ops)
        lifecycle.update_allowed_operations(db, vm)
        rec = db.get("VM", vm)
    try:
        yield rec
    finally:
        with db.lock:
            cur = db.find("VM", vm)
            if cur is not None:
                ops = dict(cur["current_operations"])
                ops.pop(key, None)
                db.update("VM", vm, current_operations=ops)
                lifecycle.update_allowed_operations(db, vm)


def refresh(ctx: CallContext, vm: str) -> None:
    """Recompute allowed_operations of the VM and of its devices."""
    db = ctx.db
    lifecycle.update_allowed_operations(db, vm)
    rec = db.find("VM", vm)
    if rec is None:
        return
    for vbd in rec["VBDs"]:
        vbd_update_allowed_operations(ctx, vbd)
    for vif in rec["VIFs"]:
        vif_update_allowed_operations(ctx, vif)


# -- memory accounting -----------------------------------------------------------

def memory_overhead(rec: dict[str, Any]) -> int:
    """Xen's per-domain overhead: ~1 MiB per 128 MiB of RAM, 1 MiB per vCPU,
    plus shadow memory for HVM guests (a close fit to xapi's formula)."""
    static_max = int(rec["memory_static_max"])
    vcpus = int(rec["VCPUs_max"])
    overhead = (static_max // 128) + vcpus * MiB + MiB
    if rec["HVM_boot_policy"]:
        overhead += int(static_max / 256 * rec["HVM_shadow_multiplier"]) + 2 * MiB
    return (overhead + MiB - 1) // MiB * MiB


def host_free_memory(ctx: CallContext, host: str) -> int:
    db = ctx.db
    metrics = db.get("host_metrics", db.get("host", host)["metrics"])
    used = db.get("host", host)["memory_overhead"]
    for vm in db.get("host", host)["resident_VMs"]:
        rec = db.find("VM", vm)
        if rec is not None:
            used += rec["memory_target"] + rec["memory_overhead"]
    for rec in db.all("VM").values():
        if rec["scheduled_to_be_resident_on"] == host and rec["resident_on"] != host:
            used += rec["memory_static_max"] + memory_overhead(rec)
    return max(0, metrics["memory_total"] - used)


def update_host_memory(ctx: CallContext, host: str) -> None:
    db = ctx.db
    free = host_free_memory(ctx, host)
    metrics = db.get("host", host)["metrics"]
    if db.get("host_metrics", metrics)["memory_free"] != free:
        db.update("host_metrics", metrics, memory_free=free, last_updated=now_datetime())


def check_memory(ctx: CallContext, vm: str, rec: dict[str, Any], host: str) -> int:
    """Reserve nothing, but fail like xapi when ``host`` cannot fit ``vm``."""
    needed = rec["memory_static_max"] + memory_overhead(rec)
    available = host_free_memory(ctx, host)
    if needed > available:
        raise ApiError("HOST_NOT_ENOUGH_FREE_MEMORY", needed, available)
    return needed


def check_memory_constraints(rec: dict[str, Any]) -> None:
    smin, dmin = rec["memory_static_min"], rec["memory_dynamic_min"]
    dmax, smax = rec["memory_dynamic_max"], rec["memory_static_max"]
    if not (0 <= smin <= dmin <= dmax <= smax):
        raise ApiError("MEMORY_CONSTRAINT_VIOLATION",
                       "Memory limits must satisfy: static_min <= dynamic_min <= "
                       "dynamic_max <= static_max")


def check_vcpus(rec: dict[str, Any]) -> None:
    if rec["VCPUs_max"] < 1:
        raise ApiError("VALUE_NOT_SUPPORTED", "VCPUs_max", rec["VCPUs_max"],
                       "value must be at least 1")
    if not 1 <= rec["VCPUs_at_startup"] <= rec["VCPUs_max"]:
        raise ApiError("VALUE_NOT_SUPPORTED", "VCPUs_at_startup", rec["VCPUs_at_startup"],
                       "value must be between 1 and VCPUs_max")


# -- domains -----------------------------------------------------------------------

def next_domid(ctx: CallContext) -> int:
    with ctx.db.lock:
        highest = max((r["domid"] for r in ctx.db.tables["VM"].values()), default=0)
        return max(highest, ctx.sim.__dict__.get("_last_domid", 0)) + 1


def _device_name(userdevice: str, vbd_type: str) -> str:
    if not userdevice.isdigit():
        return userdevice
    n = int(userdevice)
    letters = ""
    n += 1
    while n:
        n, r = divmod(n - 1, 26)
        letters = chr(ord("a") + r) + letters
    return "xvd" + letters


def attach_devices(ctx: CallContext, vm: str, rec: dict[str, Any]) -> None:
    db = ctx.db
    for vbd in rec["VBDs"]:
        vrec = db.find("VBD", vbd)
        if vrec is None:
            continue
        if vrec["VDI"] != NULL_REF and not vrec["empty"]:
            vdi = db.find("VDI", vrec["VDI"])
            if vdi is not None:
                ctx.sim.storage.for_sr(vdi["SR"]).vdi_attach(ctx, vrec["VDI"],
                                                              vrec["mode"] == "RW", vbd=vbd)
        db.update("VBD", vbd, currently_attached=True,
                  device=_device_name(vrec["userdevice"], vrec["type"]))
        if vrec["VDI"] != NULL_REF:
            vdi_update_allowed_operations(ctx, vrec["VDI"])
    for vif in rec["VIFs"]:
        if db.exists("VIF", vif):
            db.update("VIF", vif, currently_attached=True)


def detach_devices(ctx: CallContext, vm: str, rec: dict[str, Any]) -> None:
    db = ctx.db
    for vbd in rec["VBDs"]:
        vrec = db.find("VBD", vbd)
        if vrec is None:
            continue
        if vrec["currently_attached"] and vrec["VDI"] != NULL_REF:
            vdi = db.find("VDI", vrec["VDI"])
            if vdi is not None:
                ctx.sim.storage.for_sr(vdi["SR"]).vdi_detach(ctx, vrec["VDI"], vbd=vbd)
        db.update("VBD", vbd, currently_attached=False, current_operations={})
        if vrec["VDI"] != NULL_REF:
            vdi_update_allowed_operations(ctx, vrec["VDI"])
    for vif in rec["VIFs"]:
        if db.exists("VIF", vif):
            db.update("VIF", vif, currently_attached=False, current_operations={})


def ensure_consoles(ctx: CallContext, vm: str, rec: dict[str, Any]) -> None:
    db = ctx.db
    address = ctx.host.public_address if ctx.host is not None else ctx.sim.public_address
    protocols = ["rfb"] if rec["HVM_boot_policy"] else ["vt100"]
    existing = {db.get("console", c)["protocol"] for c in rec["consoles"]
                if db.exists("console", c)}
    spec = ctx.sim.schema.classes["console"]
    for proto in protocols:
        if proto in existing:
            continue
        ref = "OpaqueRef:" + str(uuidlib.uuid4())
        db.add("console", spec.new_record({
            "protocol": proto, "VM": vm, "other_config": {},
            "location": f"https://{address}/console?ref={ref}"}), ref=ref)


def drop_consoles(ctx: CallContext, rec: dict[str, Any]) -> None:
    for con in list(rec["consoles"]):
        if ctx.db.exists("console", con):
            ctx.db.remove("console", con)


def domain_started(ctx: CallContext, vm: str, host: str, paused: bool) -> None:
    """Book-keeping once the domain exists: domid, residency, devices, metrics."""
    db = ctx.db
    with db.lock:
        rec = db.get("VM", vm)
        domid = next_domid(ctx)
        ctx.sim.__dict__["_last_domid"] = domid
        now = now_datetime()
        hvm = bool(rec["HVM_boot_policy"])
        db.update("VM", vm, power_state="Paused" if paused else "Running", domid=domid,
                  resident_on=host, scheduled_to_be_resident_on=NULL_REF,
                  memory_target=rec["memory_dynamic_max"],
                  memory_overhead=memory_overhead(rec), domarch="x64",
                  requires_reboot=False)
        attach_devices(ctx, vm, rec)
        ensure_consoles(ctx, vm, db.get("VM", vm))
        metrics_values = {"memory_actual": rec["memory_dynamic_max"],
                          "VCPUs_number": rec["VCPUs_at_startup"],
                          "VCPUs_utilisation": {}, "VCPUs_CPU": {
                              str(i): str(i % ctx.sim.cpus)
                              for i in range(rec["VCPUs_at_startup"])},
                          "VCPUs_params": dict(rec["VCPUs_params"]),
                          "state": ["paused" if paused else "running"],
                          "start_time": now, "last_updated": now, "hvm": hvm,
                          "nomigrate": rec["platform"].get("nomigrate", "") in ("1", "true"),
                          "nested_virt": rec["platform"].get("nested-virt", "") in ("1", "true"),
                          "current_domain_type": "hvm" if hvm else "pv"}
        metrics = rec["metrics"]
        if metrics != NULL_REF and db.exists("VM_metrics", metrics):
            db.update("VM_metrics", metrics, **metrics_values)
        else:
            spec = ctx.sim.schema.classes["VM_metrics"]
            metrics = db.add("VM_metrics", spec.new_record(dict(metrics_values,
                                                                install_time=now)))
            db.update("VM", vm, metrics=metrics)
        db.update("VM", vm, last_booted_record="")
        update_host_memory(ctx, host)
        refresh(ctx, vm)
    ctx.sim.guests.on_start(vm)


def domain_gone(ctx: CallContext, vm: str, state: str = "Halted") -> None:
    """The domain was destroyed: VM becomes Halted (or Suspended)."""
    db = ctx.db
    ctx.sim.guests.on_stop(vm)
    with db.lock:
        rec = db.get("VM", vm)
        host = rec["resident_on"]
        detach_devices(ctx, vm, rec)
        drop_consoles(ctx, rec)
        db.update("VM", vm, power_state=state, domid=-1, resident_on=NULL_REF,
                  scheduled_to_be_resident_on=NULL_REF, memory_target=0,
                  requires_reboot=False)
        if rec["metrics"] != NULL_REF and db.exists("VM_metrics", rec["metrics"]):
            db.update("VM_metrics", rec["metrics"], state=[], VCPUs_CPU={},
                      last_updated=now_datetime(), current_domain_type="unspecified")
        if host != NULL_REF and db.exists("host", host):
            update_host_memory(ctx, host)
        refresh(ctx, vm)


def _check_placement(ctx: CallContext, vm: str, rec: dict[str, Any], host: str) -> None:
    db = ctx.db
    hrec = db.get("host", host)
    metrics = db.find("host_metrics", hrec["metrics"])
    if metrics is not None and not metrics["live"]:
        raise ApiError("HOST_OFFLINE", host)
    if not hrec["enabled"]:
        raise ApiError("HOST_DISABLED", host)
    if rec["VCPUs_at_startup"] < 1:
        raise ApiError("VM_NO_VCPUS", vm)
    plugged = {db.get("PBD", p)["SR"] for p in hrec["PBDs"]
               if db.exists("PBD", p) and db.get("PBD", p)["currently_attached"]}
    for vbd in rec["VBDs"]:
        vrec = db.find("VBD", vbd)
        if vrec is None or vrec["empty"] or vrec["VDI"] == NULL_REF:
            continue
        vdi = db.find("VDI", vrec["VDI"])
        if vdi is None:
            raise ApiError("VM_REQUIRES_VDI", vm, vrec["VDI"])
        if vdi["SR"] not in plugged:
            raise ApiError("VM_REQUIRES_SR", vm, vdi["SR"])
    host_networks = {db.get("PIF", p)["network"] for p in hrec["PIFs"] if db.exists("PIF", p)}
    for vif in rec["VIFs"]:
        vrec = db.find("VIF", vif)
        if vrec is None:
            continue
        net = db.find("network", vrec["network"])
        if net is None:
            raise ApiError("VM_REQUIRES_NET", vm, vrec["network"])
        if net["PIFs"] and vrec["network"] not in host_networks:
            raise ApiError("VM_REQUIRES_NET", vm, vrec["network"])
    check_memory(ctx, vm, rec, host)


def _start(ctx: CallContext, vm: str, host: str | None, start_paused: bool, op: str) -> None:
    with operation(ctx, vm, op) as rec:
        if host is None:
            host = choose_host(ctx, vm, rec)
        _check_placement(ctx, vm, rec, host)
        ctx.db.update("VM", vm, scheduled_to_be_resident_on=host)
        disks = sum(1 for v in rec["VBDs"] if ctx.db.exists("VBD", v))
        delay = ctx.latency()
        if ctx.sim.controls.speed > 0 and ctx.method not in ctx.sim.controls.latency_overrides:
            delay += max(0, disks - 1) * latency_model.START_PER_VBD * ctx.sim.controls.speed
        try:
            ctx.work(delay)
        except ApiError:
            ctx.db.update("VM", vm, scheduled_to_be_resident_on=NULL_REF)
            raise
        domain_started(ctx, vm, host, start_paused)


@behaviour("VM.start", latency=True, cancellable=True)
def start(ctx: CallContext, vm: str, start_paused: bool, force: bool) -> None:
    _start(ctx, vm, None, start_paused, "start")


@behaviour("VM.start_on", latency=True, cancellable=True)
def start_on(ctx: CallContext, vm: str, host: str, start_paused: bool, force: bool) -> None:
    ctx.db.get("host", host)
    _start(ctx, vm, host, start_paused, "start_on")


def _require_tools(ctx: CallContext, vm: str, rec: dict[str, Any]) -> None:
    if not has_tools(rec):
        raise ApiError("VM_MISSING_PV_DRIVERS", vm)


@behaviour("VM.clean_shutdown", latency=True, cancellable=True)
def clean_shutdown(ctx: CallContext, vm: str) -> None:
    with operation(ctx, vm, "clean_shutdown") as rec:
        _require_tools(ctx, vm, rec)
        ctx.work()
        domain_gone(ctx, vm)


@behaviour("VM.shutdown", latency=True, cancellable=True)
def shutdown(ctx: CallContext, vm: str) -> None:
    """Clean shutdown, falling back to a hard one (xapi's VM.shutdown)."""
    with operation(ctx, vm, "shutdown") as rec:
        if rec["power_state"] == "Running" and has_tools(rec):
            ctx.work()
        else:
            ctx.work(ctx.latency("VM.hard_shutdown"))
        domain_gone(ctx, vm)
        _drop_suspend_vdi(ctx, vm)


@behaviour("VM.hard_shutdown", latency=True, cancellable=True)
def hard_shutdown(ctx: CallContext, vm: str) -> None:
    with operation(ctx, vm, "hard_shutdown"):
        ctx.work()
        domain_gone(ctx, vm)
        _drop_suspend_vdi(ctx, vm)


def _drop_suspend_vdi(ctx: CallContext, vm: str) -> None:
    rec = ctx.db.get("VM", vm)
    vdi = rec["suspend_VDI"]
    if vdi != NULL_REF:
        ctx.db.update("VM", vm, suspend_VDI=NULL_REF)
        if ctx.db.exists("VDI", vdi):
            destroy_vdi(ctx, vdi)
        refresh(ctx, vm)


def _reboot(ctx: CallContext, vm: str) -> None:
    db = ctx.db
    ctx.sim.guests.on_stop(vm)
    with db.lock:
        domid = next_domid(ctx)
        ctx.sim.__dict__["_last_domid"] = domid
        db.update("VM", vm, domid=domid, power_state="Running")
        rec = db.get("VM", vm)
        if rec["metrics"] != NULL_REF and db.exists("VM_metrics", rec["metrics"]):
            now = now_datetime()
            db.update("VM_metrics", rec["metrics"], start_time=now, last_updated=now,
                      state=["running"])
        refresh(ctx, vm)
    ctx.sim.guests.on_start(vm)


@behaviour("VM.clean_reboot", latency=True, cancellable=True)
def clean_reboot(ctx: CallContext, vm: str) -> None:
    with operation(ctx, vm, "clean_reboot") as rec:
        _require_tools(ctx, vm, rec)
        ctx.work()
        _reboot(ctx, vm)


@behaviour("VM.hard_reboot", latency=True, cancellable=True)
def hard_reboot(ctx: CallContext, vm: str) -> None:
    with operation(ctx, vm, "hard_reboot"):
        ctx.work()
        _reboot(ctx, vm)


@behaviour("VM.pause", latency=True)
def pause(ctx: CallContext, vm: str) -> None:
    with operation(ctx, vm, "pause") as rec:
        ctx.work()
        ctx.db.update("VM", vm, power_state="Paused")
        if rec["metrics"] != NULL_REF and ctx.db.exists("VM_metrics", rec["metrics"]):
            ctx.db.update("VM_metrics", rec["metrics"], state=["paused"])
        refresh(ctx, vm)
        ctx.sim.guests.on_pause(vm)


@behaviour("VM.unpause", latency=True)
def unpause(ctx: CallContext, vm: str) -> None:
    with operation(ctx, vm, "unpause") as rec:
        ctx.work()
        ctx.db.update("VM", vm, power_state="Running")
        if rec["metrics"] != NULL_REF and ctx.db.exists("VM_metrics", rec["metrics"]):
            ctx.db.update("VM_metrics", rec["metrics"], state=["running"])
        refresh(ctx, vm)
        ctx.sim.guests.on_unpause(vm)


def _suspend_sr(ctx: CallContext, vm: str, rec: dict[str, Any]) -> str:
    db = ctx.db
    for candidate in (rec["suspend_SR"],
                      next(iter(db.all("pool").values()))["suspend_image_SR"],
                      db.get("host", ctx.host_ref)["suspend_image_sr"]):
        if candidate != NULL_REF and db.exists("SR", candidate):
            return candidate
    raise ApiError("VM_NO_SUSPEND_SR", vm)


@behaviour("VM.suspend", latency=True, cancellable=True)
def suspend(ctx: CallContext, vm: str) -> None:
    with operation(ctx, vm, "suspend") as rec:
        sr = _suspend_sr(ctx, vm, rec)
        size = rec["memory_static_max"] + 2 * MiB
        ctx.work()
        vdi = create_vdi(ctx, sr, {
            "name_label": "Suspend image", "name_description": "",
            "virtual_size": size, "type": "suspend", "sharable": False,
            "read_only": False, "other_config": {}})
        domain_gone(ctx, vm, state="Suspended")
        ctx.db.update("VM", vm, suspend_VDI=vdi)
        refresh(ctx, vm)


def _resume(ctx: CallContext, vm: str, host: str | None, start_paused: bool, op: str
            ) -> None:
    with operation(ctx, vm, op) as rec:
        if host is None:
            host = choose_host(ctx, vm, rec)
        _check_placement(ctx, vm, rec, host)
        ctx.work()
        domain_started(ctx, vm, host, start_paused)
        _drop_suspend_vdi(ctx, vm)


@behaviour("VM.resume", latency=True, cancellable=True)
def resume(ctx: CallContext, vm: str, start_paused: bool, force: bool) -> None:
    _resume(ctx, vm, None, start_paused, "resume")


@behaviour("VM.resume_on", latency=True, cancellable=True)
def resume_on(ctx: CallContext, vm: str, host: str, start_paused: bool, force: bool) -> None:
    ctx.db.get("host", host)
    _resume(ctx, vm, host, start_paused, "resume_on")


@behaviour("VM.power_state_reset")
def power_state_reset(ctx: CallContext, vm: str) -> None:
    rec = lifecycle.assert_valid(ctx.db, vm, "power_state_reset")
    if rec["is_control_domain"]:
        raise ApiError("OPERATION_NOT_ALLOWED", "This operation is not allowed on a control "
                                                "domain")
    if rec["power_state"] != "Halted":
        domain_gone(ctx, vm)
    ctx.db.update("VM", vm, current_operations={})
    refresh(ctx, vm)


# -- creation and destruction ------------------------------------------------------

def _mac_from_seed(seed: str, device: str) -> str:
    import hashlib

    digest = hashlib.sha256(f"{seed}/{device}".encode()).digest()
    return "%02x:%02x:%02x:%02x:%02x:%02x" % ((digest[0] & 0xFC) | 0x02, digest[1], digest[2],
                                              digest[3], digest[4], digest[5])


@behaviour("VM.create")
def create(ctx: CallContext, record: dict[str, Any]) -> str:
    spec = ctx.sim.schema.classes["VM"]
    rec = spec.new_record(record)
    check_memory_constraints(rec)
    check_vcpus(rec)
    other = dict(rec["other_config"])
    other.setdefault("mac_seed", str(uuidlib.uuid4()))
    now = now_datetime()
    metrics = ctx.db.add("VM_metrics", ctx.sim.schema.classes["VM_metrics"].new_record(
        {"install_time": now, "last_updated": now, "VCPUs_number": 0}))
    rec.update(power_state="Halted", domid=-1, resident_on=NULL_REF, other_config=other,
               metrics=metrics, is_control_domain=False, allowed_operations=[],
               current_operations={}, is_default_template=False,
               generation_id=rec.get("generation_id") or "0:0")
    ref = ctx.db.add("VM", rec)
    refresh(ctx, ref)
    return ref


@behaviour("VM.destroy")
def destroy(ctx: CallContext, vm: str) -> None:
    db = ctx.db
    rec = db.get("VM", vm)
    if rec["is_default_template"]:
        raise ApiError("VM_CANNOT_DELETE_DEFAULT_TEMPLATE", vm)
    lifecycle.assert_valid(db, vm, "destroy")
    with db.lock:
        for vbd in rec["VBDs"]:
            if db.exists("VBD", vbd):
                vbd_rec = db.get("VBD", vbd)
                if vbd_rec["metrics"] != NULL_REF and db.exists("VBD_metrics", vbd_rec["metrics"]):
                    db.remove("VBD_metrics", vbd_rec["metrics"])
                db.remove("VBD", vbd)
        for vif in rec["VIFs"]:
            if db.exists("VIF", vif):
                remove_vif(ctx, vif)
        drop_consoles(ctx, rec)
        for ref, cls in ((rec["metrics"], "VM_metrics"), (rec["guest_metrics"], "VM_guest_metrics")):
            if ref != NULL_REF and db.exists(cls, ref):
                db.remove(cls, ref)
        if rec["suspend_VDI"] != NULL_REF and db.exists("VDI", rec["suspend_VDI"]):
            destroy_vdi(ctx, rec["suspend_VDI"])
        db.remove("VM", vm)


def _copy_record(ctx: CallContext, src: dict[str, Any], **changes: Any) -> dict[str, Any]:
    spec = ctx.sim.schema.classes["VM"]
    values = {k: v for k, v in src.items() if k not in _NOT_COPIED}
    other = dict(values["other_config"])
    other.pop("default_template", None)
    other["mac_seed"] = str(uuidlib.uuid4())
    values["other_config"] = other
    values.update(changes)
    rec = spec.new_record(values)
    now = now_datetime()
    rec["metrics"] = ctx.db.add("VM_metrics", ctx.sim.schema.classes["VM_metrics"].new_record(
        {"install_time": now, "last_updated": now}))
    return rec


def _clone_devices(ctx: CallContext, src_vm: dict[str, Any], new_vm: str, *,
                   disk_mode: str, sr: str | None = None, ignore_vdis: list[str] = (),
                   ) -> None:
    """Give ``new_vm`` VBDs/VIFs like ``src_vm``; ``disk_mode`` is clone, copy or snapshot."""
    db = ctx.db
    new_rec = db.get("VM", new_vm)
    disks = [v for v in src_vm["VBDs"] if db.exists("VBD", v)]
    for i, vbd in enumerate(disks):
        vrec = db.get("VBD", vbd)
        vdi = vrec["VDI"]
        empty = vrec["empty"]
        if vdi != NULL_REF and not empty and vrec["type"] == "Disk":
            if vdi in ignore_vdis:
                continue
            if disk_mode == "copy":
                vdi = copy_vdi(ctx, vdi, sr or db.get("VDI", vdi)["SR"])
            else:
                vdi = clone_vdi(ctx, vdi, snapshot=(disk_mode == "snapshot"))
        new_vbd(ctx, new_vm, vdi, vrec["userdevice"], bootable=vrec["bootable"],
                mode=vrec["mode"], vbd_type=vrec["type"], empty=empty,
                unpluggable=vrec["unpluggable"], other_config=dict(vrec["other_config"]),
                qos_algorithm_type=vrec["qos_algorithm_type"],
                qos_algorithm_params=dict(vrec["qos_algorithm_params"]))
        ctx.progress(0.1 + 0.8 * (i + 1) / max(1, len(disks)))
    seed = new_rec["other_config"].get("mac_seed", new_vm)
    vif_spec = ctx.sim.schema.classes["VIF"]
    for vif in src_vm["VIFs"]:
        if not db.exists("VIF", vif):
            continue
        vrec = db.get("VIF", vif)
        values = {k: v for k, v in vrec.items()
                  if k not in ("uuid", "VM", "currently_attached", "current_operations",
                               "allowed_operations", "metrics", "status_code",
                               "status_detail", "runtime_properties")}
        values["VM"] = new_vm
        if vrec["MAC_autogenerated"]:
            values["MAC"] = _mac_from_seed(seed, vrec["device"])
        values["metrics"] = db.add("VIF_metrics", ctx.sim.schema.classes["VIF_metrics"]
                                   .new_record({}))
        db.add("VIF", vif_spec.new_record(values))


@behaviour("VM.clone", latency=True, cancellable=True)
def clone(ctx: CallContext, vm: str, new_name: str) -> str:
    with operation(ctx, vm, "clone") as src:
        ctx.work(start=0.0, end=0.1)
        rec = _copy_record(ctx, src, name_label=new_name,
                           power_state=src["power_state"] if src["is_a_snapshot"] else "Halted",
                           domid=-1,
                           is_a_template=src["is_a_template"] and not src["is_a_snapshot"])
        new = ctx.db.add("VM", rec)
        _clone_devices(ctx, src, new, disk_mode="clone")
        refresh(ctx, new)
        return new


@behaviour("VM.copy", latency=True, cancellable=True)
def copy(ctx: CallContext, vm: str, new_name: str, sr: str) -> str:
    if sr != NULL_REF:
        ctx.db.get("SR", sr)
    with operation(ctx, vm, "copy") as src:
        ctx.work(start=0.0, end=0.1)
        rec = _copy_record(ctx, src, name_label=new_name, power_state="Halted", domid=-1,
                           is_a_template=src["is_a_template"] and not src["is_a_snapshot"])
        new = ctx.db.add("VM", rec)
        _clone_devices(ctx, src, new, disk_mode="copy", sr=None if sr == NULL_REF else sr)
        refresh(ctx, new)
        return new


def _snapshot(ctx: CallContext, vm: str, new_name: str, ignore_vdis: list[str], op: str,
              with_memory: bool) -> str:
    db = ctx.db
    with operation(ctx, vm, op) as src:
        ctx.work(start=0.0, end=0.1)
        now = now_datetime()
        rec = _copy_record(ctx, src, name_label=new_name, is_a_template=True,
                           power_state="Suspended" if with_memory else "Halted", domid=-1)
        rec.update(is_a_snapshot=True, snapshot_of=vm, snapshot_time=now,
                   parent=src["parent"], transportable_snapshot_id="",
                   snapshot_info={"power-state-at-snapshot": src["power_state"]})
        new = db.add("VM", rec)
        _clone_devices(ctx, src, new, disk_mode="snapshot", ignore_vdis=ignore_vdis)
        if with_memory:
            sr = _suspend_sr(ctx, vm, src)
            vdi = create_vdi(ctx, sr, {"name_label": "Suspend image", "virtual_size":
                                       src["memory_static_max"] + 2 * MiB, "type": "suspend",
                                       "sharable": False, "read_only": False,
                                       "other_config": {}})
            db.update("VM", new, suspend_VDI=vdi)
        db.update("VM", vm, parent=new)
        refresh(ctx, new)
        return new


@behaviour("VM.snapshot", latency=True, cancellable=True)
def snapshot(ctx: CallContext, vm: str, new_name: str, ignore_vdis: list[str]) -> str:
    return _snapshot(ctx, vm, new_name, ignore_vdis, "snapshot", with_memory=False)


@behaviour("VM.checkpoint", latency=True, cancellable=True)
def checkpoint(ctx: CallContext, vm: str, new_name: str) -> str:
    return _snapshot(ctx, vm, new_name, [], "checkpoint", with_memory=True)


@behaviour("VM.snapshot_with_quiesce")
def snapshot_with_quiesce(ctx: CallContext, vm: str, new_name: str) -> str:
    lifecycle.assert_valid(ctx.db, vm, "snapshot_with_quiesce")
    raise ApiError("VM_SNAPSHOT_WITH_QUIESCE_NOT_SUPPORTED", vm, "")


@behaviour("VM.revert", latency=True, cancellable=True)
def revert(ctx: CallContext, snapshot: str) -> None:
    db = ctx.db
    snap = lifecycle.assert_valid(db, snapshot, "revert")
    vm = snap["snapshot_of"]
    if vm == NULL_REF or not db.exists("VM", vm):
        raise ApiError("VM_REVERT_FAILED", vm, snapshot)
    with operation(ctx, snapshot, "revert"):
        target = db.get("VM", vm)
        if target["power_state"] != "Halted":
            domain_gone(ctx, vm)
            _drop_suspend_vdi(ctx, vm)
            target = db.get("VM", vm)
        ctx.work()
        old_vdis = []
        for vbd in list(target["VBDs"]):
            if db.exists("VBD", vbd):
                vrec = db.get("VBD", vbd)
                if vrec["type"] == "Disk" and vrec["VDI"] != NULL_REF:
                    old_vdis.append(vrec["VDI"])
                db.remove("VBD", vbd)
        for vif in list(target["VIFs"]):
            if db.exists("VIF", vif):
                remove_vif(ctx, vif)
        values = {k: v for k, v in snap.items() if k not in _NOT_COPIED}
        values.update(name_label=target["name_label"], name_description=target["name_description"],
                      is_a_template=False, other_config=dict(snap["other_config"]))
        db.update("VM", vm, **values, parent=snapshot)
        _clone_devices(ctx, snap, vm, disk_mode="clone")
        for vdi in old_vdis:
            vrec = db.find("VDI", vdi)
            if vrec is not None and not vrec["VBDs"] and not vrec["is_a_snapshot"]:
                destroy_vdi(ctx, vdi)
        if snap["power_state"] == "Suspended" and snap["suspend_VDI"] != NULL_REF:
            db.update("VM", vm, power_state="Suspended",
                      suspend_VDI=clone_vdi(ctx, snap["suspend_VDI"], snapshot=False))
        refresh(ctx, vm)


_DISK_RE = re.compile(r"<disk\s+([^>]*?)/?>")
_ATTR_RE = re.compile(r'(\w+)="([^"]*)"')


@behaviour("VM.provision", latency=True, cancellable=True)
def provision(ctx: CallContext, vm: str) -> None:
    db = ctx.db
    with operation(ctx, vm, "provision") as rec:
        spec = rec["other_config"].get("disks", "")
        disks = [dict(_ATTR_RE.findall(m.group(1))) for m in _DISK_RE.finditer(spec)]
        for i, disk in enumerate(disks):
            sr = disk.get("sr", "")
            if sr:
                try:
                    sr_ref = db.by_uuid("SR", sr)
                except ApiError:
                    sr_ref = sr if db.exists("SR", sr) else sr_of_default(ctx)
            else:
                sr_ref = sr_of_default(ctx)
            size = int(disk.get("size", "0"))
            vdi = create_vdi(ctx, sr_ref, {
                "name_label": f"{rec['name_label']} {i}",
                "name_description": "Created by template provisioner",
                "virtual_size": size, "type": disk.get("type", "system"),
                "sharable": False, "read_only": False, "other_config": {}})
            new_vbd(ctx, vm, vdi, disk.get("device", str(i)),
                    bootable=disk.get("bootable", "false") == "true", mode="RW",
                    vbd_type="Disk", empty=False)
            ctx.progress((i + 1) / max(1, len(disks)))
        ctx.work()
        other = dict(db.get("VM", vm)["other_config"])
        other.pop("disks", None)
        db.update("VM", vm, other_config=other)


# -- settings with checks ----------------------------------------------------------

def _set_static_field(ctx: CallContext, vm: str, op: str, **changes: Any) -> None:
    db = ctx.db
    with db.lock:
        rec = lifecycle.assert_valid(db, vm, op)
        new = dict(rec)
        new.update(changes)
        check_memory_constraints(new)
        check_vcpus(new)
        db.update("VM", vm, **changes)
        refresh(ctx, vm)


@behaviour("VM.set_memory_static_max")
def set_memory_static_max(ctx: CallContext, vm: str, value: int) -> None:
    _set_static_field(ctx, vm, "changing_static_range", memory_static_max=value)


@behaviour("VM.set_memory_static_min")
def set_memory_static_min(ctx: CallContext, vm: str, value: int) -> None:
    _set_static_field(ctx, vm, "changing_static_range", memory_static_min=value)


@behaviour("VM.set_memory_dynamic_max")
def set_memory_dynamic_max(ctx: CallContext, vm: str, value: int) -> None:
    _set_static_field(ctx, vm, "changing_dynamic_range", memory_dynamic_max=value)


@behaviour("VM.set_memory_dynamic_min")
def set_memory_dynamic_min(ctx: CallContext, vm: str, value: int) -> None:
    _set_static_field(ctx, vm, "changing_dynamic_range", memory_dynamic_min=value)


@behaviour("VM.set_memory_dynamic_range")
def set_memory_dynamic_range(ctx: CallContext, vm: str, lo: int, hi: int) -> None:
    _set_static_field(ctx, vm, "changing_dynamic_range", memory_dynamic_min=lo,
                      memory_dynamic_max=hi)


@behaviour("VM.set_memory_static_range")
def set_memory_static_range(ctx: CallContext, vm: str, lo: int, hi: int) -> None:
    _set_static_field(ctx, vm, "changing_static_range", memory_static_min=lo,
                      memory_static_max=hi)


@behaviour("VM.set_memory_limits")
def set_memory_limits(ctx: CallContext, vm: str, static_min: int, static_max: int,
                      dynamic_min: int, dynamic_max: int) -> None:
    _set_static_field(ctx, vm, "changing_memory_limits", memory_static_min=static_min,
                      memory_static_max=static_max, memory_dynamic_min=dynamic_min,
                      memory_dynamic_max=dynamic_max)


@behaviour("VM.set_memory")
def set_memory(ctx: CallContext, vm: str, value: int) -> None:
    _set_static_field(ctx, vm, "changing_memory_limits", memory_static_max=value,
                      memory_dynamic_min=value, memory_dynamic_max=value)


@behaviour("VM.set_VCPUs_max")
def set_VCPUs_max(ctx: CallContext, vm: str, value: int) -> None:
    _set_static_field(ctx, vm, "changing_VCPUs", VCPUs_max=value)


@behaviour("VM.set_VCPUs_at_startup")
def set_VCPUs_at_startup(ctx: CallContext, vm: str, value: int) -> None:
    _set_static_field(ctx, vm, "changing_VCPUs", VCPUs_at_startup=value)


@behaviour("VM.set_VCPUs_number_live")
def set_VCPUs_number_live(ctx: CallContext, vm: str, n: int) -> None:
    rec = lifecycle.assert_valid(ctx.db, vm, "changing_VCPUs_live")
    if not 1 <= n <= rec["VCPUs_max"]:
        raise ApiError("INVALID_VALUE", "nvcpu", n)
    if rec["metrics"] != NULL_REF:
        ctx.db.update("VM_metrics", rec["metrics"], VCPUs_number=n)


@behaviour("VM.set_is_a_template")
def set_is_a_template(ctx: CallContext, vm: str, value: bool) -> None:
    db = ctx.db
    rec = db.get("VM", vm)
    if value and not rec["is_a_template"]:
        lifecycle.assert_valid(db, vm, "make_into_template")
    db.update("VM", vm, is_a_template=value,
              is_default_template=rec["is_default_template"] and value)
    refresh(ctx, vm)


@behaviour("VM.set_blocked_operations")
def set_blocked_operations(ctx: CallContext, vm: str, value: dict[str, str]) -> None:
    ctx.db.update("VM", vm, blocked_operations=value)
    refresh(ctx, vm)


@behaviour("VM.add_to_blocked_operations")
def add_to_blocked_operations(ctx: CallContext, vm: str, key: str, value: str) -> None:
    with ctx.db.lock:
        rec = ctx.db.get("VM", vm)
        if key in rec["blocked_operations"]:
            raise ApiError("MAP_DUPLICATE_KEY", "VM", "blocked_operations", vm, key)
        ctx.db.update("VM", vm, blocked_operations=dict(rec["blocked_operations"], **{key: value}))
        refresh(ctx, vm)


@behaviour("VM.remove_from_blocked_operations")
def remove_from_blocked_operations(ctx: CallContext, vm: str, key: str) -> None:
    with ctx.db.lock:
        rec = ctx.db.get("VM", vm)
        ops = dict(rec["blocked_operations"])
        ops.pop(key, None)
        ctx.db.update("VM", vm, blocked_operations=ops)
        refresh(ctx, vm)


@behaviour("VM.assert_operation_valid")
def assert_operation_valid(ctx: CallContext, vm: str, op: str) -> None:
    lifecycle.assert_valid(ctx.db, vm, op)


@behaviour("VM.update_allowed_operations")
def update_allowed_operations(ctx: CallContext, vm: str) -> None:
    ctx.db.get("VM", vm)
    refresh(ctx, vm)


@behaviour("VM.get_allowed_VBD_devices")
def get_allowed_VBD_devices(ctx: CallContext, vm: str) -> list[str]:
    rec = ctx.db.get("VM", vm)
    used = {ctx.db.get("VBD", v)["userdevice"] for v in rec["VBDs"] if ctx.db.exists("VBD", v)}
    top = 255 if rec["is_control_domain"] else 254
    return [str(i) for i in range(top + 1) if str(i) not in used]


@behaviour("VM.get_allowed_VIF_devices")
def get_allowed_VIF_devices(ctx: CallContext, vm: str) -> list[str]:
    rec = ctx.db.get("VM", vm)
    used = {ctx.db.get("VIF", v)["device"] for v in rec["VIFs"] if ctx.db.exists("VIF", v)}
    return [str(i) for i in range(16) if str(i) not in used]


@behaviour("VM.compute_memory_overhead")
def compute_memory_overhead(ctx: CallContext, vm: str) -> int:
    return memory_overhead(ctx.db.get("VM", vm))


@behaviour("VM.assert_can_boot_here")
def assert_can_boot_here(ctx: CallContext, vm: str, host: str) -> None:
    ctx.db.get("host", host)
    rec = ctx.db.get("VM", vm)
    _check_placement(ctx, vm, rec, host)


@behaviour("VM.get_possible_hosts")
def get_possible_hosts(ctx: CallContext, vm: str) -> list[str]:
    rec = ctx.db.get("VM", vm)
    out = []
    for host in ctx.db.refs("host"):
        try:
            _check_placement(ctx, vm, rec, host)
        except ApiError:
            continue
        out.append(host)
    return out


@behaviour("VM.get_boot_record")
def get_boot_record(ctx: CallContext, vm: str) -> dict[str, Any]:
    return ctx.db.get("VM", vm)


@behaviour("VM.get_cooperative")
def get_cooperative(ctx: CallContext, vm: str) -> bool:
    ctx.db.get("VM", vm)
    return True


@behaviour("VM.maximise_memory")
def maximise_memory(ctx: CallContext, vm: str, total: int, approximate: bool) -> int:
    rec = ctx.db.get("VM", vm)
    return max(0, total - memory_overhead(rec))


@behaviour("VM.send_sysrq")
def send_sysrq(ctx: CallContext, vm: str, key: str) -> None:
    lifecycle.assert_valid(ctx.db, vm, "send_sysrq")


@behaviour("VM.send_trigger")
def send_trigger(ctx: CallContext, vm: str, trigger: str) -> None:
    lifecycle.assert_valid(ctx.db, vm, "send_trigger")


@behaviour("VM.query_data_source")
def query_data_source(ctx: CallContext, vm: str, data_source: str) -> float:
    rec = ctx.db.get("VM", vm)
    if rec["power_state"] != "Running":
        raise ApiError("VM_BAD_POWER_STATE", vm, "running", rec["power_state"].lower())
    if data_source == "memory":
        return float(rec["memory_target"])
    return 0.0


@behaviour("VM.get_data_sources")
def get_data_sources(ctx: CallContext, vm: str) -> list[dict[str, Any]]:
    ctx.db.get("VM", vm)
    return []


@behaviour("VM.call_plugin")
def vm_call_plugin(ctx: CallContext, vm: str, plugin: str, fn: str, args: dict[str, str]) -> str:
    lifecycle.assert_valid(ctx.db, vm, "call_plugin")
    if plugin != "guest-agent-operation":
        raise ApiError("XENAPI_MISSING_PLUGIN", plugin)
    if fn not in ("request-rdp-on", "request-rdp-off"):
        raise ApiError("UNKNOWN_XENAPI_PLUGIN_FUNCTION", fn)
    return ""
