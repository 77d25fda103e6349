"""XAPI's query language for ``get_all_records_where``.

Grammar (xapi's ``db_filter``)::

    expr  := value "=" value | expr "and" expr | expr "or" expr | "not" expr
           | "true" | "false" | "(" expr ")"
    value := '"literal"' | 'field "name"'

``and``/``or`` share one precedence level and associate to the left; ``not``
binds tighter.  Field names use the database's column names, where a
namespaced field is written with ``__`` (``name__label``); the plain API name
(``name_label``) is accepted too.  Values compare as the strings xapi's
database stores (``true``/``false`` for bools, decimal ints, enum names).
A malformed expression fails with ``INVALID_VALUE [expr, reason]``.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .errors import ApiError

_TOKEN = re.compile(r'\s*(?:(=)|(\()|(\))|"([^"]*)"|([A-Za-z_]+))')

Predicate = Callable[[Callable[[str], str]], bool]


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            m = _TOKEN.match(text, pos)
            if not m:
                raise self.error()
            pos = m.end()
            if m.group(1):
                self.tokens.append(("=", "="))
            elif m.group(2):
                self.tokens.append(("(", "("))
            elif m.group(3):
                self.tokens.append((")", ")"))
            elif m.group(4) is not None:
                self.tokens.append(("str", m.group(4)))
            else:
                word = m.group(5)
                if word not in ("true", "false", "field", "and", "or", "not"):
                    raise self.error()
                self.tokens.append((word, word))
        self.pos = 0

    def error(self) -> ApiError:
        return ApiError("INVALID_VALUE", self.text, "Parsing.Parse_error")

    def peek(self) -> str | None:
        return self.tokens[self.pos][0] if self.pos < len(self.tokens) else None

    def take(self, kind: str) -> str:
        if self.peek() != kind:
            raise self.error()
        value = self.tokens[self.pos][1]
        self.pos += 1
        return value

    def parse(self) -> Any:
        expr = self.expr()
        if self.pos != len(self.tokens):
            raise self.error()
        return expr

    def expr(self) -> Any:
        left = self.unary()
        while self.peek() in ("and", "or"):
            op = self.take(self.peek())  # type: ignore[arg-type]
            right = self.unary()
            left = (op, left, right)
        return left

    def unary(self) -> Any:
        kind = self.peek()
        if kind == "not":
            self.take("not")
            return ("not", self.unary())
        if kind == "true":
            self.take("true")
            return ("const", True)
        if kind == "false":
            self.take("false")
            return ("const", False)
        if kind == "(":
            self.take("(")
            inner = self.expr()
            self.take(")")
            return inner
        left = self.value()
        self.take("=")
        right = self.value()
        return ("eq", left, right)

    def value(self) -> Any:
        if self.peek() == "field":
            self.take("field")
            return ("field", self.take("str"))
        return ("lit", self.take("str"))


def compile_query(text: str, known_fields: set[str]) -> Predicate:
    """A predicate over ``lookup(field_name) -> db string`` for ``text``."""
    tree = _Parser(text).parse()

    def resolve(name: str) -> str:
        if name in known_fields:
            return name
        alt = name.replace("__", "_")
        if alt in known_fields:
            return alt
        raise ApiError("INVALID_VALUE", text, f"unknown field {name!r}")

    def build(node: Any) -> Callable[[Callable[[str], str]], Any]:
        op = node[0]
        if op == "const":
            value = node[1]
            return lambda lookup: value
        if op == "not":
            inner = build(node[1])
            return lambda lookup: not inner(lookup)
        if op in ("and", "or"):
            a, b = build(node[1]), build(node[2])
            if op == "and":
                return lambda lookup: a(lookup) and b(lookup)
            return lambda lookup: a(lookup) or b(lookup)
        if op == "eq":
            return _eq(node[1], node[2])
        raise ApiError("INVALID_VALUE", text, "Parsing.Parse_error")

    def _eq(left: Any, right: Any) -> Callable[[Callable[[str], str]], bool]:
        def side(v: Any) -> Callable[[Callable[[str], str]], str]:
            if v[0] == "field":
                name = resolve(v[1])
                return lambda lookup: lookup(name)
            lit = v[1]
            return lambda lookup: lit
        ls, rs = side(left), side(right)
        return lambda lookup: ls(lookup) == rs(lookup)

    return build(tree)
