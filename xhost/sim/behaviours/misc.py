"""blob, secret and other small classes."""
from __future__ import annotations

from ..dispatch import CallContext
from ..errors import NULL_REF, ApiError
from ..xapi_types import now_datetime
from . import behaviour


@behaviour("blob.create")
def blob_create(ctx: CallContext, mime_type: str, public: bool) -> str:
    spec = ctx.sim.schema.classes["blob"]
    return ctx.db.add("blob", spec.new_record({"mime_type": mime_type, "public": public,
                                               "size": 0, "last_updated": now_datetime()}))


def _create_new_blob(ctx: CallContext, cls: str, ref: str, name: str, mime_type: str,
                     public: bool) -> str:
    rec = ctx.db.get(cls, ref)
    spec = ctx.sim.schema.classes["blob"]
    blob = ctx.db.add("blob", spec.new_record({"name_label": name, "mime_type": mime_type,
                                               "public": public, "size": 0,
                                               "last_updated": now_datetime()}))
    ctx.db.update(cls, ref, blobs=dict(rec["blobs"], **{name: blob}))
    return blob


for _cls in ("VM", "host", "pool", "SR", "network"):
    def _make(cls: str = _cls):
        def create_new_blob(ctx: CallContext, ref: str, name: str, mime_type: str,
                            public: bool) -> str:
            return _create_new_blob(ctx, cls, ref, name, mime_type, public)
        return create_new_blob
    behaviour(f"{_cls}.create_new_blob")(_make())


# -- simple settings and queries that only touch the database ---------------------

@behaviour("VIF.configure_ipv4")
def vif_configure_ipv4(ctx: CallContext, vif: str, mode: str, address: str, gateway: str
                       ) -> None:
    if mode == "Static" and not address:
        raise ApiError("INVALID_VALUE", "address", address)
    ctx.db.update("VIF", vif, ipv4_configuration_mode=mode,
                  ipv4_addresses=[address] if address else [], ipv4_gateway=gateway)


@behaviour("VIF.configure_ipv6")
def vif_configure_ipv6(ctx: CallContext, vif: str, mode: str, address: str, gateway: str
                       ) -> None:
    if mode == "Static" and not address:
        raise ApiError("INVALID_VALUE", "address", address)
    ctx.db.update("VIF", vif, ipv6_configuration_mode=mode,
                  ipv6_addresses=[address] if address else [], ipv6_gateway=gateway)


@behaviour("PIF.reconfigure_ipv6")
def pif_reconfigure_ipv6(ctx: CallContext, pif: str, mode: str, ipv6: str, gateway: str,
                         dns: str) -> None:
    ctx.db.update("PIF", pif, ipv6_configuration_mode=mode, IPv6=[ipv6] if ipv6 else [],
                  ipv6_gateway=gateway, DNS=dns or ctx.db.get("PIF", pif)["DNS"])


@behaviour("PIF.set_property")
def pif_set_property(ctx: CallContext, pif: str, name: str, value: str) -> None:
    rec = ctx.db.get("PIF", pif)
    if name not in ("gro", "mtu") and not name.startswith("ethtool-"):
        raise ApiError("INVALID_VALUE", "name", name)
    ctx.db.update("PIF", pif, properties=dict(rec["properties"], **{name: value}))


@behaviour("Bond.set_property")
def bond_set_property(ctx: CallContext, bond: str, name: str, value: str) -> None:
    rec = ctx.db.get("Bond", bond)
    ctx.db.update("Bond", bond, properties=dict(rec["properties"], **{name: value}))


@behaviour("PIF.scan")
def pif_scan(ctx: CallContext, host: str) -> None:
    ctx.db.get("host", host)


@behaviour("PIF.forget")
def pif_forget(ctx: CallContext, pif: str) -> None:
    rec = ctx.db.get("PIF", pif)
    if rec["management"]:
        raise ApiError("PIF_IS_MANAGEMENT_IFACE", pif)
    ctx.db.remove("PIF", pif)


