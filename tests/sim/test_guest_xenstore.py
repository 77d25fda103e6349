"""Each running domain has its XenStore tree, kept in step with the VM's life."""
from __future__ import annotations

from xhost.sim import Simulator
from xhost.testing.simfixtures import SIM_PASSWORD, SIM_USER
from xhost.testing.waiting import wait_for


def home(domid) -> str:
    return f"/local/domain/{domid}"


def test_tree_of_a_new_domain(simulator, x, new_vm):
    vm = new_vm("tree-vm")
    x.VM.add_to_xenstore_data(vm, "vm-data/hostname", "tree")
    x.VM.add_to_xenstore_data(vm, "vm-data/user-metadata/role", "web")
    x.VM.add_to_xenstore_data(vm, "not-vm-data/ignored", "x")
    x.VM.start(vm, False, False)
    domid = x.VM.get_domid(vm)
    xs = simulator.xenstore
    h = home(domid)
    uuid = x.VM.get_uuid(vm)
    assert xs.read(f"{h}/name") == "tree-vm"
    assert xs.read(f"{h}/domid") == str(domid)
    assert xs.read(f"{h}/vm") == f"/vm/{uuid}"
    assert xs.read(f"/vm/{uuid}/domains/{domid}") == h
    assert xs.read(f"{h}/vm-data/hostname") == "tree"
    assert xs.read(f"{h}/vm-data/user-metadata/role") == "web"
    assert not xs.exists(f"{h}/not-vm-data")
    for sub in ("control", "attr", "data"):
        assert xs.exists(f"{h}/{sub}")
    vif = x.VM.get_VIFs(vm)[0]
    assert xs.read(f"{h}/device/vif/0/mac") == x.VIF.get_MAC(vif)
    back = xs.read(f"{h}/device/vif/0/backend")
    assert back == f"/local/domain/0/backend/vif/{domid}/0"
    assert xs.read(f"{back}/frontend") == f"{h}/device/vif/0"
    # The guest's PV drivers connected front and back ends.
    assert xs.read(f"{h}/device/vif/0/state") == "4" and xs.read(f"{back}/state") == "4"
    assert xs.read(f"{h}/device/vbd/51712/device-type") == "disk"
    assert xs.read(f"{h}/memory/static-max") == str(int(x.VM.get_memory_static_max(vm)) // 1024)


def test_xenstore_data_reaches_the_guest_only_at_start(simulator, x, new_vm):
    vm = new_vm("late")
    x.VM.start(vm, False, False)
    domid = x.VM.get_domid(vm)
    x.VM.add_to_xenstore_data(vm, "vm-data/hostname", "too-late")
    assert not simulator.xenstore.exists(f"{home(domid)}/vm-data/hostname")
    x.VM.clean_shutdown(vm)
    x.VM.start(vm, False, False)
    assert simulator.xenstore.read(f"{home(x.VM.get_domid(vm))}/vm-data/hostname") == "too-late"


def test_lifecycle_keeps_the_tree_consistent(simulator, x, new_vm):
    xs = simulator.xenstore
    vm = new_vm("cycle")
    uuid = x.VM.get_uuid(vm)
    x.VM.start(vm, False, False)
    first = x.VM.get_domid(vm)
    gm = x.VM.get_guest_metrics(vm)

    x.VM.pause(vm)
    assert xs.exists(home(first)) and x.VM.get_guest_metrics(vm) == gm
    x.VM.unpause(vm)

    x.VM.clean_reboot(vm)
    second = x.VM.get_domid(vm)
    assert second != first
    assert not xs.exists(home(first))
    assert not xs.exists(f"/local/domain/0/backend/vif/{first}")
    assert xs.read(f"{home(second)}/domid") == str(second)
    assert xs.directory(f"/vm/{uuid}/domains") == [str(second)]

    x.VM.hard_reboot(vm)
    third = x.VM.get_domid(vm)
    assert third not in (first, second) and not xs.exists(home(second))

    x.VM.suspend(vm)
    assert not xs.exists(home(third)) and not xs.exists(f"/vm/{uuid}")
    x.VM.resume(vm, False, False)
    fourth = x.VM.get_domid(vm)
    assert xs.exists(home(fourth)) and x.VM.get_guest_metrics(vm) != "OpaqueRef:NULL"

    x.VM.clean_shutdown(vm)
    # dom0 and the seeded compute VM remain
    compute = x.VM.get_domid(x.VM.get_by_name_label("xhost compute VM")[0])
    assert xs.directory("/local/domain") == sorted(["0", compute])
    assert not xs.exists(f"/vm/{uuid}")
    assert x.VM.get_guest_metrics(vm) == "OpaqueRef:NULL"


def test_domain_watches(simulator, x, new_vm):
    xs = simulator.xenstore
    seen: list[str] = []
    xs.watch("@releaseDomain", lambda path, token: seen.append(path))
    xs.watch("@introduceDomain", lambda path, token: seen.append(path))
    xs.drain()
    seen.clear()
    vm = new_vm("watched")
    x.VM.start(vm, False, False)
    x.VM.hard_shutdown(vm)
    xs.drain()
    assert seen == ["@introduceDomain", "@releaseDomain"]


def test_running_domains_come_back_after_a_restart(tmp_path):
    state = tmp_path / "state"
    import XenAPI

    with Simulator(state, users={SIM_USER: SIM_PASSWORD}) as sim:
        s = XenAPI.Session(sim.url)
        s.xenapi.login_with_password(SIM_USER, SIM_PASSWORD)
        x = s.xenapi
        tpl = x.VM.get_by_name_label("Debian Bookworm 12")[0]
        vm = x.VM.clone(tpl, "survivor")
        x.VM.provision(vm)
        x.VM.set_is_a_template(vm, False)
        x.VM.add_to_xenstore_data(vm, "vm-data/hostname", "survivor")
        x.VM.start(vm, False, False)
        domid = x.VM.get_domid(vm)
    with Simulator(state, users={SIM_USER: SIM_PASSWORD}) as sim:
        s = XenAPI.Session(sim.url)
        s.xenapi.login_with_password(SIM_USER, SIM_PASSWORD)
        x = s.xenapi
        assert x.VM.get_domid(vm) == domid
        assert sim.xenstore.read(f"{home(domid)}/vm-data/hostname") == "survivor"
        gm = x.VM.get_guest_metrics(vm)
        assert x.VM_guest_metrics.get_PV_drivers_detected(gm) is True
        assert x.VM_guest_metrics.get_os_version(gm)["distro"] == "debian"
        assert sim.guests.get(vm).state.hostname == "survivor"


def test_hotplug_updates_the_tree_and_the_addresses(simulator, x, new_vm):
    xs = simulator.xenstore
    vm = new_vm("hotplug")
    x.VM.start(vm, False, False)
    domid = x.VM.get_domid(vm)
    h = home(domid)
    net = x.network.get_by_name_label("Pool-wide network associated with eth1")[0]
    vif = x.VIF.create({"device": "1", "network": net, "VM": vm, "MAC": "", "MTU": "9000",
                        "other_config": {}, "qos_algorithm_type": "", "qos_algorithm_params": {}})
    assert not xs.exists(f"{h}/device/vif/1")
    x.VIF.plug(vif)
    assert xs.read(f"{h}/device/vif/1/mac") == x.VIF.get_MAC(vif)
    assert xs.read(f"{h}/device/vif/1/mtu") == "9000"
    assert xs.read(f"/local/domain/0/backend/vif/{domid}/1/state") == "4"
    gm = x.VM.get_guest_metrics(vm)
    # the guest sees the new NIC (a XenStore watch) and reports its address
    assert wait_for(lambda: "1/ip" in x.VM_guest_metrics.get_networks(gm))
    x.VIF.unplug(vif)
    assert not xs.exists(f"{h}/device/vif/1")
    assert not xs.exists(f"/local/domain/0/backend/vif/{domid}/1")
    # the guest notices the NIC has gone (a watch again) and stops reporting it
    assert wait_for(lambda: set(x.VM_guest_metrics.get_networks(gm)) == {"0/ip", "0/ipv4/0"})

    vbd = x.VM.get_VBDs(vm)[0]
    x.VBD.set_unpluggable(vbd, True)
    x.VBD.unplug(vbd)
    assert xs.directory(f"{h}/device/vbd") == []
    x.VBD.plug(vbd)
    assert xs.read(f"{h}/device/vbd/51712/state") == "4"
