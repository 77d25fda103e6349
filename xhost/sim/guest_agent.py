"""The guest agent of simulated guests: the XenServer / Rackspace agent protocol.

It runs "inside" a simulated guest and does what the classic Linux agent
(nova-agent / xe-guest-agent) does: it watches ``data/host`` of its domain,
reads each request ``{"name", "value"}`` and answers ``{"returncode",
"message"}`` in ``data/guest/<request id>``:

=============  ==============================  ====================================
command        value                           effect, answer
=============  ==============================  ====================================
version        ``"agent"``                     ``0``, the agent version
features       ``""``                          ``0``, comma list of its commands
keyinit        host's Diffie-Hellman public    ``D0``, the agent's public key
password       base64 AES-128-CBC ciphertext   sets the password; ``0``
file_inject    ``{"b64_path", "b64_file"}``    writes the file; ``0``
injectfile     base64 of ``"<path>,<data>"``   the same (old agents)
resetnetwork   ``""``                          re-reads ``vm-data/hostname`` and
                                               ``vm-data/networking``; ``0``
agentupdate    ``"<url>,<md5>"``               downloads the build, checks its MD5,
                                               "installs" it; ``0``
=============  ==============================  ====================================

Unknown commands get ``404``; failures ``500`` with a message. Keys written
to ``/root/.ssh/authorized_keys`` become the guest's SSH keys.

It is written apart from xhost's host side on purpose, so the tests prove
interoperability rather than symmetry: its own Diffie-Hellman code, and the
password is decrypted by the ``openssl`` command (``openssl enc -d
-aes-128-cbc -a -A -nosalt -md md5``, or ``-md sha256``), as the historical
agents did.

Which guests have an agent, and how it behaves, is the VM's
``other_config:xhost_sim_agent``, else the ``xhost_sim_agent`` property of
the image the VM was made from, else the image's ``img_use_agent`` /
``xenapi_use_agent`` property (an image that says it carries an agent does;
xhost records the image's properties on the VM as
``other_config:xhost_image_properties``). The value is a comma-separated
list: ``yes`` (a default agent) or ``no``, and options that imply ``yes``:

``version=V``
    the version it reports (default :data:`DEFAULT_VERSION`).
``old``
    an old agent: ``injectfile`` but no ``file_inject``.
``sha256``
    derives the password key with SHA-256 (OpenSSL >= 1.1's default).
``crlf``
    a Windows agent: its version ends with a (literal) ``\\r\\n``.
``reset500``
    answers ``resetnetwork`` with ``500`` (old FreeBSD / Gentoo agents).
``slow=S``
    waits S seconds before each answer.
``start-delay=S``
    starts answering S seconds after the guest booted.
``reboot=CMD``
    the guest reboots when CMD first arrives (once per VM; ``reboot-always``:
    every time), without answering.
``garbage=CMD``, ``nonjson=CMD``, ``silent=CMD``, ``code=CMD:CODE``
    CMD is answered with JSON that is not an answer, with text that is not
    JSON, not at all, or with return code CODE.

CMD is a command name or ``*``; several are joined with ``+``. The value is
read again for every request, so a running guest's agent can be changed.
``GET /sim/guests/<vm uuid>`` shows, under ``agent``, its version, features,
the commands it received (never their values) and its updates.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import random
import re
import shutil
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .xenstore import XenStoreError

if TYPE_CHECKING:
    from .guest_os import SimulatedGuest
    from .guests import GuestManager

LOG = logging.getLogger(__name__)

PREFERENCE = "agent"
IMAGE_PROPERTIES_KEY = "xhost_image_properties"
DEFAULT_VERSION = "1.0.0.0"
COMMANDS = ("version", "features", "keyinit", "password", "file_inject", "injectfile",
            "resetnetwork", "agentupdate")
#: The agents' Diffie-Hellman group: the Mersenne prime 2^107 - 1, generator 5.
DH_MODULUS = (1 << 107) - 1
DH_GENERATOR = 5
AUTHORIZED_KEYS = ".ssh/authorized_keys"
MAX_BUILD_BYTES = 64 * 1024 * 1024
_YES = {"yes", "true", "on", "1", "xenstore"}
_NO = {"no", "false", "off", "0", "none", "absent", ""}


@dataclass
class Behaviour:
    """How one guest's agent behaves (parsed from ``xhost_sim_agent``)."""

    version: str = DEFAULT_VERSION
    old: bool = False
    digest: str = "md5"
    crlf: bool = False
    reset500: bool = False
    slow: float = 0.0
    start_delay: float = 0.0
    reboot: set[str] = field(default_factory=set)
    reboot_always: set[str] = field(default_factory=set)
    garbage: set[str] = field(default_factory=set)
    nonjson: set[str] = field(default_factory=set)
    silent: set[str] = field(default_factory=set)
    codes: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def hits(commands: set[str] | dict[str, str], name: str) -> bool:
        return name in commands or "*" in commands