@behaviour("VM.set_memory_target_live")
def vm_set_memory_target_live(ctx: CallContext, vm: str, target: int) -> None:
    rec = ctx.db.get("VM", vm)
    if rec["power_state"] != "Running":
        raise ApiError("VM_BAD_POWER_STATE", vm, "running", rec["power_state"].lower())
    if not rec["memory_dynamic_min"] <= target <= rec["memory_dynamic_max"]:
        raise ApiError("MEMORY_CONSTRAINT_VIOLATION",
                       "target must be between dynamic_min and dynamic_max")
    ctx.db.update("VM", vm, memory_target=target)
    if rec["metrics"] != NULL_REF:
        ctx.db.update("VM_metrics", rec["metrics"], memory_actual=target)


@behaviour("VM.wait_memory_target_live")
def vm_wait_memory_target_live(ctx: CallContext, vm: str) -> None:
    ctx.db.get("VM", vm)


@behaviour("VM.set_shadow_multiplier_live")
def vm_set_shadow_multiplier_live(ctx: CallContext, vm: str, multiplier: float) -> None:
    rec = ctx.db.get("VM", vm)
    if rec["power_state"] != "Running":
        raise ApiError("VM_BAD_POWER_STATE", vm, "running", rec["power_state"].lower())
    ctx.db.update("VM", vm, HVM_shadow_multiplier=multiplier)


@behaviour("VM.add_to_VCPUs_params_live")
def vm_add_to_vcpus_params_live(ctx: CallContext, vm: str, key: str, value: str) -> None:
    rec = ctx.db.get("VM", vm)
    if rec["power_state"] != "Running":
        raise ApiError("VM_BAD_POWER_STATE", vm, "running", rec["power_state"].lower())
    ctx.db.update("VM", vm, VCPUs_params=dict(rec["VCPUs_params"], **{key: value}))


@behaviour("VM.query_services")
def vm_query_services(ctx: CallContext, vm: str) -> dict[str, str]:
    rec = ctx.db.get("VM", vm)
    if rec["other_config"].get("is_system_domain") != "true":
        raise ApiError("NOT_SYSTEM_DOMAIN", vm)
    return {}


@behaviour("VM.copy_bios_strings")
def vm_copy_bios_strings(ctx: CallContext, vm: str, host: str) -> None:
    rec = ctx.db.get("VM", vm)
    if rec["power_state"] != "Halted":
        raise ApiError("VM_BAD_POWER_STATE", vm, "halted", rec["power_state"].lower())
    if rec["bios_strings"]:
        raise ApiError("VM_BIOS_STRINGS_ALREADY_SET")
    ctx.db.update("VM", vm, bios_strings=dict(ctx.db.get("host", host)["bios_strings"]))


@behaviour("VM.assert_agile")
def vm_assert_agile(ctx: CallContext, vm: str) -> None:
    db = ctx.db
    rec = db.get("VM", vm)
    for vbd in rec["VBDs"]:
        vbd_rec = db.find("VBD", vbd)
        if vbd_rec is None or vbd_rec["VDI"] == NULL_REF:
            continue
        sr = db.get("VDI", vbd_rec["VDI"])["SR"]
        if not db.get("SR", sr)["shared"]:
            raise ApiError("HA_CONSTRAINT_VIOLATION_SR_NOT_SHARED", sr)


@behaviour("VM.record_data_source")
def vm_record_data_source(ctx: CallContext, vm: str, data_source: str) -> None:
    ctx.db.get("VM", vm)


@behaviour("VM.forget_data_source_archives")
def vm_forget_data_source_archives(ctx: CallContext, vm: str, data_source: str) -> None:
    ctx.db.get("VM", vm)


@behaviour("host.record_data_source")
def host_record_data_source(ctx: CallContext, host: str, data_source: str) -> None:
    ctx.db.get("host", host)


@behaviour("host.forget_data_source_archives")
def host_forget_data_source_archives(ctx: CallContext, host: str, data_source: str) -> None:
    ctx.db.get("host", host)


@behaviour("SR.get_data_sources")
def sr_get_data_sources(ctx: CallContext, sr: str) -> list:
    ctx.db.get("SR", sr)
    return []


@behaviour("SR.query_data_source")
def sr_query_data_source(ctx: CallContext, sr: str, data_source: str) -> float:
    ctx.db.get("SR", sr)
    return 0.0


@behaviour("SR.record_data_source")
def sr_record_data_source(ctx: CallContext, sr: str, data_source: str) -> None:
    ctx.db.get("SR", sr)


