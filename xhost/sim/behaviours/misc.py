"""blob, secret and other small classes."""
from __future__ import annotations

from ..dispatch import CallContext
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
