"""Joining and ejecting hosts of a simulated pool.

Joining (``pool.join`` / ``pool.join_force`` on a standalone simulator):
the joining host logs in to the master with the real XenAPI client, runs
xapi's pre-join checks against it, then sends its host-local objects (host,
CPUs, control domain, local SRs and their disks, PIFs, VMs) to the master's
control endpoint ``POST /sim/pool/join``.  The master adds them (networks are
matched by bridge, the tools SR is the pool's), gives the new host PBDs for
the shared SRs and then serves it: when both simulators live in one process
the joining host's server is handed over without a gap; otherwise the joining
process closes its port and the master binds it.  The joining simulator is
left detached (``joined_pool_url``); its state directory is marked as joined.

Ejecting (``pool.eject``) removes the host, its control domain, PIFs, PBDs,
local SRs (with the VMs whose disks were on them) from the pool and brings it
back as a fresh standalone simulator on the same port, in this process
(``Simulator.ejected[<host uuid>]``), like a host rebooting after an eject.
"""
from __future__ import annotations

import base64
import http.client
import json
import logging
import shutil
import threading
import time
import urllib.error
import urllib.request
import xmlrpc.client
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import control_http
from .errors import NULL_REF, ApiError
from .pool import (
    JOINED_FILE,
    _add,
    _bind,
    _set_live,
    assert_live,
    refresh_roles,
    served,
    the_pool,
)
from .seed import sr_update

if TYPE_CHECKING:
    from .dispatch import CallContext
    from .http_server import Request
    from .simulator import SimHost, Simulator

LOG = logging.getLogger(__name__)

#: Seconds the master keeps trying to bind a joining host's port (another process).
BIND_RETRY_SECONDS = 15.0


def join(ctx: CallContext, master_address: str, username: str, password: str,
         force: bool) -> None:
    """``pool.join`` / ``pool.join_force`` on a standalone host."""
    import XenAPI

    sim = ctx.sim
    scheme = "https" if sim.tls else "http"
    url = master_address if "://" in master_address else f"{scheme}://{master_address}"
    try:
        session = XenAPI.Session(url, ignore_ssl=True) if url.startswith("https") \
            else XenAPI.Session(url)
        session.xenapi.login_with_password(username, password, "2.21", "xapi-pool-join")
    except XenAPI.Failure as exc:
        raise ApiError(*exc.details) from None
    except (OSError, http.client.HTTPException, xmlrpc.client.ProtocolError):
        raise ApiError("POOL_JOINING_HOST_CONNECTION_FAILED") from None
    try:
        x = session.xenapi
        pool_rec = next(iter(x.pool.get_all_records().values()))
        master = x.host.get_record(pool_rec["master"])
        pre_join_checks(sim, pool_rec, master, force)
        payload = export_joiner(sim)
    except XenAPI.Failure as exc:
        raise ApiError(*exc.details) from None
    finally:
        try:
            session.xenapi.session.logout()
        except Exception:
            pass
    me = sim.hosts[0]
    body = {"payload": payload, "token": sim.token, "port": me.port,
            "address": me.public_address}
    result = _post_control(url, username, password, "/sim/pool/join", body)
    master_url = result.get("master_url", url)
    if result.get("adopted"):
        _detach_after_join(sim, master_url)
    else:
        # Another process: give the port up once this answer has gone out.
        threading.Thread(target=_close_after_join, args=(sim, master_url),
                         name="sim-join-handover", daemon=True).start()


def _post_control(base: str, username: str, password: str, path: str,
                  body: dict[str, Any]) -> dict[str, Any]:
    import ssl

    req = urllib.request.Request(base.rstrip("/") + path, data=json.dumps(body).encode(),
                                 method="POST", headers={"Content-Type": "application/json"})
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    req.add_header("Authorization", "Basic " + token)
    context = None
    if base.startswith("https"):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(req, timeout=60, context=context) as resp:
            return json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("error", exc.reason)
        except ValueError:
            detail = exc.reason
        LOG.warning("the pool master refused the join: %s", detail)
        raise ApiError("POOL_JOINING_HOST_SERVICE_FAILED") from None
    except (OSError, http.client.HTTPException):
        raise ApiError("POOL_JOINING_HOST_CONNECTION_FAILED") from None


