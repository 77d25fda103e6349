#!/usr/bin/env python3
"""Generate the XAPI simulator's schema data files from the datamodel facts.

Development-time tool: reads the XenAPI datamodel (``datamodel.json``, the
xen-api ``xenapi.json`` shape) and the error table (``errors.tsv``) and writes
``xhost/sim/data/datamodel.json`` and ``xhost/sim/data/errors.json``, which are
committed and shipped as package data.  Nothing at run time reads the sources.

Usage::

    python tools/gen_sim_schema.py [--source /work/shared/xapi] [--out xhost/sim/data]

The datamodel JSON lacks three facts the simulator needs; they are carried here
as small hand-written tables, each checked against the JSON so a datamodel
update that invalidates them fails loudly instead of silently:

* parameter defaults (trailing parameters a caller may omit),
* which explicit messages have no ``Async.`` form,
* the one-to-many relations whose "many" side xapi maintains automatically
  (``VBD.VM`` -> ``VM.VBDs``).
"""
from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path

NULL = "OpaqueRef:NULL"

#: (class, message) -> {parameter: default}; values in the simulator's internal
#: representation.  From the ``param_default`` entries of the xen-api IDL.
PARAM_DEFAULTS: dict[tuple[str, str], dict[str, object]] = {
    ("session", "login_with_password"): {"version": "1.1", "originator": ""},
    ("VDI", "copy"): {"sr": NULL, "base_vdi": NULL, "into_vdi": NULL},
    ("VDI", "clone"): {"driver_params": {}},
    ("VDI", "snapshot"): {"driver_params": {}},
    ("VDI", "introduce"): {
        "xenstore_data": {},
        "sm_config": {},
        "managed": True,
        "virtual_size": 0,
        "physical_utilisation": 0,
        "metadata_of_pool": NULL,
        "is_a_snapshot": False,
        "snapshot_time": "19700101T00:00:00Z",
        "snapshot_of": NULL,
    },
    ("VM", "snapshot"): {"ignore_vdis": []},
    ("VM", "migrate_send"): {"vgpu_map": {}},
    ("VM", "assert_can_migrate"): {"vgpu_map": {}},
    ("VM", "create_new_blob"): {"public": False},
    ("pool", "create_new_blob"): {"public": False},
    ("host", "create_new_blob"): {"public": False},
    ("SR", "create_new_blob"): {"public": False},
    ("network", "create_new_blob"): {"public": False},
    ("host", "evacuate"): {"network": NULL, "evacuate_batch_size": 0},
    ("host", "apply_edition"): {"force": False},
    ("host", "install_server_certificate"): {"certificate_chain": ""},
    ("host", "disable_external_auth"): {"config": {}},
    ("host", "emergency_ha_disable"): {"soft": False},
    ("pool", "disable_external_auth"): {"config": {}},
    ("pool", "sync_updates"): {"token": "", "token_id": ""},
    ("PIF", "introduce"): {"managed": True},
    ("Bond", "create"): {"mode": "balance-slb", "properties": {}},
    ("tunnel", "create"): {"protocol": "gre"},
    ("VIF", "configure_ipv4"): {"address": "", "gateway": ""},
    ("VIF", "configure_ipv6"): {"address": "", "gateway": ""},
    ("blob", "create"): {"public": False},
    ("secret", "introduce"): {"other_config": {}},
}

