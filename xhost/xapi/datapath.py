"""Streaming disks through XAPI's HTTP handlers, tracked by a task.

``PUT /import_raw_vdi`` writes a stream (raw or VHD) into a VDI, ``GET
/export_raw_vdi`` reads one (raw, or VHD of the whole chain, optionally the
difference from a ``base`` VDI). Both authenticate with a ``session_id``,
run under a task created here (``task_id``) whose outcome decides success,
and move bytes in bounded memory: nothing is ever held whole.
"""
from __future__ import annotations

import contextlib
import http.client
import logging
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from typing import Any, BinaryIO

from xhost import exception
from xhost.xapi import redact
from xhost.xapi.client import XapiClient

LOG = logging.getLogger(__name__)

CHUNK = 1024 * 1024
FORMATS = ("raw", "vhd")
Progress = Callable[[int], None]


def _connection(client: XapiClient, netloc: str, timeout: float) -> http.client.HTTPConnection:
    scheme = urllib.parse.urlparse(client.url).scheme
    if scheme == "https":
        return http.client.HTTPSConnection(netloc, timeout=timeout, context=client.ssl_context)
    if scheme == "unix":
        from xhost.xapi.transport import UnixSocketConnection

        return UnixSocketConnection(netloc, timeout=timeout, path=client.unix_path)
    return http.client.HTTPConnection(netloc, timeout=timeout)


def _request(client: XapiClient, method: str, handler: str, query: dict[str, str],
             headers: dict[str, str], body: Iterable[bytes] | BinaryIO | None,
             timeout: float) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    """Send a request, following XAPI's 302 to the host with the best access
    to the SR (once)."""
    netloc = urllib.parse.urlparse(client.url).netloc or "localhost"
    path = f"/{handler}?{urllib.parse.urlencode(query)}"
    for _ in range(2):
        conn = _connection(client, netloc, timeout)
        try:
            conn.putrequest(method, path, skip_accept_encoding=True)
            for key, value in headers.items():
                conn.putheader(key, value)
            conn.endheaders()
            if body is not None:
                if hasattr(body, "read"):
                    while True:
                        chunk = body.read(CHUNK)  # type: ignore[union-attr]
                        if not chunk:
                            break
                        conn.send(chunk)
                else:
                    for chunk in body:  # type: ignore[union-attr]
                        if chunk:
                            conn.send(chunk)
            response = conn.getresponse()
        except TimeoutError as exc:
            conn.close()
            raise exception.XapiTimeout(method=f"{method} /{handler}", timeout=timeout) from exc
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise exception.XapiConnectionError(url=redact.url(client.url + path),
                                                reason=f"{type(exc).__name__}: {exc}") from exc
        except BaseException:
            # The body's producer failed (bad data, a cut download): hang up
            # so the host stops waiting for the rest and fails its task.
            conn.close()
            raise
        if response.status in (301, 302, 303, 307) and response.getheader("Location"):
            location = urllib.parse.urlparse(response.getheader("Location"))
            response.read()
            conn.close()
            netloc = location.netloc or netloc
            path = location.path + ("?" + location.query if location.query else "")
            if hasattr(body, "seek") and getattr(body, "seekable", lambda: True)():
                body.seek(0)  # type: ignore[union-attr]
            elif body is not None:
                raise exception.XapiError(reason=f"/{handler} redirected a one-shot stream")
            continue
        return conn, response
    raise exception.XapiError(reason=f"/{handler}: too many redirections")


def _finished_outcome(client: XapiClient, task: str, method: str) -> None:
    """Raise the failure of ``task`` if it already failed (or was cancelled).

    XAPI answers ``200`` before it moves any byte and reports later failures
    (``VDI_IN_USE``, ``SR_FULL``...) only in the task, often closing the
    connection mid-transfer; refusals before that (``401``) leave the task
    pending. Either way the task, when finished, says best what went wrong.
    """
    try:
        status = client.call("task.get_status", task)
    except exception.XapiError:
        return
    if status not in ("pending", "cancelling"):
        client.wait_task(task, timeout=client.login_timeout, method=method, destroy=False)


def _settle(client: XapiClient, task: str, timeout: float) -> None:
    """Wait until the host gave up a transfer we abandoned (so the disk is
    free again); its outcome does not matter."""
    with contextlib.suppress(exception.XapiError):
        client.wait_task(task, timeout=min(timeout, 60.0), method="import_raw_vdi",
                         destroy=False)


class _CountingFile:
    """A file being uploaded: reports progress, rewinds for a redirect if it can."""

    def __init__(self, data: Any, progress: Progress | None) -> None:
        self._data = data
        self._progress = progress
        try:
            self._start: int | None = data.tell() if data.seekable() else None
        except (AttributeError, OSError):
            self._start = None

    def read(self, count: int) -> bytes:
        chunk = self._data.read(count)
        if chunk and self._progress:
            self._progress(len(chunk))
        return chunk

    def seekable(self) -> bool:
        return self._start is not None

    def seek(self, offset: int) -> None:
        if self._start is None:
            raise OSError("not seekable")
        self._data.seek(self._start + offset)


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")


