"""A simulated pool of several hosts: members, storage, networks, placement."""
from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import XenAPI

from xhost.sim import Simulator
from xhost.testing.simfixtures import SIM_PASSWORD, SIM_USER


def login(url: str) -> XenAPI.Session:
    session = XenAPI.Session(url)
    session.xenapi.login_with_password(SIM_USER, SIM_PASSWORD, "1.0", "pool-tests")
    return session


@pytest.fixture
def pool3(tmp_path: Path) -> Iterator[Simulator]:
    sim = Simulator(tmp_path / "pool", users={SIM_USER: SIM_PASSWORD}, hosts=3,
                    flush_interval=0.2).start()
    try:
        yield sim
    finally:
        sim.stop()


def failure(fn, *args) -> list[str]:
    with pytest.raises(XenAPI.Failure) as info:
        fn(*args)
    return info.value.details


def test_members_redirect_to_the_master(pool3: Simulator):
    assert len(pool3.urls) == 3 and len(set(pool3.urls)) == 3
    master_endpoint = pool3.url.removeprefix("http://")
    for url in pool3.urls[1:]:
        member = XenAPI.Session(url)
        assert failure(member.xenapi.login_with_password, SIM_USER, SIM_PASSWORD) == \
            ["HOST_IS_SLAVE", master_endpoint]
    x = login(pool3.url).xenapi
    hosts = x.host.get_all_records()
    assert sorted(h["name_label"] for h in hosts.values()) == \
        ["xcp-ng-sim", "xcp-ng-sim-2", "xcp-ng-sim-3"]
    pool = next(iter(x.pool.get_all_records().values()))
    assert hosts[pool["master"]]["name_label"] == "xcp-ng-sim"
    assert len({h["uuid"] for h in hosts.values()}) == 3
    for ref, host in hosts.items():
        dom0 = x.VM.get_record(host["control_domain"])
        assert dom0["is_control_domain"] and dom0["resident_on"] == ref
        assert dom0["name_label"] == f"Control domain on host: {host['name_label']}"
        assert len(host["host_CPUs"]) == 16
        assert host["software_version"]["hostname"] == host["name_label"]
        pifs = [x.PIF.get_record(p) for p in host["PIFs"]]
        assert sorted(p["device"] for p in pifs) == ["eth0", "eth1"]
        assert x.host.get_management_interface(ref) in host["PIFs"]


def test_shared_sr_is_visible_from_every_host(pool3: Simulator):
    x = login(pool3.url).xenapi
    hosts = set(x.host.get_all())
    shared = x.SR.get_by_name_label("Shared storage")[0]
    pool = x.pool.get_all()[0]
    assert x.pool.get_default_SR(pool) == shared
    rec = x.SR.get_record(shared)
    assert rec["shared"] and rec["type"] == "nfs"
    pbds = [x.PBD.get_record(p) for p in rec["PBDs"]]
    assert {p["host"] for p in pbds} == hosts and all(p["currently_attached"] for p in pbds)
    assert all(p["device_config"]["path"] == f"/var/run/sr-mount/{rec['uuid']}" for p in pbds)
    local = [r for r in x.SR.get_all_records().values() if r["name_label"] == "Local storage"]
    assert len(local) == 3 and len({r["uuid"] for r in local}) == 3
    owners = {x.PBD.get_host(r["PBDs"][0]) for r in local}
    assert owners == hosts and all(len(r["PBDs"]) == 1 and not r["shared"] for r in local)
    tools = x.SR.get_by_name_label("XCP-ng Tools")[0]
    assert {x.PBD.get_host(p) for p in x.SR.get_PBDs(tools)} == hosts


