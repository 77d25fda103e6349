#!/usr/bin/env python3
"""xhost dom0 plugin: Nova's hybrid ``qbr``/``qvb``/``qvo`` plumbing.

Security groups implemented with iptables need a Linux bridge between the
guest's interface and the switch it is connected to; Nova built it in dom0
with about two dozen separate plugin calls per VIF.  Here one call builds it
and one removes it, each running ``ip`` in one batch:

* ``plug_hybrid`` -- the Linux bridge ``qbr<id>`` (created if missing: with
  the ``linux_bridge`` backend it is the bridge xapi made for the port's
  interim network), the veth pair ``qvb<id>``/``qvo<id>`` with ``qvb`` on the
  bridge (and ``qvo`` on another Linux bridge when asked), and optionally a
  second veth pair (``tap<id>``/``vif<id>``) whose ``tap`` end is on the
  bridge -- the patch towards an Open vSwitch interim bridge.  Open vSwitch
  ports are not made here: xhost writes them over OVSDB.
* ``unplug_hybrid`` -- deletes the veth pairs and the bridge (the bridge only
  once nothing else is plugged into it).

Only ``ip`` is ever run, in dom0's network (``xhost_dom0lib.net_command``).
Interface names are checked: at most 15 characters, no ``.`` (so the
``vif<domid>.<device>`` and ``tap<domid>.<device>`` devices of running
domains can never be touched), and only names with xhost's prefixes may be
created or deleted.  Both functions are idempotent; a failed ``plug_hybrid``
removes what it created before reporting ``XHOST_NETWORK_FAILED``.
"""
import os
import re
import subprocess

import xhost_dom0lib
from xhost_dom0lib import Dom0Error

#: The only programs this script runs.
ALLOWED_PROGRAMS = ("ip",)
#: Prefixes of the devices this script may create or delete.
OWN_PREFIXES = ("qbr", "qvb", "qvo", "tap", "vif")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,14}$")
_MASTER = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,14}$")
_LINK = re.compile(r"^\d+:\s+([^:@\s]+)(?:@\S+)?:\s+<([^>]*)>(.*)$")


def _check_own(name, what):
    if not isinstance(name, str) or not _NAME.match(name) or not name.startswith(OWN_PREFIXES):
        raise Dom0Error("XHOST_DOM0_BAD_ARGS", "network",
                        "%s %r is not an xhost device name (%s + up to 12 letters, digits, "
                        "'-' or '_', no '.')" % (what, name, "/".join(OWN_PREFIXES)))
    return name


def _check_master(name):
    if not isinstance(name, str) or not _MASTER.match(name):
        raise Dom0Error("XHOST_DOM0_BAD_ARGS", "network", "bridge %r is not an interface name"
                        % (name,))
    return name


def _check_where():
    # Under the XAPI simulator (a dom0 root is set) without real-network mode
    # there is no dom0 network: the commands would change this machine's own.
    root = os.environ.get(xhost_dom0lib.ROOT_ENV, "")
    if root and root != "/" and not os.environ.get(xhost_dom0lib.NETNS_ENV):
        raise Dom0Error("XHOST_NETWORK_FAILED", "no dom0 network",
                        "this simulated host has no dom0 network namespace; start the "
                        "simulator with real_network=True (xhost sim serve --real-network)")


def _run(argv, stdin=None):
    _check_where()
    if argv[0] not in ALLOWED_PROGRAMS:
        raise Dom0Error("XHOST_DOM0_ERROR", "PermissionError",
                        "%s is not allowed here" % argv[0])
    proc = subprocess.run(xhost_dom0lib.net_command(argv), input=stdin, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True)
    return proc.returncode, proc.stdout, proc.stderr


def links():
    """{name: {"master": bridge or None, "up": bool, "bridge": bool}} of dom0's links."""
    found = {}
    for kind_bridge, argv in ((False, ["ip", "-o", "link", "show"]),
                              (True, ["ip", "-o", "link", "show", "type", "bridge"])):
        rc, out, err = _run(argv)
        if rc != 0:
            raise Dom0Error("XHOST_NETWORK_FAILED", " ".join(argv), err.strip())
        for line in out.splitlines():
            match = _LINK.match(line)
            if not match:
                continue
            name, flags, rest = match.groups()
            if kind_bridge:
                if name in found:
                    found[name]["bridge"] = True
                continue
            master = re.search(r"\smaster\s+(\S+)", rest)
            found[name] = {"master": master.group(1) if master else None,
                           "up": "UP" in flags.split(","), "bridge": False}
    return found


def _batch(commands):
    if not commands:
        return
    rc, _out, err = _run(["ip", "-batch", "-"], "".join(c + "\n" for c in commands))
    if rc != 0:
        raise Dom0Error("XHOST_NETWORK_FAILED", "ip -batch: %s" % "; ".join(commands),
                        err.strip())


