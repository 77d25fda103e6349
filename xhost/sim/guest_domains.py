"""The toolstack's part of a domain's XenStore tree (what xenopsd writes).

For domain ``D`` of VM ``U``::

    /local/domain/D            n0,rD   name, domid, vm=/vm/U, vss=/vss/U
        memory/ cpu/ platform/         from the VM record
        control/  data/ attr/ ...  nD  writable by the guest
        vm-data/...                nD  VM.xenstore_data keys under vm-data/
        device/vif/<n>/            frontend: backend, backend-id, handle, mac, mtu, state
        device/vbd/<devid>/        frontend of each attached disk or CD
    /local/domain/0/backend/vif/D/<n>/    the matching backends
    /local/domain/0/backend/vbd3/D/<devid>/
    /vm/U                      uuid, name, domains/D

``VM.xenstore_data`` is copied at domain creation only, as xapi does: later
changes to the VM record do not reach a running guest.
"""
from __future__ import annotations

import logging
from typing import Any

from .db import Database
from .errors import NULL_REF
from .xenstore import XenStore, XenStoreError, domain_path

LOG = logging.getLogger(__name__)

#: Directories of a domain's home that the guest may write.
GUEST_WRITABLE = ("device", "error", "drivers", "control", "attr", "data", "messages",
                  "vm-data", "feature")
#: Keys the toolstack puts in control/ for every domain.
PLATFORM_FEATURES = {"platform-feature-multiprocessor-suspend": "1",
                     "platform-feature-xs_reset_watches": "1"}
XEN_STATE_INITIALISING = "1"
XEN_STATE_INIT_WAIT = "2"
XEN_STATE_CONNECTED = "4"


def vbd_devid(userdevice: str) -> int:
    """Xen's virtual device number of ``xvd<letter>`` for a VBD's userdevice."""
    index = int(userdevice) if userdevice.isdigit() else 0
    return 202 * 256 + 16 * index


def _backend_vif(domid: int, device: str) -> str:
    return f"/local/domain/0/backend/vif/{domid}/{device}"


def _backend_vbd(domid: int, devid: int) -> str:
    return f"/local/domain/0/backend/vbd3/{domid}/{devid}"