def pre_join_checks(sim: Simulator, pool_rec: dict[str, Any], master: dict[str, Any],
                    force: bool) -> None:
    """xapi's pre-join assertions, in xapi's order."""
    db = sim.db
    my_pool = the_pool(sim)[1]
    me = db.get("host", sim.master_ref)
    if my_pool["ha_enabled"] or pool_rec["ha_enabled"]:
        raise ApiError("HA_IS_ENABLED")
    hosts = db.refs("host")
    if master["uuid"] == me["uuid"]:
        raise ApiError("OPERATION_NOT_ALLOWED", "Host is already part of a pool"
                       if len(hosts) > 1 else "Host cannot become slave of itself")
    if len(hosts) > 1:
        raise ApiError("POOL_JOINING_HOST_CANNOT_BE_MASTER_OF_OTHER_HOSTS")
    vms = db.all("VM")
    if any(v["power_state"] == "Running" and not v["is_control_domain"] for v in vms.values()):
        raise ApiError("POOL_JOINING_HOST_CANNOT_HAVE_RUNNING_VMS")
    if any(v["current_operations"] for v in vms.values()):
        raise ApiError("POOL_JOINING_HOST_CANNOT_HAVE_VMS_WITH_CURRENT_OPERATIONS")
    mine, theirs = me["software_version"], master["software_version"]

    def compat(sv: dict[str, str]) -> tuple[str | None, str | None]:
        return sv.get("platform_version"), sv.get("product_brand", sv.get("platform_name"))
    if compat(mine) != compat(theirs):
        raise ApiError("POOL_HOSTS_NOT_COMPATIBLE")
    if not force:
        def fields(sv: dict[str, str]) -> tuple[str, ...]:
            return (sv.get("xapi", ""), compat(sv)[1] or "", sv.get("git_id", ""),
                    "installed" if "xs:linux" in sv else "not present")
        if fields(mine) != fields(theirs):
            raise ApiError("POOL_HOSTS_NOT_HOMOGENEOUS", "Software version differs")
        if me["cpu_info"].get("vendor") != pool_rec["cpu_info"].get("vendor"):
            raise ApiError("POOL_HOSTS_NOT_HOMOGENEOUS", "CPUs differ")
    if any(s["shared"] and not s["is_tools_sr"] for s in db.all("SR").values()):
        raise ApiError("POOL_JOINING_HOST_CANNOT_CONTAIN_SHARED_SRS")
    if db.refs("Bond"):
        raise ApiError("POOL_JOINING_HOST_HAS_BONDS")
    if db.refs("tunnel"):
        raise ApiError("POOL_JOINING_HOST_HAS_TUNNELS")
    for vlan in db.all("VLAN").values():
        pif = db.find("PIF", vlan["untagged_PIF"])
        if pif is None or not pif["management"]:
            raise ApiError("POOL_JOINING_HOST_HAS_NON_MANAGEMENT_VLANS")
    if mine.get("network_backend", "bridge") != theirs.get("network_backend", "bridge"):
        raise ApiError("OPERATION_NOT_ALLOWED", "Network backends differ")
    my_api = f"{me['API_version_major']}.{me['API_version_minor']}"
    their_api = f"{master['API_version_major']}.{master['API_version_minor']}"
    if my_api != their_api:
        raise ApiError("POOL_JOINING_HOST_MUST_HAVE_SAME_API_VERSION", my_api, their_api)
    if not mine.get("db_schema") or mine.get("db_schema") != theirs.get("db_schema"):
        raise ApiError("POOL_JOINING_HOST_MUST_HAVE_SAME_DB_SCHEMA",
                       mine.get("db_schema", ""), theirs.get("db_schema", ""))


