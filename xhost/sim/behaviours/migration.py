"""Moving VMs between the hosts of a pool: ``VM.pool_migrate`` (live, shared
storage), ``host.migrate_receive`` + ``VM.assert_can_migrate`` +
``VM.migrate_send`` (storage motion: disks copied to other SRs through the SR
drivers' ``vdi_copy``), and ``host.evacuate`` with its evacuation plan.

The checks and errors are xapi's: a VM whose disks are not all visible from
the destination cannot be pool-migrated (``VM_REQUIRES_SR``); every disk must
be in a storage-motion ``vdi_map`` (``VDI_NOT_IN_MAP``); intra-pool VIFs keep
their networks (``OPERATION_NOT_ALLOWED`` for a ``vif_map``); an offline
destination is ``HOST_OFFLINE``.  A migrated domain gets a new domid on the
destination (its vif interfaces move with it in real-network mode).
"""
from __future__ import annotations

from typing import Any

from .. import lifecycle
from .. import pool as pool_mod
from ..dispatch import CallContext
from ..errors import NULL_REF, ApiError
from ..netmode.hooks import bring_up_pifs
from ..xapi_types import now_datetime
from . import behaviour
from .storage import copy_vdi, destroy_vdi, vdi_update_allowed_operations
from .vm import (
    _check_placement,
    ensure_consoles,
    host_free_memory,
    memory_overhead,
    next_domid,
    operation,
    refresh,
    update_host_memory,
)

#: Keys of ``host.migrate_receive``'s result (xapi's Xapi_vm_migrate names).
DEST_KEYS = ("SM", "host", "xenops", "session_id", "master")


def move_domain(ctx: CallContext, vm: str, host: str) -> None:
    """The running domain of ``vm`` now lives on ``host`` (new domid)."""
    db = ctx.db
    with db.lock:
        rec = db.get("VM", vm)
        source = rec["resident_on"]
        old_domid = rec["domid"]
        domid = next_domid(ctx)
        ctx.sim.__dict__["_last_domid"] = domid
        db.update("VM", vm, resident_on=host, domid=domid,
                  scheduled_to_be_resident_on=NULL_REF)
        for con in list(rec["consoles"]):
            if db.exists("console", con):
                db.remove("console", con)
        ensure_consoles(ctx, vm, db.get("VM", vm))
        if rec["metrics"] != NULL_REF and db.exists("VM_metrics", rec["metrics"]):
            db.update("VM_metrics", rec["metrics"], last_updated=now_datetime())
        for ref in (source, host):
            if ref != NULL_REF and db.exists("host", ref):
                update_host_memory(ctx, ref)
        refresh(ctx, vm)
    on_migrate = getattr(ctx.sim.guests, "on_migrate", None)
    if on_migrate is not None:
        on_migrate(vm, old_domid)


@behaviour("VM.pool_migrate", latency=True, cancellable=True)
def pool_migrate(ctx: CallContext, vm: str, host: str, options: dict[str, str]) -> None:
    db = ctx.db
    db.get("host", host)
    with operation(ctx, vm, "pool_migrate") as rec:
        source = rec["resident_on"]
        if source != NULL_REF:
            pool_mod.assert_live(ctx.sim, source)
        pool_mod.assert_live(ctx.sim, host)
        if host != source:
            _check_placement(ctx, vm, rec, host)
        db.update("VM", vm, scheduled_to_be_resident_on=host)
        try:
            ctx.work()
        except ApiError:
            db.update("VM", vm, scheduled_to_be_resident_on=NULL_REF)
            raise
        move_domain(ctx, vm, host)


@behaviour("host.migrate_receive")
def migrate_receive(ctx: CallContext, host: str, network: str,
                    options: dict[str, str]) -> dict[str, str]:
    db = ctx.db
    db.get("host", host)
    net = db.get("network", network)
    pif_ref = next((p for p in net["PIFs"] if db.exists("PIF", p)
                    and db.get("PIF", p)["host"] == host), None)
    if pif_ref is None:
        raise ApiError("HOST_CANNOT_ATTACH_NETWORK", host, network)
    pif = db.get("PIF", pif_ref)
    ip = pif["IP"]
    if not ip:
        if pif["ip_configuration_mode"] == "None":
            raise ApiError("PIF_HAS_NO_NETWORK_CONFIGURATION", pif_ref)
        raise ApiError("INTERFACE_HAS_NO_IP", pif_ref)
    assert ctx.session is not None
    sessions = ctx.sim.sessions
    user = db.get("session", ctx.session)["auth_user_name"]
    # xapi logs in a new session for the destination (no password needed).
    session = sessions.login(user, sessions.users.get(user, ""), "", host)
    dest = pool_mod.served(ctx.sim, host)
    endpoint = f"{ip}:{dest.port}" if dest is not None else ip
    master = pool_mod.served(ctx.sim, ctx.sim.master_ref)
    master_ep = master.endpoint if master is not None else ip
    return {"SM": f"http://{endpoint}/services/SM?session_id={session}", "host": host,
            "xenops": f"http://{endpoint}/services/xenops?session_id={session}",
            "session_id": session, "master": f"http://{master_ep}"}


