"""The wire format between xapi and a plugin process, as xapi writes and reads it.

xapi (``xapi_plugins.ml``) marshals the call with its own XML-RPC writer:
string values as bare ``<value>text</value>`` (an empty one as ``<value/>``),
no XML declaration, characters XML cannot carry dropped.  It parses the
plugin's standard output with xmlm, which drops whitespace-only text and reads
one root element (anything after it is ignored), and then:

* ``Status=Success`` with a string ``Value`` -> that string;
* ``Status=Failure`` with ``ErrorDescription [code, params...]`` -> that error;
* an XML-RPC fault -> ``XENAPI_PLUGIN_FAILURE ["fault", code, reason]``;
* text that is not XML -> ``XENAPI_PLUGIN_FAILURE ["failed to parse plugin
  output", output, "<parser message> line <n>"]``;
* XML of another shape (a non-string value, no Status...) -> xapi's
  ``RunTimeTypeError`` escapes as ``INTERNAL_ERROR``.
"""
from __future__ import annotations

from xml.parsers import expat

from ..errors import ApiError

_XmlNode = tuple[str, list["_XmlNode | str"]]


def _escape(text: str) -> str:
    out = []
    for ch in text:
        if ch == "<":
            out.append("&lt;")
        elif ch == ">":
            out.append("&gt;")
        elif ch == "&":
            out.append("&amp;")
        elif ch == '"':
            out.append("&quot;")
        elif ch >= " " or ch in "\t\n\r":
            out.append(ch)
    return "".join(out)


def _string_value(text: str) -> str:
    return f"<value>{_escape(text)}</value>" if text else "<value/>"


def encode_call(fn: str, session: str, args: dict[str, str]) -> str:
    """The ``methodCall`` xapi passes as ``argv[1]``."""
    members = "".join(f"<member><name>{_escape(k)}</name>{_string_value(v)}</member>"
                      for k, v in args.items())
    struct = f"<value><struct>{members}</struct></value>" if members else "<value><struct/></value>"
    return (f"<methodCall><methodName>{_escape(fn)}</methodName><params>"
            f"<param>{_string_value(session)}</param><param>{struct}</param>"
            f"</params></methodCall>")