def build_dom0(store: XenStore, db: Database) -> None:
    """The control domain's own home."""
    dom0 = next((ref for ref, rec in db.all("VM").items() if rec["is_control_domain"]), None)
    home = domain_path(0)
    with store.transaction():
        store.mkdir(home, perms=["n0"])
        store.write(f"{home}/name", "Domain-0")
        store.write(f"{home}/domid", "0")
        if dom0 is not None:
            rec = db.get("VM", dom0)
            store.write(f"{home}/vm", f"/vm/{rec['uuid']}")
            store.write(f"{home}/memory/target", str(rec["memory_target"] // 1024))
        for key, value in PLATFORM_FEATURES.items():
            store.write(f"{home}/control/{key}", value)
        store.mkdir(f"{home}/backend")


def build_domain(store: XenStore, db: Database, vm: str, domid: int) -> None:
    """Create the XenStore tree of the new domain ``domid`` of ``vm``."""
    rec = db.get("VM", vm)
    home = domain_path(domid)
    ro = ["n0", f"r{domid}"]
    rw = [f"n{domid}"]
    uuid = rec["uuid"]
    with store.transaction():
        if store.exists(home):
            store.rm(home)
        store.mkdir(home, perms=ro)
        store.write(f"{home}/vm", f"/vm/{uuid}")
        store.write(f"{home}/vss", f"/vss/{uuid}")
        store.write(f"{home}/name", rec["name_label"])
        store.write(f"{home}/domid", str(domid))
        for sub in GUEST_WRITABLE:
            store.mkdir(f"{home}/{sub}", perms=rw)
        store.write(f"{home}/memory/static-max", str(rec["memory_static_max"] // 1024))
        store.write(f"{home}/memory/target", str(rec["memory_dynamic_max"] // 1024))
        for cpu in range(rec["VCPUs_max"]):
            store.write(f"{home}/cpu/{cpu}/availability",
                        "online" if cpu < rec["VCPUs_at_startup"] else "offline")
        for key, value in rec["platform"].items():
            _write_quietly(store, f"{home}/platform/{key}", value)
        for key, value in PLATFORM_FEATURES.items():
            store.write(f"{home}/control/{key}", value)
        store.write(f"{home}/control/has-vendor-device",
                    "1" if rec["has_vendor_device"] else "0")
        for key, value in rec["xenstore_data"].items():
            # Like xapi: only vm-data/ keys reach the guest.
            if key == "vm-data" or key.startswith("vm-data/"):
                _write_quietly(store, f"{home}/{key}", value)
        _build_vifs(store, db, rec, home, domid)
        _build_vbds(store, db, rec, home, domid)
        store.write(f"/vm/{uuid}/uuid", uuid)
        store.write(f"/vm/{uuid}/name", rec["name_label"])
        store.write(f"/vm/{uuid}/domains/{domid}", home)
    store.fire_special("@introduceDomain")


def _write_quietly(store: XenStore, path: str, value: str) -> None:
    try:
        store.write(path, value)
    except XenStoreError as exc:
        LOG.warning("cannot put %s into XenStore (%s); skipped", path, exc.code)


def sync_devices(store: XenStore, db: Database, vm: str, domid: int) -> None:
    """Hot-plug: make ``device/vif`` and ``device/vbd`` (and their backends)
    match the VM's currently attached VIFs and VBDs."""
    rec = db.get("VM", vm)
    home = domain_path(domid)
    with store.transaction():
        wanted_vifs = {v["device"] for v in (db.find("VIF", r) for r in rec["VIFs"])
                       if v is not None and v["currently_attached"]}
        wanted_vbds = {str(vbd_devid(v["userdevice"])) for v in
                       (db.find("VBD", r) for r in rec["VBDs"])
                       if v is not None and v["currently_attached"]}
        for kind, back_kind, wanted in (("vif", "vif", wanted_vifs),
                                        ("vbd", "vbd3", wanted_vbds)):
            for dev in _children(store, f"{home}/device/{kind}"):
                if dev not in wanted:
                    store.rm(f"{home}/device/{kind}/{dev}")
                    if store.exists(f"/local/domain/0/backend/{back_kind}/{domid}/{dev}"):
                        store.rm(f"/local/domain/0/backend/{back_kind}/{domid}/{dev}")
        _build_vifs(store, db, rec, home, domid, skip_existing=True)
        _build_vbds(store, db, rec, home, domid, skip_existing=True)


def _children(store: XenStore, path: str) -> list[str]:
    try:
        return store.directory(path)
    except XenStoreError:
        return []


def _build_vifs(store: XenStore, db: Database, rec: dict[str, Any], home: str,
                domid: int, skip_existing: bool = False) -> None:
    for vif in rec["VIFs"]:
        vrec = db.find("VIF", vif)
        if vrec is None or not vrec["currently_attached"]:
            continue
        device = vrec["device"]
        if skip_existing and store.exists(f"{home}/device/vif/{device}"):
            continue
        front = f"{home}/device/vif/{device}"
        back = _backend_vif(domid, device)
        net = db.find("network", vrec["network"]) if vrec["network"] != NULL_REF else None
        mtu = str(vrec["MTU"] or (net["MTU"] if net else 1500))
        for key, value in (("backend", back), ("backend-id", "0"), ("handle", device),
                           ("mac", vrec["MAC"]), ("mtu", mtu),
                           ("state", XEN_STATE_INITIALISING)):
            store.write(f"{front}/{key}", value)
        for key, value in (("frontend", front), ("frontend-id", str(domid)), ("online", "1"),
                           ("handle", device), ("mac", vrec["MAC"]), ("mtu", mtu),
                           ("bridge", net["bridge"] if net else ""),
                           ("script", "/etc/xensource/scripts/vif"),
                           ("state", XEN_STATE_INIT_WAIT)):
            store.write(f"{back}/{key}", value)


def _build_vbds(store: XenStore, db: Database, rec: dict[str, Any], home: str,
                domid: int, skip_existing: bool = False) -> None:
    for vbd in rec["VBDs"]:
        vrec = db.find("VBD", vbd)
        if vrec is None or not vrec["currently_attached"]:
            continue
        devid = vbd_devid(vrec["userdevice"])
        if skip_existing and store.exists(f"{home}/device/vbd/{devid}"):
            continue
        front = f"{home}/device/vbd/{devid}"
        back = _backend_vbd(domid, devid)
        vdi = db.find("VDI", vrec["VDI"]) if vrec["VDI"] != NULL_REF else None
        kind = "cdrom" if vrec["type"] == "CD" else "disk"
        for key, value in (("backend", back), ("backend-id", "0"),
                           ("virtual-device", str(devid)), ("device-type", kind),
                           ("state", XEN_STATE_INITIALISING)):
            store.write(f"{front}/{key}", value)
        for key, value in (("frontend", front), ("frontend-id", str(domid)), ("online", "1"),
                           ("dev", vrec["device"]), ("mode", "w" if vrec["mode"] == "RW" else "r"),
                           ("params", vdi["uuid"] if vdi else ""),
                           ("device-type", kind), ("state", XEN_STATE_INIT_WAIT)):
            store.write(f"{back}/{key}", value)


def connect_backends(store: XenStore, domid: int) -> None:
    """The guest's PV drivers connected: backends go to state Connected."""
    for kind in ("vif", "vbd3"):
        base = f"/local/domain/0/backend/{kind}/{domid}"
        try:
            devices = store.directory(base)
        except XenStoreError:
            continue
        for dev in devices:
            store.write(f"{base}/{dev}/state", XEN_STATE_CONNECTED)


def destroy_domain(store: XenStore, domid: int, vm_uuid: str | None) -> None:
    """Remove everything of domain ``domid`` (it is gone)."""
    with store.transaction():
        for path in (domain_path(domid), f"/local/domain/0/backend/vif/{domid}",
                     f"/local/domain/0/backend/vbd3/{domid}"):
            if store.exists(path):
                store.rm(path)
        if vm_uuid:
            vm_path = f"/vm/{vm_uuid}"
            if store.exists(f"{vm_path}/domains/{domid}"):
                store.rm(f"{vm_path}/domains/{domid}")
            domains = f"{vm_path}/domains"
            if store.exists(vm_path) and (not store.exists(domains)
                                          or not store.directory(domains)):
                store.rm(vm_path)
    store.unwatch_owner(domid)
    store.fire_special("@releaseDomain")