@behaviour("SR.forget_data_source_archives")
def sr_forget_data_source_archives(ctx: CallContext, sr: str, data_source: str) -> None:
    ctx.db.get("SR", sr)


@behaviour("VDI.enable_cbt")
def vdi_enable_cbt(ctx: CallContext, vdi: str) -> None:
    ctx.db.update("VDI", vdi, cbt_enabled=True)


@behaviour("VDI.disable_cbt")
def vdi_disable_cbt(ctx: CallContext, vdi: str) -> None:
    ctx.db.update("VDI", vdi, cbt_enabled=False)


@behaviour("VDI.get_nbd_info")
def vdi_get_nbd_info(ctx: CallContext, vdi: str) -> list:
    ctx.db.get("VDI", vdi)
    return []


@behaviour("host.has_extension")
def host_has_extension(ctx: CallContext, host: str, name: str) -> bool:
    ctx.db.get("host", host)
    return False


@behaviour("pool.has_extension")
def pool_has_extension(ctx: CallContext, pool: str, name: str) -> bool:
    ctx.db.get("pool", pool)
    return False


@behaviour("host.get_sched_gran")
def host_get_sched_gran(ctx: CallContext, host: str) -> str:
    ctx.db.get("host", host)
    return "cpu"


@behaviour("host.get_server_certificate")
def host_get_server_certificate(ctx: CallContext, host: str) -> str:
    ctx.db.get("host", host)
    path = ctx.sim.state_dir / "tls" / "xapi-ssl.pem"
    return path.read_text() if path.exists() else ""


@behaviour("host.dmesg_clear")
def host_dmesg_clear(ctx: CallContext, host: str) -> str:
    ctx.db.get("host", host)
    return ""


@behaviour("host.syslog_reconfigure")
def host_syslog_reconfigure(ctx: CallContext, host: str) -> None:
    ctx.db.get("host", host)


@behaviour("host.set_power_on_mode")
def host_set_power_on_mode(ctx: CallContext, host: str, power_on_mode: str,
                           power_on_config: dict[str, str]) -> None:
    ctx.db.update("host", host, power_on_mode=power_on_mode, power_on_config=power_on_config)


@behaviour("host.restart_agent")
def host_restart_agent(ctx: CallContext, host: str) -> None:
    ctx.db.get("host", host)


def _host_power(ctx: CallContext, host: str) -> None:
    rec = ctx.db.get("host", host)
    if rec["enabled"]:
        raise ApiError("HOST_NOT_DISABLED")
    running = [vm for vm in rec["resident_VMs"]
               if not ctx.db.get("VM", vm)["is_control_domain"]]
    if running:
        raise ApiError("HOST_IN_USE", host, "VM", running[0])


@behaviour("host.reboot")
def host_reboot(ctx: CallContext, host: str) -> None:
    _host_power(ctx, host)
    ctx.db.update("host", host, enabled=True)


@behaviour("host.shutdown")
def host_shutdown(ctx: CallContext, host: str) -> None:
    _host_power(ctx, host)
    ctx.db.update("host_metrics", ctx.db.get("host", host)["metrics"], live=False)


@behaviour("host.apply_edition")
def host_apply_edition(ctx: CallContext, host: str, edition: str, force: bool) -> None:
    rec = ctx.db.get("host", host)
    if edition not in rec["editions"]:
        raise ApiError("INVALID_EDITION", edition)
    ctx.db.update("host", host, edition=edition)


@behaviour("pool.apply_edition")
def pool_apply_edition(ctx: CallContext, pool: str, edition: str) -> None:
    ctx.db.get("pool", pool)
    for host in ctx.db.refs("host"):
        host_apply_edition(ctx, host, edition, False)


@behaviour("pool.certificate_list")
def pool_certificate_list(ctx: CallContext) -> list[str]:
    return []


@behaviour("pool.crl_list")
def pool_crl_list(ctx: CallContext) -> list[str]:
    return []


@behaviour("pool.set_https_only")
def pool_set_https_only(ctx: CallContext, pool: str, value: bool) -> None:
    ctx.db.get("pool", pool)
    for host in ctx.db.refs("host"):
        ctx.db.update("host", host, https_only=value)


@behaviour("host.set_https_only")
def host_set_https_only(ctx: CallContext, host: str, value: bool) -> None:
    ctx.db.update("host", host, https_only=value)
