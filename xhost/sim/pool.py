"""Pools of simulated hosts: members, master failover, joining and ejecting.

A :class:`~xhost.sim.Simulator` holds one pool database and serves each host
of the pool on its own port of the same address.  Every host knows which
host it takes for the master; a host that is not the master answers
``HOST_IS_SLAVE ["<ip>:<port>"]`` (the master's endpoint: the hosts share an
IP, so the port is part of it), except for the emergency calls an
administrator makes on a member (``session.slave_local_login_with_password``,
``pool.emergency_transition_to_master``, ``pool.emergency_reset_master``).

Master changes follow xapi:

* ``pool.designate_new_master(host)`` -- an orderly change; every live host
  follows the new master at once;
* :func:`crash_host` takes a host down (its port refuses connections,
  ``host_metrics.live`` false); with the master down, members keep pointing at
  it until ``pool.emergency_transition_to_master`` on one of them (it becomes
  the master) and ``pool.recover_slaves`` on the new master (the others
  follow it), or ``pool.emergency_reset_master`` on each.  The simulator has
  one database, so there is no split brain: a live old master follows the
  new one.

Joining and ejecting are in :mod:`xhost.sim.pool_membership`; the
``/sim/pool`` control endpoints in :mod:`xhost.sim.pool_control`.
"""
from __future__ import annotations

import json
import logging
import time
import uuid as uuidlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import NULL_REF, ApiError
from .seed import _sr_operations, sr_update

if TYPE_CHECKING:
    from .simulator import SimHost, Simulator

LOG = logging.getLogger(__name__)

JOINED_FILE = "joined.json"
GiB = 1 << 30


def joined_message(state_dir: Path) -> str:
    try:
        doc = json.loads((state_dir / JOINED_FILE).read_text())
        where = doc.get("master", "another pool")
    except (OSError, ValueError):
        where = "another pool"
    return (f"the host of state directory {state_dir} joined the pool at {where}; that "
            f"pool's simulator serves it.  Remove {state_dir / JOINED_FILE} to start this "
            "host standalone again (its database is from before the join)")


def the_pool(sim: Simulator) -> tuple[str, dict[str, Any]]:
    return next(iter(sim.db.all("pool").items()))


def host_order(sim: Simulator) -> list[str]:
    """Host references, the master first, then in creation order."""
    refs = sim.db.refs("host")
    return [sim.master_ref] + [r for r in refs if r != sim.master_ref]


def served(sim: Simulator, host_ref: str) -> SimHost | None:
    for host in sim.hosts:
        if host.host_ref == host_ref:
            return host
    return None


def is_live(sim: Simulator, host_ref: str) -> bool:
    host = served(sim, host_ref)
    if host is not None:
        return host.live
    rec = sim.db.find("host", host_ref)
    metrics = sim.db.find("host_metrics", rec["metrics"]) if rec else None
    return bool(metrics and metrics["live"])


def assert_live(sim: Simulator, host_ref: str) -> None:
    """HOST_OFFLINE [host] unless the host is up (xapi's forwarding check)."""
    if not is_live(sim, host_ref):
        raise ApiError("HOST_OFFLINE", host_ref)


# -- roles -----------------------------------------------------------------------

def refresh_roles(sim: Simulator) -> None:
    """Recompute what each served host answers (``SimHost.master_address``)."""
    by_ref = {h.host_ref: h for h in sim.hosts}
    for host in sim.hosts:
        if host.forced_master is not None:
            host.master_address = host.forced_master
            continue
        believed = host.believed_master or sim.master_ref
        if believed == host.host_ref:
            host.master_address = None
            continue
        other = by_ref.get(believed)
        if other is not None:
            host.master_address = other.endpoint
        else:
            rec = sim.db.find("host", believed)
            host.master_address = rec["address"] if rec else sim.public_address


def _set_master(sim: Simulator, host_ref: str) -> None:
    pool_ref, _ = the_pool(sim)
    sim.db.update("pool", pool_ref, master=host_ref)
    sim.master_ref = host_ref


def designate_new_master(sim: Simulator, host_ref: str) -> None:
    """An orderly master change (``pool.designate_new_master``)."""
    sim.db.get("host", host_ref)
    assert_live(sim, host_ref)
    if sim.master_ref == host_ref:
        return
    sim.persistence.flush(force=True)  # xapi syncs the database to the new master first
    _set_master(sim, host_ref)
    for host in sim.hosts:
        if host.live:
            host.believed_master = None
    refresh_roles(sim)
    LOG.info("pool master is now %s", host_ref)


