"""host.*: memory, plugins, time and the administrative switches."""
from __future__ import annotations

import datetime as _dt
import time
from typing import Any

from ..dispatch import CallContext
from ..errors import ApiError
from ..xapi_types import now_datetime
from . import behaviour
from .vm import host_free_memory


@behaviour("host.compute_free_memory")
def compute_free_memory(ctx: CallContext, host: str) -> int:
    ctx.db.get("host", host)
    return host_free_memory(ctx, host)


@behaviour("host.compute_memory_overhead")
def compute_memory_overhead(ctx: CallContext, host: str) -> int:
    return ctx.db.get("host", host)["memory_overhead"]


@behaviour("host.call_plugin", latency=True)
def call_plugin(ctx: CallContext, host: str, plugin: str, fn: str, args: dict[str, str]) -> str:
    ctx.db.get("host", host)
    ctx.work()
    assert ctx.session is not None
    return ctx.sim.plugins.call(ctx.session, host, plugin, fn, args)


@behaviour("host.get_servertime")
def get_servertime(ctx: CallContext, host: str) -> str:
    ctx.db.get("host", host)
    return now_datetime()


@behaviour("host.get_server_localtime")
def get_server_localtime(ctx: CallContext, host: str) -> str:
    ctx.db.get("host", host)
    return _dt.datetime.now().strftime("%Y%m%dT%H:%M:%S")


@behaviour("host.get_uncooperative_resident_VMs")
def get_uncooperative_resident_vms(ctx: CallContext, host: str) -> list[str]:
    ctx.db.get("host", host)
    return []


@behaviour("host.disable")
def disable(ctx: CallContext, host: str) -> None:
    ctx.db.update("host", host, enabled=False)


@behaviour("host.enable")
def enable(ctx: CallContext, host: str) -> None:
    ctx.db.update("host", host, enabled=True)


@behaviour("host.list_methods")
def list_methods(ctx: CallContext) -> list[str]:
    return list(ctx.sim.dispatcher.list_methods)


@behaviour("host.get_system_status_capabilities")
def get_system_status_capabilities(ctx: CallContext, host: str) -> str:
    ctx.db.get("host", host)
    return "<?xml version=\"1.0\" ?><system-status-capabilities></system-status-capabilities>"


@behaviour("host.get_log")
def get_log(ctx: CallContext, host: str) -> str:
    ctx.db.get("host", host)
    return ""


@behaviour("host.dmesg")
def dmesg(ctx: CallContext, host: str) -> str:
    ctx.db.get("host", host)
    return "Xen version 4.17.5-3 (mockbuild@xcp-ng.org) (gcc (GCC) 11.2.1)\n"


@behaviour("host.get_management_interface")
def get_management_interface(ctx: CallContext, host: str) -> str:
    for ref, pif in ctx.db.all("PIF").items():
        if pif["host"] == host and pif["management"]:
            return ref
    raise ApiError("PIF_NOT_PRESENT", host, "")


@behaviour("host.sync_data")
def sync_data(ctx: CallContext, host: str) -> None:
    ctx.db.get("host", host)


@behaviour("host.set_hostname_live")
def set_hostname_live(ctx: CallContext, host: str, hostname: str) -> None:
    ctx.db.update("host", host, hostname=hostname)


@behaviour("host.get_data_sources")
def get_data_sources(ctx: CallContext, host: str) -> list[dict[str, Any]]:
    ctx.db.get("host", host)
    return []


@behaviour("host.query_data_source")
def query_data_source(ctx: CallContext, host: str, data_source: str) -> float:
    ctx.db.get("host", host)
    if data_source == "memory_free_kib":
        return host_free_memory(ctx, host) / 1024.0
    if data_source == "loadavg":
        return float(time.time() % 1)
    return 0.0
