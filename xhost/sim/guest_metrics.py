"""From a guest's XenStore keys to ``VM_guest_metrics``, the way xapi maps them.

=============================================  ========================================
guest key (relative to the domain's home)      VM_guest_metrics
=============================================  ========================================
``attr/PVAddons/{Major,Minor,Micro,Build}``    ``PV_drivers_version`` major/minor/
``Version``, ``attr/PVAddons/Application``     micro (``-1`` when absent)/build/...
``drivers/<n>`` "Vendor NAME version attr"     ``PV_drivers_version[name]``
``data/os_{name,uname,distro,majorver,``       ``os_version`` name/uname/distro/major/
``minorver}``, ``attr/os/sp{major,minor}``     minor/spmajor/spminor
``attr/vif/<n>/ipv4/<i>``, ``ipv6/<i>``        ``networks`` ``<n>/ipv4/<i>`` (and
                                               ``<n>/ip`` for the first), ``<n>/ipv6/<i>``
``attr/eth<n>/ip``, ``attr/eth<n>/ipv6/<i>/``  the same, legacy protocol
``addr``
``control/<key>``                              ``other[key]`` (``data-cant-suspend-
                                               reason`` replaces ``feature-suspend``)
``data/host_name_dns`` (+ ``data/domain``)     ``netbios_name["host_name"]``
``data/service/<svc>/<key>``                   ``services["<svc>/<key>"]``
``feature/hotplug/{vbd,vif}``                  ``can_use_hotplug_{vbd,vif}``
=============================================  ========================================

Guest metrics exist once the guest's PV tools announced themselves
(``data/updated`` or ``attr/PVAddons``); ``PV_drivers_up_to_date`` follows
``PV_drivers_detected``, as in xapi.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import lifecycle
from .errors import NULL_REF
from .xapi_types import now_datetime
from .xenstore import XenStore, domain_path

if TYPE_CHECKING:
    from .simulator import Simulator

Lookup = Callable[[str], "str | None"]
Lister = Callable[[str], list[str]]

PV_DRIVERS_VERSION = [("attr/PVAddons/MajorVersion", "major"),
                      ("attr/PVAddons/MinorVersion", "minor"),
                      ("attr/PVAddons/MicroVersion", "micro"),
                      ("attr/PVAddons/BuildVersion", "build"),
                      ("attr/PVAddons/Application", "application")]
OS_VERSION = [("data/os_name", "name"), ("data/os_uname", "uname"),
              ("data/os_distro", "distro"), ("data/os_majorver", "major"),
              ("data/os_minorver", "minor"), ("attr/os/spmajor", "spmajor"),
              ("attr/os/spminor", "spminor")]
_IFACE_PREFIXES = ("eth", "xenbr", "eno", "ens", "emp", "enx")
#: Subtrees whose changes make xapi re-read the guest agent's data.
WATCHED = ("attr", "data", "control", "feature", "drivers", "xenserver/attr")
#: Longest a changed key waits for the guest's record while events keep coming.
REREAD_LATENCY = 0.1


def _network_keys(path: str, vif_type: str, listdir: Lister) -> list[tuple[str, str]]:
    vifs = listdir(f"{path}/{vif_type}")
    pairs: list[tuple[str, str]] = []
    if not vifs:
        for eth in listdir(path):
            prefix = next((p for p in _IFACE_PREFIXES if eth.startswith(p)), None)
            if prefix is None:
                continue
            n = eth[len(prefix):]
            base = f"{path}/{eth}"
            pairs += [(f"{base}/ip", f"{n}/ip"), (f"{base}/ip", f"{n}/ipv4/0")]
            if "ipv6" in listdir(base):
                pairs += [(f"{base}/ipv6/{i}/addr", f"{n}/ipv6/{i}")
                          for i in listdir(f"{base}/ipv6")]
        return pairs
    for vif_id in vifs:
        vif_path = f"{path}/{vif_type}/{vif_id}"
        for ip_ver in (v for v in listdir(vif_path) if v in ("ipv4", "ipv6")):
            try:
                ids = sorted(listdir(f"{vif_path}/{ip_ver}"), key=int)
            except ValueError:
                continue
            for position, ip_id in enumerate(ids):
                left = f"{vif_path}/{ip_ver}/{ip_id}"
                if position == 0 and ip_ver == "ipv4":
                    pairs.append((left, f"{vif_id}/ip"))
                pairs.append((left, f"{vif_id}/{ip_ver}/{ip_id}"))
    return pairs


def collect(lookup: Lookup, listdir: Lister) -> dict[str, Any]:
    """The guest-metrics fields the guest's keys define (xapi's reading)."""
    def to_map(pairs: list[tuple[str, str]]) -> dict[str, str]:
        out: dict[str, str] = {}
        for xskey, mapkey in pairs:
            value = lookup(xskey)
            if value is not None:
                out.setdefault(mapkey, value)
        return out

    pv = to_map(PV_DRIVERS_VERSION)
    for index in listdir("drivers"):
        if index.isdigit():
            parts = (lookup(f"drivers/{index}") or "").split(" ", 3)
            if len(parts) >= 3:
                pv[parts[1].lower()] = " ".join([parts[0], *parts[2:]]).strip()
    if pv and "micro" not in pv:
        pv["micro"] = "-1"
    other: dict[str, str] = {}
    cant_suspend = lookup("data/cant_suspend_reason")
    for key in listdir("control"):
        value = lookup(f"control/{key}")
        if value is None:
            continue
        if key == "feature-suspend" and cant_suspend is not None:
            other["data-cant-suspend-reason"] = cant_suspend
        else:
            other[key] = value
    ts = lookup("data/ts")
    if ts is not None:
        other["data-ts"] = ts
    netbios = to_map([("data/host_name_dns", "host_name")])
    domain = lookup("data/domain")
    if domain and netbios:
        netbios = {k: f"{v}.{domain}" for k, v in netbios.items()}
    services = {f"{svc}/{key}": lookup(f"data/service/{svc}/{key}") or ""
                for svc in listdir("data/service") for key in listdir(f"data/service/{svc}")}

    def tristate(key: str) -> str:
        return {"0": "no", "1": "yes"}.get(lookup(key) or "", "unspecified")

    return {
        "PV_drivers_version": pv,
        "os_version": to_map(OS_VERSION),
        "netbios_name": netbios,
        "networks": to_map(_network_keys("attr", "vif", listdir)
                           + _network_keys("xenserver/attr", "net-sriov-vf", listdir)),
        "other": other,
        "services": services,
        "can_use_hotplug_vbd": tristate("feature/hotplug/vbd"),
        "can_use_hotplug_vif": tristate("feature/hotplug/vif"),
    }


def pv_drivers_detected(lookup: Lookup) -> bool:
    return lookup("data/updated") is not None or lookup("attr/PVAddons/MajorVersion") is not None


class GuestMetricsPublisher:
    """Keeps ``VM_guest_metrics`` in step with the guests' XenStore keys."""

    def __init__(self, sim: Simulator, store: XenStore) -> None:
        self.sim = sim
        self.store = store
        self._cache: dict[int, dict[str, Any]] = {}
        self._lock = threading.Lock()
        #: Domains whose keys changed since their last reading, and since when.
        self._dirty: dict[tuple[str, int], float] = {}
        self._dirty_lock = threading.Lock()
        store.idle_hooks.append(self.flush)

    def changed(self, vm: str, domid: int) -> None:
        """A watched key of the domain changed. xapi re-reads a guest's keys
        when its watch events have been handled, not once per key: a guest
        writing twenty keys costs one reading (at the latest after
        ``REREAD_LATENCY`` even if events keep coming)."""
        now = time.monotonic()
        with self._dirty_lock:
            since = self._dirty.setdefault((vm, domid), now)
        if now - since >= REREAD_LATENCY:
            self.flush()

    def flush(self) -> None:
        """Re-read every domain whose keys changed."""
        with self._dirty_lock:
            dirty, self._dirty = self._dirty, {}
        for vm, domid in dirty:
            self.refresh(vm, domid)

    def _readers(self, domid: int) -> tuple[Lookup, Lister] | None:
        """Readers over the domain's keys as they are now (None: no domain);
        one walk of its tree, not a locked read per key."""
        tree = self.store.read_tree(domain_path(domid))
        if tree is None:
            return None
        values, children = tree

        def listdir(key: str) -> list[str]:
            return children.get(key, [])
        return values.get, listdir

    def forget(self, domid: int) -> None:
        with self._lock:
            self._cache.pop(domid, None)

    def refresh(self, vm: str, domid: int) -> bool:
        """Re-read domain ``domid`` of ``vm``; returns whether the record changed."""
        with self._lock:
            readers = self._readers(domid)
            if readers is None:
                return False
            lookup, listdir = readers
            values = collect(lookup, listdir)
            detected = pv_drivers_detected(lookup)
            cached = self._cache.get(domid)
            if cached == dict(values, detected=detected):
                return False
            db = self.sim.db
            with db.lock:
                rec = db.find("VM", vm)
                if rec is None or rec["domid"] != domid or not detected:
                    return False
                self._cache[domid] = dict(values, detected=detected)
                spec = self.sim.schema.classes["VM_guest_metrics"]
                # Fields of newer API versions (netbios_name, services) only
                # where the datamodel has them.
                fields = {k: v for k, v in dict(
                    values, PV_drivers_detected=detected, PV_drivers_up_to_date=detected,
                    live=True, last_updated=now_datetime()).items() if k in spec.fields}
                gm = rec["guest_metrics"]
                if gm != NULL_REF and db.exists("VM_guest_metrics", gm):
                    db.update("VM_guest_metrics", gm, **fields)
                else:
                    gm = db.add("VM_guest_metrics", spec.new_record(
                        dict(fields, memory={}, disks={}, other_config={})))
                    db.update("VM", vm, guest_metrics=gm)
                lifecycle.update_allowed_operations(db, vm)
            return True

    def drop(self, vm: str, domid: int | None) -> None:
        """The domain is gone: xapi destroys the VM's guest metrics."""
        if domid is not None:
            self.forget(domid)
        db = self.sim.db
        with db.lock:
            rec = db.find("VM", vm)
            if rec is None:
                return
            gm = rec["guest_metrics"]
            if gm != NULL_REF:
                db.update("VM", vm, guest_metrics=NULL_REF)
                if db.exists("VM_guest_metrics", gm):
                    db.remove("VM_guest_metrics", gm)
