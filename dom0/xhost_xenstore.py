#!/usr/bin/env python3
"""xhost dom0 plugin: the ``vm-data/...`` XenStore keys of running domains.

The host-side ``VM.xenstore_data`` reaches a domain only when it starts;
these functions read and change the live copy under
``/local/domain/<dom_id>/vm-data`` of a running domain (what the guest agent
re-reads on ``resetnetwork``). They run the ``xenstore-*`` commands, as dom0
scripts do, and are also the XenStore helpers of ``xhost_agent``.

Values cross the ``xenstore-*`` commands escaped the way Xen's
``xenstore_client`` escapes them (``\\\\``, ``\\n``, ``\\xNN``...): written
values are escaped here and read values unescaped, so any text round-trips.

Functions (JSON arguments, see ``xhost_dom0lib``):

``read_record(dom_id, path, ignore_missing=False)``
    The value (``null`` when missing and ``ignore_missing``).
``write_record(dom_id, path, value)``
    Set a key (its parents are created).
``list_records(dom_id, path)``
    ``{child: value}`` of the children of a key (``{}`` when missing).
``delete_record(dom_id, path)``
    Remove a key and what is below it (missing: not an error).

Failures: ``XHOST_XENSTORE_BAD_PATH [path, reason]``,
``XHOST_XENSTORE_NO_DOMAIN [dom_id]``, ``XHOST_XENSTORE_MISSING [path]``,
``XHOST_XENSTORE_FAILED [command, message]``.
"""
import re
import subprocess

import xhost_dom0lib
from xhost_dom0lib import Dom0Error

_KEY = re.compile(r"^vm-data(/[A-Za-z0-9_@-]+)*$")
_SIMPLE_ESCAPES = {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r", 0x5C: "\\\\"}


# -- the xenstore-* commands -----------------------------------------------------

def sanitise(data):
    """Escape bytes for a ``xenstore-write`` argument (its inverse is what the
    command applies before writing)."""
    if not isinstance(data, bytes):
        data = data.encode("utf-8")
    out = []
    for byte in bytearray(data):
        if byte in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[byte])
        elif 0x20 <= byte <= 0x7E:
            out.append(chr(byte))
        else:
            out.append("\\x%02x" % byte)
    return "".join(out)


def unsanitise(text):
    """The bytes of a value printed by ``xenstore-read`` (escaped)."""
    raw = text.encode("utf-8", "surrogateescape")
    out = bytearray()
    i = 0
    while i < len(raw):
        byte = raw[i]
        i += 1
        if byte != 0x5C or i >= len(raw):
            out.append(byte)
            continue
        code = chr(raw[i])
        i += 1
        if code in "tnr\\":
            out.append({"t": 0x09, "n": 0x0A, "r": 0x0D, "\\": 0x5C}[code])
        elif code == "x":
            digits = raw[i:i + 2].decode("latin-1")
            if len(digits) == 2 and all(c in "0123456789abcdefABCDEF" for c in digits):
                out.append(int(digits, 16))
                i += 2
            else:
                out.append(ord("x"))
        elif code in "01234567":
            end = i - 1
            while end < len(raw) and end - (i - 1) < 3 and chr(raw[end]) in "01234567":
                end += 1
            out.append(int(raw[i - 1:end].decode("ascii"), 8) & 0xFF)
            i = end
        else:
            out.append(ord(code))
    return bytes(out)


def run(argv):
    """Run a xenstore command: ``(exit status, stdout, stderr)`` as text."""
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
    except OSError as exc:
        raise Dom0Error("XHOST_XENSTORE_FAILED", argv[0], exc.strerror or str(exc))
    out, err = proc.communicate()
    return (proc.returncode, out.decode("utf-8", "surrogateescape"),
            err.decode("utf-8", "replace").strip())


def read_many(paths):
    """Read ``paths`` in one transaction: the values read before the first
    missing one (all of them when they all exist), as bytes."""
    status, out, err = run(["xenstore-read"] + list(paths))
    values = [unsanitise(line) for line in out.split("\n")[:-1]]
    if status != 0 and "couldn't read path" not in err:
        raise Dom0Error("XHOST_XENSTORE_FAILED", "xenstore-read", err or "exit %d" % status)
    return values[:len(paths)]


def read(path):
    """The value at ``path`` (bytes), or None when it does not exist."""
    values = read_many([path])
    return values[0] if values else None


def write(path, value):
    status, _out, err = run(["xenstore-write", path, sanitise(value)])
    if status != 0:
        raise Dom0Error("XHOST_XENSTORE_FAILED", "xenstore-write", err or "exit %d" % status)


def exists(path):
    return run(["xenstore-exists", path])[0] == 0


def listdir(path):
    status, out, _err = run(["xenstore-list", path])
    if status != 0:
        return None
    return [line for line in out.split("\n") if line]


def remove(*paths, **options):
    """Remove ``paths`` (one transaction); True when they are gone (also when
    they never existed). ``tidy=True`` also removes the parents left empty
    (``xenstore-rm -t``)."""
    tidy = ["-t"] if options.get("tidy") else []
    return run(["xenstore-rm"] + tidy + list(paths))[0] == 0


def domain_home(dom_id):
    try:
        dom_id = int(dom_id)
    except (TypeError, ValueError):
        raise Dom0Error("XHOST_DOM0_BAD_ARGS", "dom_id", "not a domain id: %r" % (dom_id,))
    if dom_id <= 0:
        raise Dom0Error("XHOST_DOM0_BAD_ARGS", "dom_id",
                        "%d is not the id of a running guest domain" % dom_id)
    return "/local/domain/%d" % dom_id


def _text(data):
    return data.decode("utf-8", "replace")


# -- the plugin functions ---------------------------------------------------------

def _key(dom_id, path):
    if not isinstance(path, str) or not _KEY.match(path):
        raise Dom0Error("XHOST_XENSTORE_BAD_PATH", path,
                        "give a key under vm-data/ (letters, digits, '-', '_', '@')")
    home = domain_home(dom_id)
    if not exists(home + "/vm"):
        raise Dom0Error("XHOST_XENSTORE_NO_DOMAIN", dom_id)
    return home + "/" + path


def read_record(session, dom_id, path, ignore_missing=False):
    value = read(_key(dom_id, path))
    if value is None:
        if ignore_missing:
            return None
        raise Dom0Error("XHOST_XENSTORE_MISSING", path)
    return _text(value)


def write_record(session, dom_id, path, value):
    if not isinstance(value, str):
        raise Dom0Error("XHOST_DOM0_BAD_ARGS", "value", "must be a string")
    write(_key(dom_id, path), value)
    return True


def list_records(session, dom_id, path):
    full = _key(dom_id, path)
    children = listdir(full)
    if not children:
        return {}
    values = read_many([full + "/" + child for child in children])
    return dict((child, _text(value)) for child, value in zip(children, values))


def delete_record(session, dom_id, path):
    full = _key(dom_id, path)
    if not remove(full) and exists(full):
        raise Dom0Error("XHOST_XENSTORE_FAILED", "xenstore-rm", "could not remove %s" % path)
    return True


if __name__ == "__main__":
    xhost_dom0lib.dispatch({
        "read_record": read_record,
        "write_record": write_record,
        "list_records": list_records,
        "delete_record": delete_record,
    })