def test_vm_start_places_by_affinity_storage_and_memory(pool3: Simulator):
    x = login(pool3.url).xenapi
    hosts = {x.host.get_name_label(h): h for h in x.host.get_all()}
    tpl = x.VM.get_by_name_label("Debian Bookworm 12")[0]
    vm = x.VM.clone(tpl, "placed")
    x.VM.provision(vm)  # disks on the pool's default SR: shared storage
    x.VM.set_is_a_template(vm, False)
    x.VM.set_affinity(vm, hosts["xcp-ng-sim-3"])
    x.VM.start(vm, False, False)
    assert x.VM.get_resident_on(vm) == hosts["xcp-ng-sim-3"]
    assert sorted(x.VM.get_possible_hosts(vm)) == sorted(hosts.values())
    x.VM.hard_shutdown(vm)
    # A disk on host 2's local storage pins the VM to host 2.
    local2 = next(r for r, s in x.SR.get_all_records().items()
                  if s["name_label"] == "Local storage"
                  and x.PBD.get_host(s["PBDs"][0]) == hosts["xcp-ng-sim-2"])
    vdi = x.VDI.create({"SR": local2, "virtual_size": str(1 << 30), "type": "user",
                        "sharable": False, "read_only": False, "other_config": {},
                        "name_label": "local disk"})
    x.VBD.create({"VM": vm, "VDI": vdi, "userdevice": "1", "bootable": False, "mode": "RW",
                  "type": "Disk", "empty": False, "other_config": {},
                  "qos_algorithm_type": "", "qos_algorithm_params": {}})
    x.VM.start(vm, False, False)
    assert x.VM.get_resident_on(vm) == hosts["xcp-ng-sim-2"]
    x.VM.hard_shutdown(vm)
    x.host.disable(hosts["xcp-ng-sim-2"])
    assert failure(x.VM.start, vm, False, False) == ["NO_HOSTS_AVAILABLE"]
    assert failure(x.VM.start_on, vm, hosts["xcp-ng-sim-2"], False, False) == \
        ["HOST_DISABLED", hosts["xcp-ng-sim-2"]]


def test_member_answers_emergency_calls_only(pool3: Simulator):
    member = XenAPI.Session(pool3.urls[1])
    member.slave_local_login_with_password(SIM_USER, SIM_PASSWORD)
    assert member.handle.startswith("OpaqueRef:")
    assert failure(member.xenapi.VM.get_all) == ["HOST_IS_SLAVE",
                                                 pool3.url.removeprefix("http://")]
    member.xenapi.session.local_logout()


def test_serve_prints_every_host_url(tmp_path: Path):
    proc = subprocess.Popen(
        [sys.executable, "-P", "-m", "xhost.cli.main", "sim", "serve", "--state-dir",
         str(tmp_path / "cli"), "--hosts", "2", "--password", SIM_PASSWORD,
         "--auth-delay", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        urls = [proc.stdout.readline().strip() for _ in range(2)]
        assert all(u.startswith("http://127.0.0.1:") for u in urls) and urls[0] != urls[1]
        assert login(urls[0]).xenapi.host.get_all()
        assert failure(XenAPI.Session(urls[1]).xenapi.login_with_password, SIM_USER,
                       SIM_PASSWORD) == ["HOST_IS_SLAVE", urls[0].removeprefix("http://")]
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_restarted_pool_keeps_hosts_roles_and_ports(tmp_path: Path):
    state = tmp_path / "restart"
    sim = Simulator(state, users={SIM_USER: SIM_PASSWORD}, hosts=3).start()
    try:
        urls = {sim.db.get("host", h.host_ref)["name_label"]: h.url for h in sim.hosts}
        sim.designate_new_master("xcp-ng-sim-3")
    finally:
        sim.stop()
    sim = Simulator(state, users={SIM_USER: SIM_PASSWORD}).start()
    try:
        again = {sim.db.get("host", h.host_ref)["name_label"]: h.url for h in sim.hosts}
        assert again == urls
        assert sim.url == urls["xcp-ng-sim-3"]
        assert failure(XenAPI.Session(urls["xcp-ng-sim"]).xenapi.login_with_password,
                       SIM_USER, SIM_PASSWORD) == ["HOST_IS_SLAVE",
                                                   urls["xcp-ng-sim-3"].removeprefix("http://")]
    finally:
        sim.stop()