def export_joiner(sim: Simulator) -> dict[str, Any]:
    """The joining host's objects, as the master must learn them."""
    db = sim.db
    me = sim.master_ref
    tables: dict[str, dict[str, Any]] = {}

    def put(cls: str, ref: str) -> None:
        rec = db.find(cls, ref)
        if rec is not None:
            tables.setdefault(cls, {})[ref] = rec

    with db.lock:
        host = db.get("host", me)
        put("host", me)
        put("host_metrics", host["metrics"])
        for cpu in host["host_CPUs"]:
            put("host_cpu", cpu)
        tools_sr = NULL_REF
        tools_vdis: dict[str, str] = {}
        for pbd in host["PBDs"]:
            prec = db.find("PBD", pbd)
            if prec is None:
                continue
            srec = db.get("SR", prec["SR"])
            if srec["is_tools_sr"]:
                tools_sr = prec["SR"]
                tools_vdis = {v: db.get("VDI", v)["location"] for v in srec["VDIs"]
                              if db.exists("VDI", v)}
                continue
            put("SR", prec["SR"])
            put("PBD", pbd)
            for vdi in srec["VDIs"]:
                put("VDI", vdi)
        for ref in db.refs("network"):
            put("network", ref)
        for pif in host["PIFs"]:
            put("PIF", pif)
            prec = db.get("PIF", pif)
            if prec["metrics"] != NULL_REF:
                put("PIF_metrics", prec["metrics"])
        for ref, vm in db.tables["VM"].items():
            if vm["is_default_template"]:
                continue
            put("VM", ref)
            for field, cls in (("metrics", "VM_metrics"), ("guest_metrics", "VM_guest_metrics")):
                if vm[field] != NULL_REF:
                    put(cls, vm[field])
            for con in vm["consoles"]:
                put("console", con)
            for vbd in vm["VBDs"]:
                put("VBD", vbd)
                vrec = db.find("VBD", vbd)
                if vrec is not None and vrec["metrics"] != NULL_REF:
                    put("VBD_metrics", vrec["metrics"])
            for vif in vm["VIFs"]:
                put("VIF", vif)
                vrec = db.find("VIF", vif)
                if vrec is not None and vrec["metrics"] != NULL_REF:
                    put("VIF_metrics", vrec["metrics"])
    return {"host": me, "tables": tables, "tools_sr": tools_sr, "tools_vdis": tools_vdis,
            "dom0_root": str(sim.state_dir / "dom0")}


#: Order in which imported objects are added: what others point at first.
_IMPORT_ORDER = ("host_metrics", "host", "host_cpu", "SR", "PBD", "VDI", "network",
                 "PIF_metrics", "PIF", "VM_metrics", "VM_guest_metrics", "VM", "console",
                 "VBD_metrics", "VBD", "VIF_metrics", "VIF")


def import_joiner(sim: Simulator, payload: dict[str, Any]) -> str:
    """Add a joining host's objects to this pool; returns the new host's reference."""
    db = sim.db
    try:
        tables: dict[str, dict[str, dict[str, Any]]] = payload["tables"]
        new_host = payload["host"]
        if not isinstance(tables, dict) or not isinstance(tables.get("host"), dict) or \
                new_host not in tables["host"]:
            raise KeyError("host")
    except (KeyError, TypeError) as exc:
        raise control_http.ControlError(400, f"malformed join payload (no {exc})") from None
    if db.exists("host", new_host):
        raise control_http.ControlError(409, f"host {new_host} is already in this pool")
    ref_map: dict[str, str] = {}
    with db.lock:
        bridges = {n["bridge"]: r for r, n in db.tables["network"].items()}
        for ref, net in tables.get("network", {}).items():
            if net["bridge"] in bridges:
                ref_map[ref] = bridges[net["bridge"]]
        pool_tools = next((r for r, s in db.tables["SR"].items() if s["is_tools_sr"]), NULL_REF)
        if payload.get("tools_sr", NULL_REF) != NULL_REF and pool_tools != NULL_REF:
            ref_map[payload["tools_sr"]] = pool_tools
            by_location = {db.get("VDI", v)["location"]: v
                           for v in db.get("SR", pool_tools)["VDIs"] if db.exists("VDI", v)}
            for vdi, location in payload.get("tools_vdis", {}).items():
                if location in by_location:
                    ref_map[vdi] = by_location[location]

        def remap(value: Any) -> Any:
            if isinstance(value, str):
                return ref_map.get(value, value)
            if isinstance(value, list):
                return [remap(v) for v in value]
            if isinstance(value, dict):
                return {remap(k): remap(v) for k, v in value.items()}
            return value

        added: list[tuple[str, str]] = []
        try:
            _import_records(sim, tables, ref_map, remap, added)
            _join_pool_resources(sim, new_host, added)
        except BaseException:
            # Leave the pool as it was: nothing of a failed join stays behind.
            for cls, ref in reversed(added):
                if db.exists(cls, ref):
                    db.remove(cls, ref)
            raise
        from . import lifecycle

        for ref in tables.get("VM", {}):
            lifecycle.update_allowed_operations(db, ref)
        for sr_ref in tables.get("SR", {}):
            sr_update(sim, sr_ref)
    _link_sr_dirs(sim, payload)
    return new_host


