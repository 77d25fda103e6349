"""Real-network mode against the real kernel and a real Open vSwitch (root).

The simulator's dom0 namespace must show exactly what xapi and its hotplug
scripts would make: bridges for networks in use, ``vif<domid>.<device>``
interfaces while domains run, OVS external ids -- and nothing in the host's
own namespace.
"""
from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import XenAPI

from xhost.sim import Simulator
from xhost.testing.netns import NetNamespace, host_link_names
from xhost.testing.ovs import PrivateOVS
from xhost.testing.realfixtures import component_guard, require_root_or_skip
from xhost.testing.simfixtures import SIM_PASSWORD, SIM_USER

pytestmark = pytest.mark.real


def login(sim: Simulator) -> XenAPI.Session:
    session = XenAPI.Session(sim.url)
    session.xenapi.login_with_password(SIM_USER, SIM_PASSWORD, "1.0", "net-tests")
    return session


def new_vm(x, name: str, *networks: str) -> tuple[str, list[str]]:
    tpl = x.VM.get_by_name_label("Debian Bookworm 12")[0]
    vm = x.VM.clone(tpl, name)
    x.VM.provision(vm)
    x.VM.set_is_a_template(vm, False)
    vifs = [x.VIF.create({"device": str(i), "network": net, "VM": vm, "MAC": "", "MTU": "0",
                          "other_config": {}, "qos_algorithm_type": "",
                          "qos_algorithm_params": {}}) for i, net in enumerate(networks)]
    return vm, vifs


def pool_net(x, n: int) -> str:
    return x.network.get_by_name_label(f"Pool-wide network associated with eth{n}")[0]


def internal_net(x, name: str) -> str:
    return x.network.create({"name_label": name, "name_description": "", "MTU": "1500",
                             "other_config": {}})


@pytest.fixture
def bridge_sim(tmp_path: Path) -> Iterator[Simulator]:
    require_root_or_skip("real-network mode")
    sim = Simulator(tmp_path / "state", users={SIM_USER: SIM_PASSWORD}, real_network=True,
                    network_backend="bridge")
    with component_guard():
        sim.start()
    try:
        yield sim
    finally:
        sim.stop()


def test_linux_bridges_follow_vms_and_vifs(bridge_sim: Simulator):
    host_links = host_link_names()
    ns = NetNamespace(bridge_sim.network.namespace())
    assert ns.exists and bridge_sim.network.ovsdb_connection() is None
    # At boot only the management PIF is plugged: xenbr0 with eth0 on it.
    assert ns.bridges() == {"xenbr0": ["eth0"]}
    session = login(bridge_sim)
    x = session.xenapi
    internal = internal_net(x, "internal")
    vm, (vif0, vif1, vif2) = new_vm(x, "vm1", pool_net(x, 0), pool_net(x, 1), internal)
    x.VM.start(vm, False, False)
    domid = x.VM.get_domid(vm)
    v0, v1, v2 = (f"vif{domid}.{i}" for i in range(3))
    bridges = ns.bridges()
    assert bridges == {"xenbr0": sorted(["eth0", v0]), "xenbr1": sorted(["eth1", v1]),
                       "xapi0": [v2]}
    link = ns.link(v0)
    assert link.kind == "tun" and link.up and link.mac == "fe:ff:ff:ff:ff:ff"
    # Hot unplug and plug of one VIF.
    x.VIF.unplug(vif1)
    assert v1 not in ns.link_names() and ns.ports("xenbr1") == ["eth1"]
    x.VIF.plug(vif1)
    assert ns.ports("xenbr1") == sorted(["eth1", v1])
    # The last VIF leaving an internal network takes its bridge away.
    x.VIF.unplug(vif2)
    assert "xapi0" not in ns.link_names()
    x.VIF.plug(vif2)
    # A reboot is a new domain: new domid, new interface names.
    x.VM.hard_reboot(vm)
    new_domid = x.VM.get_domid(vm)
    assert new_domid != domid
    assert ns.ports("xenbr0") == sorted(["eth0", f"vif{new_domid}.0"])
    assert v0 not in ns.link_names()
    x.VM.hard_shutdown(vm)
    assert ns.bridges() == {"xenbr0": ["eth0"], "xenbr1": ["eth1"]}
    # Nothing of this ever appeared in the host's own namespace.
    assert host_link_names() == host_links
    session.xenapi.session.logout()


