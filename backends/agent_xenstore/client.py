"""Talking to one instance's guest agent through the ``xhost_agent`` dom0 script.

Each request carries a fresh request id and the domain id read just before
it (a reboot changes it). When the guest reboots in the middle of a request
the script says so; the client then waits for the new domain and asks again
(the whole key exchange, for a password). Answers are checked here: JSON
with a ``returncode`` among the command's success codes, else a clear error.
No request payload ever reaches a log line or an error message.
"""
from __future__ import annotations

import base64
import json
import logging
import posixpath
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from xhost import exception
from xhost.backends.agent_xenstore import crypto
from xhost.backends.agent_xenstore.errors import (
    AgentBadReply,
    AgentError,
    AgentNotImplemented,
    AgentNotRunning,
    AgentRebooted,
    AgentTimeout,
)
from xhost.objects import AgentResult

if TYPE_CHECKING:
    from xhost.context import Context
    from xhost.objects import Instance

LOG = logging.getLogger(__name__)

PLUGIN = "xhost_agent"
XENSTORE_PLUGIN = "xhost_xenstore"
#: Reboots tolerated during one request before giving up.
MAX_REBOOTS = 3
#: Seconds added to the agent timeout for the XAPI call around the dom0
#: script (process start, XenStore commands).
CALL_MARGIN = 30.0
#: XenStore's limit on a write (path + value), and the longest request path
#: (``/local/domain/<5 digits>/data/host/<uuid>-f``).
XENSTORE_PAYLOAD_MAX = 4096
REQUEST_PATH_MAX = len("/local/domain/00000/data/host/") + 36 + 2
#: Windows agents may append a CRLF (sometimes escaped) to their version.
_VERSION_TAILS = ("\\r\\n", "\r\n")

T = TypeVar("T")


class _Rebooted(Exception):
    """The guest rebooted during a request (internal: callers retry)."""


def _preview(text: str, limit: int = 60) -> str:
    shown = text if len(text) <= limit else text[:limit] + "..."
    return repr(shown)


def parse_reply(raw: Any, instance: str, command: str, success: tuple[str, ...],
                show_message: bool = True) -> AgentResult:
    """Check an agent's answer: JSON ``{"returncode", "message"}`` with a
    success code."""
    text = str(raw.get("reply", "")) if isinstance(raw, dict) else ""
    if not isinstance(raw, dict) or "reply" not in raw:
        raise AgentBadReply(instance=instance, command=command,
                            reason="the dom0 script returned no answer")
    try:
        doc = json.loads(text)
    except ValueError:
        raise AgentBadReply(instance=instance, command=command,
                            reason=f"not JSON: {_preview(text)}") from None
    if not isinstance(doc, dict) or "returncode" not in doc:
        raise AgentBadReply(instance=instance, command=command,
                            reason=f"no returncode in {_preview(text)}")
    code = str(doc["returncode"])
    message = doc.get("message", "")
    message = message if isinstance(message, str) else json.dumps(message)
    if code not in success:
        said = f": {_preview(message, 200)}" if show_message and message else ""
        raise AgentError(instance=instance, command=command,
                         reason=f"the agent answered return code {code!r} (success is "
                                f"{' or '.join(map(repr, success))}){said}")
    return AgentResult(returncode=code, message=message)