def _import_records(sim: Simulator, tables: dict[str, dict[str, dict[str, Any]]],
                    ref_map: dict[str, str], remap: Any, added: list[tuple[str, str]]) -> None:
    db = sim.db
    for cls in _IMPORT_ORDER:
        recs = tables.get(cls, {})
        items = [(r, v) for r, v in recs.items() if r not in ref_map]
        if cls == "VM":
            items.sort(key=lambda item: item[1]["is_a_snapshot"])
        spec = sim.schema.classes[cls]
        for ref, rec in items:
            values = {k: v for k, v in remap(rec).items() if k in spec.fields}
            if cls == "VBD" and values["VDI"] != NULL_REF and \
                    values["VDI"] not in db.tables["VDI"] and \
                    values["VDI"] not in tables.get("VDI", {}):
                values.update(VDI=NULL_REF, empty=True)
            db.add(cls, spec.new_record(values), ref=ref)
            added.append((cls, ref))
    # Relations whose other side arrived later (snapshots before their VMs...).
    for cls, ref in added:
        rec = db.tables[cls].get(ref)
        for one_field, many_cls, many_field in sim.schema.relations_from.get(cls, ()):
            target = rec.get(one_field) if rec else None
            if target and target != NULL_REF:
                db._link(many_cls, target, many_field, ref, add=True)


def _join_pool_resources(sim: Simulator, new_host: str, added: list[tuple[str, str]]) -> None:
    """The new host sees the pool's shared SRs and carries its VLANs."""
    from .behaviours.network import _new_vlan_pif
    from .dispatch import CallContext

    db = sim.db
    for sr_ref, srec in list(db.tables["SR"].items()):
        if not srec["shared"]:
            continue
        pbds = [db.tables["PBD"][p] for p in srec["PBDs"] if p in db.tables["PBD"]]
        if any(p["host"] == new_host for p in pbds):
            continue
        config = dict(pbds[0]["device_config"]) if pbds else {}
        added.append(("PBD", _add(sim, "PBD", {
            "host": new_host, "SR": sr_ref, "device_config": config,
            "currently_attached": True, "other_config": {}})))
    ctx = CallContext(sim, None, None, "pool.join")
    my_pifs = {p["device"]: r for r, p in db.tables["PIF"].items()
               if p["host"] == new_host and p["physical"] and p["VLAN"] == -1}
    for vlan in list(db.tables["VLAN"].values()):
        tagged = db.tables["PIF"].get(vlan["tagged_PIF"])
        untagged = db.tables["PIF"].get(vlan["untagged_PIF"])
        if tagged is None or untagged is None or tagged["host"] == new_host:
            continue
        base = my_pifs.get(tagged["device"])
        if base is None:
            continue
        try:
            created = _new_vlan_pif(ctx, base, vlan["tag"], untagged["network"])
        except ApiError:
            continue  # this network is on the new host already
        added += [("PIF", db.get("VLAN", created)["untagged_PIF"]), ("VLAN", created)]


def _link_sr_dirs(sim: Simulator, payload: dict[str, Any]) -> None:
    """Make the joining host's local SR directories reachable under the pool's
    dom0 root (file-based SRs keep their disks there)."""
    old_root = Path(payload.get("dom0_root", ""))
    if not payload.get("dom0_root"):
        return
    new_root = sim.state_dir / "dom0"
    for srec in payload["tables"].get("SR", {}).values():
        src = old_root / "var/run/sr-mount" / srec["uuid"]
        dst = new_root / "var/run/sr-mount" / srec["uuid"]
        if src.is_dir() and not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.symlink_to(src, target_is_directory=True)