def test_network_destroy_leaves_foreign_ports_alone(bridge_sim: Simulator):
    ns = NetNamespace(bridge_sim.network.namespace())
    session = login(bridge_sim)
    x = session.xenapi
    net = internal_net(x, "interim")
    vm, _ = new_vm(x, "vm2", net)
    x.VM.start(vm, False, False)
    bridge = x.network.get_bridge(net)
    # A network backend adds its own plumbing to the bridge (Nova's tap/qbr pair).
    ns.add_veth("tapfeed", "qvbfeed")
    ns.attach("tapfeed", bridge)
    x.VM.hard_shutdown(vm)
    # Like xapi, the bridge stays while someone else's port is on it ...
    assert ns.ports(bridge) == ["tapfeed"]
    ns.delete_link("tapfeed")
    x.network.destroy(net)
    # ... and goes with the network once it is free.
    assert bridge not in ns.link_names()


def test_unmanaged_network_needs_its_bridge(bridge_sim: Simulator, fail):
    ns = NetNamespace(bridge_sim.network.namespace())
    session = login(bridge_sim)
    x = session.xenapi
    net = x.network.create({"name_label": "br-int", "name_description": "", "MTU": "1500",
                            "bridge": "br-int", "managed": False, "other_config": {}})
    vm, _ = new_vm(x, "vm3", net)
    assert fail(x.VM.start, vm, False, False) == ["BRIDGE_NOT_AVAILABLE", "br-int"]
    assert x.VM.get_power_state(vm) == "Halted"
    assert not any(n.startswith("vif") for n in ns.link_names())
    ns.add_bridge("br-int")
    x.VM.start(vm, False, False)
    domid = x.VM.get_domid(vm)
    assert ns.ports("br-int") == [f"vif{domid}.0"]
    x.VM.hard_shutdown(vm)
    # The simulator never removes a bridge it did not create.
    assert ns.ports("br-int") == []


def test_restart_recreates_running_domains_interfaces(tmp_path: Path):
    require_root_or_skip("real-network mode")
    with component_guard():
        namespace = NetNamespace().create()
    try:
        def start() -> Simulator:
            return Simulator(tmp_path / "state", users={SIM_USER: SIM_PASSWORD},
                             real_network=True, network_backend="bridge",
                             netns=namespace.name).start()
        sim = start()
        x = login(sim).xenapi
        vm, _ = new_vm(x, "survivor", pool_net(x, 0))
        x.VM.start(vm, False, False)
        name = f"vif{x.VM.get_domid(vm)}.0"
        assert name in namespace.link_names()
        sim.stop()
        # What the simulator made in a namespace it was given goes with it; the
        # namespace stays.
        assert namespace.exists and namespace.link_names() == {"lo"}
        sim = start()
        try:
            assert namespace.ports("xenbr0") == sorted(["eth0", name])
        finally:
            sim.stop()
    finally:
        namespace.destroy()


@pytest.fixture
def ovs_sim(tmp_path: Path, ovs: PrivateOVS) -> Iterator[Simulator]:
    sim = Simulator(tmp_path / "state", users={SIM_USER: SIM_PASSWORD}, real_network=True,
                    network_backend="openvswitch", netns=ovs.netns.name,
                    ovsdb=ovs.unix_connection)
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()


def test_openvswitch_ports_carry_xenserver_external_ids(ovs_sim: Simulator, ovs: PrivateOVS):
    assert ovs_sim.network.namespace() == ovs.netns.name
    assert ovs_sim.network.ovsdb_connection() == ovs.unix_connection
    assert ovs.bridges() == ["xenbr0"] and ovs.ports("xenbr0") == ["eth0"]
    assert ovs.record("Bridge", "xenbr0", "datapath_type")["datapath_type"] == "netdev"
    session = login(ovs_sim)
    x = session.xenapi
    net = internal_net(x, "interim")
    assert ovs.external_ids("Bridge", "xenbr0")["xs-network-uuids"] == \
        x.network.get_uuid(pool_net(x, 0))
    vm, (vif0, vif1) = new_vm(x, "ovs vm", pool_net(x, 0), net)
    x.VIF.add_to_other_config(vif1, "nicira-iface-id", "port-1234")
    x.VM.start(vm, False, False)
    domid = x.VM.get_domid(vm)
    bridge = x.network.get_bridge(net)
    assert ovs.bridges() == sorted(["xenbr0", bridge])
    assert ovs.ports(bridge) == [f"vif{domid}.1"]
    ids = ovs.interface_external_ids(f"vif{domid}.0")
    assert ids == {"xs-vif-uuid": x.VIF.get_uuid(vif0), "xs-vm-uuid": x.VM.get_uuid(vm),
                   "xs-network-uuid": x.network.get_uuid(pool_net(x, 0)),
                   "attached-mac": x.VIF.get_MAC(vif0)}
    assert ovs.interface_external_ids(f"vif{domid}.1")["iface-id"] == "port-1234"
    # The devices exist where ovs-vswitchd runs, and OVS uses them.
    assert {f"vif{domid}.0", f"vif{domid}.1", bridge} <= ovs.netns.link_names()
    assert ovs.record("Interface", f"vif{domid}.0", "ofport")["ofport"] > 0
    x.VIF.unplug(vif0)
    assert ovs.ports("xenbr0") == ["eth0"] and f"vif{domid}.0" not in ovs.netns.link_names()
    x.VM.hard_shutdown(vm)
    assert ovs.bridges() == ["xenbr0"]
    session.xenapi.session.logout()