def parse(spec: str | None) -> Behaviour | None:
    """The behaviour a spec describes; None for no agent (or a spec that is
    not this agent's, e.g. another simulated agent's)."""
    if spec is None:
        return None
    tokens = [t.strip() for t in str(spec).split(",")]
    if len(tokens) == 1 and tokens[0].lower() in _NO:
        return None
    behaviour = Behaviour()
    for token in tokens:
        key, sep, value = token.partition("=")
        key = key.strip().lower()
        value = value.strip()
        commands = {c.strip() for c in value.split("+") if c.strip()}
        try:
            if not sep and key in _YES:
                continue
            if not sep and key in ("old", "crlf", "reset500", "sha256"):
                if key == "sha256":
                    behaviour.digest = "sha256"
                else:
                    setattr(behaviour, key, True)
            elif sep and key == "version" and value:
                behaviour.version = value
            elif sep and key in ("slow", "start-delay"):
                setattr(behaviour, key.replace("-", "_"), max(0.0, float(value)))
            elif sep and key in ("reboot", "reboot-always", "garbage", "nonjson", "silent") \
                    and commands:
                getattr(behaviour, key.replace("-", "_")).update(commands)
            elif sep and key == "code" and ":" in value:
                command, _, code = value.partition(":")
                behaviour.codes[command.strip()] = code.strip()
            else:
                return None
        except ValueError:
            return None
    return behaviour


def spec_of(vm: dict[str, Any]) -> str | None:
    """The agent spec of a VM record (see the module documentation)."""
    other = vm.get("other_config", {})
    if "xhost_sim_" + PREFERENCE in other:
        return other["xhost_sim_" + PREFERENCE]
    try:
        props = json.loads(other.get(IMAGE_PROPERTIES_KEY, "{}"))
    except ValueError:
        return None
    if not isinstance(props, dict):
        return None
    if props.get("xhost_sim_agent") not in (None, ""):
        return str(props["xhost_sim_agent"])
    for key in ("img_use_agent", "xenapi_use_agent"):
        if props.get(key) not in (None, ""):
            return "yes" if str(props[key]).strip().lower() in _YES | {"t", "y"} else "no"
    return None


def factory(guest: SimulatedGuest) -> SimulatedAgent | None:
    """The agent of a guest that just booted, when it has one."""
    if parse(spec_of(guest.vm_record())) is None:
        return None
    return SimulatedAgent(guest)


def install(manager: GuestManager) -> None:
    """Give simulated guests this agent (the simulator does it at start)."""
    manager.register_agent(factory)


