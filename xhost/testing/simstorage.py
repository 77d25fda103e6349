"""Helpers for tests that move bytes through a simulator's storage.

Plain HTTP (``http.client``) against the data plane, so that tests see
status codes and headers exactly as sent, plus small conveniences for VDI
records, task waits and the simulator's dom0 directories.
"""
from __future__ import annotations

import http.client as httplib
import time
import urllib.parse
from pathlib import Path
from typing import Any

GiB = 1 << 30
MiB = 1 << 20


def vdi_record(sr: str, size: int, name: str = "disk", **extra: Any) -> dict[str, Any]:
    """A complete ``VDI.create`` record."""
    rec = {"name_label": name, "name_description": "", "SR": sr, "virtual_size": str(size),
           "type": "user", "sharable": False, "read_only": False, "other_config": {},
           "xenstore_data": {}, "sm_config": {}, "tags": []}
    rec.update(extra)
    return rec


def sr_path(sim: Any, sr_uuid: str) -> Path:
    """The real directory behind ``/var/run/sr-mount/<sr uuid>``."""
    return sim.storage_runtime.host_path(f"/var/run/sr-mount/{sr_uuid}")


class HttpReply:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


def http(url: str, method: str, path: str, params: dict[str, str] | None = None,
         body: bytes | None = None, headers: dict[str, str] | None = None,
         timeout: float = 60.0) -> HttpReply:
    """One request; a reset connection after the answer still returns it."""
    parts = urllib.parse.urlsplit(url)
    conn = httplib.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    target = path + ("?" + urllib.parse.urlencode(params) if params else "")
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        hdrs = dict(headers or {})
        if body is not None and "Transfer-Encoding" not in hdrs:
            hdrs.setdefault("Content-Length", str(len(body)))
        for key, value in hdrs.items():
            conn.putheader(key, value)
        conn.endheaders()
        if body:
            try:
                conn.send(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the host answered and closed first
        resp = conn.getresponse()
        try:
            data = resp.read()
        except (ConnectionResetError, httplib.IncompleteRead) as exc:
            data = getattr(exc, "partial", b"")
        return HttpReply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
    finally:
        conn.close()


def wait_task(x: Any, task: str, timeout: float = 30.0) -> dict[str, Any]:
    """Poll a task until it is no longer pending; returns its record."""
    deadline = time.monotonic() + timeout
    while True:
        rec = x.task.get_record(task)
        if rec["status"] not in ("pending", "cancelling"):
            return rec
        if time.monotonic() > deadline:
            raise TimeoutError(f"task {task} still {rec['status']} after {timeout}s")
        time.sleep(0.02)


def export(url: str, session: str, vdi: str, fmt: str = "raw", base: str | None = None
           ) -> bytes:
    """The bytes of ``GET /export_raw_vdi`` (asserts a 200)."""
    params = {"session_id": session, "vdi": vdi, "format": fmt}
    if base:
        params["base"] = base
    reply = http(url, "GET", "/export_raw_vdi", params)
    assert reply.status == 200, (reply.status, reply.body[:300])
    return reply.body


def put(url: str, session: str, vdi: str, data: bytes, fmt: str = "raw", **params: str
        ) -> HttpReply:
    """``PUT /import_raw_vdi`` of ``data`` into ``vdi``."""
    query = {"session_id": session, "vdi": vdi, "format": fmt}
    query.update(params)
    return http(url, "PUT", "/import_raw_vdi", query, body=data)
