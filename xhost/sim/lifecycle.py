"""VM operation rules: allowed power states, concurrency, templates,
snapshots, blocked operations -- reproducing xapi's ``xapi_vm_lifecycle``.

:func:`check` returns the error an operation would get (or None);
:func:`update_allowed_operations` recomputes ``allowed_operations`` from the
same rules, as xapi does after every change.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import NULL_REF, ApiError

if TYPE_CHECKING:
    from .db import Database

HALTED, PAUSED, RUNNING, SUSPENDED = "Halted", "Paused", "Running", "Suspended"
ALL_STATES = [HALTED, PAUSED, SUSPENDED, RUNNING]

_HALTED_ONLY = {"changing_shadow_memory", "changing_NVRAM", "make_into_template",
                "provision", "start", "start_on", "create_vtpm"}
_RUNNING_ONLY = {"awaiting_memory_live", "call_plugin", "clean_reboot", "clean_shutdown",
                 "changing_memory_live", "changing_shadow_memory_live",
                 "changing_VCPUs_live", "data_source_op", "pause", "pool_migrate",
                 "send_sysrq", "send_trigger", "snapshot_with_quiesce", "suspend"}
_ANY = {"assert_operation_valid", "metadata_export", "power_state_reset", "revert",
        "reverting", "snapshot", "update_allowed_operations", "query_services"}

#: Operations never listed in allowed_operations (xapi's ignored_ops).
IGNORED_OPS = {"create_template", "power_state_reset", "csvm", "get_boot_record",
               "send_sysrq", "send_trigger", "query_services", "shutdown", "call_plugin",
               "changing_memory_live", "awaiting_memory_live", "changing_memory_limits",
               "changing_shadow_memory_live", "changing_VCPUs", "assert_operation_valid",
               "data_source_op", "update_allowed_operations", "import", "reverting"}

_TEMPLATE_OPS = {"changing_dynamic_range", "changing_static_range", "changing_memory_limits",
                 "changing_shadow_memory", "changing_VCPUs", "changing_NVRAM", "clone",
                 "copy", "export", "metadata_export", "provision"}
_SNAPSHOT_OPS = {"revert", "clone", "copy", "export", "destroy", "hard_shutdown",
                 "metadata_export"}
_CONTROL_DOMAIN_OPS = {"data_source_op", "changing_memory_live", "awaiting_memory_live",
                       "metadata_export", "changing_dynamic_range", "changing_memory_limits",
                       "changing_static_range", "start", "start_on", "changing_VCPUs",
                       "destroy"}


def allowed_power_states(op: str, vm: dict[str, Any]) -> list[str]:
    if op == "import":
        return []
    if op in ("changing_VCPUs", "changing_static_range", "changing_memory_limits"):
        return [HALTED, RUNNING] if vm["is_control_domain"] else [HALTED]
    if op in _HALTED_ONLY:
        return [HALTED]
    if op == "unpause":
        return [PAUSED]
    if op in ("csvm", "resume", "resume_on"):
        return [SUSPENDED]
    if op in _RUNNING_ONLY:
        return [RUNNING]
    if op == "changing_dynamic_range":
        return [HALTED, RUNNING]
    if op in ("clone", "copy"):
        return [HALTED, SUSPENDED] if vm["is_a_snapshot"] else [HALTED]
    if op in ("create_template", "destroy", "export"):
        return [HALTED, SUSPENDED]
    if op == "hard_reboot":
        return [PAUSED, RUNNING]
    if op in ("checkpoint", "get_boot_record", "shutdown", "hard_shutdown"):
        return [PAUSED, SUSPENDED, RUNNING]
    if op == "migrate_send":
        return [HALTED, SUSPENDED, RUNNING]
    if op in _ANY:
        return list(ALL_STATES)
    return list(ALL_STATES)


def _allowed_concurrently(op: str, current: list[str]) -> bool:
    def aux(group: set[str]) -> bool:
        return op in group and all(o in group for o in current)
    if aux({"clone", "copy", "export"}) or aux({"snapshot", "checkpoint"}) \
            or aux({"get_boot_record"}):
        return True
    if op == "hard_shutdown":
        return op not in current
    if op == "hard_reboot":
        return not any(o in ("hard_shutdown", "hard_reboot") for o in current)
    pairs = [(["snapshot_with_quiesce"], "snapshot"), (["migrate_send"], "metadata_export"),
             (["migrate_send"], "clean_shutdown"), (["migrate_send"], "clean_reboot")]
    return any(state == current and transition == op for state, transition in pairs)


def _lower(state: str) -> str:
    return state.lower()


def check(db: Database, ref: str, op: str, vm: dict[str, Any] | None = None,
          strict: bool = True) -> ApiError | None:
    """The error ``op`` on VM ``ref`` would raise now, or None."""
    if vm is None:
        vm = db.get("VM", ref)
    blocked = vm["blocked_operations"]
    if op in blocked:
        return ApiError("OPERATION_BLOCKED", ref, blocked[op])
    power = vm["power_state"]
    states = allowed_power_states(op, vm)
    if power not in states:
        return ApiError("VM_BAD_POWER_STATE", ref, ", ".join(map(_lower, states)),
                        _lower(power))
    current = vm["current_operations"]
    if current and not _allowed_concurrently(op, list(current.values())):
        items = list(current.items())
        if len(items) == 1:
            task, cop = items[0]
            return ApiError("OTHER_OPERATION_IN_PROGRESS", "VM", ref, cop, task)
        return ApiError("OTHER_OPERATION_IN_PROGRESS", "VM", ref,
                        "{" + ",".join(o for _, o in items) + "}",
                        "{" + ",".join(t for t, _ in items) + "}")
    is_template, is_snapshot = vm["is_a_template"], vm["is_a_snapshot"]
    if is_template and not is_snapshot:
        default = vm["is_default_template"] or vm["other_config"].get(
            "default_template", "").lower() in ("1", "true")
        if not (op in _TEMPLATE_OPS or (op in ("destroy", "migrate_send") and not default)):
            return ApiError("VM_IS_TEMPLATE", ref, op)
    if is_snapshot and op not in _SNAPSHOT_OPS:
        return ApiError("VM_IS_SNAPSHOT", ref, op)
    if op == "provision" and not is_template:
        return ApiError("ONLY_PROVISION_TEMPLATE")
    if op == "revert" and not is_snapshot:
        return ApiError("ONLY_REVERT_SNAPSHOT")
    if op in ("suspend", "checkpoint", "pool_migrate", "migrate_send"):
        platform = vm["platform"]
        if platform.get("nomigrate", "").lower() in ("1", "true") or \
                platform.get("nested-virt", "").lower() in ("1", "true"):
            if strict:
                return ApiError("VM_IS_IMMOBILE", ref)
    if vm["is_control_domain"]:
        if op in ("changing_VCPUs", "destroy") and vm["domid"] == 0:
            return ApiError("OPERATION_NOT_ALLOWED", "This operation is not allowed on dom0")
        if op not in _CONTROL_DOMAIN_OPS:
            return ApiError("OPERATION_NOT_ALLOWED",
                            "This operation is not allowed on a control domain")
    if vm["power_state"] in (RUNNING, PAUSED) and op in ("clean_shutdown", "clean_reboot",
                                                         "suspend", "checkpoint",
                                                         "pool_migrate", "migrate_send"):
        err = _feature_error(db, ref, vm, op, strict)
        if err is not None:
            return err
    if op == "snapshot_with_quiesce":
        return ApiError("VM_SNAPSHOT_WITH_QUIESCE_NOT_SUPPORTED", ref, "")
    if op in ("checkpoint", "snapshot", "suspend"):
        for vbd in vm["VBDs"]:
            vbd_rec = db.find("VBD", vbd)
            if vbd_rec is None or vbd_rec["VDI"] == NULL_REF:
                continue
            vdi = db.find("VDI", vbd_rec["VDI"])
            if vdi is not None and vdi["on_boot"] == "reset":
                return ApiError("VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION")
    if op == "create_vtpm" and vm["VTPMs"]:
        return ApiError("VTPM_MAX_AMOUNT_REACHED", str(len(vm["VTPMs"])))
    return None


def _feature_error(db: Database, ref: str, vm: dict[str, Any], op: str,
                   strict: bool) -> ApiError | None:
    """Guests without PV drivers cannot be cleanly shut down or suspended."""
    gm = db.find("VM_guest_metrics", vm["guest_metrics"]) if vm["guest_metrics"] else None
    metrics = db.find("VM_metrics", vm["metrics"]) if vm["metrics"] else None
    if metrics is not None and metrics.get("current_domain_type") in ("pv", "pvh", "pv_in_pvh"):
        return None
    if gm is not None and gm["PV_drivers_detected"]:
        return None
    other = gm["other"] if gm is not None else {}
    if op in ("suspend", "checkpoint", "pool_migrate", "migrate_send"):
        reason = other.get("data-cant-suspend-reason")
        if reason:
            return ApiError("VM_NON_SUSPENDABLE", ref, reason)
        if strict and other.get("feature-suspend") != "1":
            return ApiError("VM_LACKS_FEATURE", ref)
        return None
    if not strict:
        return None
    if op == "clean_shutdown" and other.get("feature-shutdown") != "1" \
            and other.get("feature-poweroff") != "1":
        return ApiError("VM_LACKS_FEATURE", ref)
    if op == "clean_reboot" and other.get("feature-shutdown") != "1" \
            and other.get("feature-reboot") != "1":
        return ApiError("VM_LACKS_FEATURE", ref)
    return None


def assert_valid(db: Database, ref: str, op: str, strict: bool = False) -> dict[str, Any]:
    """Raise the operation's error, if any; returns the VM record."""
    vm = db.get("VM", ref)
    err = check(db, ref, op, vm, strict=strict)
    if err is not None:
        raise err
    return vm


def allowed_operations(db: Database, ref: str, vm: dict[str, Any]) -> list[str]:
    ops = db.schema.enums["vm_operations"]
    return [op for op in ops if op not in IGNORED_OPS and check(db, ref, op, vm) is None]


def update_allowed_operations(db: Database, ref: str) -> None:
    with db.lock:
        vm = db.find("VM", ref)
        if vm is None:
            return
        ops = allowed_operations(db, ref, vm)
        if ops != vm["allowed_operations"]:
            db.update("VM", ref, allowed_operations=ops)