def emergency_transition_to_master(sim: Simulator, host_ref: str) -> None:
    """``pool.emergency_transition_to_master`` run on ``host_ref``."""
    old = sim.master_ref
    if old == host_ref:
        return
    for host in sim.hosts:
        if host.host_ref not in (host_ref, old) and host.believed_master is None:
            host.believed_master = old  # members still look for the old master
    _set_master(sim, host_ref)
    for host in sim.hosts:
        if host.host_ref in (host_ref, old):
            host.believed_master = None
    refresh_roles(sim)
    LOG.info("host %s took over as pool master (emergency)", host_ref)


def recover_slaves(sim: Simulator, master_ref: str) -> list[str]:
    """``pool.recover_slaves`` on the master: every reachable member follows it."""
    recovered = []
    for host in sim.hosts:
        if host.host_ref == master_ref or not host.live:
            continue
        host.believed_master = None
        recovered.append(host.host_ref)
    refresh_roles(sim)
    return recovered


def emergency_reset_master(sim: Simulator, host_ref: str, address: str) -> None:
    """``pool.emergency_reset_master`` on a member: follow the master at ``address``."""
    member = served(sim, host_ref)
    if member is None:
        return
    target = None
    for host in sim.hosts:
        rec = sim.db.find("host", host.host_ref) or {}
        if address in (host.endpoint, host.url):
            target = host.host_ref
            break
        if address == rec.get("address") and target is None:
            target = host.host_ref
    if target is None:
        member.forced_master = address
    else:
        member.forced_master = None
        member.believed_master = target
    refresh_roles(sim)


def crash_host(sim: Simulator, host_ref: str) -> None:
    """Take a host down: connections refused, ``host_metrics.live`` false."""
    host = served(sim, host_ref)
    if host is None:
        raise KeyError(f"host {host_ref} is not served by this simulator")
    if not host.live:
        return
    host.live = False
    host.server.stop()
    _set_live(sim, host_ref, False)
    LOG.info("host %s is down", host_ref)


def restart_host(sim: Simulator, host_ref: str) -> None:
    """Bring a crashed host back on its port; it follows the current master."""
    host = served(sim, host_ref)
    if host is None:
        raise KeyError(f"host {host_ref} is not served by this simulator")
    if host.live:
        return
    host.server = _bind(sim, host.port, timeout=5.0)
    sim._install(host)
    host.server.start()
    host.live = True
    host.believed_master = None
    _set_live(sim, host_ref, True)
    refresh_roles(sim)
    sim.network.sync()


def _set_live(sim: Simulator, host_ref: str, live: bool) -> None:
    rec = sim.db.find("host", host_ref)
    if rec is not None and sim.db.exists("host_metrics", rec["metrics"]):
        sim.db.update("host_metrics", rec["metrics"], live=live)


def _bind(sim: Simulator, port: int, timeout: float) -> Any:
    from .http_server import HttpServer

    deadline = time.monotonic() + timeout
    while True:
        try:
            return HttpServer(sim.bind, port, sim._ssl)
        except OSError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


# -- seeding a pool ------------------------------------------------------------------

def _add(sim: Simulator, cls: str, values: dict[str, Any]) -> str:
    spec = sim.schema.classes[cls]
    values = {k: v for k, v in values.items() if k in spec.fields}
    return sim.db.add(cls, spec.new_record(values))


def _copy(sim: Simulator, cls: str, rec: dict[str, Any], **changes: Any) -> str:
    values = dict(rec)
    values.pop("uuid", None)
    values.update(changes)
    return _add(sim, cls, values)


def _mac(host_uuid: str, index: int) -> str:
    raw = host_uuid.replace("-", "")
    return "52:54:00:%02x:%s:%s" % (index, raw[0:2], raw[2:4])


def add_shared_sr(sim: Simulator, hosts: list[str]) -> str:
    """An NFS SR shared by ``hosts`` (one PBD each), made the pool's default SR."""
    sr_uuid = str(uuidlib.uuid4())
    sr = _add(sim, "SR", {
        "uuid": sr_uuid, "name_label": "Shared storage",
        "name_description": "NFS SR shared by the pool", "type": "nfs",
        "content_type": "user", "physical_size": 2048 * GiB, "shared": True,
        "other_config": {"auto-scan": "false"}, "sm_config": {},
        "allowed_operations": _sr_operations(sim, "user"), "clustered": False})
    config = {"server": "192.0.2.100", "serverpath": "/srv/xcp-sr", "nfsversion": "4.1",
              "path": f"/var/run/sr-mount/{sr_uuid}"}
    for host in hosts:
        _add(sim, "PBD", {"host": host, "SR": sr, "device_config": dict(config),
                          "currently_attached": True, "other_config": {}})
    pool_ref, _ = the_pool(sim)
    sim.db.update("pool", pool_ref, default_SR=sr, suspend_image_SR=sr, crash_dump_SR=sr)
    sr_update(sim, sr)
    _attach_sr(sim, sr)
    return sr


