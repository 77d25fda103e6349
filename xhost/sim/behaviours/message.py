"""message.*: alerts; their ``get_*`` calls are explicit in the datamodel."""
from __future__ import annotations

from typing import Any

from ..dispatch import CallContext
from ..errors import ApiError
from ..xapi_types import datetime_to_epoch, now_datetime
from . import behaviour

_CLS_TABLE = {"VM": "VM", "Host": "host", "SR": "SR", "Pool": "pool", "VMPP": "VMPP",
              "VMSS": "VMSS", "PVS_proxy": "PVS_proxy", "VDI": "VDI",
              "Certificate": "Certificate"}


@behaviour("message.create")
def create(ctx: CallContext, name: str, priority: int, cls: str, obj_uuid: str,
           body: str) -> str:
    table = _CLS_TABLE[cls]
    ctx.db.by_uuid(table, obj_uuid)
    spec = ctx.sim.schema.classes["message"]
    return ctx.db.add("message", spec.new_record({
        "name": name, "priority": priority, "cls": cls, "obj_uuid": obj_uuid,
        "timestamp": now_datetime(), "body": body}))


def _since(records: dict[str, Any], since: str) -> dict[str, Any]:
    limit = datetime_to_epoch(since)
    return {r: m for r, m in records.items() if datetime_to_epoch(m["timestamp"]) > limit}


@behaviour("message.get_since")
def get_since(ctx: CallContext, since: str) -> dict[str, Any]:
    return _since(ctx.db.all("message"), since)


@behaviour("message.get")
def get(ctx: CallContext, cls: str, obj_uuid: str, since: str) -> dict[str, Any]:
    records = {r: m for r, m in ctx.db.all("message").items()
               if m["cls"] == cls and m["obj_uuid"] == obj_uuid}
    return _since(records, since)


@behaviour("message.destroy_many")
def destroy_many(ctx: CallContext, messages: list[str]) -> None:
    for ref in messages:
        if not ctx.db.exists("message", ref):
            raise ApiError("HANDLE_INVALID", "message", ref)
    for ref in messages:
        ctx.db.remove("message", ref)
