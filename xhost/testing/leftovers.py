"""What exists on a simulated host, to find what an operation left behind.

:func:`capture` records everything an xhost operation could create or leave
behind on an embedded :class:`~xhost.sim.Simulator` -- XAPI objects (VMs,
VDIs, VBDs, VIFs, networks, VLANs, pending tasks), files of dom0 and of the
compute domain (SR contents, staging directories, ``/tmp``, plugged disk
devices, kernels), links of the dom0 network namespace and Open vSwitch
bridges and ports (real-network mode), loop devices, the image transfer
server's threads and xhost's journal -- and :func:`leftovers` compares two
captures::

    before = leftovers.capture(sim, xapi, journal=compute.journal)
    ...  # an operation that failed
    left = leftovers.leftovers(before, leftovers.capture(sim, xapi, journal=...))
    assert not left, left

The one thing an operation may leave is a *completed* cached image (the
image cache's ``Glance Image <id>`` VDI, with its unmanaged VHD parents):
allowed unless ``allow_cached=False``, but never twice for one image in one
SR.
"""
from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: other_config keys of the image cache (see :mod:`xhost.imagecache`).
_IMAGE_ID = "image-id"
_COMPLETE = "xhost_image_complete"
_INSTANCE = "nova_instance_uuid"
#: dom0 directories whose contents are not the operations' business.
_DOM0_NOISE = ("etc/", "usr/", "var/lib/xcp", "var/log/", "opt/xensource/",
               "var/xapi/", "bin/", "lib/")
_VHD_NAME = re.compile(r"^([0-9a-f-]{36})\.vhd$")
#: Thread names of xhost's short-lived servers (the local image transfer server).
TRANSFER_THREADS = ("xhost-image-transfer",)


def cached_image_complete(record: dict[str, Any]) -> bool:
    """Whether a VDI record is a completed cached image (not an instance disk)."""
    other = record.get("other_config", {})
    if _IMAGE_ID not in other or _INSTANCE in other:
        return False
    marker = other.get(_COMPLETE)
    return bool(marker) and marker in (record.get("uuid"), "true")


@dataclass
class HostState:
    """One capture of a host (see the module docstring)."""

    vms: dict[str, str]
    vdis: dict[str, dict[str, Any]]
    vbds: dict[str, str]
    vifs: dict[str, str]
    networks: dict[str, str]
    vlans: set[str]
    pending_tasks: dict[str, str]
    files: set[str]
    links: set[str]
    ovs: dict[str, list[str]]
    loops: list[str]
    threads: list[str]
    journal: list[dict[str, Any]] = field(default_factory=list)


def _dom0_files(root: Path) -> set[str]:
    found = set()
    if not root.is_dir():
        return found
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        if any(rel_dir.startswith(n) for n in _DOM0_NOISE):
            dirnames[:] = []
            continue
        for name in dirnames:
            if name.startswith(".xhost"):
                found.add(f"{rel_dir}{name}/")
        for name in filenames:
            if rel_dir.startswith("tmp/") or rel_dir == "tmp/" or not name.endswith(".lock"):
                found.add(f"{rel_dir}{name}")
    return found


def _ovs(connection: str | None) -> dict[str, list[str]]:
    if not connection:
        return {}
    def vsctl(*args: str) -> list[str]:
        out = subprocess.run(["ovs-vsctl", f"--db={connection}", "--timeout=10", *args],
                             capture_output=True, text=True, check=True).stdout
        return sorted(line for line in out.splitlines() if line)
    return {bridge: vsctl("list-ports", bridge) for bridge in vsctl("list-br")}


def _loops(state_dir: Path) -> list[str]:
    try:
        out = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    except OSError:
        return []
    return sorted(line for line in out.splitlines() if str(state_dir) in line)


def transfer_threads() -> list[str]:
    return sorted(t.name for t in threading.enumerate()
                  if t.name.startswith(TRANSFER_THREADS))