def _attach_sr(sim: Simulator, sr: str) -> None:
    from .dispatch import CallContext

    try:
        sim.storage.for_sr(sr).sr_attach(CallContext(sim, None, None, "PBD.plug"), sr)
    except ApiError:
        LOG.warning("attaching SR %s failed", sr, exc_info=True)


def seed_members(sim: Simulator, count: int) -> None:
    """Add ``count`` members to a freshly seeded pool of one, and a shared SR."""
    master = sim.master_ref if sim.master_ref != NULL_REF else the_pool(sim)[1]["master"]
    members = [clone_host(sim, master, f"{sim.host_name}-{i + 2}") for i in range(count)]
    add_shared_sr(sim, [master, *members])


def clone_host(sim: Simulator, template: str, name: str) -> str:
    """A new host like ``template``: same hardware, its own control domain,
    PIFs on the same pool-wide networks, its own local SRs, PBDs to the
    shared SRs."""
    db = sim.db
    t = db.get("host", template)
    host_uuid = str(uuidlib.uuid4())
    tm = db.get("host_metrics", t["metrics"])
    metrics = _copy(sim, "host_metrics", tm, live=True)
    sv = dict(t["software_version"], hostname=name)
    iqn = f"iqn.2024-10.com.example:{host_uuid[:8]}"
    host = _copy(sim, "host", t, uuid=host_uuid, name_label=name, hostname=name,
                 metrics=metrics, software_version=sv, control_domain=NULL_REF,
                 iscsi_iqn=iqn, other_config=dict(t["other_config"], iscsi_iqn=iqn),
                 current_operations={}, allowed_operations=[])
    for cpu in t["host_CPUs"]:
        if db.exists("host_cpu", cpu):
            _copy(sim, "host_cpu", db.get("host_cpu", cpu), host=host)
    dom0 = db.find("VM", t["control_domain"])
    if dom0 is not None:
        dm = db.find("VM_metrics", dom0["metrics"])
        vm_metrics = _copy(sim, "VM_metrics", dm) if dm else NULL_REF
        new_dom0 = _copy(sim, "VM", dom0, name_label=f"Control domain on host: {name}",
                         resident_on=host, affinity=host, metrics=vm_metrics,
                         current_operations={})
        db.update("VM", new_dom0, other_config=dict(dom0["other_config"],
                                                    storage_driver_domain=new_dom0))
        for con in dom0["consoles"]:
            if db.exists("console", con):
                _copy(sim, "console", db.get("console", con), VM=new_dom0)
        db.update("host", host, control_domain=new_dom0)
        from . import lifecycle

        lifecycle.update_allowed_operations(db, new_dom0)
    for index, pif in enumerate(p for p in t["PIFs"] if db.exists("PIF", p)):
        prec = db.get("PIF", pif)
        if not prec["physical"] or prec["VLAN"] >= 0:
            continue
        pm = db.find("PIF_metrics", prec["metrics"])
        pif_metrics = _copy(sim, "PIF_metrics", pm) if pm else NULL_REF
        _copy(sim, "PIF", prec, host=host, MAC=_mac(host_uuid, index), metrics=pif_metrics,
              bond_slave_of=NULL_REF, VLAN_master_of=NULL_REF)
    for pbd in list(t["PBDs"]):
        prec = db.find("PBD", pbd)
        if prec is None:
            continue
        srec = db.get("SR", prec["SR"])
        if srec["shared"]:
            _add(sim, "PBD", {"host": host, "SR": prec["SR"],
                              "device_config": dict(prec["device_config"]),
                              "currently_attached": prec["currently_attached"],
                              "other_config": {}})
            continue
        sr_uuid = str(uuidlib.uuid4())
        desc = srec["name_description"].replace(t["name_label"], name)
        sr = _copy(sim, "SR", srec, uuid=sr_uuid, name_description=desc,
                   physical_utilisation=0, virtual_allocation=0, current_operations={})
        config = {k: v.replace(srec["uuid"], sr_uuid) for k, v in prec["device_config"].items()}
        _add(sim, "PBD", {"host": host, "SR": sr, "device_config": config,
                          "currently_attached": prec["currently_attached"],
                          "other_config": dict(prec["other_config"])})
        _attach_sr(sim, sr)
    return host
