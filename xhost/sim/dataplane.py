"""The HTTP data plane of every simulated host: ``/import_raw_vdi`` and
``/export_raw_vdi``, as xapi serves them.

``PUT /import_raw_vdi?session_id=&task_id=&vdi=&format=raw|vhd[&chunked]``
    Writes the body into an existing VDI (``vdi`` = reference or uuid).
    Without ``vdi``, a raw body with a Content-Length and ``sr_id`` (or
    ``sr_uuid``) creates "Imported VDI" of that size first.  ``format=vhd``
    takes a dynamic (or, with a Content-Length, fixed) VHD stream and writes
    the sectors it carries -- a differential VHD applied over a disk holding
    its base restores the newer disk.  ``chunked`` (raw only) is xapi's
    sparse encoding: a sequence of [offset: u64 LE][length: u32 LE][data]
    ending with a zero-length chunk.  The task's result is the VDI.
``GET /export_raw_vdi?session_id=&task_id=&vdi=&format=raw|vhd[&base=]``
    Streams the disk: raw bytes of the whole virtual size, or one dynamic VHD
    of the flattened chain; ``base`` (reference or uuid) limits it to the
    blocks that differ from that VDI (raw: zeros elsewhere).  No
    Content-Length: the body ends when the connection closes, as in xapi.

Authentication: ``session_id`` (query or cookie) or HTTP basic auth; a
missing or invalid one gets ``401`` with ``WWW-Authenticate``; roles below
vm-admin get ``403``.  Progress and the outcome go into the task given as
``task_id`` (or one made for the request); the answer carries a
``task-id`` header.  Like xapi, the handler answers ``200`` *before* moving
any byte, so failures during the transfer (``VDI_IN_USE`` for a disk
attached to a running VM, ``VDI_READONLY``, ``VDI_TOO_SMALL``,
``SR_FULL``, a broken VHD stream) only show in the task, and the connection
is closed.  Failures found earlier answer ``400`` (import: bad VDI/SR,
missing information, ``VDI_MISSING``, SR not plugged), ``404`` (unknown
format, HTTP chunked transfer encoding, chunked VHD) or ``500`` (export: bad
VDI, SR not plugged), failing the task too.  A host that cannot see the
VDI's SR answers ``302`` to one that can.  Cancelling the task stops the
transfer.
"""
from __future__ import annotations

import base64
import binascii
import logging
import socket
import struct
import threading
from collections.abc import Callable
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from xhost.dom0 import xhost_vhd

from .disk_content import BLOCK, block_flags, ranges_of, read_padded
from .dispatch import CallContext
from .errors import NULL_REF, ApiError
from .http_server import STREAMED, Request, Response, send_response
from .sr_content import ContentDriver
from .wire import error_page

if TYPE_CHECKING:
    from .http_server import HttpServer
    from .simulator import SimHost, Simulator

LOG = logging.getLogger(__name__)

CONTENT_TYPES = {"raw": "application/octet-stream", "vhd": "application/vhd"}
#: Roles with the http/put_import_raw_vdi and http/get_export_raw_vdi permissions.
ROLES = ("pool-admin", "pool-operator", "vm-power-admin", "vm-admin")
READ_CHUNK = BLOCK
#: Seconds a transfer may stall before the connection is dropped.
IO_TIMEOUT = 600.0
MAX_VHD = xhost_vhd.MAX_VIRTUAL_SIZE
#: An early answer (302, 4xx) drains at most this much of an unread body...
DRAIN_LIMIT = 1 << 30
#: ... for at most this long between two pieces.
DRAIN_SECONDS = 10.0
_CHUNK_HEADER = struct.Struct("<QI")


def install(host: SimHost, server: HttpServer | None = None) -> None:
    """Register the data-plane handlers of ``host`` (on ``server`` if given)."""
    server = server or host.server
    server.route("PUT", "/import_raw_vdi", lambda req: Import(host, req).run())
    server.route("GET", "/export_raw_vdi", lambda req: Export(host, req).run())