def capture(sim: Any, xapi: Any, journal: Any = None) -> HostState:
    """What exists now on ``sim`` (read through the XAPI client ``xapi``)."""
    recs = {cls: xapi.call(f"{cls}.get_all_records")
            for cls in ("VM", "VDI", "VBD", "VIF", "network", "VLAN", "task")}
    vms = {r["uuid"]: r["name_label"] for r in recs["VM"].values()
           if not r["is_a_template"] and not r["is_control_domain"]}
    vdis = {r["uuid"]: {"ref": ref, "name": r["name_label"], "managed": r["managed"],
                        "other_config": dict(r["other_config"]), "SR": r["SR"],
                        "parent": r["sm_config"].get("vhd-parent"), "uuid": r["uuid"]}
            for ref, r in recs["VDI"].items()}
    files = _dom0_files(Path(sim.dom0.root))
    files |= {f"compute/dev/{p}" for p in _listdir(Path(sim.state_dir) / "compute" / "dev")}
    links: set[str] = set()
    ovs: dict[str, list[str]] = {}
    if sim.network.real:
        links = set(sim.network.links())
        ovs = _ovs(sim.network.ovsdb_connection())
    return HostState(
        vms=vms, vdis=vdis,
        vbds={r["uuid"]: f"{r['userdevice']}:{r['VDI']}" for r in recs["VBD"].values()},
        vifs={r["uuid"]: r["MAC"] for r in recs["VIF"].values()},
        networks={r["uuid"]: r["name_label"] for r in recs["network"].values()},
        vlans={r["uuid"] for r in recs["VLAN"].values()},
        pending_tasks={r["uuid"]: r["name_label"] for r in recs["task"].values()
                       if r["status"] in ("pending", "cancelling")},
        files=files, links=links, ovs=ovs, loops=_loops(Path(sim.state_dir)),
        threads=transfer_threads(),
        journal=list(journal.entries()) if journal is not None else [])


def _listdir(path: Path) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def _allowed_vdis(after: HostState, allow_cached: bool) -> tuple[set[str], list[str]]:
    """Completed cached images and their VHD ancestors; and duplicates."""
    allowed: set[str] = set()
    problems = []
    if not allow_cached:
        return allowed, problems
    seen: dict[tuple[str, str], str] = {}
    by_uuid = after.vdis
    for uuid, rec in by_uuid.items():
        if not (rec["managed"] and cached_image_complete(rec)):
            continue
        key = (rec["other_config"][_IMAGE_ID], rec["SR"])
        if key in seen:
            problems.append(f"image {key[0]} is cached twice: {seen[key]} and {uuid}")
        seen[key] = uuid
        parent = uuid
        while parent in by_uuid and parent not in allowed:
            allowed.add(parent)
            parent = by_uuid[parent]["parent"]
    return allowed, problems


def leftovers(before: HostState, after: HostState, *, allow_cached: bool = True,
              ignore_files: tuple[str, ...] = ()) -> dict[str, Any]:
    """What ``after`` has that ``before`` had not (plus journal entries and
    transfer threads, which must not exist at all); empty if nothing."""
    out: dict[str, Any] = {}

    def new(name: str, a: dict[str, Any] | set[str], b: dict[str, Any] | set[str]) -> None:
        added = sorted(set(b) - set(a))
        if added:
            out[name] = {k: b[k] for k in added} if isinstance(b, dict) else added

    new("vms", before.vms, after.vms)
    allowed, problems = _allowed_vdis(after, allow_cached)
    vdis = {u: r for u, r in after.vdis.items() if u not in before.vdis and u not in allowed}
    if vdis:
        out["vdis"] = {u: {k: r[k] for k in ("name", "managed", "other_config")}
                       for u, r in vdis.items()}
    if problems:
        out["cache"] = problems
    new("vbds", before.vbds, after.vbds)
    new("vifs", before.vifs, after.vifs)
    new("networks", before.networks, after.networks)
    new("vlans", before.vlans, after.vlans)
    new("pending_tasks", before.pending_tasks, after.pending_tasks)
    files = set()
    allowed_names = {f"{u}.vhd" for u in allowed}
    for path in after.files - before.files:
        name = path.rsplit("/", 1)[-1]
        if name in allowed_names or path.startswith(ignore_files):
            continue
        files.add(path)
    if files:
        out["files"] = sorted(files)
    new("links", before.links, after.links)
    ovs = {}
    for bridge, ports in after.ovs.items():
        extra = sorted(set(ports) - set(before.ovs.get(bridge, [])))
        if bridge not in before.ovs or extra:
            ovs[bridge] = extra
    if ovs:
        out["ovs"] = ovs
    loops = sorted(set(after.loops) - set(before.loops))
    if loops:
        out["loops"] = loops
    if after.threads:
        out["threads"] = after.threads
    if after.journal:
        out["journal"] = after.journal
    return out


def settle(predicate: Any, timeout: float = 5.0) -> bool:
    """Wait until ``predicate()`` is true (background work finishing: the
    transfer server's idle stop, the SR's garbage collection)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
