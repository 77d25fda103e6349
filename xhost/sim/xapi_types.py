"""The XenAPI type system: parsing datamodel type strings, checking inbound
values and encoding outbound values.

Values live inside the simulator in one canonical form, chosen so that
JSON-RPC can serialise them without any conversion:

=============  =========================================================
API type       internal value
=============  =========================================================
string, uuid   ``str``
int            ``int`` (XML-RPC carries it as a decimal string)
float          ``float``
bool           ``bool``
datetime       ``str`` in XAPI's ``19700101T00:00:00Z`` form
``t ref``      ``str`` (``OpaqueRef:<uuid>`` or ``OpaqueRef:NULL``)
enum           ``str`` (one of the declared values, case-sensitive)
``t set``      ``list``
``(k->v) map`` ``dict`` with ``str`` keys (int keys are stringified)
record         ``dict`` field name -> value
=============  =========================================================

Each :class:`XType` compiles, once, a *decoder* (wire value -> internal, with
XAPI's errors) and an *XML encoder* (internal -> ``<value>`` text).  Both are
plain closures so the per-call cost is a couple of Python calls per value.
"""
from __future__ import annotations

import datetime as _dt
import re
import xmlrpc.client
from collections.abc import Callable
from typing import Any

from .errors import NULL_REF, ApiError

EPOCH = "19700101T00:00:00Z"

Decoder = Callable[[Any], Any]
Encoder = Callable[[Any], str]

_INT_RE = re.compile(r"^-?[0-9]+$")


def xml_escape(text: str) -> str:
    """Escape text for an XML character-data context."""
    if "&" in text:
        text = text.replace("&", "&amp;")
    if "<" in text:
        text = text.replace("<", "&lt;")
    if ">" in text:
        text = text.replace(">", "&gt;")
    return text


def now_datetime() -> str:
    """The current UTC time as a XAPI datetime string."""
    return _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H:%M:%SZ")


_DT_FORMATS = ("%Y%m%dT%H:%M:%SZ", "%Y%m%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%SZ",
               "%Y-%m-%dT%H:%M:%S", "%Y%m%dT%H%M%SZ", "%Y-%m-%dT%H:%M:%S.%fZ")