def join_route(host: SimHost, req: Request, body: dict[str, Any]) -> Any:
    """``POST /sim/pool/join``: the master's side of ``pool.join``."""
    from .simulator import LIVE

    sim = host.sim
    if host.master_address is not None:
        raise control_http.ControlError(409, f"this host is not the pool master; join "
                                             f"{host.master_address}")
    payload = body.get("payload")
    port = body.get("port")
    if not isinstance(payload, dict) or not isinstance(port, int):
        raise control_http.ControlError(400, "expected {payload, port, token}")
    try:
        new_host = import_joiner(sim, payload)
    except ApiError as exc:
        raise control_http.ControlError(409, "cannot add the joining host: "
                                        + " ".join(exc.description)) from None
    joiner = LIVE.get(body.get("token") or "")
    adopted = False
    if joiner is not None and joiner is not sim:
        server = joiner._hand_over()
        simhost = sim._serve_host(new_host, server=server)
        simhost.believed_master = None
        adopted = True
        _after_new_host(sim, new_host)
    else:
        threading.Thread(target=_bind_joiner, args=(sim, new_host, port),
                         name="sim-join-bind", daemon=True).start()
    return {"host": new_host, "adopted": adopted, "master_url": sim.url}


def _after_new_host(sim: Simulator, host_ref: str) -> None:
    refresh_roles(sim)
    sim._write_ports()
    sim.network.add_host(host_ref)
    sim.network.sync()


def _bind_joiner(sim: Simulator, host_ref: str, port: int) -> None:
    try:
        server = _bind(sim, port, timeout=BIND_RETRY_SECONDS)
    except OSError as exc:
        LOG.error("cannot serve the joined host %s on port %d: %s", host_ref, port, exc)
        _set_live(sim, host_ref, False)
        return
    sim._serve_host(host_ref, server=server)
    _after_new_host(sim, host_ref)


def _detach_after_join(sim: Simulator, master_url: str) -> None:
    sim.joined_pool_url = master_url
    try:
        (sim.state_dir / JOINED_FILE).write_text(json.dumps({"master": master_url}) + "\n")
    except OSError:
        LOG.warning("cannot mark %s as joined", sim.state_dir)


def _close_after_join(sim: Simulator, master_url: str) -> None:
    time.sleep(0.3)  # let the pool.join answer reach the caller
    server = sim._hand_over()
    server.stop()
    _detach_after_join(sim, master_url)


def eject(ctx: CallContext, host_ref: str) -> None:
    """``pool.eject``: the host leaves; it comes back as a fresh standalone host."""
    sim = ctx.sim
    db = sim.db
    hrec = db.get("host", host_ref)
    if host_ref == sim.master_ref:
        raise ApiError("INTERNAL_ERROR", "Xapi_pool.Cannot_eject_master")
    assert_live(sim, host_ref)
    for vm in hrec["resident_VMs"]:
        vrec = db.find("VM", vm)
        if vrec is not None and not vrec["is_control_domain"] and \
                vrec["power_state"] != "Halted":
            raise ApiError("OPERATION_NOT_ALLOWED", "VM resident on host")
    _remove_host_records(ctx, host_ref)
    simhost = served(sim, host_ref)
    sim.network.remove_host(host_ref)
    if simhost is None:
        return
    sim.hosts.remove(simhost)
    sim._write_ports()
    server = simhost.server
    server.routes.clear()
    _restart_standalone(sim, hrec, server)


