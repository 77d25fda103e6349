"""The XAPI session layer: a bounded pool of sessions over the PyPI ``XenAPI`` client.

:class:`XapiClient` is thread-safe. Each call borrows one logged-in session
from a pool of at most ``connection_concurrent`` sessions (Nova configured
this and never used it), so at most that many calls are in flight; a caller
beyond that waits. It:

- logs in with originator ``xhost`` within ``login_timeout`` and applies a
  per-call timeout (custom transports: the ``XenAPI`` client has none);
- verifies TLS certificates (system CAs or a CA bundle) unless explicitly
  told not to;
- logs in again, transparently, when the host answers ``SESSION_INVALID``;
- follows ``HOST_IS_SLAVE [master]`` to the pool master, at login or later
  (after a master change);
- waits for ``Async.*`` tasks through ``event.from`` on the task (no
  polling), decodes their XML-RPC result fragment, raises typed
  :class:`~xhost.exception.XapiFailure` errors carrying the XAPI code and
  parameters, and destroys the task;
- counts calls per method, traces them at DEBUG without secrets, and logs
  every session out on :meth:`close`.
"""
from __future__ import annotations

import collections
import contextlib
import http.client
import logging
import queue
import ssl
import threading
import time
import urllib.parse
import xmlrpc.client
from collections.abc import Callable, Hashable, Iterator
from typing import Any, TypeVar

import XenAPI

from xhost import exception
from xhost.xapi import redact, transport

LOG = logging.getLogger(__name__)

ORIGINATOR = "xhost"
API_VERSION = "1.0"
#: Redirections followed for one call (HOST_IS_SLAVE) before giving up.
MAX_REDIRECTS = 3
#: Re-logins attempted for one call (SESSION_INVALID) before giving up.
MAX_RELOGINS = 3
#: Longest single event.from long-poll; waits longer than this loop.
EVENT_POLL_SECONDS = 30.0
T = TypeVar("T")


def _wire(value: Any) -> Any:
    """Python values as XAPI wants them: ints as decimal strings (XML-RPC's
    <int> is 32-bit; XAPI's are 64-bit), containers recursively."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _wire(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_wire(v) for v in value]
    return value


def decode_task_result(result: str) -> Any:
    """A task's ``result`` (an XML-RPC ``<value>`` fragment) as a Python value."""
    text = (result or "").strip()
    if not text:
        return None
    if not text.startswith("<value"):
        return text
    params, _ = xmlrpc.client.loads(
        f"<methodResponse><params><param>{text}</param></params></methodResponse>"
    )
    return params[0]


class _PooledSession:
    """One logged-in ``XenAPI.Session`` and its transport."""

    def __init__(self, client: XapiClient) -> None:
        self.client = client
        self.url = client.url
        scheme = urllib.parse.urlparse(self.url).scheme
        self.transport = transport.make_transport(scheme, client.login_timeout, client.ssl_context,
                                                  client.unix_path)
        uri = "http://localhost/" if scheme == "unix" else self.url
        self.xs = XenAPI.Session(uri, transport=self.transport)
        self.handle: str | None = None

    def login(self) -> None:
        self.transport.set_timeout(self.client.login_timeout)
        method = "session.login_with_password"
        self.client._count(method)
        LOG.debug("XAPI %s at %s", redact.call(method, ()), redact.url(self.url))
        raw = self._raw(method, (self.client.username, self.client.password, API_VERSION,
                                 ORIGINATOR), self.client.login_timeout)
        self.handle = _unwrap(raw, method)

    def _raw(self, method: str, params: tuple, timeout: float) -> Any:
        try:
            return getattr(self.xs, method)(*params)
        except TimeoutError as exc:
            self.transport.close()
            raise exception.XapiTimeout(method=method, timeout=timeout) from exc
        except ssl.SSLCertVerificationError as exc:
            raise exception.XapiConnectionError(
                url=redact.url(self.url),
                reason=f"TLS certificate not trusted ({exc.verify_message}); give the host's CA "
                       f"in [xenserver] connection_ca_file, or set connection_insecure = True "
                       f"to skip verification (not recommended)",
            ) from exc
        except (OSError, http.client.HTTPException) as exc:
            self.transport.close()
            raise exception.XapiConnectionError(url=redact.url(self.url),
                                                reason=f"{type(exc).__name__}: {exc}") from exc
        except xmlrpc.client.ProtocolError as exc:
            raise exception.XapiConnectionError(
                url=redact.url(self.url), reason=f"HTTP {exc.errcode} {exc.errmsg}") from exc
        except xmlrpc.client.Fault as exc:
            raise exception.XapiError(reason=f"XML-RPC fault {exc.faultCode}: {exc.faultString}") from exc

    def call(self, method: str, params: tuple, timeout: float) -> Any:
        self.transport.set_timeout(timeout)
        return self._raw(method, (self.handle, *params), timeout)

    def logout(self) -> None:
        if self.handle is None:
            return
        try:
            self.transport.set_timeout(self.client.login_timeout)
            self.client._count("session.logout")
            getattr(self.xs, "session.logout")(self.handle)
        except Exception as exc:  # best effort: the host may be gone
            LOG.debug("logout failed: %s", exc)
        finally:
            self.handle = None
            self.transport.close()