def decrypt_with_openssl(secret: str, ciphertext: str, digest: str) -> bytes | None:
    """What the agents did: ``openssl enc -d``. None when it cannot decrypt."""
    openssl = shutil.which("openssl")
    if openssl is None:
        LOG.warning("simulated guest agent: the openssl command is missing; cannot decrypt")
        return None
    env = dict(os.environ, XHOST_SIM_AGENT_SECRET=secret)
    try:
        done = subprocess.run([openssl, "enc", "-d", "-aes-128-cbc", "-a", "-A", "-nosalt",
                               "-md", digest, "-pass", "env:XHOST_SIM_AGENT_SECRET"],
                              input=ciphertext.strip().encode() + b"\n", capture_output=True,
                              env=env, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


class SimulatedAgent:
    """The agent of one running simulated domain."""

    def __init__(self, guest: SimulatedGuest) -> None:
        self.guest = guest
        self.state = guest.state
        self.ready_at = time.monotonic() + self.behaviour().start_delay
        self._secret: str | None = None
        self._private = random.SystemRandom().randrange(2, DH_MODULUS - 1)
        self._seen: set[str] = set()
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        behaviour = self.behaviour()
        guest.set_agent_info(version=self._version(behaviour), features=self._features(behaviour),
                             domid=guest.domid)
        guest.xenstore.watch("data/host", self._changed)

    # -- configuration -------------------------------------------------------------
    def behaviour(self) -> Behaviour:
        return parse(spec_of(self.guest.vm_record())) or Behaviour()

    def present(self) -> bool:
        return parse(spec_of(self.guest.vm_record())) is not None

    def _version(self, behaviour: Behaviour) -> str:
        with self.state.lock:
            installed = self.state.agent.get("installed_version")
        return installed or behaviour.version

    @staticmethod
    def _features(behaviour: Behaviour) -> list[str]:
        return [c for c in COMMANDS if not (behaviour.old and c == "file_inject")]

    # -- the request loop --------------------------------------------------------------
    def stop(self) -> None:
        self._stopped.set()

    def _alive(self) -> bool:
        return not self._stopped.is_set() and self.guest.alive.is_set()

    def _sleep(self, seconds: float) -> bool:
        """Sleep unless the domain goes; False when it went."""
        deadline = time.monotonic() + seconds
        while self._alive():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True
            self._stopped.wait(min(remaining, 0.05))
        return False

    def _changed(self, _path: str, _token: str) -> None:
        with self._lock:
            if not self._alive():
                return
            try:
                pending = [r for r in self.guest.xenstore.list("data/host") if r not in self._seen]
            except XenStoreError:
                return
            for request_id in pending:
                self._seen.add(request_id)
                if not self._alive():
                    return
                try:
                    self._handle(request_id)
                except XenStoreError as exc:
                    if self._alive():
                        LOG.warning("simulated guest agent of %s: %s", self.guest.uuid, exc)

    def _handle(self, request_id: str) -> None:
        raw = self.guest.xenstore.get(f"data/host/{request_id}")
        if raw is None or not self.present():
            return
        behaviour = self.behaviour()
        if not self._sleep(max(0.0, self.ready_at - time.monotonic())):
            return
        try:
            request = json.loads(raw)
            name = str(request["name"])
            value = request.get("value", "")
        except (ValueError, KeyError, TypeError):
            self._reply(request_id, "500", "the request is not a JSON {name, value} object")
            return
        LOG.debug("simulated guest agent of %s: %s", self.guest.uuid, name)
        self._note(name)
        if self._reboots(behaviour, name):
            return
        if Behaviour.hits(behaviour.silent, name):
            return
        if behaviour.slow and not self._sleep(behaviour.slow):
            return
        if not self.guest.xenstore.exists(f"data/host/{request_id}"):
            return  # the host gave up waiting
        if Behaviour.hits(behaviour.nonjson, name):
            self.guest.xenstore.write(f"data/guest/{request_id}",
                                      "Traceback (most recent call last): agent crashed")
            return
        if Behaviour.hits(behaviour.garbage, name):
            self.guest.xenstore.write(f"data/guest/{request_id}",
                                      json.dumps({"status": "fine", "id": request_id}))
            return
        try:
            code, message = self._run(behaviour, name, value)
        except Exception as exc:  # the agent survives its own bugs
            LOG.exception("simulated guest agent of %s: %s failed", self.guest.uuid, name)
            code, message = "500", f"internal error: {type(exc).__name__}"
        for command, forced in behaviour.codes.items():
            if command in (name, "*"):
                code, message = forced, "simulated return code"
        self._reply(request_id, code, message)

    def _reply(self, request_id: str, code: str, message: str) -> None:
        self.guest.xenstore.write(f"data/guest/{request_id}",
                                  json.dumps({"returncode": code, "message": message}))

    def _note(self, name: str) -> None:
        with self.state.lock:
            received = self.state.agent.setdefault("received", [])
            received.append(name)
            del received[:-100]

    def _reboots(self, behaviour: Behaviour, name: str) -> bool:
        once = Behaviour.hits(behaviour.reboot, name)
        if not (once or Behaviour.hits(behaviour.reboot_always, name)):
            return False
        with self.state.lock:
            done = self.state.agent.setdefault("rebooted_on", [])
            if once and not Behaviour.hits(behaviour.reboot_always, name) and name in done:
                return False
            done.append(name)
        self.guest.reboot()
        return True

    # -- the commands -------------------------------------------------------------------
    def _run(self, behaviour: Behaviour, name: str, value: Any) -> tuple[str, str]:
        if name == "version":
            return "0", self._version(behaviour) + ("\\r\\n" if behaviour.crlf else "")
        if name == "features":
            return "0", ",".join(self._features(behaviour))
        if name == "keyinit":
            return self._keyinit(value)
        if name == "password":
            return self._password(behaviour, value)
        if name == "file_inject" and not behaviour.old:
            if not isinstance(value, dict):
                return "500", "file_inject takes {b64_path, b64_file}"
            return self._write_file(value.get("b64_path"), value.get("b64_file"))
        if name == "injectfile":
            try:
                decoded = base64.b64decode(str(value), validate=True)
            except (binascii.Error, ValueError):
                return "500", "injectfile takes base64"
            path, sep, data = decoded.partition(b",")
            if not sep:
                return "500", "injectfile takes base64 of <path>,<contents>"
            return self._store_file(path.decode("utf-8", "replace"), data)
        if name == "resetnetwork":
            self.guest.apply_configuration()
            return ("500" if behaviour.reset500 else "0"), ""
        if name == "agentupdate":
            return self._update(str(value))
        return "404", f"unknown command {name}"

    def _keyinit(self, value: Any) -> tuple[str, str]:
        try:
            host_public = int(str(value).strip())
        except ValueError:
            return "500", "keyinit takes the host's public key in decimal"
        if not 1 < host_public < DH_MODULUS:
            return "500", "the host's public key is out of range"
        self._secret = str(pow(host_public, self._private, DH_MODULUS))
        return "D0", str(pow(DH_GENERATOR, self._private, DH_MODULUS))

    def _password(self, behaviour: Behaviour, value: Any) -> tuple[str, str]:
        if self._secret is None:
            return "500", "no key exchange yet: send keyinit first"
        plain = decrypt_with_openssl(self._secret, str(value), behaviour.digest)
        try:
            text = plain.decode("utf-8") if plain is not None else None
        except UnicodeDecodeError:
            text = None
        if text is None or not text.endswith("\n") or not text[:-1].isprintable():
            return "500", "could not decrypt the password"
        self.guest.set_password(text[:-1])
        return "0", ""

    def _write_file(self, b64_path: Any, b64_file: Any) -> tuple[str, str]:
        try:
            path = base64.b64decode(str(b64_path), validate=True).decode("utf-8")
            data = base64.b64decode(str(b64_file), validate=True)
        except (binascii.Error, ValueError):
            return "500", "b64_path and b64_file must be base64"
        return self._store_file(path, data)

    def _store_file(self, path: str, data: bytes) -> tuple[str, str]:
        if not path.startswith("/"):
            return "500", f"{path!r} is not an absolute path"
        self.guest.inject_file(path, data)
        if path.endswith("/" + AUTHORIZED_KEYS):
            for line in data.decode("utf-8", "replace").splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    self.guest.add_ssh_key(line)
        return "0", ""

    def _update(self, value: str) -> tuple[str, str]:
        url, sep, md5 = value.rpartition(",")
        if not sep or not re.fullmatch(r"[0-9a-fA-F]{32}", md5.strip()):
            return "500", "agentupdate takes <url>,<md5>"
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                build = response.read(MAX_BUILD_BYTES + 1)
        except (OSError, ValueError) as exc:
            return "500", f"cannot download {url}: {exc}"
        if len(build) > MAX_BUILD_BYTES:
            return "500", f"{url} is larger than {MAX_BUILD_BYTES} bytes"
        digest = hashlib.md5(build).hexdigest()
        if digest != md5.strip().lower():
            return "500", f"MD5 mismatch: {url} has {digest}"
        first = build.split(b"\n", 1)[0].decode("utf-8", "replace")
        match = re.match(r"^#!?\s*xhost-sim-agent\s+(\S+)", first)
        with self.state.lock:
            self.state.agent.setdefault("updates", []).append({"url": url, "md5": digest})
            if match:
                self.state.agent["installed_version"] = match.group(1)
                self.state.agent["version"] = match.group(1)
        self.state.record("guest agent updated", url=url)
        return "0", ""