class Reply(Exception):
    """Stop handling and answer ``status`` (the task, if any, failed with ``error``)."""

    def __init__(self, status: int, error: ApiError | None = None, body: bytes = b"",
                 headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.error = error
        self.body = body
        self.headers = headers or []


def _cookies(req: Request) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in req.headers.get("cookie", "").split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name:
            out.setdefault(name, value)
    return out


class Transfer:
    """What import and export share: parameters, credentials, task, errors."""

    label = ""
    http_action = ""

    def __init__(self, host: SimHost, req: Request) -> None:
        self.host = host
        self.sim: Simulator = host.sim
        self.req = req
        self.params = dict(_cookies(req))
        self.params.update(req.query)  # the query wins over cookies
        self.session: str | None = None
        self.temp_session = False
        self.task: str | None = None
        self.own_task = False
        self.cancelled = threading.Event()
        self.ctx = CallContext(self.sim, host, None, self.label)

    # -- framework ------------------------------------------------------------------
    def run(self) -> Any:
        try:
            self._authenticate()
            self._open_task()
            return self.handle()
        except Reply as reply:
            if reply.error is not None:
                self._fail(reply.error)
            resp = Response(reply.status, reply.body, headers=reply.headers, close=True,
                            content_type="text/html" if reply.body.startswith(b"<html")
                            else "text/plain")
            if self.req.body_done:
                return resp
            self._answer_then_drain(resp)
            return STREAMED
        finally:
            self._finish()

    def _answer_then_drain(self, resp: Response) -> None:
        """Answer a request whose body was not read, then read (and drop) up to
        DRAIN_LIMIT bytes of it: closing with unread data would reset the
        connection and destroy the answer before the client reads it."""
        sock = self.req.sock
        self.req.headers["connection"] = "close"
        try:
            send_response(sock, resp, keep_alive=False)
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(DRAIN_SECONDS)
            left = DRAIN_LIMIT
            while left > 0:
                piece = self.req.rfile.read1(min(left, READ_CHUNK)) \
                    if hasattr(self.req.rfile, "read1") else self.req.rfile.read(READ_CHUNK)
                if not piece:
                    break
                left -= len(piece)
        except OSError:
            pass

    def handle(self) -> Any:
        raise NotImplementedError

    def _authenticate(self) -> None:
        sim = self.sim
        session = self.params.get("session_id")
        auth = self.req.headers.get("authorization", "")
        if session:
            try:
                sim.sessions.check(session)
            except ApiError:
                raise self._unauthorised() from None
        elif auth.lower().startswith("basic "):
            try:
                user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                raise self._unauthorised() from None
            try:
                session = sim.sessions.login(user, password, "", self.host.host_ref)
            except ApiError:
                raise self._unauthorised() from None
            self.temp_session = True
        else:
            raise self._unauthorised()
        self.session = session
        self.ctx.session = session
        role = sim.sessions.role(session)
        if role not in ROLES:
            raise Reply(403, body=f"RBAC_PERMISSION_DENIED: {self.http_action} needs one of "
                                  f"the roles {', '.join(ROLES)}; the session has "
                                  f"{role}\n".encode())

    @staticmethod
    def _unauthorised() -> Reply:
        return Reply(401, body=b"Authentication required: pass session_id (query or cookie) "
                               b"or HTTP basic auth\n",
                     headers=[("WWW-Authenticate", 'Basic realm="xapi"')])

    def _open_task(self) -> None:
        task = self.params.get("task_id")
        tasks = self.sim.tasks
        if task:
            if not self.sim.db.exists("task", task):
                raise Reply(400, body=f"HANDLE_INVALID: task {task} does not exist; "
                                      f"create one with task.create\n".encode())
            self.task = task
        else:
            self.task = tasks.create(self.label, host=self.host.host_ref, cancellable=True)
            self.own_task = True
        self.ctx.task = self.task
        state = tasks.state(self.task)
        state.on_cancel.append(self.cancelled.set)
        tasks.set_cancellable(self.task, True)

    def check(self) -> None:
        if self.cancelled.is_set():
            raise ApiError("TASK_CANCELLED", self.task)

    def progress(self, value: float) -> None:
        if self.task is not None:
            self.sim.tasks.progress(self.task, value)

    def _fail(self, error: ApiError) -> None:
        if self.task is None:
            return
        rec = self.sim.db.find("task", self.task)
        if rec is not None and rec["status"] in ("pending", "cancelling"):
            self.sim.tasks.fail(self.task, error)

    def _complete(self, result_xml: str) -> None:
        rec = self.sim.db.find("task", self.task)
        if rec is not None and rec["status"] in ("pending", "cancelling"):
            self.sim.tasks.complete(self.task, result_xml)

    def _finish(self) -> None:
        if self.task is not None:
            state = self.sim.tasks.states.get(self.task)
            if state is not None and self.cancelled.set in state.on_cancel:
                state.on_cancel.remove(self.cancelled.set)
            if self.own_task:
                try:
                    self.sim.tasks.destroy_now(self.task)
                except ApiError:
                    pass
        if self.temp_session and self.session is not None:
            self.sim.sessions.destroy(self.session)

    # -- lookups ---------------------------------------------------------------------
    def _vdi(self, name: str) -> str | None:
        value = self.params.get(name)
        if value is None:
            return None
        db = self.sim.db
        if db.exists("VDI", value):
            return value
        return db.by_uuid("VDI", value)

    def _sr(self) -> str | None:
        db = self.sim.db
        if "sr_id" in self.params:
            sr = self.params["sr_id"]
            db.get("SR", sr)
            return sr
        if "sr_uuid" in self.params:
            return db.by_uuid("SR", self.params["sr_uuid"])
        return None

    def _redirect_if_remote(self, sr: str, status: int) -> None:
        """xapi answers 302 when another host has better access to the SR
        (and fails with ``status`` when no host has it plugged)."""
        db = self.sim.db
        hosts = [db.get("PBD", p)["host"] for p in db.get("SR", sr)["PBDs"]
                 if db.exists("PBD", p) and db.get("PBD", p)["currently_attached"]]
        if not hosts:
            raise Reply(status, ApiError("SR_NO_PBDS", sr),
                        body=f"SR_NO_PBDS: SR {sr} is not plugged on any host; "
                             f"PBD.plug it first\n".encode())
        if self.host.host_ref in hosts:
            return
        for other in self.sim.hosts:
            if other.host_ref in hosts:
                location = f"{other.url}{self.req.path}?{urlencode(self.req.query)}"
                raise Reply(302, headers=[("Location", location)])

    def _format(self) -> str:
        fmt = self.params.get("format", "raw").lower()
        if fmt not in CONTENT_TYPES:
            raise Reply(404, ApiError("INTERNAL_ERROR", f"Unknown format {fmt}"),
                        body=f"Unknown format {fmt}; use raw or vhd\n".encode())
        return fmt

    def _driver(self, vdi: str) -> ContentDriver:
        rec = self.sim.db.get("VDI", vdi)
        driver = self.sim.storage.for_sr(rec["SR"])
        if not isinstance(driver, ContentDriver):
            raise ApiError("SR_OPERATION_NOT_SUPPORTED", rec["SR"])
        return driver

    def send_head(self, extra: list[tuple[str, str]]) -> None:
        """The 200 answer, sent before any byte moves (xapi's order)."""
        lines = ["HTTP/1.1 200 OK", "Connection: close", f"task-id: {self.task}"]
        lines += [f"{k}: {v}" for k, v in extra]
        self.req.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        self.req.headers["connection"] = "close"
        self.req.sock.settimeout(IO_TIMEOUT)


class BodyReader:
    """The request body as a file object: Content-Length bounded or to EOF."""

    def __init__(self, req: Request, check: Callable[[], None],
                 progress: Callable[[float], None]) -> None:
        self.req = req
        self.remaining = req.content_length
        self.total = req.content_length
        self.done = 0
        self.check = check
        self._progress = progress

    def read(self, count: int = -1) -> bytes:
        self.check()
        if self.remaining is not None:
            if self.remaining <= 0:
                return b""
            count = self.remaining if count < 0 else min(count, self.remaining)
        elif count < 0:
            count = READ_CHUNK
        data = self.req.rfile.read(count)
        if self.remaining is not None:
            if len(data) < count:
                raise ConnectionError(f"the client sent {self.done + len(data)} of "
                                      f"{self.total} announced bytes")
            self.remaining -= len(data)
        self.done += len(data)
        if self.total:
            self._progress(min(0.99, self.done / self.total))
        return data

    def read_exactly(self, count: int, what: str) -> bytes:
        parts = []
        while count:
            piece = self.read(min(count, READ_CHUNK))
            if not piece:
                raise ConnectionError(f"the body ended inside {what}")
            parts.append(piece)
            count -= len(piece)
        return b"".join(parts)


class Import(Transfer):
    label = "Importing raw VDI"
    http_action = "http/put_import_raw_vdi"

    def handle(self) -> Any:
        sim, db = self.sim, self.sim.db
        try:
            vdi = self._vdi("vdi")
            sr = self._sr()
        except ApiError as exc:
            raise Reply(400, exc, body=f"{exc.code}: {exc.params}\n".encode()) from None
        if vdi is None and sr is None:
            raise Reply(400, ApiError("VDI_MISSING"),
                        body=b"Require an SR or VDI to import: pass vdi= or sr_id=\n")
        self._redirect_if_remote(db.get("VDI", vdi)["SR"] if vdi else sr, 400)
        fmt = self._format()
        chunked = "chunked" in self.params
        if fmt != "raw" and chunked:
            raise Reply(404, ApiError("INTERNAL_ERROR", "Cannot handle chunked VHD"),
                        body=b"chunked is a raw-only encoding\n")
        if self.req.chunked:
            raise Reply(404, ApiError("INTERNAL_ERROR", "Cannot handle encoding: chunked"),
                        body=b"HTTP chunked transfer encoding is not supported: send a "
                             b"Content-Length (or use format=raw&chunked)\n")
        if vdi is None:
            vdi = self._create_vdi(fmt, sr)
        self.send_head([("Content-Type", "application/octet-stream")])
        try:
            self._receive(vdi, fmt, chunked)
        except ApiError as exc:
            self._fail(exc)
        except xhost_vhd.VHDError as exc:
            self._fail(ApiError("INTERNAL_ERROR", f"Caught exception: {exc}"))
        except (ConnectionError, TimeoutError, OSError) as exc:
            self._fail(ApiError("INTERNAL_ERROR", f"Caught exception: {exc}"))
        else:
            encode = sim.schema.types.xml_encoder(sim.schema.types.parse("VDI ref"))
            self._complete(encode(vdi))
        return STREAMED

    def _create_vdi(self, fmt: str, sr: str | None) -> str:
        if fmt == "vhd":
            raise Reply(400, ApiError("INTERNAL_ERROR",
                                      "Importing a VHD directly into an SR not yet supported"),
                        body=b"format=vhd needs vdi=: create the VDI first\n")
        if sr is None or self.req.content_length is None:
            raise Reply(400, ApiError("INTERNAL_ERROR", "Not enough info supplied to import"),
                        body=b"creating a VDI needs sr_id (or sr_uuid) and a Content-Length\n")
        from .behaviours.storage import create_vdi

        try:
            return create_vdi(self.ctx, sr, {
                "name_label": "Imported VDI", "name_description": "",
                "virtual_size": self.req.content_length, "type": "user", "sharable": False,
                "read_only": False, "other_config": {}, "xenstore_data": {},
                "sm_config": {}, "tags": []})
        except ApiError as exc:
            raise Reply(500, exc, body=error_page(f"{exc.code}: {exc.params}")) from None

    def _receive(self, vdi: str, fmt: str, chunked: bool) -> None:
        db = self.sim.db
        rec = db.get("VDI", vdi)
        # Plugging the VDI read-write into dom0 is what fails on a real host.
        if any(db.exists("VBD", v) and db.get("VBD", v)["currently_attached"]
               for v in rec["VBDs"]):
            raise ApiError("VDI_IN_USE", vdi, "plug")
        if rec["read_only"]:
            raise ApiError("VDI_READONLY", vdi)
        driver = self._driver(vdi)
        body = BodyReader(self.req, self.check, self.progress)
        with driver.writing(self.ctx, vdi) as writer:
            if fmt == "vhd":
                self._receive_vhd(vdi, body, writer)
            elif chunked:
                self._receive_chunked(vdi, body, writer)
            else:
                self._receive_raw(vdi, body, writer)

    def _receive_raw(self, vdi: str, body: BodyReader, writer: Any) -> None:
        size = writer.virtual_size
        if body.total is not None and body.total > size:
            raise ApiError("VDI_TOO_SMALL", vdi, body.total)
        offset = 0
        while True:
            want = READ_CHUNK - offset % READ_CHUNK
            data = body.read(want) if body.total is not None else \
                _read_upto(body, want)
            if not data:
                return
            if offset + len(data) > size:
                raise ApiError("VDI_TOO_SMALL", vdi, offset + len(data))
            writer.write(offset, data)
            offset += len(data)

    def _receive_chunked(self, vdi: str, body: BodyReader, writer: Any) -> None:
        size = writer.virtual_size
        while True:
            header = body.read_exactly(_CHUNK_HEADER.size, "a chunk header")
            offset, length = _CHUNK_HEADER.unpack(header)
            if length == 0:
                return
            if offset + length > size:
                raise ApiError("VDI_TOO_SMALL", vdi, offset + length)
            while length:
                piece = body.read_exactly(min(length, READ_CHUNK - offset % READ_CHUNK),
                                          "chunk data")
                writer.write(offset, piece)
                offset += len(piece)
                length -= len(piece)

    def _receive_vhd(self, vdi: str, body: BodyReader, writer: Any) -> None:
        size = writer.virtual_size
        first = body.read_exactly(xhost_vhd.SECTOR_SIZE, "the VHD footer copy")
        footer = xhost_vhd.Footer.unpack(first)
        if footer.cookie == b"conectix" and footer.checksum_ok():
            stream_size = footer.current_size
        elif body.total is not None:
            stream_size = body.total - xhost_vhd.SECTOR_SIZE  # a fixed VHD
        else:
            stream_size = 0
        if stream_size > size:
            raise ApiError("VDI_TOO_SMALL", vdi, stream_size)
        stream = _Replay(first, body)

        def sink(offset: int, data: bytes) -> None:
            writer.write(offset, data)

        xhost_vhd.consume_stream(stream, sink, max_virtual_size=MAX_VHD,
                                 stream_length=body.total, name=f"VHD stream for {vdi}",
                                 allow_fixed=True)


def _read_upto(body: BodyReader, count: int) -> bytes:
    """Up to ``count`` bytes of a body without Content-Length (EOF ends it)."""
    parts, got = [], 0
    while got < count:
        piece = body.read(count - got)
        if not piece:
            break
        parts.append(piece)
        got += len(piece)
    return b"".join(parts)


class _Replay:
    """A file object that gives back bytes already read, then the rest."""

    def __init__(self, head: bytes, rest: BodyReader) -> None:
        self.head = head
        self.rest = rest

    def read(self, count: int = -1) -> bytes:
        if self.head:
            if count < 0 or count >= len(self.head):
                data, self.head = self.head, b""
                if count > len(data):
                    more = self.rest.read(count - len(data))
                    data += more
                return data
            data, self.head = self.head[:count], self.head[count:]
            return data
        return self.rest.read(count)


class Export(Transfer):
    label = "Exporting raw VDI"
    http_action = "http/get_export_raw_vdi"

    def handle(self) -> Any:
        db = self.sim.db
        if "vdi" not in self.params:
            raise Reply(500, ApiError("INTERNAL_ERROR", "Missing vdi query parameter"),
                        body=error_page("Missing vdi query parameter"))
        try:
            vdi = self._vdi("vdi")
            base = self._vdi("base")
        except ApiError as exc:
            raise Reply(500, exc, body=error_page(f"{exc.code}: {exc.params}")) from None
        rec = db.get("VDI", vdi)
        self._redirect_if_remote(rec["SR"], 500)
        fmt = self._format()
        self.send_head([("Content-Type", CONTENT_TYPES[fmt]),
                        ("Content-Disposition", f'attachment; filename="{rec["uuid"]}.{fmt}"')])
        try:
            if fmt == "vhd" and rec["virtual_size"] > MAX_VHD:
                raise ApiError("VDI_TOO_LARGE", vdi, MAX_VHD)
            self._send(vdi, base, fmt)
        except ApiError as exc:
            self._fail(exc)
        except xhost_vhd.VHDError as exc:
            self._fail(ApiError("VDI_IO_ERROR", f"Device I/O errors: {exc}"))
        except (ConnectionError, TimeoutError, OSError) as exc:
            self._fail(ApiError("INTERNAL_ERROR", f"Caught exception: {exc}"))
        else:
            self._complete("")
        return STREAMED

    def _send(self, vdi: str, base: str | None, fmt: str) -> None:
        db = self.sim.db
        rec = db.get("VDI", vdi)
        with ExitStack() as stack:
            reader = stack.enter_context(self._driver(vdi).reading(self.ctx, rec))
            base_reader = None
            if base is not None and base != NULL_REF:
                base_reader = stack.enter_context(
                    self._driver(base).reading(self.ctx, db.get("VDI", base)))
            if fmt == "vhd":
                self._send_vhd(reader, base_reader)
            else:
                self._send_raw(reader, base_reader)

    def _send_vhd(self, reader: Any, base: Any) -> None:
        sock = self.req.sock
        stream = xhost_vhd.DynamicStream(
            reader, base=base,
            skip_zero_blocks=not isinstance(reader, xhost_vhd.VHDFile))
        total = max(1, stream.size)
        sent = 0
        for chunk in stream:
            self.check()
            sock.sendall(chunk)
            sent += len(chunk)
            self.progress(min(0.99, sent / total))

    def _send_raw(self, reader: Any, base: Any) -> None:
        sock = self.req.sock
        size = int(reader.virtual_size)
        sources = [ranges_of(reader)] + ([ranges_of(base)] if base is not None else [])
        flags = block_flags(size, *sources)
        zeros = bytes(BLOCK)
        count = len(flags)
        for index in range(count):
            self.check()
            offset = index * BLOCK
            length = min(BLOCK, size - offset)
            if not flags[index]:  # reads as zeros: no disk access
                sock.sendall(zeros[:length])
                continue
            data = read_padded(reader, offset, length)
            if base is not None and data == read_padded(base, offset, length):
                data = zeros[:length]
            sock.sendall(data)
            self.progress(min(0.99, (index + 1) / count))