def _dest_host(ctx: CallContext, vm: str, dest: dict[str, str]) -> str:
    missing = [k for k in DEST_KEYS if k not in dest]
    if missing:
        # xapi looks the keys up with List.assoc: a missing one is Not_found.
        raise ApiError("INTERNAL_ERROR", "Not_found")
    host = dest["host"]
    if not ctx.db.exists("host", host):
        rec = ctx.db.get("VM", vm)
        raise ApiError("VM_MIGRATE_FAILED", vm, rec["resident_on"], host,
                       "cross-pool migration (a destination outside this pool) is not "
                       "simulated; migrate between hosts of one pool")
    return host


def _vm_disks(ctx: CallContext, rec: dict[str, Any]) -> list[tuple[str, str]]:
    """(VBD, VDI) of the VM's disks: no CDs, no empty drives."""
    out = []
    for vbd in rec["VBDs"]:
        vrec = ctx.db.find("VBD", vbd)
        if vrec is None or vrec["empty"] or vrec["type"] == "CD" or vrec["VDI"] == NULL_REF:
            continue
        out.append((vbd, vrec["VDI"]))
    return out


def _sr_on_host(ctx: CallContext, sr: str, host: str) -> bool:
    db = ctx.db
    return any(db.exists("PBD", p) and db.get("PBD", p)["host"] == host
               and db.get("PBD", p)["currently_attached"] for p in db.get("SR", sr)["PBDs"])


def _check_migrate(ctx: CallContext, vm: str, rec: dict[str, Any], dest: dict[str, str],
                   vdi_map: dict[str, str], vif_map: dict[str, str]) -> str:
    db = ctx.db
    host = _dest_host(ctx, vm, dest)
    for _vbd, vdi in _vm_disks(ctx, rec):
        if vdi not in vdi_map:
            raise ApiError("VDI_NOT_IN_MAP", vdi)
    for vdi, sr in vdi_map.items():
        db.get("VDI", vdi)
        db.get("SR", sr)
        if not _sr_on_host(ctx, sr, host):
            raise ApiError("VM_REQUIRES_SR", vm, sr)
    pool_mod.assert_live(ctx.sim, host)
    hrec = db.get("host", host)
    if not hrec["enabled"]:
        raise ApiError("HOST_DISABLED", host)
    if rec["power_state"] != "Halted" and host != rec["resident_on"]:
        # Disks are checked against the map above; the rest as for a boot there.
        try:
            _check_placement(ctx, vm, rec, host)
        except ApiError as exc:
            if exc.code not in ("VM_REQUIRES_SR", "VM_REQUIRES_VDI"):
                raise
    if vif_map:
        raise ApiError("OPERATION_NOT_ALLOWED", "VIF mapping is not allowed for intra-pool "
                       "migration -all VIFs must be on the same network")
    for vdi, sr in vdi_map.items():
        vrec = db.get("VDI", vdi)
        if vrec["SR"] != sr and vrec["cbt_enabled"]:
            raise ApiError("VDI_CBT_ENABLED", vdi)
    return host


@behaviour("VM.assert_can_migrate")
def assert_can_migrate(ctx: CallContext, vm: str, dest: dict[str, str], live: bool,
                       vdi_map: dict[str, str], vif_map: dict[str, str],
                       options: dict[str, str], vgpu_map: dict[str, str]) -> None:
    rec = ctx.db.get("VM", vm)
    _check_migrate(ctx, vm, rec, dest, vdi_map, vif_map)


@behaviour("VM.migrate_send", latency=True, cancellable=True)
def migrate_send(ctx: CallContext, vm: str, dest: dict[str, str], live: bool,
                 vdi_map: dict[str, str], vif_map: dict[str, str], options: dict[str, str],
                 vgpu_map: dict[str, str]) -> str:
    db = ctx.db
    with operation(ctx, vm, "migrate_send") as rec:
        host = _check_migrate(ctx, vm, rec, dest, vdi_map, vif_map)
        running = rec["power_state"] in ("Running", "Paused")
        if running:
            pool_mod.assert_live(ctx.sim, rec["resident_on"])
            db.update("VM", vm, scheduled_to_be_resident_on=host)
        moves = [(vbd, vdi, vdi_map[vdi]) for vbd, vdi in _vm_disks(ctx, rec)
                 if db.get("VDI", vdi)["SR"] != vdi_map[vdi]]
        try:
            ctx.work(end=0.1)
            for i, (vbd, vdi, sr) in enumerate(moves):
                _move_disk(ctx, vm, vbd, vdi, sr)
                ctx.progress(0.1 + 0.8 * (i + 1) / len(moves))
            ctx.check_cancel()
        except ApiError:
            db.update("VM", vm, scheduled_to_be_resident_on=NULL_REF)
            raise
        if running:
            move_domain(ctx, vm, host)
        refresh(ctx, vm)
        ctx.progress(1.0)
        return vm


