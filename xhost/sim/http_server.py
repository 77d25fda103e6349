"""A small threaded HTTP/1.1 server with keep-alive and a path registry.

The standard library's ``http.server`` parses headers with the ``email``
package, which costs more than the rest of a cheap XAPI call; this server
reads the request line and headers by hand and writes each response with a
single ``sendall``.  Handlers are registered by method and path prefix
(longest prefix wins, like xapi's radix tree), get a :class:`Request` that can
stream its body, and return a :class:`Response` or :data:`STREAMED` when they
wrote the answer themselves (the data plane of part 2 does that).
"""
from __future__ import annotations

import logging
import os
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO
from urllib.parse import parse_qsl, urlsplit

from .wire import error_page

LOG = logging.getLogger(__name__)

MAX_HEADER_BYTES = 64 * 1024
REASONS = {200: "OK", 204: "No Content", 206: "Partial Content", 302: "Found",
           400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
           404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
           411: "Length Required", 413: "Payload Too Large", 416: "Range Not Satisfiable",
           500: "Internal Error", 501: "Not Implemented", 503: "Service Unavailable"}


class DropConnection(Exception):
    """Raised by a handler to close the connection without answering."""


class Request:
    """One HTTP request; the body is read lazily (or streamed by the handler)."""

    def __init__(self, method: str, target: str, version: str, headers: dict[str, str],
                 rfile: BinaryIO, sock: socket.socket, client: tuple[str, int]) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.rfile = rfile
        self.sock = sock
        self.client = client
        if "?" in target or "#" in target or not target.startswith("/"):
            parts = urlsplit(target)
            self.path = parts.path or "/"
            self.query: dict[str, str] = dict(parse_qsl(parts.query, keep_blank_values=True))
        else:
            self.path = target
            self.query = {}
        length = headers.get("content-length")
        self.content_length: int | None = int(length) if length and length.isdigit() else None
        self.chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        self._consumed = 0 if (self.content_length or self.chunked) else None
        self.body_done = not (self.content_length or self.chunked)

    def read_body(self, limit: int | None = None) -> bytes:
        """The whole body; ValueError if it is longer than ``limit``."""
        if self.chunked:
            data = bytearray()
            for chunk in self.iter_chunks():
                data += chunk
                if limit is not None and len(data) > limit:
                    raise ValueError("Client_requested_size_over_limit")
            return bytes(data)
        length = self.content_length or 0
        if limit is not None and length > limit:
            raise ValueError("Client_requested_size_over_limit")
        data = self.rfile.read(length) if length else b""
        if len(data) != length:
            raise ConnectionError("connection closed while reading the body")
        self.body_done = True
        return data

    def iter_chunks(self, size: int = 1 << 20):
        """Yield the body in pieces (Content-Length or chunked encoding)."""
        if self.chunked:
            while True:
                line = self.rfile.readline(1024)
                if not line:
                    raise ConnectionError("connection closed inside a chunked body")
                n = int(line.split(b";")[0].strip() or b"0", 16)
                if n == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                remaining = n
                while remaining:
                    piece = self.rfile.read(min(size, remaining))
                    if not piece:
                        raise ConnectionError("connection closed inside a chunk")
                    remaining -= len(piece)
                    yield piece
                self.rfile.readline(8)
            self.body_done = True
            return
        remaining = self.content_length or 0
        while remaining:
            piece = self.rfile.read(min(size, remaining))
            if not piece:
                raise ConnectionError("connection closed while reading the body")
            remaining -= len(piece)
            yield piece
        self.body_done = True

    @property
    def keep_alive(self) -> bool:
        conn = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return conn == "keep-alive"
        return conn != "close"


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str = "text/plain"
    close: bool = False


#: Returned by handlers that wrote their own response on ``request.sock``.
STREAMED = object()

Handler = Callable[[Request], Any]


def send_response(sock: socket.socket, resp: Response, keep_alive: bool) -> None:
    head = [f"HTTP/1.1 {resp.status} {REASONS.get(resp.status, 'Unknown')}",
            f"Content-Length: {len(resp.body)}",
            f"Content-Type: {resp.content_type}"]
    head.extend(f"{k}: {v}" for k, v in resp.headers)
    if not keep_alive or resp.close:
        head.append("Connection: close")
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + resp.body)