def import_raw_vdi(client: XapiClient, vdi_ref: str, data: Iterable[bytes] | BinaryIO,
                   size: int, fmt: str = "raw", progress: Progress | None = None,
                   timeout: float | None = None) -> None:
    """Write ``size`` bytes of ``data`` (raw, or a VHD stream) into a VDI.

    :raises XapiFailure: the host refused (its task failed), e.g.
        ``VDI_IN_USE``; the XAPI code and parameters are kept.
    """
    _check_format(fmt)
    timeout = client.call_timeout if timeout is None else timeout
    task = client.call("task.create", "xhost import_raw_vdi", f"into {vdi_ref}")
    try:
        def counted() -> Iterator[bytes]:
            for chunk in data:  # type: ignore[union-attr]
                if progress:
                    progress(len(chunk))
                yield chunk

        # A seekable file can be sent again after XAPI's 302; a stream cannot.
        body: Any = _CountingFile(data, progress) if hasattr(data, "read") else counted()

        query = {"session_id": client.session_ref(), "task_id": task, "vdi": vdi_ref, "format": fmt}
        client._count("PUT /import_raw_vdi")
        LOG.debug("PUT /import_raw_vdi vdi=%s format=%s size=%d", vdi_ref, fmt, size)
        try:
            conn, response = _request(client, "PUT", "import_raw_vdi", query,
                                      {"Content-Length": str(size),
                                       "Content-Type": "application/octet-stream"},
                                      body, timeout)
        except exception.XapiConnectionError:
            # The host may have refused and closed while we were still sending.
            _finished_outcome(client, task, "import_raw_vdi")
            raise
        except BaseException:
            _settle(client, task, timeout)
            raise
        try:
            body = response.read(64 * 1024)
        except (OSError, http.client.HTTPException):
            body = b""
        finally:
            conn.close()
        status = response.status
        if status >= 300:
            _finished_outcome(client, task, "import_raw_vdi")
            raise exception.XapiError(
                reason=f"/import_raw_vdi answered HTTP {status}: {body[:200]!r}")
        client.wait_task(task, timeout=timeout, method="import_raw_vdi", destroy=False)
    finally:
        with contextlib.suppress(exception.XapiError):
            client.call("task.destroy", task)


class ExportStream:
    """The bytes of a VDI from ``GET /export_raw_vdi``, as an iterator of
    chunks. Use as a context manager; the task's outcome is checked when the
    stream ends (a failure then raises) or on :meth:`close`."""

    def __init__(self, client: XapiClient, vdi_ref: str, fmt: str = "raw",
                 base_ref: str | None = None, timeout: float | None = None,
                 progress: Progress | None = None) -> None:
        _check_format(fmt)
        self.client = client
        self.timeout = client.call_timeout if timeout is None else timeout
        self.progress = progress
        self.task = client.call("task.create", "xhost export_raw_vdi", f"from {vdi_ref}")
        self._done = False
        try:
            query = {"session_id": client.session_ref(), "task_id": self.task, "vdi": vdi_ref,
                     "format": fmt}
            if base_ref:
                query["base"] = base_ref
            client._count("GET /export_raw_vdi")
            self._conn, self._response = _request(client, "GET", "export_raw_vdi", query, {}, None,
                                                  self.timeout)
            if self._response.status >= 300:
                body = self._response.read(64 * 1024)
                self._conn.close()
                _finished_outcome(client, self.task, "export_raw_vdi")
                raise exception.XapiError(
                    reason=f"/export_raw_vdi answered HTTP {self._response.status}: {body[:200]!r}")
        except BaseException:
            self.close()
            raise
        length = self._response.getheader("Content-Length")
        #: Size in bytes, when the host announced it.
        self.size: int | None = int(length) if length and length.isdigit() else None

    def __iter__(self) -> Iterator[bytes]:
        while True:
            try:
                chunk = self._response.read(CHUNK)
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise exception.XapiConnectionError(url=redact.url(self.client.url),
                                                    reason=f"export interrupted: {exc}") from exc
            if not chunk:
                break
            if self.progress:
                self.progress(len(chunk))
            yield chunk
        self._finish()

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        with contextlib.suppress(Exception):
            self._conn.close()
        self.client.wait_task(self.task, timeout=self.timeout, method="export_raw_vdi")

    def close(self) -> None:
        """Stop reading; cancel the export if it has not finished."""
        if self._done:
            return
        self._done = True
        if getattr(self, "_conn", None) is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        with contextlib.suppress(exception.XapiError):
            self.client.call("task.cancel", self.task)
        with contextlib.suppress(exception.XapiError):
            self.client.call("task.destroy", self.task)

    def __enter__(self) -> ExportStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def export_raw_vdi(client: XapiClient, vdi_ref: str, fmt: str = "raw", base_ref: str | None = None,
                   timeout: float | None = None, progress: Progress | None = None) -> ExportStream:
    """Start streaming a VDI; see :class:`ExportStream`."""
    return ExportStream(client, vdi_ref, fmt, base_ref, timeout, progress)