class _Shape(Exception):
    """The XML is well formed but not the expected XML-RPC (xapi's RunTimeTypeError)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _parse_tree(text: str) -> _XmlNode:
    stack: list[_XmlNode] = []
    root: list[_XmlNode] = []
    texts: list[list[str]] = []

    def flush() -> None:
        if stack and texts[-1]:
            data = "".join(texts[-1])
            texts[-1].clear()
            if data.strip(" \t\n"):
                stack[-1][1].append(data)

    def start(name: str, _attrs: dict[str, str]) -> None:
        flush()
        node: _XmlNode = (name.rsplit(":", 1)[-1], [])
        if stack:
            stack[-1][1].append(node)
        else:
            root.append(node)
        stack.append(node)
        texts.append([])

    def end(_name: str) -> None:
        flush()
        stack.pop()
        texts.pop()

    def chars(data: str) -> None:
        if texts:
            texts[-1].append(data)

    parser = expat.ParserCreate()
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = chars
    try:
        parser.Parse(text.encode("utf-8", "surrogateescape"), True)
    except expat.ExpatError as exc:
        # xmlm reads a single root element and ignores what follows it.
        if not (root and not stack and exc.code == expat.errors.codes[
                expat.errors.XML_ERROR_JUNK_AFTER_DOC_ELEMENT]):
            raise _ParseError(_message(text, exc)) from None
    if not root:
        raise _ParseError("unexpected end of input line 1")
    return root[0]


class _ParseError(Exception):
    pass


def _message(text: str, exc: expat.ExpatError) -> str:
    stripped = text.lstrip(" \t\r\n")
    if not stripped:
        return f"unexpected end of input line {max(1, text.count(chr(10)) + 1)}"
    if not stripped.startswith("<"):
        return f"expected root element line {exc.lineno}"
    if exc.code == expat.errors.codes[expat.errors.XML_ERROR_NO_ELEMENTS]:
        return f"unexpected end of input line {exc.lineno}"
    return f"{expat.errors.messages[exc.code]} line {exc.lineno}"


def _only(node: _XmlNode | str, tags: tuple[str, ...], what: str) -> _XmlNode | str:
    if isinstance(node, str) or node[0] not in tags or len(node[1]) != 1:
        raise _Shape(what)
    return node[1][0]


def _string(value: _XmlNode | str) -> str:
    if isinstance(value, str) or value[0] != "value":
        raise _Shape("value")
    children = value[1]
    if not children:
        return ""
    if len(children) == 1 and isinstance(children[0], str):
        return children[0]
    inner = _only(value, ("value",), "value")
    if isinstance(inner, str) or inner[0] != "string":
        raise _Shape("string")
    if not inner[1]:
        return ""
    if len(inner[1]) != 1 or not isinstance(inner[1][0], str):
        raise _Shape("pcdata")
    return inner[1][0]


def _struct(value: _XmlNode | str) -> list[tuple[str, _XmlNode | str]]:
    inner = _only(value, ("value",), "value")
    if isinstance(inner, str) or inner[0] != "struct":
        raise _Shape("struct")
    members = []
    for member in inner[1]:
        if isinstance(member, str) or member[0] != "member" or len(member[1]) != 2:
            raise _Shape("pair ")
        name, val = member[1]
        if isinstance(name, str) or name[0] != "name":
            raise _Shape("name")
        if name[1] and (len(name[1]) != 1 or not isinstance(name[1][0], str)):
            raise _Shape("From.name: should contain PCData")
        members.append((name[1][0] if name[1] else "", val))
    return members


def _assoc(members: list[tuple[str, _XmlNode | str]], key: str, what: str) -> _XmlNode | str:
    for name, val in members:
        if name == key:
            return val
    raise _Shape(what)


def _array(value: _XmlNode | str) -> list[_XmlNode | str]:
    inner = _only(value, ("value",), "value")
    if isinstance(inner, str) or inner[0] != "array":
        raise _Shape("array")
    data = _only(inner, ("array",), "array")
    if isinstance(data, str) or data[0] != "data":
        raise _Shape("data")
    return list(data[1])


def _int(value: _XmlNode | str) -> str:
    inner = _only(value, ("value",), "value")
    if isinstance(inner, str) or inner[0] not in ("i4", "int") or len(inner[1]) != 1 \
            or not isinstance(inner[1][0], str):
        raise _Shape("int")
    text = inner[1][0].strip()
    try:
        number = int(text, 0) if text.lower().startswith(("0x", "0o", "0b")) else int(text)
    except ValueError:
        raise ApiError("INTERNAL_ERROR", "Failure(\"Int32.of_string\")") from None
    if not -(2 ** 31) <= number < 2 ** 31:
        raise ApiError("INTERNAL_ERROR", "Failure(\"Int32.of_string\")")
    return str(number)


def parse_response(output: str, stderr: str) -> str:
    """What xapi makes of a plugin's standard output (see the module doc)."""
    try:
        tree = _parse_tree(output)
    except _ParseError as exc:
        raise ApiError("XENAPI_PLUGIN_FAILURE", "failed to parse plugin output", output,
                       str(exc)) from None
    try:
        if tree[0] != "methodResponse" or len(tree[1]) != 1:
            raise _Shape("response" if tree[0] == "methodResponse" else "unbox")
        body = tree[1][0]
        if isinstance(body, str):
            raise _Shape("response")
        if body[0] == "fault":
            fault = _struct(_only(body, ("fault",), "fault"))
            code = _int(_assoc(fault, "faultCode", "fault"))
            reason = _string(_assoc(fault, "faultString", "fault"))
            raise ApiError("XENAPI_PLUGIN_FAILURE", "fault", code, reason)
        if body[0] != "params":
            raise _Shape("response")
        if len(body[1]) != 1:
            raise _Shape("Expected single return value (struct status)")
        status = _struct(_only(body[1][0], ("param",), "param"))
        state = _string(_assoc(status, "Status", "Status"))
        if state == "Success":
            return _string(_assoc(status, "Value", "Status"))
        if state == "Failure":
            items = _array(_assoc(status, "ErrorDescription", "Status"))
            if not items:
                raise _Shape("Empty array of error strings")
            strings = [_string(item) for item in items]
            raise ApiError(strings[0], *strings[1:])
        raise _Shape("Status")
    except _Shape as exc:
        raise ApiError("INTERNAL_ERROR",
                       f'XMLRPC.RunTimeTypeError("{exc.name}", _)') from None
