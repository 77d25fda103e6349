"""Serving ``local`` images over HTTP(S) to dom0, one transfer at a time.

The ``direct_vhd`` handler has dom0 fetch (or store) an image's bytes over
HTTP. For the ``local`` image service, xhost runs a short-lived server in
its own process: :class:`TransferServer` starts when a transfer URL is asked
for, serves ``GET /v1/images/<id>/file`` (download) and ``PUT`` on the same
path (upload, ``Content-Length`` or chunked), and stops once no transfer is
pending or running (after ``idle_seconds``).

Each URL comes with a per-transfer token, sent in the
``X-Xhost-Transfer-Token`` header (never in the URL, so it does not leak
into logs or error messages): it is good for one request, one image and one
direction, and expires after ``ttl`` seconds if unused.
"""
from __future__ import annotations

import contextlib
import hmac
import logging
import secrets
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

LOG = logging.getLogger(__name__)
TOKEN_HEADER = "X-Xhost-Transfer-Token"
CHUNK = 1024 * 1024


@dataclass
class _Grant:
    image_id: str
    upload: bool
    expires: float


class TransferServer:
    """The short-lived HTTP(S) server of the ``local`` image service."""

    def __init__(self, bind: str, port: int, advertise: str | None,
                 open_data: Callable[[str], tuple[int, Any]], receive: Callable[[str, Iterator[bytes],
                                                                     int | None], Any],
                 ttl: float = 600.0, idle_seconds: float = 30.0,
                 cert_file: str | None = None, key_file: str | None = None) -> None:
        self.bind, self.port, self.advertise = bind, port, advertise or bind
        self.open_data = open_data
        self.receive = receive
        self.ttl = ttl
        self.idle_seconds = idle_seconds
        self.cert_file, self.key_file = cert_file, key_file
        self._lock = threading.Lock()
        self._grants: dict[str, _Grant] = {}
        self._active = 0
        self._idle_since = time.monotonic()
        self._server: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []

    # -- lifecycle -------------------------------------------------------------

    @property
    def scheme(self) -> str:
        return "https" if self.cert_file else "http"

    @property
    def running(self) -> bool:
        return self._server is not None

    def _start(self) -> None:
        handler = _handler_class(self)
        server = ThreadingHTTPServer((self.bind, self.port), handler)
        server.daemon_threads = True
        if self.cert_file:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self.cert_file, self.key_file)
            server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._idle_since = time.monotonic()
        serve = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                 name="xhost-image-transfer", daemon=True)
        watch = threading.Thread(target=self._watch, name="xhost-image-transfer-idle",
                                 daemon=True)
        self._threads = [serve, watch]
        serve.start()
        watch.start()
        LOG.info("image transfer server listening on %s://%s:%d", self.scheme,
                 *server.server_address[:2])

    def _watch(self) -> None:
        while True:
            time.sleep(min(1.0, self.idle_seconds / 2 or 0.1))
            with self._lock:
                server = self._server
                if server is None:
                    return
                now = time.monotonic()
                self._grants = {t: g for t, g in self._grants.items() if g.expires > now}
                busy = self._grants or self._active
                if busy:
                    self._idle_since = now
                    continue
                if now - self._idle_since < self.idle_seconds:
                    continue
                self._server = None
            server.shutdown()
            server.server_close()
            LOG.info("image transfer server stopped (idle)")
            return

    def stop(self) -> None:
        with self._lock:
            server, self._server = self._server, None
            self._grants.clear()
        if server is not None:
            server.shutdown()
            server.server_close()

    # -- grants --------------------------------------------------------------------

    def grant(self, image_id: str, upload: bool) -> tuple[str, str]:
        """``(url, token)`` for one transfer of ``image_id``."""
        token = secrets.token_urlsafe(32)
        with self._lock:
            if self._server is None:
                self._start()
            self._grants[token] = _Grant(image_id, upload, time.monotonic() + self.ttl)
            port = self._server.server_address[1]  # type: ignore[union-attr]
        host = self.advertise if ":" not in self.advertise else f"[{self.advertise}]"
        return f"{self.scheme}://{host}:{port}/v1/images/{image_id}/file", token

    def revoke(self, token: str) -> None:
        """Forget an unused grant (the transfer will not happen): the server
        stops once idle instead of waiting for it to expire."""
        with self._lock:
            self._grants.pop(token, None)

    def _redeem(self, token: str | None, image_id: str, upload: bool) -> bool:
        if not token:
            return False
        with self._lock:
            for known, grant in list(self._grants.items()):
                if hmac.compare_digest(known, token):
                    del self._grants[known]  # one request per token
                    return (grant.image_id == image_id and grant.upload == upload
                            and grant.expires > time.monotonic())
        return False

    @contextlib.contextmanager
    def _busy(self) -> Iterator[None]:
        with self._lock:
            self._active += 1
        try:
            yield
        finally:
            with self._lock:
                self._active -= 1
                self._idle_since = time.monotonic()