def _unwrap(raw: Any, method: str) -> Any:
    if not isinstance(raw, dict) or "Status" not in raw:
        raise exception.XapiError(reason=f"{method}: malformed answer (no Status): {raw!r:.200}")
    if raw["Status"] == "Success":
        if "Value" not in raw:
            raise exception.XapiError(reason=f"{method}: malformed answer (no Value)")
        return raw["Value"]
    details = raw.get("ErrorDescription")
    if not isinstance(details, list):
        raise exception.XapiError(reason=f"{method}: malformed failure: {raw!r:.200}")
    raise exception.XapiFailure.for_details(details, method)


class XapiClient:
    """A thread-safe client for one XAPI host (or pool)."""

    def __init__(
        self,
        url: str,
        username: str = "root",
        password: str | None = None,
        *,
        concurrent: int = 5,
        login_timeout: float = 10.0,
        call_timeout: float = 300.0,
        ca_file: str | None = None,
        insecure: bool = False,
        unix_path: str | None = None,
    ) -> None:
        if concurrent < 1:
            raise ValueError("concurrent must be >= 1")
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme not in ("http", "https", "unix"):
            raise exception.ConfigError(
                reason=f"[xenserver] connection_url {url!r} is not a XAPI URL; use "
                       f"http://HOST or https://HOST")
        self.url = url.rstrip("/")
        self.username = username
        self.password = password or ""
        self.concurrent = concurrent
        self.login_timeout = float(login_timeout)
        self.call_timeout = float(call_timeout)
        self.ssl_context = (transport.ssl_context(ca_file, insecure)
                            if parsed.scheme == "https" else None)
        self.unix_path = unix_path
        self._slots = threading.BoundedSemaphore(concurrent)
        self._idle: queue.LifoQueue[_PooledSession] = queue.LifoQueue()
        self._all: list[_PooledSession] = []
        self._lock = threading.Lock()
        self._closed = False
        self.counters: collections.Counter[str] = collections.Counter()
        self.relogins = 0
        self.redirects = 0
        #: key -> (value, monotonic time it expires or None)
        self._facts: dict[Hashable, tuple[Any, float | None]] = {}
        self._facts_lock = threading.Lock()

    @classmethod
    def from_conf(cls, conf: Any) -> XapiClient:
        """A client for ``[xenserver] connection_url`` and friends."""
        group = conf.xenserver
        if not group.connection_url:
            raise exception.ConfigError(reason="[xenserver] connection_url is not set")
        return cls(
            group.connection_url,
            group.connection_username,
            group.connection_password,
            concurrent=group.connection_concurrent,
            login_timeout=group.login_timeout,
            call_timeout=group.call_timeout,
            ca_file=group.connection_ca_file,
            insecure=group.connection_insecure,
        )

    # -- pool --------------------------------------------------------------

    def _count(self, method: str) -> None:
        with self._lock:
            self.counters[method] += 1

    @contextlib.contextmanager
    def _session(self) -> Iterator[_PooledSession]:
        if self._closed:
            raise exception.XapiError(reason="the XAPI client is closed")
        self._slots.acquire()
        try:
            try:
                session = self._idle.get_nowait()
            except queue.Empty:
                session = self._login_new()
            try:
                yield session
            finally:
                if session.handle is not None and not self._closed:
                    self._idle.put(session)
                else:
                    self._forget(session)
        finally:
            self._slots.release()

    def _forget(self, session: _PooledSession) -> None:
        with self._lock:
            if session in self._all:
                self._all.remove(session)

    def _login_new(self) -> _PooledSession:
        for _ in range(MAX_REDIRECTS + 1):
            session = _PooledSession(self)
            try:
                session.login()
            except exception.HostIsSlave as exc:
                self._follow_master(exc)
                continue
            with self._lock:
                self._all.append(session)
            return session
        raise exception.XapiError(reason=f"too many HOST_IS_SLAVE redirections from {self.url}")

    def _follow_master(self, exc: exception.XapiFailure) -> None:
        master = exc.params[0] if exc.params else ""
        if not master:
            raise exc
        new_url = master_url(self.url, master)
        LOG.warning("%s is a pool member; reconnecting to the pool master %s",
                    redact.url(self.url), redact.url(new_url))
        with self._lock:
            self.url = new_url
            self.redirects += 1
            stale = list(self._all)
            self._all.clear()
        # Sessions on the old host are useless now.
        for session in stale:
            session.handle = None
        while True:
            try:
                self._idle.get_nowait()
            except queue.Empty:
                break

    # -- calls -------------------------------------------------------------

    def call(self, method: str, *args: Any, timeout: float | None = None) -> Any:
        """Call ``method`` (e.g. ``"VM.get_record"``) with ``args`` (without
        the session) and return its ``Value``.

        :raises XapiFailure: (or a subclass by code) the host refused.
        :raises XapiTimeout: no answer within ``timeout`` (default
            ``call_timeout``).
        :raises XapiConnectionError: the host cannot be reached.
        """
        timeout = self.call_timeout if timeout is None else timeout
        params = tuple(_wire(a) for a in args)
        if LOG.isEnabledFor(logging.DEBUG):
            LOG.debug("XAPI %s", redact.call(method, args))
        relogins = redirects = 0
        while True:
            with self._session() as session:
                try:
                    self._count(method)
                    started = time.monotonic()
                    value = _unwrap(session.call(method, params, timeout), method)
                    if LOG.isEnabledFor(logging.DEBUG):
                        LOG.debug("XAPI %s -> %s (%.1f ms)", method, redact.result(method, value),
                                  (time.monotonic() - started) * 1000)
                    return value
                except exception.SessionInvalid:
                    if relogins >= MAX_RELOGINS:
                        raise
                    relogins += 1
                    with self._lock:
                        self.relogins += 1
                    LOG.info("XAPI session expired; logging in again")
                    session.login()
                except exception.HostIsSlave as exc:
                    if redirects >= MAX_REDIRECTS:
                        raise
                    redirects += 1
                    session.handle = None
                    self._follow_master(exc)

    def call_async(self, method: str, *args: Any, timeout: float | None = None) -> Any:
        """Run ``Async.<method>`` and wait for its task; return its result."""
        task = self.call(f"Async.{method}", *args)
        return self.wait_task(task, timeout=timeout, method=method)

    def wait_task(self, task_ref: str, timeout: float | None = None, method: str = "",
                  destroy: bool = True) -> Any:
        """Wait (through ``event.from``) for a task to finish.

        :returns: the decoded result.
        :raises XapiFailure: the task failed (its ``error_info``).
        :raises TaskCancelled: the task was cancelled.
        :raises XapiTimeout: it did not finish in time (it is cancelled).
        """
        timeout = self.call_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        token = ""
        record: dict[str, Any] | None = None
        label = method or "task"
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    with contextlib.suppress(exception.XapiError):
                        self.call("task.cancel", task_ref, timeout=self.login_timeout)
                    raise exception.XapiTimeout(method=label, timeout=timeout)
                poll = min(remaining, EVENT_POLL_SECONDS)
                batch = self.call("event.from", [f"task/{task_ref}"], token, float(poll),
                                  timeout=poll + self.call_timeout)
                token = batch["token"]
                for event in batch["events"]:
                    if event.get("ref") != task_ref:
                        continue
                    if event["operation"] == "del":
                        raise exception.XapiError(reason=f"{label}: task {task_ref} was destroyed "
                                                         f"before it finished")
                    record = event["snapshot"]
                if record is not None and record["status"] not in ("pending", "cancelling"):
                    break
            status = record["status"]
            if status == "success":
                return decode_task_result(record.get("result", ""))
            if status == "cancelled":
                raise exception.TaskCancelled(["TASK_CANCELLED", task_ref], label)
            raise exception.XapiFailure.for_details(list(record.get("error_info") or []), label)
        finally:
            if destroy:
                with contextlib.suppress(exception.XapiError):
                    self.call("task.destroy", task_ref, timeout=self.login_timeout)

    def remembered(self, key: Hashable, compute: Callable[[], T],
                   seconds: float | None = None) -> T:
        """A fact about the host computed by ``compute()`` once per client:
        callers on the hot path (every spawn) save the calls. With ``seconds``
        None the fact never changes (an SR's uuid and type, a control domain);
        otherwise it is computed again once ``seconds`` have passed (0: every
        time). Thread-safe; a failure is not remembered."""
        now = time.monotonic()
        with self._facts_lock:
            found = self._facts.get(key)
            if found is not None and (found[1] is None or now < found[1]):
                return found[0]
        value = compute()
        if seconds is not None and seconds <= 0:
            return value
        with self._facts_lock:
            found = self._facts.get(key)
            if found is not None and (found[1] is None or now < found[1]):
                return found[0]  # another thread computed it meanwhile
            self._facts[key] = (value, None if seconds is None else now + seconds)
            return value

    def forget(self, key: Hashable) -> None:
        """Drop a remembered fact (it turned out stale: its object is gone)."""
        with self._facts_lock:
            self._facts.pop(key, None)

    def session_ref(self) -> str:
        """A valid session reference, for HTTP handlers that authenticate by
        ``session_id``. The session stays in the pool; never log the ref."""
        with self._session() as session:
            return session.handle  # type: ignore[return-value]

    # -- lifecycle -----------------------------------------------------------

    def close(self) -> None:
        """Log every session out. The client cannot be used afterwards."""
        self._closed = True
        with self._lock:
            sessions = list(self._all)
            self._all.clear()
        for session in sessions:
            session.logout()

    def __enter__(self) -> XapiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def open_sessions(self) -> int:
        with self._lock:
            return sum(1 for s in self._all if s.handle is not None)


def master_url(current: str, master: str) -> str:
    """The URL of the pool master named by ``HOST_IS_SLAVE [master]``: same
    scheme, and the current port unless the master address carries one."""
    parsed = urllib.parse.urlparse(current)
    master = master.strip()
    if master.startswith("[") or master.count(":") == 1:
        netloc = master  # "host:port" or "[v6]:port" / "[v6]"
    elif ":" in master:  # bare IPv6 address
        netloc = f"[{master}]" + (f":{parsed.port}" if parsed.port else "")
    else:
        netloc = master + (f":{parsed.port}" if parsed.port else "")
    return urllib.parse.urlunparse((parsed.scheme, netloc, parsed.path, "", "", ""))