def test_openvswitch_vlan_is_a_fake_bridge(ovs_sim: Simulator, ovs: PrivateOVS):
    x = login(ovs_sim).xenapi
    eth0 = next(r for r, p in x.PIF.get_all_records().items()
                if p["device"] == "eth0" and p["VLAN"] == "-1")
    vlan_net = internal_net(x, "vlan 42")
    x.VLAN.create(eth0, "42", vlan_net)
    bridge = x.network.get_bridge(vlan_net)
    assert ovs.vsctl("br-to-parent", bridge).strip() == "xenbr0"
    assert ovs.vsctl("br-to-vlan", bridge).strip() == "42"
    vm, _ = new_vm(x, "tagged", vlan_net)
    x.VM.start(vm, False, False)
    name = f"vif{x.VM.get_domid(vm)}.0"
    assert ovs.vsctl("port-to-br", name).strip() == bridge
    assert ovs.record("Port", name, "tag")["tag"] == 42
    uuids = ovs.external_ids("Bridge", "xenbr0")["xs-network-uuids"].split(";")
    assert uuids == [x.network.get_uuid(pool_net(x, 0)), x.network.get_uuid(vlan_net)]


def test_stopping_cleans_only_what_the_simulator_made(tmp_path: Path, ovs: PrivateOVS):
    ovs.vsctl("add-br", "br-int", "--", "set", "Bridge", "br-int", "datapath_type=netdev")
    sim = Simulator(tmp_path / "state", users={SIM_USER: SIM_PASSWORD}, real_network=True,
                    netns=ovs.netns.name, ovsdb=ovs.tcp_connection).start()
    try:
        x = login(sim).xenapi
        vm, _ = new_vm(x, "left running", pool_net(x, 0))
        x.VM.start(vm, False, False)
        assert ovs.bridges() == ["br-int", "xenbr0"]
    finally:
        sim.stop()
    assert ovs.bridges() == ["br-int"]
    assert not any(n.startswith(("vif", "eth", "xenbr")) for n in ovs.netns.link_names())


def test_private_open_vswitch_and_namespace_go_with_the_simulator(tmp_path: Path):
    require_root_or_skip("real-network mode")
    sim = Simulator(tmp_path / "state", users={SIM_USER: SIM_PASSWORD}, real_network=True)
    with component_guard():
        sim.start()
    try:
        namespace = sim.network.namespace()
        connection = sim.network.ovsdb_connection()
        assert connection.startswith("unix:")
        out = subprocess.run(["ovs-vsctl", f"--db={connection}", "list-br"],
                             capture_output=True, text=True, check=True).stdout.split()
        assert out == ["xenbr0"]
    finally:
        sim.stop()
    assert not NetNamespace(namespace).exists
    assert not Path(connection.removeprefix("unix:")).exists()


def test_bad_options_are_refused(tmp_path: Path):
    with pytest.raises(ValueError, match="needs netns"):
        Simulator(tmp_path / "a", real_network=True, ovsdb="tcp:127.0.0.1:6640")
    with pytest.raises(ValueError, match="only make sense"):
        Simulator(tmp_path / "b", netns="somewhere")
    with pytest.raises(ValueError, match="openvswitch"):
        Simulator(tmp_path / "c", real_network=True, network_backend="bridge", netns="n",
                  ovsdb="unix:/x")


def test_migration_moves_the_interface_between_dom0s(tmp_path: Path):
    require_root_or_skip("real-network mode")
    sim = Simulator(tmp_path / "pool", users={SIM_USER: SIM_PASSWORD}, hosts=2,
                    real_network=True, network_backend="bridge")
    with component_guard():
        sim.start()
    try:
        x = login(sim).xenapi
        hosts = {x.host.get_name_label(h): h for h in x.host.get_all()}
        ns1 = NetNamespace(sim.network.namespace("xcp-ng-sim"))
        ns2 = NetNamespace(sim.network.namespace("xcp-ng-sim-2"))
        assert ns1.name != ns2.name
        vm, _ = new_vm(x, "traveller", pool_net(x, 1))
        x.VM.start_on(vm, hosts["xcp-ng-sim"], False, False)
        before = f"vif{x.VM.get_domid(vm)}.0"
        assert ns1.ports("xenbr1") == sorted(["eth1", before])
        assert "xenbr1" not in ns2.link_names()
        x.VM.pool_migrate(vm, hosts["xcp-ng-sim-2"], {"live": "true"})
        after = f"vif{x.VM.get_domid(vm)}.0"
        assert after != before
        assert ns2.ports("xenbr1") == sorted(["eth1", after])
        assert before not in ns1.link_names()
        info = sim.network.info()["hosts"]
        assert {h["netns"] for h in info.values()} == {ns1.name, ns2.name}
    finally:
        sim.stop()
    assert not ns1.exists and not ns2.exists


