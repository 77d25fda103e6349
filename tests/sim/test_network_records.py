"""Network, PIF, VLAN and Bond records as xapi keeps them (no root needed)."""
from __future__ import annotations

import XenAPI

from xhost.sim import Simulator
from xhost.testing.simfixtures import SIM_PASSWORD, SIM_USER


def network(x, name: str, bridge: str = "", mtu: str = "1500", **other) -> str:
    return x.network.create({"name_label": name, "name_description": "", "MTU": mtu,
                             "bridge": bridge, "other_config": other})


def vif(x, vm: str, net: str, device: str = "0") -> str:
    return x.VIF.create({"device": device, "network": net, "VM": vm, "MAC": "", "MTU": "0",
                         "other_config": {}, "qos_algorithm_type": "",
                         "qos_algorithm_params": {}})


def pif(x, device: str, host: str | None = None) -> str:
    return next(r for r, p in x.PIF.get_all_records().items()
                if p["device"] == device and p["VLAN"] == "-1"
                and (host is None or p["host"] == host))


def test_network_create_names_bridges_like_xapi(x, fail):
    first, second = network(x, "a"), network(x, "b")
    bridges = {x.network.get_bridge(first), x.network.get_bridge(second)}
    assert bridges == {"xapi0", "xapi1"}
    x.network.destroy(first)
    assert x.network.get_bridge(network(x, "c")) == "xapi0"
    named = network(x, "named", bridge="brtest0")
    assert x.network.get_bridge(named) == "brtest0"
    assert fail(network, x, "dup", "brtest0") == ["BRIDGE_NAME_EXISTS", "brtest0"]
    for reserved in ("xenbr9", "xapi77", "vif1.0", "tap3", "eth5", "b" * 16):
        assert fail(network, x, "bad", reserved) == ["INVALID_VALUE", "bridge", reserved]
    assert x.network.get_MTU(network(x, "mtu", mtu="0")) == "1500"
    assert x.network.get_MTU(network(x, "jumbo", mtu="9000")) == "9000"


def test_network_destroy_order_and_vifs(x, new_vm, fail):
    net = network(x, "internal")
    vm = new_vm("netdel", nic=False)
    plugged = vif(x, vm, net, "0")
    spare = vif(x, vm, net, "1")
    x.VM.start(vm, False, False)
    x.VIF.unplug(spare)
    assert fail(x.network.destroy, net) == ["NETWORK_CONTAINS_VIF", plugged]
    x.VM.hard_shutdown(vm)
    x.network.destroy(net)
    # xapi destroys the network's (unplugged) VIFs with it.
    assert fail(x.VIF.get_record, plugged) == ["HANDLE_INVALID", "VIF", plugged]
    assert x.VM.get_VIFs(vm) == []
    mgmt = x.network.get_by_name_label("Pool-wide network associated with eth0")[0]
    assert fail(x.network.destroy, mgmt) == ["NETWORK_CONTAINS_PIF",
                                             *x.network.get_PIFs(mgmt)]
    himn = x.network.get_by_name_label("Host internal management network")[0]
    assert fail(x.network.destroy, himn) == ["CANNOT_DESTROY_SYSTEM_NETWORK", himn]


def test_plugging_a_vif_brings_its_pif_up(x, new_vm):
    eth1_net = x.network.get_by_name_label("Pool-wide network associated with eth1")[0]
    eth1 = pif(x, "eth1")
    assert x.PIF.get_currently_attached(eth1) is False
    vm = new_vm("uplink", nic=False)
    vif(x, vm, eth1_net)
    x.VM.start(vm, False, False)
    assert x.PIF.get_currently_attached(eth1) is True


def test_vlan_records(x, fail):
    eth1 = pif(x, "eth1")
    net = network(x, "vlan 42")
    vlan = x.VLAN.create(eth1, "42", net)
    rec = x.VLAN.get_record(vlan)
    assert rec["tag"] == "42" and rec["tagged_PIF"] == eth1
    untagged = x.PIF.get_record(rec["untagged_PIF"])
    assert untagged["device"] == "eth1" and untagged["VLAN"] == "42"
    assert untagged["MAC"] == "fe:ff:ff:ff:ff:ff" and untagged["physical"] is False
    assert untagged["currently_attached"] is True and untagged["network"] == net
    assert untagged["metrics"] == x.PIF.get_metrics(eth1)
    assert untagged["VLAN_master_of"] == vlan and vlan in x.PIF.get_VLAN_slave_of(eth1)
    net2 = x.network.create({"name_label": "unmanaged", "name_description": "", "MTU": "1500",
                             "bridge": "brexisting", "managed": False, "other_config": {}})
    assert fail(x.VLAN.create, eth1, "43", net2) == ["NETWORK_UNMANAGED", net2]
    x.VLAN.destroy(vlan)
    assert fail(x.PIF.get_record, rec["untagged_PIF"])[0] == "HANDLE_INVALID"
    assert x.network.get_PIFs(net) == []


def test_bond_records(x, fail):
    net = network(x, "bond net")
    eth0, eth1 = pif(x, "eth0"), pif(x, "eth1")
    assert fail(x.Bond.create, net, [eth0], "", "active-backup", {}) == \
        ["PIF_BOND_NEEDS_MORE_MEMBERS"]
    bond = x.Bond.create(net, [eth0, eth1], "", "active-backup", {})
    master = x.Bond.get_master(bond)
    assert x.PIF.get_device(master) == "bond0" and x.PIF.get_network(master) == net
    assert sorted(x.Bond.get_slaves(bond)) == sorted([eth0, eth1])
    assert x.PIF.get_bond_slave_of(eth0) == bond
    assert fail(x.VLAN.create, eth0, "5", network(x, "on slave")) == \
        ["CANNOT_ADD_VLAN_TO_BOND_SLAVE", eth0]
    x.Bond.destroy(bond)
    assert x.PIF.get_bond_slave_of(eth0) == "OpaqueRef:NULL"


def test_network_backend_option(tmp_path):
    for backend in ("bridge", "openvswitch"):
        with Simulator(tmp_path / backend, users={SIM_USER: SIM_PASSWORD},
                       network_backend=backend) as sim:
            session = XenAPI.Session(sim.url)
            session.xenapi.login_with_password(SIM_USER, SIM_PASSWORD, "1.0", "t")
            host = session.xenapi.host.get_all()[0]
            assert session.xenapi.host.get_software_version(host)["network_backend"] == backend
            session.xenapi.session.logout()


def test_pool_wide_vlan_on_every_host(tmp_path):
    with Simulator(tmp_path / "s", users={SIM_USER: SIM_PASSWORD}, hosts=2) as sim:
        session = XenAPI.Session(sim.url)
        session.xenapi.login_with_password(SIM_USER, SIM_PASSWORD, "1.0", "t")
        x = session.xenapi
        net = network(x, "pool vlan")
        created = x.pool.create_VLAN_from_PIF(pif(x, "eth1", sim.master.host_ref), net, "7")
        hosts = {x.PIF.get_host(p) for p in created}
        assert hosts == set(x.host.get_all())
        assert all(x.PIF.get_VLAN(p) == "7" for p in created)
        session.xenapi.session.logout()
