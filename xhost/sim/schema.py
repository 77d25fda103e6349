"""The XenAPI schema as the simulator uses it, built once from the generated
``data/datamodel.json``.

Everything per-call is precomputed here: parsed types, compiled XML record
encoders, create-record decoders, per-message parameter decoders, the kind of
every implicit message (getter, setter, map/set helper, record/lookup), and
the relation table the database keeps in sync.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

from .errors import ApiError
from .xapi_types import TypeRegistry, XType, xml_escape

RW = "RW"
RO_CONSTRUCTOR = "RO/constructor"
RO_RUNTIME = "RO/runtime"

#: Classes the simulator gives behaviour to (the others are still fully
#: available through their implicit messages).
MODELLED_CLASSES = (
    "session", "task", "event", "pool", "host", "host_metrics", "host_cpu", "VM",
    "VM_metrics", "VM_guest_metrics", "console", "SR", "PBD", "SM", "VDI", "VBD",
    "VBD_metrics", "VIF", "VIF_metrics", "network", "PIF", "PIF_metrics", "VLAN",
    "Bond", "message", "secret", "blob",
)


def fresh(value: Any) -> Any:
    """A copy of a default value safe to store in a new record."""
    if isinstance(value, list):
        return list(value)
    if isinstance(value, dict):
        return dict(value)
    return value


@dataclass
class FieldSpec:
    name: str
    type: XType
    qualifier: str
    has_default: bool
    default: Any

    @property
    def rw(self) -> bool:
        return self.qualifier == RW

    @property
    def in_constructor(self) -> bool:
        """True for fields ``create(record)`` reads (RW and RO/constructor)."""
        return self.qualifier in (RW, RO_CONSTRUCTOR)

    def initial(self) -> Any:
        return fresh(self.default) if self.has_default else self.type.zero()


@dataclass
class ParamSpec:
    name: str
    type: XType
    has_default: bool
    default: Any
    decode: Callable[[Any], Any]


@dataclass
class MessageSpec:
    cls: str
    name: str
    params: list[ParamSpec]
    result: XType
    implicit: bool
    async_ok: bool
    session: bool
    errors: list[str]
    n_mandatory: int
    #: implicit message kind: get_record, get_all, get_all_records,
    #: get_all_records_where, get_by_uuid, get_by_name_label, create, destroy,
    #: get, set, map_add, map_remove, set_add, set_remove; None if explicit.
    kind: str | None = None
    field: str | None = None
    #: RBAC roles allowed to call the message (all of them for root).
    roles: tuple[str, ...] = ()

    @property
    def wire(self) -> str:
        return f"{self.cls}.{self.name}"

    @property
    def has_defaults(self) -> bool:
        return self.n_mandatory != len(self.params)


@dataclass
class ClassSpec:
    name: str
    fields: dict[str, FieldSpec]
    messages: dict[str, MessageSpec]
    enums: dict[str, tuple[str, ...]]
    events: bool
    is_table: bool
    record_type: XType | None = None
    ctor_fields: list[FieldSpec] = field(default_factory=list)
    encode_record: Callable[[dict], str] | None = None

    @property
    def has_uuid(self) -> bool:
        return "uuid" in self.fields

    @property
    def has_name_label(self) -> bool:
        return "name_label" in self.fields

    def new_record(self, values: dict[str, Any] | None = None) -> dict[str, Any]:
        """A complete record: given values over defaults over type zeros."""
        rec = {name: f.initial() for name, f in self.fields.items()}
        if values:
            rec.update(values)
        return rec


class Schema:
    """All classes, messages, enums and relations of the XenAPI."""

    def __init__(self, model: dict[str, Any]) -> None:
        enums: dict[str, tuple[str, ...]] = {}
        for cls in model["classes"]:
            for name, values in cls["enums"].items():
                enums[name] = tuple(values)
        self.enums = enums
        self.types = TypeRegistry(enums)
        self.classes: dict[str, ClassSpec] = {}
        self.by_lower: dict[str, ClassSpec] = {}
        for cls in model["classes"]:
            spec = self._build_class(cls)
            self.classes[spec.name] = spec
            self.by_lower[spec.name.lower()] = spec
        #: (one class, ref field) -> (many class, set field)
        self.relations: dict[tuple[str, str], tuple[str, str]] = {}
        #: class -> list of (ref field, many class, set field)
        self.relations_from: dict[str, list[tuple[str, str, str]]] = {}
        #: class -> list of (set field, one class, ref field)
        self.relations_to: dict[str, list[tuple[str, str, str]]] = {}
        for one_cls, one_field, many_cls, many_field in model["relations"]:
            self.relations[(one_cls, one_field)] = (many_cls, many_field)
            self.relations_from.setdefault(one_cls, []).append((one_field, many_cls, many_field))
            self.relations_to.setdefault(many_cls, []).append((many_field, one_cls, one_field))
        for spec in self.classes.values():
            if spec.is_table:
                self._compile_record(spec)

    # -- construction -----------------------------------------------------
    def _build_class(self, cls: dict[str, Any]) -> ClassSpec:
        types = self.types
        fields: dict[str, FieldSpec] = {}
        for f in cls["fields"]:
            fields[f["name"]] = FieldSpec(
                name=f["name"], type=types.parse(f["type"]), qualifier=f["qualifier"],
                has_default="default" in f, default=f.get("default"))
        messages: dict[str, MessageSpec] = {}
        for m in cls["messages"]:
            params = []
            for p in m["params"]:
                ty = types.parse(p["type"])
                params.append(ParamSpec(
                    name=p["name"], type=ty, has_default="default" in p,
                    default=p.get("default"), decode=types.decoder(ty, p["name"])))
            n_mandatory = sum(1 for p in params if not p.has_default)
            spec = MessageSpec(
                cls=cls["name"], name=m["name"], params=params,
                result=types.parse(m["result"]), implicit=m["implicit"],
                async_ok=m["async"], session=m["session"], errors=m["errors"],
                n_mandatory=n_mandatory, roles=tuple(m.get("roles", ())))
            if m["implicit"]:
                spec.kind, spec.field = self._implicit_kind(spec.name, fields)
            messages[spec.name] = spec
        names = {m["name"] for m in cls["messages"]}
        is_table = "get_record" in names
        # xapi answers get_all_records_where for every class with
        # get_all_records even though the datamodel hides it from the docs.
        if "get_all_records" in names and "get_all_records_where" not in names:
            base = messages["get_all_records"]
            expr = types.parse("string")
            messages["get_all_records_where"] = MessageSpec(
                cls=cls["name"], name="get_all_records_where",
                params=[ParamSpec("expr", expr, False, None, types.decoder(expr, "expr"))],
                result=base.result, implicit=True, async_ok=False, session=True,
                errors=[], n_mandatory=1, kind="get_all_records_where", roles=base.roles)
        return ClassSpec(name=cls["name"], fields=fields, messages=messages,
                         enums={k: tuple(v) for k, v in cls["enums"].items()},
                         events=cls["events"], is_table=is_table)

    @staticmethod
    def _implicit_kind(name: str, fields: dict[str, FieldSpec]) -> tuple[str, str | None]:
        if name in ("get_record", "get_all", "get_all_records", "get_all_records_where",
                    "get_by_uuid", "get_by_name_label", "create", "destroy"):
            return name, None
        for prefix, kind in (("add_to_", "map_add"), ("remove_from_", "map_remove"),
                             ("get_", "get"), ("set_", "set"), ("add_", "set_add"),
                             ("remove_", "set_remove")):
            if name.startswith(prefix) and name[len(prefix):] in fields:
                fld = name[len(prefix):]
                kind_ok = {
                    "map_add": fields[fld].type.kind == "map",
                    "map_remove": fields[fld].type.kind == "map",
                    "set_add": fields[fld].type.kind == "set",
                    "set_remove": fields[fld].type.kind == "set",
                }.get(kind, True)
                if kind_ok:
                    return kind, fld
        raise ValueError(f"cannot classify implicit message {name}")

    def _compile_record(self, spec: ClassSpec) -> None:
        types = self.types
        spec.record_type = types.parse(f"{spec.name} record")
        parts: list[tuple[str, str, Callable[[Any], str]]] = []
        for f in spec.fields.values():
            parts.append((f.name, "<member><name>" + xml_escape(f.name) + "</name>",
                          types.xml_encoder(f.type)))

        def encode_record(rec: dict[str, Any], _parts=parts) -> str:
            return ("<value><struct>"
                    + "".join([p + enc(rec[n]) + "</member>" for n, p, enc in _parts])
                    + "</struct></value>")

        spec.encode_record = encode_record
        types.record_encoders[spec.name] = encode_record
        spec.ctor_fields = [f for f in spec.fields.values() if f.in_constructor]
        decoders = {f.name: types.decoder(f.type, f.name) for f in spec.ctor_fields}
        ctor_fields = spec.ctor_fields

        def decode_record(value: dict[str, Any], _name: str) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for f in ctor_fields:
                if f.name in value:
                    out[f.name] = decoders[f.name](value[f.name])
                elif f.has_default:
                    out[f.name] = fresh(f.default)
                else:
                    # What xapi's generated unmarshaller reports for a missing field.
                    raise ApiError("INTERNAL_ERROR",
                                   f'Server_helpers.Dispatcher_FieldNotFound("{f.name}")')
            return out

        types.record_decoders[spec.name] = decode_record

    # -- lookups -------------------------------------------------------------
    def message(self, wire_name: str) -> MessageSpec | None:
        cls, _, name = wire_name.partition(".")
        spec = self.classes.get(cls)
        if spec is None:
            return None
        return spec.messages.get(name)

    def all_messages(self) -> list[MessageSpec]:
        return [m for c in self.classes.values() for m in c.messages.values()]

    def table_classes(self) -> list[ClassSpec]:
        return [c for c in self.classes.values() if c.is_table]


@lru_cache(maxsize=1)
def load_schema() -> Schema:
    """The schema of the shipped datamodel (cached; it is immutable)."""
    text = resources.files("xhost.sim").joinpath("data/datamodel.json").read_text()
    return Schema(json.loads(text))