def _handler_class(owner: TransferServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "xhost-image-transfer"

        def log_message(self, fmt: str, *args: Any) -> None:
            LOG.debug("transfer %s: " + fmt, self.address_string(), *args)

        def _reply(self, status: int, text: str = "") -> None:
            body = (text + "\n").encode() if text else b""
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True

        def _image_id(self) -> str | None:
            parts = self.path.split("?", 1)[0].strip("/").split("/")
            if len(parts) == 4 and parts[0] == "v1" and parts[1] == "images" and \
                    parts[3] == "file":
                return parts[2]
            return None

        def _authorised(self, upload: bool) -> str | None:
            image_id = self._image_id()
            if image_id is None:
                self._reply(404, "no such resource")
                return None
            if not owner._redeem(self.headers.get(TOKEN_HEADER), image_id, upload):
                self._reply(403, "invalid, used or expired transfer token")
                return None
            return image_id

        def do_GET(self) -> None:
            image_id = self._authorised(False)
            if image_id is None:
                return
            with owner._busy():
                try:
                    size, chunks = owner.open_data(image_id)
                except Exception as exc:
                    self._reply(404, f"cannot read image {image_id}: {exc}")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(size))
                self.end_headers()
                try:
                    if hasattr(chunks, "read"):
                        # A file: the kernel moves the bytes (sendfile) on plain
                        # HTTP; over TLS socket.sendfile falls back to send().
                        self.connection.sendfile(chunks, 0, size)
                    else:
                        for chunk in chunks:
                            self.wfile.write(chunk)
                except (OSError, ValueError):
                    LOG.info("transfer of image %s: the client went away", image_id)
                finally:
                    close = getattr(chunks, "close", None)
                    if close:
                        close()
                self.close_connection = True

        def do_PUT(self) -> None:
            image_id = self._authorised(True)
            if image_id is None:
                return
            with owner._busy():
                length = self.headers.get("Content-Length")
                chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
                if chunked:
                    body, size = _chunked(self.rfile), None
                elif length and length.isdigit():
                    body, size = _sized(self.rfile, int(length)), int(length)
                else:
                    self._reply(411, "send a Content-Length or chunked data")
                    return
                try:
                    owner.receive(image_id, body, size)
                except Exception as exc:  # the service rolled the image back to queued
                    LOG.warning("upload of image %s failed: %s", image_id, exc)
                    self._reply(400, f"upload failed: {exc}")
                    return
                self._reply(204)

    return Handler


def _sized(stream: Any, length: int) -> Iterator[bytes]:
    left = length
    while left:
        data = stream.read(min(CHUNK, left))
        if not data:
            raise ConnectionError(f"the upload ended {left} bytes short")
        left -= len(data)
        yield data


def _chunked(stream: Any) -> Iterator[bytes]:
    while True:
        line = stream.readline(1024)
        if not line:
            raise ConnectionError("the chunked upload ended early")
        size = int(line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            while stream.readline(1024) not in (b"\r\n", b"\n", b""):
                pass
            return
        left = size
        while left:
            data = stream.read(min(CHUNK, left))
            if not data:
                raise ConnectionError("the chunked upload ended inside a chunk")
            left -= len(data)
            yield data
        stream.readline(1024)