def _move_disk(ctx: CallContext, vm: str, vbd: str, vdi: str, sr: str) -> None:
    """Copy ``vdi`` (and its snapshots) into ``sr`` and point the VM at the copy."""
    db = ctx.db
    old = db.get("VDI", vdi)
    new = copy_vdi(ctx, vdi, sr)
    keep = {k: old[k] for k in ("name_label", "name_description", "other_config",
                                "xenstore_data", "sm_config", "on_boot", "allow_caching",
                                "tags") if k in old}
    keep["sm_config"] = dict(db.get("VDI", new)["sm_config"])
    db.update("VDI", new, **keep)
    vbd_rec = db.get("VBD", vbd)
    driver_old = ctx.sim.storage.for_sr(old["SR"])
    driver_new = ctx.sim.storage.for_sr(sr)
    if vbd_rec["currently_attached"]:
        driver_new.vdi_attach(ctx, new, vbd_rec["mode"] == "RW")
        driver_old.vdi_detach(ctx, vdi)
    db.update("VBD", vbd, VDI=new)
    # Snapshots of the disk follow it (their VMs' VBDs are re-pointed).
    for snap in list(old["snapshots"]):
        srec = db.find("VDI", snap)
        if srec is None or srec["SR"] == sr:
            continue
        snap_copy = copy_vdi(ctx, snap, sr)
        db.update("VDI", snap_copy, is_a_snapshot=True, snapshot_of=new,
                  snapshot_time=srec["snapshot_time"], name_label=srec["name_label"])
        for sbvd in list(srec["VBDs"]):
            if db.exists("VBD", sbvd):
                db.update("VBD", sbvd, VDI=snap_copy)
        destroy_vdi(ctx, snap)
    for other in list(old["VBDs"]):
        if other != vbd and db.exists("VBD", other):
            db.update("VBD", other, VDI=new)
    destroy_vdi(ctx, vdi)
    vdi_update_allowed_operations(ctx, new)


# -- evacuation ----------------------------------------------------------------------

def evacuation_plan(ctx: CallContext, host: str) -> dict[str, str | ApiError]:
    """Where each VM running on ``host`` would go (a host) or why it cannot
    (xapi's no-WLB plan: every other live, enabled host must be able to run
    it; then memory is bin-packed, largest VM first)."""
    db = ctx.db
    hrec = db.get("host", host)
    targets = [h for h, rec in db.all("host").items()
               if h != host and rec["enabled"] and pool_mod.is_live(ctx.sim, h)]
    vms = [(vm, db.get("VM", vm)) for vm in hrec["resident_VMs"] if db.exists("VM", vm)]
    vms = [(vm, rec) for vm, rec in vms if not rec["is_control_domain"]]
    plan: dict[str, str | ApiError] = {}
    if not targets:
        return {vm: ApiError("NO_HOSTS_AVAILABLE", vm) for vm, _ in vms}
    movable = []
    for vm, rec in vms:
        error = lifecycle.check(db, vm, "pool_migrate", rec, strict=True)
        for target in targets:
            if error is not None:
                break
            try:
                _check_placement(ctx, vm, rec, target)
            except ApiError as exc:
                if exc.code != "HOST_NOT_ENOUGH_FREE_MEMORY":
                    error = exc
        if error is not None:
            plan[vm] = error
        else:
            movable.append((vm, rec))
    free = {t: host_free_memory(ctx, t) for t in targets}
    movable.sort(key=lambda item: -item[1]["memory_static_max"])
    for vm, rec in movable:
        need = rec["memory_static_max"] + memory_overhead(rec)
        best = max(targets, key=lambda t: free[t])
        if free[best] < need:
            plan[vm] = ApiError("HOST_NOT_ENOUGH_FREE_MEMORY", vm)
            continue
        free[best] -= need
        plan[vm] = best
    return plan


@behaviour("host.get_vms_which_prevent_evacuation")
def get_vms_which_prevent_evacuation(ctx: CallContext, host: str) -> dict[str, list[str]]:
    return {vm: p.description for vm, p in evacuation_plan(ctx, host).items()
            if isinstance(p, ApiError)}


@behaviour("host.assert_can_evacuate")
def assert_can_evacuate(ctx: CallContext, host: str) -> None:
    errors = [",".join(p.description) for p in evacuation_plan(ctx, host).values()
              if isinstance(p, ApiError)]
    if errors:
        raise ApiError("CANNOT_EVACUATE_HOST", "|".join(errors))


@behaviour("host.evacuate", latency=True, cancellable=True)
def evacuate(ctx: CallContext, host: str, network: str, evacuate_batch_size: int) -> None:
    if network != NULL_REF:
        ctx.db.get("network", network)
    plan = evacuation_plan(ctx, host)
    for destination in plan.values():
        if isinstance(destination, ApiError):
            raise destination
    for i, (vm, destination) in enumerate(plan.items()):
        assert isinstance(destination, str)
        with operation(ctx, vm, "pool_migrate"):
            ctx.work(ctx.latency("VM.pool_migrate"), start=i / len(plan),
                     end=(i + 1) / len(plan))
            move_domain(ctx, vm, destination)
        bring_up_pifs(ctx, vm)
        ctx.sim.network.sync()
