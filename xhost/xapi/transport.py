"""XML-RPC transports with real timeouts and TLS verification.

The PyPI ``XenAPI`` client has no timeout knob; these transports give every
call a connect-and-read timeout that can change per call (a login is short,
``event.from`` long-polls), keep HTTP/1.1 connections alive between calls,
and verify TLS certificates unless told not to.
"""
from __future__ import annotations

import http.client
import socket
import ssl
import xmlrpc.client
from typing import Any


def ssl_context(ca_file: str | None = None, insecure: bool = False) -> ssl.SSLContext:
    """A client TLS context: verifying (system CAs, or ``ca_file``) unless
    ``insecure``."""
    if insecure:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=ca_file)


class _TimeoutMixin:
    timeout: float

    def set_timeout(self, timeout: float | None) -> None:
        self.timeout = timeout
        conn = getattr(self, "_connection", (None, None))[1]
        if conn is not None:
            conn.timeout = timeout
            if conn.sock is not None:
                conn.sock.settimeout(timeout)


class TimeoutTransport(_TimeoutMixin, xmlrpc.client.Transport):
    """HTTP transport whose calls time out after ``timeout`` seconds."""

    def __init__(self, timeout: float | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.timeout = timeout

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        conn = super().make_connection(host)
        conn.timeout = self.timeout
        return conn


class TimeoutSafeTransport(_TimeoutMixin, xmlrpc.client.SafeTransport):
    """HTTPS transport whose calls time out after ``timeout`` seconds."""

    def __init__(self, timeout: float | None = None, context: ssl.SSLContext | None = None,
                 **kwargs: Any) -> None:
        super().__init__(context=context, **kwargs)
        self.timeout = timeout

    def make_connection(self, host: Any) -> http.client.HTTPSConnection:
        conn = super().make_connection(host)
        conn.timeout = self.timeout
        return conn


class UnixSocketConnection(http.client.HTTPConnection):
    """HTTP over XAPI's local socket (``connection_url = unix://local``)."""

    SOCKET = "/var/lib/xcp/xapi"

    def __init__(self, host: str, timeout: float | None = None, path: str | None = None) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path or self.SOCKET

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.path)
        self.sock = sock


class UnixTransport(TimeoutTransport):
    def __init__(self, timeout: float | None = None, path: str | None = None) -> None:
        super().__init__(timeout=timeout)
        self.path = path

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        if self._connection and host == self._connection[0]:
            return self._connection[1]
        self._connection = host, UnixSocketConnection(host, self.timeout, self.path)
        return self._connection[1]


def make_transport(scheme: str, timeout: float, context: ssl.SSLContext | None,
                   unix_path: str | None = None) -> TimeoutTransport | TimeoutSafeTransport:
    if scheme == "https":
        return TimeoutSafeTransport(timeout=timeout, context=context)
    if scheme == "unix":
        return UnixTransport(timeout=timeout, path=unix_path)
    return TimeoutTransport(timeout=timeout)
