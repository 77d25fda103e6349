"""Rendering XAPI calls for logs without leaking secrets.

Session references are bearer tokens, passwords are passwords, and
``host.call_plugin`` arguments may carry guest secrets: none of them are
ever rendered. Everything else is shortened to keep debug logs readable.
"""
from __future__ import annotations

import re
from typing import Any

SECRET = "<secret>"
SESSION = "<session>"
MAX_STR = 120

#: Methods whose arguments are never logged, only counted.
OPAQUE_ARG_METHODS = re.compile(
    r"(^session\.(login|slave_local)|password|^secret\.|^host\.call_plugin$|^VM\.call_plugin$"
    r"|^host\.call_extension$|^pool\.join|^pool\.enable_external_auth|^host\.enable_external_auth)",
    re.IGNORECASE,
)
_SECRET_KEYS = re.compile(r"(pass|secret|token|key|session_id|auth)", re.IGNORECASE)


def _value(value: Any, depth: int = 0) -> str:
    if isinstance(value, str):
        if value.startswith("OpaqueRef:") and len(value) > 24:
            return value[:18] + "…"
        return repr(value if len(value) <= MAX_STR else value[:MAX_STR] + "…")
    if isinstance(value, dict):
        if depth > 1:
            return "{…}"
        items = []
        for key, item in list(value.items())[:12]:
            shown = SECRET if _SECRET_KEYS.search(str(key)) else _value(item, depth + 1)
            items.append(f"{key!r}: {shown}")
        return "{" + ", ".join(items) + (", …" if len(value) > 12 else "") + "}"
    if isinstance(value, (list, tuple)):
        if depth > 1:
            return "[…]"
        shown = [_value(v, depth + 1) for v in list(value)[:8]]
        return "[" + ", ".join(shown) + (", …" if len(value) > 8 else "") + "]"
    return repr(value)


def call(method: str, args: tuple[Any, ...]) -> str:
    """``method(args)`` for a log line; ``args`` excludes the session ref."""
    if OPAQUE_ARG_METHODS.search(method):
        if method == "host.call_plugin" and len(args) >= 3:
            return f"{method}({_value(args[0])}, {args[1]!r}, {args[2]!r}, {SECRET})"
        return f"{method}({SECRET})"
    return f"{method}(" + ", ".join(_value(a) for a in args) + ")"


def result(method: str, value: Any) -> str:
    if method.startswith("session.") or OPAQUE_ARG_METHODS.search(method):
        return SECRET
    return _value(value)


def url(text: str) -> str:
    """A URL with its ``session_id`` (and any userinfo) hidden."""
    text = re.sub(r"(session_id=)[^&\s]+", r"\1" + SESSION, text)
    return re.sub(r"(//)[^/@\s]+@", r"\1" + SECRET + "@", text)