def _remove_host_records(ctx: CallContext, host_ref: str) -> None:
    from .behaviours.network import remove_vif
    from .behaviours.storage import destroy_vdi  # noqa: F401 (content goes with the SR)

    sim = ctx.sim
    db = sim.db
    with db.lock:
        hrec = db.get("host", host_ref)
        lost_srs = []
        for pbd in list(hrec["PBDs"]):
            prec = db.find("PBD", pbd)
            if prec is None:
                continue
            others = [p for p in db.get("SR", prec["SR"])["PBDs"] if p != pbd]
            db.remove("PBD", pbd)
            if not others:
                lost_srs.append(prec["SR"])
        lost_vdis = {v for sr in lost_srs for v in db.get("SR", sr)["VDIs"]}
        doomed = set()
        for ref, vm in db.tables["VM"].items():
            if vm["is_control_domain"] and vm["resident_on"] == host_ref:
                doomed.add(ref)
            elif not vm["is_default_template"] and any(
                    db.tables["VBD"].get(v, {}).get("VDI") in lost_vdis for v in vm["VBDs"]):
                doomed.add(ref)
        for vm in doomed:
            vrec = db.get("VM", vm)
            for vbd in list(vrec["VBDs"]):
                brec = db.find("VBD", vbd)
                if brec is not None:
                    if brec["metrics"] != NULL_REF and db.exists("VBD_metrics", brec["metrics"]):
                        db.remove("VBD_metrics", brec["metrics"])
                    db.remove("VBD", vbd)
            for vif in list(vrec["VIFs"]):
                if db.exists("VIF", vif):
                    remove_vif(ctx, vif)
            for con in list(vrec["consoles"]):
                if db.exists("console", con):
                    db.remove("console", con)
            for field, cls in (("metrics", "VM_metrics"), ("guest_metrics", "VM_guest_metrics")):
                if vrec[field] != NULL_REF and db.exists(cls, vrec[field]):
                    db.remove(cls, vrec[field])
            db.remove("VM", vm)
        for sr in lost_srs:
            srec = db.get("SR", sr)
            for vdi in list(srec["VDIs"]):
                vdi_rec = db.find("VDI", vdi)
                if vdi_rec is not None:
                    for vbd in list(vdi_rec["VBDs"]):
                        if db.exists("VBD", vbd):
                            db.update("VBD", vbd, VDI=NULL_REF, empty=True)
                    db.remove("VDI", vdi)
            pool_ref, pool = the_pool(sim)
            for field in ("default_SR", "suspend_image_SR", "crash_dump_SR"):
                if pool[field] == sr:
                    db.update("pool", pool_ref, **{field: NULL_REF})
            db.remove("SR", sr)
        for pif in list(hrec["PIFs"]):
            prec = db.find("PIF", pif)
            if prec is None:
                continue
            if prec["VLAN_master_of"] != NULL_REF and db.exists("VLAN", prec["VLAN_master_of"]):
                db.remove("VLAN", prec["VLAN_master_of"])
            for bond in prec["bond_master_of"]:
                if db.exists("Bond", bond):
                    db.remove("Bond", bond)
            if prec["metrics"] != NULL_REF and db.exists("PIF_metrics", prec["metrics"]) and \
                    not any(p["metrics"] == prec["metrics"] for r, p in db.tables["PIF"].items()
                            if r != pif):
                db.remove("PIF_metrics", prec["metrics"])
            db.remove("PIF", pif)
        for cpu in list(hrec["host_CPUs"]):
            if db.exists("host_cpu", cpu):
                db.remove("host_cpu", cpu)
        for ref, vm in list(db.tables["VM"].items()):
            if vm["affinity"] == host_ref:
                db.update("VM", ref, affinity=NULL_REF)
        metrics = hrec["metrics"]
        db.remove("host", host_ref)
        if db.exists("host_metrics", metrics):
            db.remove("host_metrics", metrics)


def _restart_standalone(sim: Simulator, hrec: dict[str, Any], server: Any) -> None:
    """The ejected host reboots into a fresh installation on the same port."""
    from .simulator import Simulator as SimulatorClass

    state_dir = sim.state_dir / "ejected" / hrec["uuid"]
    shutil.rmtree(state_dir, ignore_errors=True)
    users: dict[str, Any] = {}
    for name, pw in sim.sessions.users.items():
        users[name] = pw if name == "root" else (pw, sim.sessions.roles.get(name, "pool-admin"))
    fresh = SimulatorClass(
        state_dir, bind=sim.bind, users=users, tls=sim.tls, speed=sim.speed,
        auth_delay=sim.sessions.auth_delay, host_name=hrec["name_label"],
        memory_gib=sim.memory_gib, cpus=sim.cpus, network_backend=sim.network_backend,
        public_address=sim.public_address, real_network=sim.network.real)
    fresh._adopt.append(server)
    try:
        fresh.start()
    except Exception:
        LOG.exception("the ejected host %s could not restart standalone", hrec["uuid"])
        server.stop()
        return
    sim.ejected[hrec["uuid"]] = fresh