#: Explicit (non-implicit) messages declared without the ``Async`` flag.
NO_ASYNC: dict[str, set[str]] = {
    "session": {
        "login_with_password", "slave_local_login_with_password", "local_logout",
        "logout", "change_password",
    },
    "task": {"create", "destroy", "set_status", "set_progress", "set_result",
             "set_error_info"},
    "event": {"next", "from", "get_current_id", "inject"},
    "message": {"create", "destroy", "destroy_many", "get", "get_since", "get_all",
                "get_by_uuid", "get_record", "get_all_records",
                "get_all_records_where"},
    "auth": {"get_subject_identifier", "get_subject_information_from_identifier",
             "get_group_membership"},
    "subject": {"add_to_roles", "remove_from_roles", "get_permissions_name_label"},
    "role": {"get_permissions", "get_permissions_name_label", "get_by_permission",
             "get_by_permission_name_label"},
    "VM": {
        "get_boot_record", "get_data_sources", "record_data_source",
        "query_data_source", "forget_data_source_archives", "set_ha_always_run",
        "set_ha_restart_priority", "get_allowed_VBD_devices",
        "get_allowed_VIF_devices", "set_memory_dynamic_max",
        "set_memory_dynamic_min", "set_memory_static_max", "set_memory_static_min",
        "set_VCPUs_max", "set_VCPUs_at_startup", "set_HVM_shadow_multiplier",
        "remove_from_NVRAM", "add_to_NVRAM", "set_NVRAM", "set_protection_policy",
        "set_snapshot_schedule", "set_domain_type", "set_HVM_boot_policy",
    },
    "host": {
        "get_data_sources", "record_data_source", "query_data_source",
        "forget_data_source_archives", "list_methods", "backup_rrds",
        "get_system_status_capabilities", "set_hostname_live", "sync_data",
        "get_servertime", "get_server_localtime", "emergency_ha_disable",
        "emergency_reset_server_certificate", "enable_external_auth",
        "disable_external_auth", "set_cpu_features", "reset_cpu_features",
        "local_management_reconfigure", "management_disable", "shutdown_agent",
        "emergency_disable_tls_verification", "emergency_reenable_tls_verification",
        "emergency_clear_mandatory_guidance", "call_extension",
        "apply_edition", "enable_local_storage_caching",
        "disable_local_storage_caching",
    },
    "pool": {
        "emergency_reset_master", "emergency_transition_to_master",
        "ha_prevent_restarts_for", "ha_failover_plan_exists",
        "ha_compute_max_host_failures_to_tolerate",
        "ha_compute_hypothetical_max_host_failures_to_tolerate",
        "ha_compute_vm_failover_plan", "enable_external_auth",
        "disable_external_auth", "detect_nonhomogeneous_external_auth",
        "enable_tls_verification", "test_archive_target",
        "set_local_auth_max_threads", "set_ext_auth_max_threads",
    },
    "SR": {"get_data_sources", "record_data_source", "query_data_source",
           "forget_data_source_archives", "get_supported_types",
           "set_physical_size"},
    "VDI": {"set_read_only", "set_sharable", "get_nbd_info"},
}