def _veth(first, second, mtu, master_first, master_second, promisc):
    cmds = ["link add %s mtu %d type veth peer name %s mtu %d" % (first, mtu, second, mtu)]
    for name, master in ((first, master_first), (second, master_second)):
        if master:
            cmds.append("link set dev %s master %s" % (name, master))
        cmds.append("link set dev %s%s up" % (name, " promisc on" if promisc else ""))
    return cmds


def plug_hybrid(session, bridge, qvb, qvo, qvo_master=None, patch=None, mtu=1500):
    """Build ``bridge`` (qbr), the pair ``qvb``/``qvo`` and optionally the
    ``patch`` pair ``[tap, vif]``; return ``{"created": [names]}``."""
    bridge = _check_own(bridge, "bridge")
    qvb, qvo = _check_own(qvb, "qvb"), _check_own(qvo, "qvo")
    if qvo_master is not None:
        qvo_master = _check_master(qvo_master)
    pair = None
    if patch is not None:
        if not isinstance(patch, list) or len(patch) != 2:
            raise Dom0Error("XHOST_DOM0_BAD_ARGS", "plug_hybrid", "patch is [tap, vif]")
        pair = [_check_own(patch[0], "patch"), _check_own(patch[1], "patch")]
    if not isinstance(mtu, int) or not 68 <= mtu <= 65535:
        raise Dom0Error("XHOST_DOM0_BAD_ARGS", "plug_hybrid", "mtu %r out of range" % (mtu,))
    current = links()
    if qvo_master is not None and not current.get(qvo_master, {}).get("bridge"):
        raise Dom0Error("XHOST_NETWORK_FAILED", "qvo_master",
                        "%s is not a Linux bridge in dom0 (is the host's network backend "
                        "'bridge'? xe host-param-get param-name=software-version "
                        "param-key=network_backend)" % qvo_master)
    created = []
    cmds = []
    if bridge not in current:
        cmds += ["link add %s type bridge forward_delay 0 stp_state 0" % bridge,
                 "link set dev %s up" % bridge]
        created.append(bridge)
    elif not current[bridge]["bridge"]:
        raise Dom0Error("XHOST_NETWORK_FAILED", bridge,
                        "exists and is not a Linux bridge (is the host's network backend "
                        "'openvswitch'? hybrid plumbing on the interim network's own bridge "
                        "needs network_backend 'bridge')")
    elif not current[bridge]["up"]:
        cmds.append("link set dev %s up" % bridge)
    ends = [(qvb, qvo, bridge, qvo_master)]
    if pair:
        ends.append((pair[0], pair[1], bridge, None))
    for first, second, master_first, master_second in ends:
        ok = (first in current and second in current
              and current[first]["master"] == master_first
              and (master_second is None or current[second]["master"] == master_second)
              and current[first]["up"] and current[second]["up"])
        if ok:
            continue
        # A half-made or stale pair is replaced (deleting one end removes both).
        for name in (first, second):
            if name in current:
                cmds.append("link del dev %s" % name)
                current.pop(name, None)
        cmds += _veth(first, second, mtu, master_first, master_second, promisc=True)
        created += [first, second]
    try:
        _batch(cmds)
    except Dom0Error:
        _remove([n for n in created if n != bridge], bridge if bridge in created else None)
        raise
    return {"created": created}


def _remove(devices, bridge):
    current = links()
    cmds = ["link del dev %s" % d for d in devices if d in current]
    deleted = [d for d in devices if d in current]
    rc, _out, err = (0, "", "")
    if cmds:
        rc, _out, err = _run(["ip", "-force", "-batch", "-"], "".join(c + "\n" for c in cmds))
    if bridge and bridge in current:
        ports = [n for n, link in links().items() if link["master"] == bridge]
        if not ports:
            brc, _o, berr = _run(["ip", "link", "del", "dev", bridge])
            if brc == 0:
                deleted.append(bridge)
            elif bridge in links():
                rc, err = brc, berr
    if rc != 0 and any(d in links() for d in devices):
        raise Dom0Error("XHOST_NETWORK_FAILED", "removing %s" % ", ".join(devices), err.strip())
    return deleted


def unplug_hybrid(session, bridge, devices, delete_bridge=True):
    """Delete ``devices`` (veth ends; missing ones are fine) and, when nothing
    else is plugged into it, ``bridge``; return ``{"deleted": [names]}``."""
    bridge = _check_own(bridge, "bridge")
    if not isinstance(devices, list):
        raise Dom0Error("XHOST_DOM0_BAD_ARGS", "unplug_hybrid", "devices is a list of names")
    devices = [_check_own(d, "device") for d in devices]
    return {"deleted": _remove(devices, bridge if delete_bridge else None)}


if __name__ == "__main__":
    xhost_dom0lib.dispatch({"plug_hybrid": plug_hybrid, "unplug_hybrid": unplug_hybrid})