class AgentClient:
    """The guest agent of one running instance."""

    def __init__(self, ctx: Context, instance: Instance, vm_ref: str) -> None:
        self.ctx = ctx
        self.instance = instance
        self.vm_ref = vm_ref
        self.name = instance.name or instance.uuid
        self.options = ctx.conf.xenserver
        self.dom0 = ctx.extra["dom0"]
        self.host_ref = ctx.host_ref
        #: file_inject or injectfile, once the agent's features told which.
        self._inject_command: str | None = None

    # -- domains -------------------------------------------------------------------
    def domid(self) -> int:
        """The VM's current domain id; AgentNotRunning when it has none."""
        domid = int(self.ctx.xapi.call("VM.get_domid", self.vm_ref))
        if domid <= 0:
            state = self.ctx.xapi.call("VM.get_power_state", self.vm_ref)
            raise AgentNotRunning(instance=self.name, command="", state=state.lower())
        return domid

    @staticmethod
    def _gone_for_good(exc: AgentNotRunning) -> bool:
        """Halted or suspended: not a reboot, no point waiting."""
        return exc.kwargs.get("state") in ("halted", "suspended")

    def _wait_for_new_domain(self, old: int, command: str) -> int:
        timeout = float(self.options.agent_timeout)
        deadline = time.monotonic() + timeout
        while True:
            try:
                domid = self.domid()
                if domid != old:
                    return domid
            except AgentNotRunning as exc:
                if self._gone_for_good(exc):
                    raise
            if time.monotonic() >= deadline:
                raise AgentTimeout(instance=self.name, command=f"{command} (the guest rebooted "
                                   f"and did not come back)", timeout=self.options.agent_timeout,
                                   option="agent_timeout")
            time.sleep(0.1)

    # -- requests ------------------------------------------------------------------
    def _call(self, fn: str, what: str, wait: float, calls: int = 1,
              **args: Any) -> tuple[int, Any]:
        domid = self.domid()
        LOG.debug("guest agent of %s: %s (domain %d)", self.name, what, domid)
        try:
            return domid, self.dom0.call(self.host_ref, PLUGIN, fn,
                                         timeout=calls * wait + CALL_MARGIN,
                                         dom_id=domid, request_id=str(uuid.uuid4()),
                                         reply_timeout=wait, **args)
        except exception.XapiFailure as exc:
            code, params = exc.code, exc.params
            if code in ("XHOST_AGENT_REBOOT", "XHOST_AGENT_NO_DOMAIN"):
                self._wait_for_new_domain(domid, what)
                raise _Rebooted() from None
            if code == "XHOST_AGENT_TIMEOUT":
                option = ("agent_resetnetwork_timeout" if fn == "resetnetwork"
                          else "agent_timeout")
                raise AgentTimeout(instance=self.name, command=what, timeout=f"{wait:g}",
                                   option=option) from None
            if code == "XHOST_AGENT_NOT_IMPLEMENTED":
                have = params[1] if len(params) > 1 and params[1] else "none"
                raise AgentNotImplemented(instance=self.name, command=params[0] if params
                                          else what,
                                          reason=f"its features: {have}") from None
            if code == "XHOST_AGENT_BAD_REPLY":
                raise AgentBadReply(instance=self.name, command=" ".join(params[:1]) or what,
                                    reason=params[1] if len(params) > 1 else "") from None
            raise AgentError(instance=self.name, command=what,
                             reason=f"{code} {' '.join(params)}".strip()) from None
        except exception.XapiTimeout:
            raise AgentTimeout(instance=self.name, command=what, timeout=f"{wait:g}",
                               option="agent_timeout") from None
        except exception.XhostError as exc:
            raise AgentError(instance=self.name, command=what, reason=str(exc)) from None

    def _retrying(self, command: str, attempt: Callable[[], T]) -> T:
        """Run ``attempt`` again after each guest reboot (a few times at most)."""
        for _ in range(MAX_REBOOTS + 1):
            try:
                return attempt()
            except _Rebooted:
                LOG.info("guest of %s rebooted during %s; asking again", self.name, command)
        raise AgentRebooted(instance=self.name, command=command, times=MAX_REBOOTS + 1)

    def request(self, fn: str, what: str, success: tuple[str, ...] = ("0",),
                timeout: float | None = None, calls: int = 1, show_message: bool = True,
                **args: Any) -> AgentResult:
        """One request, asked again when the guest reboots meanwhile."""
        wait = float(self.options.agent_timeout if timeout is None else timeout)

        def attempt() -> AgentResult:
            _domid, raw = self._call(fn, what, wait, calls, **args)
            return parse_reply(raw, self.name, what, success, show_message)
        return self._retrying(what, attempt)

    # -- commands ----------------------------------------------------------------------
    def version(self, timeout: float | None = None) -> str:
        message = self.request("version", "version", timeout=timeout).message.strip()
        for tail in _VERSION_TAILS:
            if message.endswith(tail):
                message = message[:-len(tail)]
        return message.strip()

    def wait_for_version(self, timeout: float) -> str:
        """Ask the version until the agent answers or ``timeout`` seconds pass
        (it may still be starting, or the guest rebooting); ``""`` when it
        never answered. An answer that is not a valid one raises."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return ""
            try:
                return self.version(timeout=max(0.1, min(float(self.options.agent_timeout),
                                                         remaining)))
            except (AgentTimeout, AgentRebooted):
                continue
            except AgentNotRunning as exc:
                if self._gone_for_good(exc):
                    raise
                time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))

    def set_password(self, password: str, digest: str = "md5") -> None:
        """Diffie-Hellman key exchange, then the AES-encrypted password."""

        def exchange() -> None:
            dh = crypto.DiffieHellman()
            _domid, raw = self._call("key_init", "keyinit", float(self.options.agent_timeout),
                                     pub=dh.public)
            reply = parse_reply(raw, self.name, "keyinit", ("D0",))
            try:
                secret = dh.shared_secret(reply.message)
            except ValueError as exc:
                raise AgentBadReply(instance=self.name, command="keyinit",
                                    reason=str(exc)) from None
            # The trailing newline: some agents need it.
            sealed = crypto.encrypt(secret, (password + "\n").encode(), digest)
            _domid, raw = self._call("password", "password", float(self.options.agent_timeout),
                                     enc_pass=sealed)
            parse_reply(raw, self.name, "password", ("0",), show_message=False)
        self._retrying("password", exchange)

    def inject_file(self, path: str, contents: bytes) -> str:
        """Write a file in the guest; returns the command used (``file_inject``
        or the old agents' ``injectfile``)."""
        if not path.startswith("/") or posixpath.normpath(path) != path.rstrip("/") \
                or path.endswith("/"):
            raise AgentError(instance=self.name, command="file injection",
                             reason=f"{path!r} is not an absolute, normalised file path")
        b64_path = base64.b64encode(path.encode()).decode()
        b64_file = base64.b64encode(contents).decode()
        request = json.dumps({"name": "file_inject",
                              "value": {"b64_path": b64_path, "b64_file": b64_file}})
        if REQUEST_PATH_MAX + 1 + len(request) > XENSTORE_PAYLOAD_MAX:
            room = (XENSTORE_PAYLOAD_MAX - REQUEST_PATH_MAX - 1
                    - len(request) + len(b64_file)) * 3 // 4
            raise AgentError(instance=self.name, command="file injection",
                             reason=f"{path} is {len(contents)} bytes, but a request through "
                                    f"XenStore holds at most {max(room, 0)} bytes of file for "
                                    f"this path; use a config drive or user data for larger "
                                    f"files")


        def attempt() -> str:
            known = {"command": self._inject_command} if self._inject_command else {}
            # (the dom0 function's own argument is named "command")
            _domid, raw = self._call("inject_file", "file injection",
                                     float(self.options.agent_timeout), calls=2,
                                     b64_path=b64_path, b64_contents=b64_file, **known)
            parse_reply(raw, self.name, "file injection", ("0",))
            self._inject_command = str(raw.get("command") or "file_inject")
            return self._inject_command
        return self._retrying("file injection", attempt)

    def reset_network(self, refresh: bool = True) -> None:
        """Make the agent re-read ``vm-data/hostname`` and
        ``vm-data/networking``; with ``refresh``, first copy them from the
        VM's ``xenstore_data`` into the running domain (the domain got them
        only when it started)."""
        if refresh:
            self._retrying("resetnetwork", self._refresh_vm_data)
        self.request("resetnetwork", "resetnetwork", success=("0", "500"),
                     timeout=float(self.options.agent_resetnetwork_timeout))

    def _refresh_vm_data(self) -> None:
        wanted = {k: v for k, v in self.ctx.xapi.call("VM.get_xenstore_data", self.vm_ref).items()
                  if k == "vm-data/hostname" or k.startswith("vm-data/networking/")}
        domid = self.domid()

        def call(fn: str, **args: Any) -> Any:
            try:
                return self.dom0.call(self.host_ref, XENSTORE_PLUGIN, fn, dom_id=domid, **args)
            except exception.XapiFailure as exc:
                if exc.code == "XHOST_XENSTORE_NO_DOMAIN":
                    self._wait_for_new_domain(domid, "resetnetwork")
                    raise _Rebooted() from None
                raise AgentError(instance=self.name, command="resetnetwork",
                                 reason=f"updating the guest's vm-data failed: {exc}") from None

        live = call("list_records", path="vm-data/networking") or {}
        for mac in live:
            if f"vm-data/networking/{mac}" not in wanted:
                call("delete_record", path=f"vm-data/networking/{mac}")
        for key, value in sorted(wanted.items()):
            call("write_record", path=key, value=value)

    def update(self, url: str, md5sum: str) -> None:
        self.request("agentupdate", "agentupdate", url=url, md5sum=md5sum)