#: (class, ref field) -> (class, set field) maintained by the database.
RELATIONS: list[tuple[tuple[str, str], tuple[str, str]]] = [
    (("VM", "snapshot_of"), ("VM", "snapshots")),
    (("VDI", "snapshot_of"), ("VDI", "snapshots")),
    (("VM", "parent"), ("VM", "children")),
    (("task", "subtask_of"), ("task", "subtasks")),
    (("PIF", "bond_slave_of"), ("Bond", "slaves")),
    (("Bond", "master"), ("PIF", "bond_master_of")),
    (("VLAN", "tagged_PIF"), ("PIF", "VLAN_slave_of")),
    (("tunnel", "access_PIF"), ("PIF", "tunnel_access_PIF_of")),
    (("tunnel", "transport_PIF"), ("PIF", "tunnel_transport_PIF_of")),
    (("PBD", "host"), ("host", "PBDs")),
    (("PBD", "SR"), ("SR", "PBDs")),
    (("VBD", "VDI"), ("VDI", "VBDs")),
    (("crashdump", "VDI"), ("VDI", "crash_dumps")),
    (("VBD", "VM"), ("VM", "VBDs")),
    (("crashdump", "VM"), ("VM", "crash_dumps")),
    (("VIF", "VM"), ("VM", "VIFs")),
    (("VIF", "network"), ("network", "VIFs")),
    (("Cluster_host", "cluster"), ("Cluster", "cluster_hosts")),
    (("PIF", "host"), ("host", "PIFs")),
    (("PIF", "network"), ("network", "PIFs")),
    (("VDI", "SR"), ("SR", "VDIs")),
    (("VTPM", "VM"), ("VM", "VTPMs")),
    (("console", "VM"), ("VM", "consoles")),
    (("VM", "resident_on"), ("host", "resident_VMs")),
    (("host_cpu", "host"), ("host", "host_CPUs")),
    (("host_crashdump", "host"), ("host", "crashdumps")),
    (("host_patch", "host"), ("host", "patches")),
    (("host_patch", "pool_patch"), ("pool_patch", "host_patches")),
    (("VM", "protection_policy"), ("VMPP", "VMs")),
    (("VM", "snapshot_schedule"), ("VMSS", "VMs")),
    (("VM", "appliance"), ("VM_appliance", "VMs")),
    (("PGPU", "GPU_group"), ("GPU_group", "PGPUs")),
    (("VGPU", "GPU_group"), ("GPU_group", "VGPUs")),
    (("VGPU", "type"), ("VGPU_type", "VGPUs")),
    (("VGPU", "VM"), ("VM", "VGPUs")),
    (("VGPU", "resident_on"), ("PGPU", "resident_VGPUs")),
    (("PCI", "host"), ("host", "PCIs")),
    (("PGPU", "host"), ("host", "PGPUs")),
    (("PCI", "physical_function"), ("PCI", "virtual_functions")),
    (("VDI", "metadata_of_pool"), ("pool", "metadata_VDIs")),
    (("SR", "introduced_by"), ("DR_task", "introduced_SRs")),
    (("PVS_server", "site"), ("PVS_site", "servers")),
    (("PVS_proxy", "site"), ("PVS_site", "proxies")),
    (("PVS_cache_storage", "site"), ("PVS_site", "cache_storage")),
    (("PUSB", "host"), ("host", "PUSBs")),
    (("PUSB", "USB_group"), ("USB_group", "PUSBs")),
    (("VUSB", "USB_group"), ("USB_group", "VUSBs")),
    (("VUSB", "VM"), ("VM", "VUSBs")),
    (("Feature", "host"), ("host", "features")),
    (("network_sriov", "physical_PIF"), ("PIF", "sriov_physical_PIF_of")),
    (("network_sriov", "logical_PIF"), ("PIF", "sriov_logical_PIF_of")),
    (("Certificate", "host"), ("host", "certificates")),
]

#: Classes whose changes never appear in the event stream (``gen_events:false``).
NO_EVENTS = {"session", "user", "data_source", "sr_stat", "probe_result",
             "vdi_nbd_server_info", "auth", "secret", "event"}

_MAP_RE = re.compile(r"^\((.+?) -> (.+)\) map$")


def parse_default(text: str, ty: str):
    """Turn a datamodel default literal into the simulator's internal value."""
    ty = ty.strip()
    if ty.endswith(" ref"):
        return NULL if text in ("Null", "OpaqueRef:NULL", "") else text
    if ty.endswith(" set"):
        inner = text.strip()[1:-1].strip()
        if not inner:
            return []
        elem = ty[: -len(" set")]
        return [parse_default(item.strip(), elem) for item in inner.split(",")]
    if _MAP_RE.match(ty):
        inner = text.strip()[1:-1].strip()
        result = {}
        if inner:
            for pair in inner.split(","):
                key, value = pair.split("->")
                result[json.loads(key.strip())] = json.loads(value.strip())
        return result
    if ty == "string":
        return json.loads(text)
    if ty == "int":
        return int(text)
    if ty == "float":
        return float(text)
    if ty == "bool":
        return text == "true"
    if ty == "datetime":
        return text
    if ty.startswith("enum "):
        return text
    raise ValueError(f"cannot parse default {text!r} of type {ty!r}")


