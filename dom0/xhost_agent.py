#!/usr/bin/env python3
"""xhost dom0 plugin: requests to the guest agent of a running domain.

The XenServer / Rackspace guest-agent protocol over XenStore: the request
``{"name": <command>, "value": <payload>}`` is written (as JSON) to
``/local/domain/<dom_id>/data/host/<request_id>``; the agent answers in
``/local/domain/<dom_id>/data/guest/<request_id>`` with ``{"returncode":
..., "message": ...}``. This script waits for the answer, polling a little
faster at first than the historical 0.5 s, and gives up when

* the domain goes away or its id is taken by another VM (the guest rebooted:
  ``XHOST_AGENT_REBOOT [dom_id, request_id]``; the caller looks up the new
  domain id and asks again), or
* ``reply_timeout`` seconds pass (``XHOST_AGENT_TIMEOUT [command, dom_id,
  reply_timeout]``).

Whatever happens, the request and any answer are removed from XenStore. The
answer is returned as the agent wrote it (``{"reply": text}``): judging it
(JSON, return codes) is the caller's business. Payloads are never put into
error messages: the password one is a secret.

Functions (JSON arguments, see ``xhost_dom0lib``; ``reply_timeout`` in
seconds, for each request sent):

``version(dom_id, request_id, reply_timeout=30)``
``features(dom_id, request_id, reply_timeout=30)``
``key_init(dom_id, request_id, pub, reply_timeout=30)``
``password(dom_id, request_id, enc_pass, reply_timeout=30)``
``resetnetwork(dom_id, request_id, reply_timeout=60)``
``inject_file(dom_id, request_id, b64_path, b64_contents, reply_timeout=30, command=None)``
    Asks the agent's ``features`` first and sends ``file_inject`` (new
    agents) or ``injectfile`` (old ones); neither:
    ``XHOST_AGENT_NOT_IMPLEMENTED ["file injection", features]``. The
    answer's ``command`` says which; a caller that knows it already (an
    earlier file of the same boot) passes it as ``command`` and saves the
    ``features`` request.
``agentupdate(dom_id, request_id, url, md5sum, reply_timeout=30)``

Other failures: ``XHOST_AGENT_NO_DOMAIN [dom_id]`` (no such running domain),
``XHOST_AGENT_BAD_REPLY [command, reason]`` (the ``features`` answer
``inject_file`` needs is unusable), ``XHOST_XENSTORE_FAILED [command,
message]``.
"""
import base64
import binascii
import json
import re
import time

import xhost_dom0lib
import xhost_xenstore as xs
from xhost_dom0lib import Dom0Error

DEFAULT_TIMEOUT = 30.0
#: Seconds between looks at the answer: short at first (agents usually answer
#: within milliseconds), then Nova's 0.5 s.
POLL_FIRST = 0.05
POLL_MAX = 0.5
_REQUEST_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _timeout(value):
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise Dom0Error("XHOST_DOM0_BAD_ARGS", "reply_timeout", "not a number: %r" % (value,))
    if value < 0:
        raise Dom0Error("XHOST_DOM0_BAD_ARGS", "reply_timeout", "must be >= 0")
    return value


def _request_id(value):
    if not isinstance(value, str) or not _REQUEST_ID.match(value):
        raise Dom0Error("XHOST_DOM0_BAD_ARGS", "request_id",
                        "1-64 letters, digits, '-' or '_'")
    return value


def call_agent(dom_id, request_id, name, value, timeout):
    """Send one request and return the agent's answer (text)."""
    home = xs.domain_home(dom_id)
    request_id = _request_id(request_id)
    timeout = _timeout(timeout)
    vm = xs.read(home + "/vm")
    if vm is None:
        raise Dom0Error("XHOST_AGENT_NO_DOMAIN", dom_id)
    request_path = "%s/data/host/%s" % (home, request_id)
    reply_path = "%s/data/guest/%s" % (home, request_id)
    deadline = time.monotonic() + timeout
    interval = POLL_FIRST
    vanished = False
    try:
        xs.write(request_path, json.dumps({"name": name, "value": value}))
        while True:
            # One transaction: is the domain still this VM's, and has it answered?
            found = xs.read_many([home + "/vm", reply_path])
            if not found or found[0] != vm:
                vanished = True
                raise Dom0Error("XHOST_AGENT_REBOOT", dom_id, request_id)
            if len(found) == 2:
                return found[1].decode("utf-8", "replace")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Dom0Error("XHOST_AGENT_TIMEOUT", name, dom_id, "%g" % timeout)
            time.sleep(min(interval, remaining))
            interval = min(interval * 2, POLL_MAX)
    finally:
        if not vanished:
            # One command when both exist; the request alone when the agent
            # never answered (no data/guest: the pair would fail as a whole).
            if not xs.remove(reply_path, request_path):
                xs.remove(request_path)
                xs.remove(reply_path)
        else:
            # Our write may have re-created part of the vanished domain's
            # tree: remove what is left of it (-t), not only the request.
            xs.remove(reply_path, tidy=True)
            xs.remove(request_path, tidy=True)