def parse_datetime(value: Any) -> str | None:
    """Normalise a wire datetime (XML-RPC ``DateTime`` or string) or None."""
    if isinstance(value, xmlrpc.client.DateTime):
        value = value.value
    if isinstance(value, _dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(_dt.UTC)
        return value.strftime("%Y%m%dT%H:%M:%SZ")
    if not isinstance(value, str):
        return None
    for fmt in _DT_FORMATS:
        try:
            parsed = _dt.datetime.strptime(value, fmt)
        except ValueError:
            continue
        return parsed.strftime("%Y%m%dT%H:%M:%SZ")
    return None


def datetime_to_epoch(value: str) -> float:
    parsed = _dt.datetime.strptime(value, "%Y%m%dT%H:%M:%SZ")
    return parsed.replace(tzinfo=_dt.UTC).timestamp()


class XType:
    """A parsed datamodel type.  ``kind`` is one of: string, int, float,
    bool, datetime, ref, enum, set, map, record, any_record, event_batch,
    void, option."""

    __slots__ = ("text", "kind", "of", "key", "value", "values", "_enc", "_dec")

    def __init__(self, text: str, kind: str, *, of: str | XType | None = None,
                 key: XType | None = None, value: XType | None = None,
                 values: tuple[str, ...] = ()) -> None:
        self.text = text
        self.kind = kind
        self.of = of          # class name for ref/record, element type for set/option
        self.key = key
        self.value = value
        self.values = values  # enum values
        self._enc: Encoder | None = None
        self._dec: dict[str, Decoder] = {}

    def __repr__(self) -> str:
        return f"XType({self.text!r})"

    # -- defaults ---------------------------------------------------------
    def zero(self) -> Any:
        """The value XAPI gives a field of this type that nobody has set."""
        kind = self.kind
        if kind in ("string",):
            return ""
        if kind == "int":
            return 0
        if kind == "float":
            return 0.0
        if kind == "bool":
            return False
        if kind == "datetime":
            return EPOCH
        if kind == "ref":
            return NULL_REF
        if kind == "enum":
            return self.values[0] if self.values else ""
        if kind == "set":
            return []
        if kind in ("map", "record", "any_record"):
            return {}
        if kind == "option":
            return self.of.zero()  # type: ignore[union-attr]
        return ""


class TypeRegistry:
    """Parses type strings against the known enums and record encoders."""

    def __init__(self, enums: dict[str, tuple[str, ...]]) -> None:
        self.enums = enums
        self._cache: dict[str, XType] = {}
        #: class name -> compiled record encoder, filled in by the schema
        self.record_encoders: dict[str, Encoder] = {}
        self.record_decoders: dict[str, Callable[[Any, str], dict]] = {}
        #: set by the event system
        self.event_batch_encoder: Encoder = xml_any

    def parse(self, text: str) -> XType:
        text = text.strip()
        cached = self._cache.get(text)
        if cached is not None:
            return cached
        ty = self._parse(text)
        self._cache[text] = ty
        return ty

    def _parse(self, text: str) -> XType:
        if text in ("string", "int", "float", "bool", "datetime"):
            return XType(text, text)
        if text == "void":
            return XType(text, "void")
        if text == "an event batch":
            return XType(text, "event_batch")
        if text == "<class> record":
            return XType(text, "any_record")
        if text.startswith("(") and text.endswith(") map"):
            inner = text[1:-len(") map")]
            depth = 0
            for i in range(len(inner) - 3):
                ch = inner[i]
                if ch == "(":
                    depth += 1
                elif ch == ")":
                    depth -= 1
                elif depth == 0 and inner[i:i + 4] == " -> ":
                    return XType(text, "map", key=self.parse(inner[:i]),
                                 value=self.parse(inner[i + 4:]))
            raise ValueError(f"bad map type {text!r}")
        if text.endswith(" set"):
            return XType(text, "set", of=self.parse(text[:-4]))
        if text.endswith(" option"):
            return XType(text, "option", of=self.parse(text[:-7]))
        if text.startswith("enum "):
            name = text[5:]
            return XType(text, "enum", of=name, values=tuple(self.enums.get(name, ())))
        if text.endswith(" ref"):
            return XType(text, "ref", of=text[:-4])
        if text.endswith(" record"):
            return XType(text, "record", of=text[:-7])
        raise ValueError(f"unknown type {text!r}")

    # -- XML encoding -----------------------------------------------------
    def xml_encoder(self, ty: XType) -> Encoder:
        enc = ty._enc
        if enc is None:
            enc = self._make_encoder(ty)
            ty._enc = enc
        return enc

    def _make_encoder(self, ty: XType) -> Encoder:
        kind = ty.kind
        if kind in ("string", "ref", "enum"):
            def enc_str(v: Any) -> str:
                return "<value>" + xml_escape(v) + "</value>"
            return enc_str
        if kind == "int":
            def enc_int(v: Any) -> str:
                return "<value>" + str(int(v)) + "</value>"
            return enc_int
        if kind == "float":
            def enc_float(v: Any) -> str:
                return "<value><double>" + repr(float(v)) + "</double></value>"
            return enc_float
        if kind == "bool":
            def enc_bool(v: Any) -> str:
                return "<value><boolean>1</boolean></value>" if v else \
                    "<value><boolean>0</boolean></value>"
            return enc_bool
        if kind == "datetime":
            def enc_dt(v: Any) -> str:
                return "<value><dateTime.iso8601>" + v + "</dateTime.iso8601></value>"
            return enc_dt
        if kind == "void":
            return lambda v: "<value></value>"
        if kind == "set":
            elem = ty.of
            assert isinstance(elem, XType)
            if elem.kind in ("string", "ref", "enum"):
                def enc_str_set(v: Any) -> str:
                    if not v:
                        return "<value><array><data></data></array></value>"
                    return ("<value><array><data><value>"
                            + "</value><value>".join(map(xml_escape, v))
                            + "</value></data></array></value>")
                return enc_str_set
            elem_enc = self.xml_encoder(elem)

            def enc_set(v: Any) -> str:
                return ("<value><array><data>" + "".join(map(elem_enc, v))
                        + "</data></array></value>")
            return enc_set
        if kind == "map":
            assert ty.value is not None
            val = ty.value
            if val.kind in ("string", "ref", "enum"):
                def enc_str_map(v: Any) -> str:
                    return ("<value><struct>" + "".join(
                        ["<member><name>" + xml_escape(str(k)) + "</name><value>"
                         + xml_escape(x) + "</value></member>" for k, x in v.items()])
                        + "</struct></value>")
                return enc_str_map
            val_enc_ref: list[Encoder] = []

            def enc_map(v: Any) -> str:
                if not val_enc_ref:
                    val_enc_ref.append(self.xml_encoder(val))
                venc = val_enc_ref[0]
                return ("<value><struct>" + "".join(
                    ["<member><name>" + xml_escape(str(k)) + "</name>" + venc(x)
                     + "</member>" for k, x in v.items()]) + "</struct></value>")
            return enc_map
        if kind == "record":
            cls = ty.of

            def enc_record(v: Any) -> str:
                return self.record_encoders[cls](v)  # type: ignore[index]
            return enc_record
        if kind == "option":
            assert isinstance(ty.of, XType)
            return self.xml_encoder(ty.of)
        if kind == "event_batch":
            return lambda v: self.event_batch_encoder(v)
        if kind == "any_record":
            return xml_any
        raise ValueError(f"no encoder for {ty.text}")

    # -- decoding inbound values -------------------------------------------
    def decoder(self, ty: XType, name: str) -> Decoder:
        """A function checking a wire value against ``ty``; ``name`` is the
        parameter or field named in FIELD_TYPE_ERROR / INVALID_VALUE."""
        dec = ty._dec.get(name)
        if dec is None:
            dec = self._make_decoder(ty, name)
            ty._dec[name] = dec
        return dec

    def _make_decoder(self, ty: XType, name: str) -> Decoder:
        kind = ty.kind

        def type_error() -> ApiError:
            return ApiError("FIELD_TYPE_ERROR", name)

        if kind == "string":
            def dec_string(v: Any) -> Any:
                if isinstance(v, str):
                    return v
                raise type_error()
            return dec_string
        if kind == "ref":
            def dec_ref(v: Any) -> Any:
                if isinstance(v, str):
                    # Old clients send "" for a null reference.
                    return v if v else NULL_REF
                raise type_error()
            return dec_ref
        if kind == "int":
            def dec_int(v: Any) -> Any:
                if isinstance(v, bool):
                    raise type_error()
                if isinstance(v, int):
                    return v
                if isinstance(v, str) and _INT_RE.match(v):
                    return int(v)
                if isinstance(v, float) and v.is_integer():
                    return int(v)
                raise type_error()
            return dec_int
        if kind == "float":
            def dec_float(v: Any) -> Any:
                if isinstance(v, bool):
                    raise type_error()
                if isinstance(v, (int, float)):
                    return float(v)
                if isinstance(v, str):
                    try:
                        return float(v)
                    except ValueError:
                        pass
                raise type_error()
            return dec_float
        if kind == "bool":
            def dec_bool(v: Any) -> Any:
                if isinstance(v, bool):
                    return v
                if isinstance(v, str) and v.lower() in ("true", "false"):
                    return v.lower() == "true"
                raise type_error()
            return dec_bool
        if kind == "datetime":
            def dec_datetime(v: Any) -> Any:
                parsed = parse_datetime(v)
                if parsed is None:
                    raise type_error()
                return parsed
            return dec_datetime
        if kind == "enum":
            values = frozenset(ty.values)

            def dec_enum(v: Any) -> Any:
                if not isinstance(v, str):
                    raise type_error()
                if v not in values:
                    raise ApiError("INVALID_VALUE", name, v)
                return v
            return dec_enum
        if kind == "set":
            assert isinstance(ty.of, XType)
            elem = self.decoder(ty.of, name)

            def dec_set(v: Any) -> Any:
                if not isinstance(v, (list, tuple)):
                    raise type_error()
                return [elem(x) for x in v]
            return dec_set
        if kind == "map":
            assert ty.key is not None and ty.value is not None
            kdec = self.decoder(ty.key, name)
            vdec = self.decoder(ty.value, name)
            key_kind = ty.key.kind

            def dec_map(v: Any) -> Any:
                if not isinstance(v, dict):
                    raise type_error()
                out = {}
                for k, x in v.items():
                    if key_kind == "int":
                        k = str(kdec(k))
                    else:
                        k = kdec(k if isinstance(k, str) else str(k))
                    out[k] = vdec(x)
                return out
            return dec_map
        if kind == "record":
            cls = ty.of

            def dec_record(v: Any) -> Any:
                if not isinstance(v, dict):
                    raise type_error()
                return self.record_decoders[cls](v, name)  # type: ignore[index]
            return dec_record
        if kind == "option":
            assert isinstance(ty.of, XType)
            return self.decoder(ty.of, name)
        return lambda v: v

    # -- query language support ------------------------------------------
    def db_string(self, ty: XType, value: Any) -> str:
        """The string form xapi's database stores, used by get_all_records_where."""
        kind = ty.kind
        if kind == "bool":
            return "true" if value else "false"
        if kind == "float":
            return repr(float(value))
        if kind == "set":
            assert isinstance(ty.of, XType)
            return "(" + " ".join("'" + self.db_string(ty.of, x) + "'" for x in value) + ")"
        if kind == "map":
            assert ty.value is not None
            return "(" + " ".join(
                "('" + str(k) + "' '" + self.db_string(ty.value, x) + "')"
                for k, x in value.items()) + ")"
        return str(value)


def xml_any(value: Any) -> str:
    """Encode a Python value by its runtime type (for untyped results)."""
    if isinstance(value, str):
        return "<value>" + xml_escape(value) + "</value>"
    if isinstance(value, bool):
        return "<value><boolean>" + ("1" if value else "0") + "</boolean></value>"
    if isinstance(value, Int32):
        return "<value><i4>" + str(int(value)) + "</i4></value>"
    if isinstance(value, int):
        return "<value>" + str(value) + "</value>"
    if isinstance(value, float):
        return "<value><double>" + repr(value) + "</double></value>"
    if isinstance(value, dict):
        return "<value><struct>" + "".join(
            "<member><name>" + xml_escape(str(k)) + "</name>" + xml_any(v) + "</member>"
            for k, v in value.items()) + "</struct></value>"
    if isinstance(value, (list, tuple)):
        return "<value><array><data>" + "".join(map(xml_any, value)) + "</data></array></value>"
    if value is None:
        return "<value></value>"
    raise TypeError(f"cannot encode {type(value).__name__}")


class Int32(int):
    """An int that XML-RPC must send as ``<i4>`` (event.from valid_ref_counts)."""