class HttpServer:
    """Accept loop plus one thread per connection."""

    def __init__(self, bind: str, port: int, ssl_context: ssl.SSLContext | None = None,
                 name: str = "xapi-sim", unix_path: str | None = None) -> None:
        self.routes: dict[str, list[tuple[str, Handler]]] = {}
        self.ssl_context = ssl_context
        self.name = name
        self.unix_path = unix_path
        if unix_path is not None:
            # dom0-local clients (XenAPI.xapi_local) talk over a Unix socket.
            if os.path.exists(unix_path):
                os.unlink(unix_path)
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.bind(unix_path)
            self.address = (unix_path, 0)
        else:
            family = socket.AF_INET6 if ":" in bind else socket.AF_INET
            self.sock = socket.socket(family, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind((bind, port))
            self.address = self.sock.getsockname()[:2]
        self.sock.listen(128)
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        #: Called with the request before routing; may raise DropConnection.
        self.before_request: Callable[[Request], None] | None = None

    @property
    def port(self) -> int:
        return int(self.address[1])

    def route(self, method: str, prefix: str, handler: Handler) -> None:
        """Register ``handler`` for requests whose path starts with ``prefix``."""
        entries = self.routes.setdefault(method.upper(), [])
        entries[:] = [(p, h) for p, h in entries if p != prefix]
        entries.append((prefix, handler))
        entries.sort(key=lambda e: len(e[0]), reverse=True)

    def _find(self, method: str, path: str) -> Handler | None:
        for prefix, handler in self.routes.get(method, ()):
            base = prefix.rstrip("/")
            if prefix == "/" or path == base or path.startswith(base + "/"):
                return handler
        return None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._accept_loop, name=f"{self.name}-accept",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.unix_path is not None and os.path.exists(self.unix_path):
            os.unlink(self.unix_path)

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, addr = self.sock.accept()
            except OSError:
                if self._stopping.is_set():
                    return
                continue
            threading.Thread(target=self._serve_connection, args=(conn, addr),
                             name=f"{self.name}-conn", daemon=True).start()

    def _serve_connection(self, conn: socket.socket, addr: Any) -> None:
        if self.unix_path is None:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.ssl_context is not None:
            try:
                conn.settimeout(30)
                conn = self.ssl_context.wrap_socket(conn, server_side=True)
                conn.settimeout(None)
            except (ssl.SSLError, OSError) as exc:
                LOG.debug("TLS handshake with %s failed: %s", addr, exc)
                conn.close()
                return
        with self._conns_lock:
            self._conns.add(conn)
        rfile = conn.makefile("rb", buffering=65536)
        try:
            while not self._stopping.is_set():
                if not self._serve_one(conn, rfile, addr):
                    break
        except (ConnectionError, OSError, ssl.SSLError):
            pass
        finally:
            with self._conns_lock:
                self._conns.discard(conn)
            try:
                rfile.close()
                conn.close()
            except OSError:
                pass

    def _serve_one(self, conn: socket.socket, rfile: BinaryIO, addr: Any) -> bool:
        line = rfile.readline(MAX_HEADER_BYTES)
        if not line:
            return False
        if line in (b"\r\n", b"\n"):
            return True
        try:
            method, target, version = line.decode("latin-1").split()
        except ValueError:
            send_response(conn, Response(400, b"bad request line"), False)
            return False
        headers: dict[str, str] = {}
        total = len(line)
        while True:
            hline = rfile.readline(MAX_HEADER_BYTES)
            total += len(hline)
            if not hline or hline in (b"\r\n", b"\n"):
                break
            if total > MAX_HEADER_BYTES:
                send_response(conn, Response(431, b"headers too large"), False)
                return False
            name, _, value = hline.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        req = Request(method.upper(), target, version, headers, rfile, conn, addr)
        if headers.get("expect", "").lower() == "100-continue" and not req.body_done:
            # curl and other uploaders wait for this before sending a large body.
            conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        try:
            if self.before_request is not None:
                self.before_request(req)
            handler = self._find(req.method, req.path)
            if handler is None:
                result: Any = Response(404 if req.method in ("GET", "HEAD", "POST", "PUT")
                                       else 405, b"not found")
            else:
                result = handler(req)
        except DropConnection:
            return False
        except Exception as exc:
            LOG.exception("handler for %s %s failed", req.method, req.path)
            result = Response(500, error_page(f"{type(exc).__name__}: {exc}"),
                              content_type="text/html", close=True)
        if result is STREAMED:
            return req.keep_alive and req.body_done
        resp: Response = result
        if not req.body_done:
            # Unread body: cannot reuse the connection safely.
            resp.close = True
        keep = req.keep_alive and not resp.close
        send_response(conn, resp, keep)
        return keep
