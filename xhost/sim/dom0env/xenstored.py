"""The simulated xenstored's socket: what the dom0 ``xenstore-*`` commands talk to.

``POST /xenstore`` takes ``{"ops": [[op, path, ...], ...], "transaction":
bool}`` and runs the operations as dom0 in order, stopping at the first
error; in a transaction an error also undoes the earlier operations (and no
watch fires).  Values travel as Latin-1 strings (one character per byte).
The answer is ``{"results": [...], "error": null | {"index": i, "code":
"ENOENT", "path": "..."}}``.
"""
from __future__ import annotations

import json
from contextlib import nullcontext
from typing import Any

from ..http_server import Request, Response
from ..xenstore import XenStore, XenStoreError


class _Abort(Exception):
    pass


def _rm_tidy(store: XenStore, path: str) -> None:
    """``xenstore-rm -t``: remove, then remove emptied value-less parents."""
    store.rm(path)
    current = path
    while "/" in current:
        current = current.rsplit("/", 1)[0]
        try:
            if store.read_bytes(current) or store.directory(current):
                return
        except XenStoreError:
            return
        try:
            store.rm(current)
        except XenStoreError as exc:
            # The C client names the parent it failed to remove.
            exc.tidy_parent = current  # type: ignore[attr-defined]
            raise


def _apply(store: XenStore, op: list[Any]) -> Any:
    kind, path = op[0], op[1]
    if kind == "read":
        return store.read_bytes(path).decode("latin-1")
    if kind == "write":
        store.write(path, str(op[2]).encode("latin-1"))
        return None
    if kind == "rm":
        store.rm(path)
        return None
    if kind == "rm_tidy":
        _rm_tidy(store, path)
        return None
    if kind == "directory":
        return store.directory(path)
    if kind == "exists":
        return store.exists(path)
    if kind == "mkdir":
        store.mkdir(path)
        return None
    if kind == "get_perms":
        return store.get_perms(path)
    if kind == "tree":
        return [[p, depth, None if value is None else value.decode("latin-1"), perms]
                for p, depth, value, perms in store.tree(path)]
    raise ValueError(f"unknown xenstore operation {kind!r}")


def make_handler(store: XenStore):
    def handle(req: Request) -> Response:
        try:
            body = json.loads(req.read_body(limit=1 << 20) or b"{}")
            ops = body["ops"]
            if not isinstance(ops, list) or not all(
                    isinstance(o, list) and len(o) >= 2 and isinstance(o[1], str) for o in ops):
                raise ValueError("ops must be a list of [operation, path, ...]")
        except (ValueError, KeyError, TypeError) as exc:
            return Response(400, f"bad xenstore request: {exc}\n".encode())
        transaction = bool(body.get("transaction"))
        results: list[Any] = []
        error: dict[str, Any] | None = None
        try:
            with store.transaction() if transaction else nullcontext():
                for index, op in enumerate(ops):
                    try:
                        results.append(_apply(store, op))
                    except XenStoreError as exc:
                        error = {"index": index, "code": exc.code,
                                 "path": getattr(exc, "tidy_parent", op[1])}
                        if transaction:
                            raise _Abort() from None
                        break
        except _Abort:
            pass
        except ValueError as exc:
            return Response(400, f"bad xenstore request: {exc}\n".encode())
        return Response(200, json.dumps({"results": results, "error": error}).encode(),
                        content_type="application/json")
    return handle
