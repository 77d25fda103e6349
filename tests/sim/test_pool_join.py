"""pool.join / pool.join_force / pool.eject between simulated hosts."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import XenAPI

from xhost.sim import Simulator
from xhost.testing.simfixtures import SIM_PASSWORD, SIM_USER


def start(path: Path, **kwargs) -> Simulator:
    sim = Simulator(path, users={SIM_USER: SIM_PASSWORD}, flush_interval=0.2, **kwargs).start()
    if kwargs.get("hosts", 1) == 1:
        prepare_to_join(sim.url)
    return sim


def prepare_to_join(url: str) -> None:
    """What an administrator does before joining a host to a pool: shut its
    VMs down (POOL_JOINING_HOST_CANNOT_HAVE_RUNNING_VMS; Nova's host_join shut
    the compute VM down too) and forget its shared SRs
    (POOL_JOINING_HOST_CANNOT_CONTAIN_SHARED_SRS)."""
    x = login(url).xenapi
    for vm, rec in x.VM.get_all_records().items():
        if not rec["is_control_domain"] and rec["power_state"] != "Halted":
            x.VM.hard_shutdown(vm)
    for sr, rec in x.SR.get_all_records().items():
        if rec["shared"]:
            for pbd in rec["PBDs"]:
                x.PBD.unplug(pbd)
            x.SR.forget(sr)


def login(url: str) -> XenAPI.Session:
    session = XenAPI.Session(url)
    session.xenapi.login_with_password(SIM_USER, SIM_PASSWORD, "1.0", "join-tests")
    return session


def failure(fn, *args) -> list[str]:
    with pytest.raises(XenAPI.Failure) as info:
        fn(*args)
    return info.value.details


def endpoint(url: str) -> str:
    return url.removeprefix("http://")


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[Simulator]:
    sim = start(tmp_path / "pool", hosts=2)
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture
def standalone(tmp_path: Path) -> Iterator[Simulator]:
    sim = start(tmp_path / "joiner", host_name="newcomer")
    try:
        yield sim
    finally:
        sim.stop()


def make_local_vm(x, name: str) -> tuple[str, str]:
    """A halted VM with its disk on local storage and a NIC on xenbr1."""
    tpl = x.VM.get_by_name_label("Debian Bookworm 12")[0]
    vm = x.VM.clone(tpl, name)
    x.VM.provision(vm)
    x.VM.set_is_a_template(vm, False)
    net = x.network.get_by_name_label("Pool-wide network associated with eth1")[0]
    x.VIF.create({"device": "0", "network": net, "VM": vm, "MAC": "", "MTU": "0",
                  "other_config": {}, "qos_algorithm_type": "", "qos_algorithm_params": {}})
    vbd = x.VM.get_VBDs(vm)[0]
    return vm, x.VBD.get_VDI(vbd)


def test_join_brings_the_host_and_its_objects(pool: Simulator, standalone: Simulator):
    joiner_url = standalone.url
    j = login(joiner_url).xenapi
    vm, vdi = make_local_vm(j, "brought along")
    vm_uuid, vdi_uuid = j.VM.get_uuid(vm), j.VDI.get_uuid(vdi)
    j.pool.join(endpoint(pool.url), SIM_USER, SIM_PASSWORD)
    # Same port, no gap: the joined host now answers as a member.
    assert failure(XenAPI.Session(joiner_url).xenapi.login_with_password, SIM_USER,
                   SIM_PASSWORD) == ["HOST_IS_SLAVE", endpoint(pool.url)]
    assert standalone.joined_pool_url == pool.url
    assert joiner_url in pool.urls and len(pool.hosts) == 3
    x = login(pool.url).xenapi
    hosts = {x.host.get_name_label(h): h for h in x.host.get_all()}
    assert set(hosts) == {"xcp-ng-sim", "xcp-ng-sim-2", "newcomer"}
    host = hosts["newcomer"]
    # Its VM and its local disk came along; its NIC is on the pool's xenbr1.
    moved_vm = x.VM.get_by_uuid(vm_uuid)
    moved_vdi = x.VDI.get_by_uuid(vdi_uuid)
    local = x.VDI.get_SR(moved_vdi)
    assert x.SR.get_name_label(local) == "Local storage"
    assert [x.PBD.get_host(p) for p in x.SR.get_PBDs(local)] == [host]
    pool_xenbr1 = x.network.get_by_name_label("Pool-wide network associated with eth1")
    assert len(pool_xenbr1) == 1
    vif = x.VM.get_VIFs(moved_vm)[0]
    assert x.VIF.get_network(vif) == pool_xenbr1[0]
    assert host in {x.PIF.get_host(p) for p in x.network.get_PIFs(pool_xenbr1[0])}
    # The pool's shared SR is visible from the new host.
    shared = x.SR.get_by_name_label("Shared storage")[0]
    assert host in {x.PBD.get_host(p) for p in x.SR.get_PBDs(shared)}
    # The VM can only start where its disk is.
    x.VM.start(moved_vm, False, False)
    assert x.VM.get_resident_on(moved_vm) == host
    # ... and a VM on shared storage can come and go.
    tpl = x.VM.get_by_name_label("Debian Bookworm 12")[0]
    roamer = x.VM.clone(tpl, "roamer")
    x.VM.provision(roamer)
    x.VM.set_is_a_template(roamer, False)
    x.VM.start_on(roamer, hosts["xcp-ng-sim"], False, False)
    x.VM.pool_migrate(roamer, host, {"live": "true"})
    assert x.VM.get_resident_on(roamer) == host
    # The joined simulator's state directory remembers the join.
    standalone.stop()
    with pytest.raises(RuntimeError, match="joined the pool"):
        Simulator(standalone.state_dir, users={SIM_USER: SIM_PASSWORD}).start()


def test_join_refusals(pool: Simulator, standalone: Simulator, tmp_path: Path):
    j = login(standalone.url).xenapi
    master = endpoint(pool.url)
    assert failure(j.pool.join, master, SIM_USER, "wrong")[0] == \
        "SESSION_AUTHENTICATION_FAILED"
    assert failure(j.pool.join, "127.0.0.1:1", SIM_USER, SIM_PASSWORD) == \
        ["POOL_JOINING_HOST_CONNECTION_FAILED"]
    assert failure(j.pool.join, endpoint(pool.urls[1]), SIM_USER, SIM_PASSWORD) == \
        ["HOST_IS_SLAVE", master]
    assert failure(j.pool.join, endpoint(standalone.url), SIM_USER, SIM_PASSWORD) == \
        ["OPERATION_NOT_ALLOWED", "Host cannot become slave of itself"]
    vm, _ = make_local_vm(j, "busy")
    j.VM.start(vm, False, False)
    assert failure(j.pool.join, master, SIM_USER, SIM_PASSWORD) == \
        ["POOL_JOINING_HOST_CANNOT_HAVE_RUNNING_VMS"]
    j.VM.hard_shutdown(vm)
    sr = j.SR.create(j.host.get_all()[0], {"server": "192.0.2.5", "serverpath": "/x"}, "0",
                     "nfs here", "", "nfs", "user", True, {})
    assert failure(j.pool.join, master, SIM_USER, SIM_PASSWORD) == \
        ["POOL_JOINING_HOST_CANNOT_CONTAIN_SHARED_SRS"]
    j.PBD.unplug(j.SR.get_PBDs(sr)[0])
    j.SR.forget(sr)
    # A host whose software differs is refused unless forced.
    host = standalone.master.host_ref
    sv = dict(standalone.db.get("host", host)["software_version"], xapi="24.20")
    standalone.db.update("host", host, software_version=sv)
    assert failure(j.pool.join, master, SIM_USER, SIM_PASSWORD) == \
        ["POOL_HOSTS_NOT_HOMOGENEOUS", "Software version differs"]
    # Nothing was left half-done on either side.
    assert len(login(pool.url).xenapi.host.get_all()) == 2
    assert standalone.joined_pool_url is None
    j.pool.join_force(master, SIM_USER, SIM_PASSWORD)
    assert len(login(pool.url).xenapi.host.get_all()) == 3


def test_network_backends_must_match(pool: Simulator, tmp_path: Path):
    other = start(tmp_path / "bridgey", network_backend="bridge")
    try:
        j = login(other.url).xenapi
        assert failure(j.pool.join, endpoint(pool.url), SIM_USER, SIM_PASSWORD) == \
            ["OPERATION_NOT_ALLOWED", "Network backends differ"]
    finally:
        other.stop()


def test_eject(pool: Simulator, standalone: Simulator):
    login(standalone.url).xenapi.pool.join(endpoint(pool.url), SIM_USER, SIM_PASSWORD)
    x = login(pool.url).xenapi
    hosts = {x.host.get_name_label(h): h for h in x.host.get_all()}
    master, member = hosts["xcp-ng-sim"], hosts["newcomer"]
    assert failure(x.pool.eject, master) == ["INTERNAL_ERROR", "Xapi_pool.Cannot_eject_master"]
    local = next(s for s in x.SR.get_all()
                 if x.SR.get_name_label(s) == "Local storage"
                 and x.PBD.get_host(x.SR.get_PBDs(s)[0]) == member)
    vdi = x.VDI.create({"SR": local, "virtual_size": str(1 << 30), "type": "user",
                        "sharable": False, "read_only": False, "other_config": {},
                        "name_label": "doomed"})
    tpl = x.VM.get_by_name_label("Debian Bookworm 12")[0]
    vm = x.VM.clone(tpl, "resident")
    x.VM.provision(vm)
    x.VM.set_is_a_template(vm, False)
    x.VM.start_on(vm, member, False, False)
    assert failure(x.pool.eject, member) == ["OPERATION_NOT_ALLOWED", "VM resident on host"]
    x.VM.hard_shutdown(vm)
    member_url = pool.host("newcomer").url
    member_uuid = x.host.get_uuid(member)
    x.pool.eject(member)
    assert failure(x.host.get_record, member) == ["HANDLE_INVALID", "host", member]
    assert failure(x.SR.get_record, local) == ["HANDLE_INVALID", "SR", local]
    assert failure(x.VDI.get_record, vdi) == ["HANDLE_INVALID", "VDI", vdi]
    assert all(x.PIF.get_host(p) != member for p in x.PIF.get_all())
    assert all(x.PBD.get_host(p) != member for p in x.PBD.get_all())
    assert x.VM.get_power_state(vm) == "Halted"  # its disks were on shared storage
    assert len(pool.hosts) == 2
    # The host came back as a fresh standalone pool of one on its port.
    fresh = login(member_url).xenapi
    (only,) = fresh.host.get_all()
    assert fresh.host.get_name_label(only) == "newcomer"
    assert fresh.pool.get_master(fresh.pool.get_all()[0]) == only
    assert fresh.VM.get_by_name_label("resident") == []
    assert pool.ejected[member_uuid].url == member_url


def test_join_from_another_process(pool: Simulator, tmp_path: Path):
    env = dict(os.environ, XHOST_SIM_PASSWORD=SIM_PASSWORD)
    proc = subprocess.Popen(
        [sys.executable, "-P", "-m", "xhost.cli.main", "sim", "serve", "--state-dir",
         str(tmp_path / "other"), "--host-name", "remote", "--auth-delay", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        url = proc.stdout.readline().strip()
        prepare_to_join(url)
        login(url).xenapi.pool.join(endpoint(pool.url), SIM_USER, SIM_PASSWORD)
        # The joining process hands its port over and ends.
        assert proc.wait(20) == 0
        assert "joined the pool" in proc.stderr.read()
        answer = None
        for _ in range(100):
            try:
                XenAPI.Session(url).xenapi.login_with_password(SIM_USER, SIM_PASSWORD)
            except XenAPI.Failure as exc:
                answer = exc.details
                break
            except OSError:
                time.sleep(0.1)  # the port is changing hands
        assert answer == ["HOST_IS_SLAVE", endpoint(pool.url)]
        names = {h["name_label"] for h in login(pool.url).xenapi.host.get_all_records()
                 .values()}
        assert "remote" in names
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)


def test_a_failed_join_leaves_the_pool_untouched(pool: Simulator, standalone: Simulator):
    import base64
    import json
    import urllib.error
    import urllib.request

    from xhost.sim.pool_membership import export_joiner

    def post(body: dict) -> tuple[int, dict]:
        req = urllib.request.Request(pool.url + "/sim/pool/join", data=json.dumps(body).encode(),
                                     method="POST")
        token = base64.b64encode(f"{SIM_USER}:{SIM_PASSWORD}".encode()).decode()
        req.add_header("Authorization", "Basic " + token)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    before = {cls: set(pool.db.refs(cls)) for cls in ("host", "VM", "SR", "PBD", "PIF", "VDI")}
    assert post({"payload": {"host": "x", "tables": {}}, "port": 1})[0] == 400
    payload = export_joiner(standalone)
    # A VM whose uuid the pool already has: the import fails half-way through.
    clash = next(iter(pool.db.all("VM").values()))["uuid"]
    vm_ref = next(iter(payload["tables"]["VM"]))  # the joiner's control domain
    payload["tables"]["VM"][vm_ref] = dict(payload["tables"]["VM"][vm_ref], uuid=clash)
    status, doc = post({"payload": payload, "port": 1, "token": ""})
    assert status == 409 and "UUID_INVALID" in doc["error"]
    assert {cls: set(pool.db.refs(cls)) for cls in before} == before