def _answer(dom_id, request_id, name, value, timeout):
    return {"reply": call_agent(dom_id, request_id, name, value, timeout)}


def version(session, dom_id, request_id, reply_timeout=DEFAULT_TIMEOUT):
    return _answer(dom_id, request_id, "version", "agent", reply_timeout)


def features(session, dom_id, request_id, reply_timeout=DEFAULT_TIMEOUT):
    return _answer(dom_id, request_id, "features", "", reply_timeout)


def key_init(session, dom_id, request_id, pub, reply_timeout=DEFAULT_TIMEOUT):
    # A string: some Windows agents crash on a JSON number.
    return _answer(dom_id, request_id, "keyinit", str(pub), reply_timeout)


def password(session, dom_id, request_id, enc_pass, reply_timeout=DEFAULT_TIMEOUT):
    return _answer(dom_id, request_id, "password", enc_pass, reply_timeout)


def resetnetwork(session, dom_id, request_id, reply_timeout=60):
    return _answer(dom_id, request_id, "resetnetwork", "", reply_timeout)


def agentupdate(session, dom_id, request_id, url, md5sum, reply_timeout=DEFAULT_TIMEOUT):
    return _answer(dom_id, request_id, "agentupdate", "%s,%s" % (url, md5sum), reply_timeout)


def _feature_list(reply):
    try:
        doc = json.loads(reply)
    except ValueError:
        raise Dom0Error("XHOST_AGENT_BAD_REPLY", "features", "the answer is not JSON")
    if not isinstance(doc, dict) or str(doc.get("returncode")) != "0":
        raise Dom0Error("XHOST_AGENT_BAD_REPLY", "features",
                        "no returncode 0 in the answer")
    return [f.strip() for f in str(doc.get("message", "")).split(",") if f.strip()]


def inject_file(session, dom_id, request_id, b64_path, b64_contents,
                reply_timeout=DEFAULT_TIMEOUT, command=None):
    try:
        path = base64.b64decode(b64_path.encode("ascii"), validate=True)
        contents = base64.b64decode(b64_contents.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, AttributeError):
        raise Dom0Error("XHOST_DOM0_BAD_ARGS", "b64_path/b64_contents", "not base64")
    if command not in (None, "file_inject", "injectfile"):
        raise Dom0Error("XHOST_DOM0_BAD_ARGS", "command", "file_inject or injectfile")
    if command is None:
        have = _feature_list(call_agent(dom_id, request_id + "-f", "features", "",
                                        reply_timeout))
    else:
        have = [command]
    if "file_inject" in have:
        value = {"b64_path": b64_path, "b64_file": b64_contents}
        command = "file_inject"
    elif "injectfile" in have:
        # The old agents' form: base64 of "<path>,<contents>", split at the
        # first comma, so a path with a comma cannot be sent that way.
        if b"," in path:
            raise Dom0Error("XHOST_AGENT_NOT_IMPLEMENTED",
                            "file injection of a path containing ','", ",".join(have))
        value = base64.b64encode(path + b"," + contents).decode("ascii")
        command = "injectfile"
    else:
        raise Dom0Error("XHOST_AGENT_NOT_IMPLEMENTED", "file injection", ",".join(have))
    result = _answer(dom_id, request_id, command, value, reply_timeout)
    result["command"] = command
    return result


if __name__ == "__main__":
    xhost_dom0lib.dispatch({
        "version": version,
        "features": features,
        "key_init": key_init,
        "password": password,
        "resetnetwork": resetnetwork,
        "inject_file": inject_file,
        "agentupdate": agentupdate,
    })