def test_serve_real_network_from_the_command_line(tmp_path: Path):
    require_root_or_skip("real-network mode")
    import os
    import sys

    env = dict(os.environ, XHOST_SIM_PASSWORD=SIM_PASSWORD)
    proc = subprocess.Popen(
        [sys.executable, "-P", "-m", "xhost.cli.main", "sim", "serve", "--state-dir",
         str(tmp_path / "cli"), "--real-network", "--network-backend", "bridge",
         "--auth-delay", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env)
    try:
        url = proc.stdout.readline().strip()
        out = subprocess.run([sys.executable, "-P", "-m", "xhost.cli.main", "sim", "network",
                              "--url", url, "-f", "value", "-c", "netns"],
                             capture_output=True, text=True, env=env, timeout=60)
        assert out.returncode == 0, out.stderr
        namespace = out.stdout.strip()
        assert NetNamespace(namespace).bridges() == {"xenbr0": ["eth0"]}
    finally:
        proc.terminate()
        proc.wait(10)
    assert "dom0 network of xcp-ng-sim: namespace " + namespace in proc.stderr.read()
    assert not NetNamespace(namespace).exists


def test_linux_vlan_network(bridge_sim: Simulator):
    """A VLAN network's bridge carries ethN.<tag> when the kernel has 802.1Q;
    without the module the bridge and the vifs still work."""
    ns = NetNamespace(bridge_sim.network.namespace())
    x = login(bridge_sim).xenapi
    eth1 = next(r for r, p in x.PIF.get_all_records().items()
                if p["device"] == "eth1" and p["VLAN"] == "-1")
    vlan_net = internal_net(x, "vlan 42")
    x.VLAN.create(eth1, "42", vlan_net)
    bridge = x.network.get_bridge(vlan_net)
    vm, _ = new_vm(x, "tagged", vlan_net)
    x.VM.start(vm, False, False)
    vif = f"vif{x.VM.get_domid(vm)}.0"
    probe = subprocess.run(["ip", "-n", ns.name, "link", "add", "link", "eth1", "name",
                            "probe.9", "type", "vlan", "id", "9"], capture_output=True)
    if probe.returncode == 0:
        ns.delete_link("probe.9")
        assert ns.ports(bridge) == sorted(["eth1.42", vif])
        assert ns.link("eth1.42").kind == "vlan"
    else:
        assert ns.ports(bridge) == [vif]
    # The tagged PIF's device exists for the VLAN to hang on.
    assert "eth1" in ns.link_names()
    x.VM.hard_shutdown(vm)
    assert ns.ports(bridge) == (["eth1.42"] if probe.returncode == 0 else [])


def test_exec_prefix_runs_commands_in_dom0(bridge_sim: Simulator, tmp_path: Path):
    prefix = bridge_sim.network.exec_prefix()
    out = subprocess.run([*prefix, "ip", "-o", "link", "show"], capture_output=True,
                         text=True, check=True).stdout
    names = {line.split(": ")[1].split("@")[0] for line in out.splitlines()}
    assert names == NetNamespace(bridge_sim.network.namespace()).link_names()
    assert "xenbr0" in names and "xenbr0" not in host_link_names()
    plain = Simulator(tmp_path / "plain", users={SIM_USER: SIM_PASSWORD})
    assert plain.network.exec_prefix() == ()


def test_missing_namespace_is_a_clear_error(tmp_path: Path):
    require_root_or_skip("real-network mode")
    from xhost.sim.netmode import RealNetworkUnavailable

    sim = Simulator(tmp_path / "state", users={SIM_USER: SIM_PASSWORD}, real_network=True,
                    network_backend="bridge", netns="xhtest-no-such-namespace")
    with pytest.raises(RealNetworkUnavailable, match="does not exist"):
        sim.start()
    # Nothing was left behind: the state directory can be used at once.
    Simulator(tmp_path / "state", users={SIM_USER: SIM_PASSWORD}).start().stop()