def build(source: Path) -> tuple[dict, dict]:
    classes = json.loads((source / "datamodel.json").read_text())
    by_name = {c["name"]: c for c in classes}

    out_classes = []
    for cls in classes:
        name = cls["name"]
        fields = []
        for field in cls["fields"]:
            entry = {"name": field["name"], "type": field["type"],
                     "qualifier": field["qualifier"]}
            if "default" in field:
                entry["default"] = parse_default(field["default"], field["type"])
            fields.append(entry)
        messages = []
        for msg in cls["messages"]:
            defaults = PARAM_DEFAULTS.get((name, msg["name"]), {})
            params = []
            for param in msg["params"]:
                p = {"name": param["name"], "type": param["type"]}
                if param["name"] in defaults:
                    p["default"] = defaults[param["name"]]
                params.append(p)
            if defaults:
                names = [p["name"] for p in params]
                missing = set(defaults) - set(names)
                if missing:
                    raise SystemExit(f"{name}.{msg['name']}: defaults for unknown params {missing}")
                tail = names[len(names) - len(defaults):]
                if set(tail) != set(defaults):
                    raise SystemExit(f"{name}.{msg['name']}: defaulted params are not trailing")
            has_session = bool(params) and params[0]["name"] == "session_id" \
                and params[0]["type"] == "session ref"
            if msg["implicit"]:
                # Only the constructor and destructor of the implicit set are async.
                is_async = msg["name"] in ("create", "destroy")
            else:
                is_async = msg["name"] not in NO_ASYNC.get(name, set())
            messages.append({
                "name": msg["name"],
                "params": params[1:] if has_session else params,
                "session": has_session,
                "result": msg["result"],
                "implicit": msg["implicit"],
                "async": is_async,
                "errors": sorted(set(msg["errors"])),
                "roles": msg["roles"],
            })
        out_classes.append({
            "name": name,
            "fields": fields,
            "messages": messages,
            "enums": {e["name"]: e["values"] for e in cls["enums"]},
            "events": name not in NO_EVENTS,
        })

    for cls_name, names in NO_ASYNC.items():
        known = {m["name"] for m in by_name[cls_name]["messages"] if not m["implicit"]}
        unknown = names - known - {"get", "get_since", "get_all", "get_by_uuid",
                                   "get_record", "get_all_records",
                                   "get_all_records_where", "create", "destroy"}
        if unknown:
            raise SystemExit(f"NO_ASYNC lists unknown {cls_name} messages: {sorted(unknown)}")

    relations = []
    for (one_cls, one_field), (many_cls, many_field) in RELATIONS:
        if one_cls not in by_name or many_cls not in by_name:
            continue
        fone = {f["name"]: f for f in by_name[one_cls]["fields"]}.get(one_field)
        fmany = {f["name"]: f for f in by_name[many_cls]["fields"]}.get(many_field)
        if fone is None or fmany is None:
            continue
        if not fone["type"].endswith(" ref") or not fmany["type"].endswith(" ref set"):
            continue
        relations.append([one_cls, one_field, many_cls, many_field])

    errors = {}
    with open(source / "errors.tsv", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t")
        header = next(reader)
        if header[:2] != ["code", "params"]:
            raise SystemExit(f"unexpected errors.tsv header {header}")
        for row in reader:
            if not row:
                continue
            code = row[0]
            params = row[1].split(",") if len(row) > 1 and row[1] else []
            errors[code] = params
    # Declared without parameters, but xapi sends [username, message].
    errors["SESSION_AUTHENTICATION_FAILED"] = ["username", "message"]

    model = {
        "source": "xen-api datamodel (xenapi.json, API 2.23 era); generated by "
                  "tools/gen_sim_schema.py",
        "classes": out_classes,
        "relations": relations,
    }
    return model, errors


def main(argv: list[str] | None = None) -> int:
    repo = Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=Path("/work/shared/xapi"),
                        help="directory holding datamodel.json and errors.tsv")
    parser.add_argument("--out", type=Path, default=repo / "xhost" / "sim" / "data",
                        help="output directory for the generated data files")
    args = parser.parse_args(argv)
    if not (args.source / "datamodel.json").exists():
        parser.error(f"{args.source}/datamodel.json not found; pass --source DIR")
    model, errors = build(args.source)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "datamodel.json").write_text(
        json.dumps(model, separators=(",", ":"), sort_keys=False) + "\n")
    (args.out / "errors.json").write_text(json.dumps(errors, indent=0, sort_keys=True) + "\n")
    n_msgs = sum(len(c["messages"]) for c in model["classes"])
    print(f"wrote {len(model['classes'])} classes, {n_msgs} messages, "
          f"{len(errors)} errors to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
