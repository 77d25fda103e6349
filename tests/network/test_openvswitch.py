"""The ``openvswitch`` backend against a real Open vSwitch (netdev datapath,
private directory, vswitchd in the namespace standing for dom0)."""
from __future__ import annotations

import threading
import time

import pytest

from xhost.backends.network_common.names import HybridNames
from xhost.compute import api
from xhost.testing.netns import host_link_names
from xhost.testing.ovs import PrivateOVS

pytestmark = pytest.mark.real
PLUGIN_CALLS = "host.call_plugin"
NEUTRON_KEYS = ("iface-id", "attached-mac", "iface-status", "vm-uuid")


def neutron_ids(ids: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in ids.items() if k in NEUTRON_KEYS}


def test_direct_plug_writes_neutron_external_ids_without_dom0_calls(ovs_bed):
    compute = ovs_bed.computes[0]
    host_links = host_link_names()
    before = ovs_bed.snapshot()
    ovs_bed.counters()
    server = compute.create_server("web", "tiny", "m1.tiny", ["tenant-a", "tenant-b"])
    calls = ovs_bed.counters()
    # Zero dom0 script calls for two VIFs (Nova made about 24 per VIF).
    assert calls.get(PLUGIN_CALLS, 0) == 0
    vm = ovs_bed.vm_of(server)
    ports = ovs_bed.ports_tag(server)
    assert [p["network"] for p in ports] == ["tenant-a", "tenant-b"]
    assert ovs_bed.ovs.ports("br-int") == sorted(ovs_bed.vif_name(server, d) for d in "01")
    for device, port in zip("01", ports):
        name = ovs_bed.vif_name(server, device)
        ids = ovs_bed.ovs.interface_external_ids(name)
        assert neutron_ids(ids) == {"iface-id": port["id"], "attached-mac": port["mac"],
                                    "iface-status": "active", "vm-uuid": server.id}
        # XenServer's own ids are kept beside them.
        assert ids["xs-vm-uuid"] == vm["uuid"]
        assert ovs_bed.ovs.record("Interface", name, "ofport")["ofport"] > 0
        vif = next(r for r in ovs_bed.call("VIF.get_all_records").values()
                   if r["MAC"] == port["mac"])
        assert vif["device"] == device and vif["currently_attached"]
        assert vif["other_config"] == {"neutron-port-id": port["id"],
                                       "nicira-iface-id": port["id"]}
    # The devices exist in dom0's namespace only.
    assert {ovs_bed.vif_name(server, d) for d in "01"} <= ovs_bed.ns.link_names()
    assert host_link_names() == host_links
    assert compute.delete_server("web") is True
    assert ovs_bed.ovs.ports("br-int") == []
    assert not before.differences(ovs_bed.snapshot())


def test_a_domain_recreated_behind_xhosts_back_keeps_its_iface_id(ovs_bed):
    """The hotplug script restores iface-id from the VIF's nicira-iface-id when
    the domain is re-created (here a reboot: new domid, new port)."""
    compute = ovs_bed.computes[0]
    server = compute.create_server("rebooter", "tiny", "m1.tiny", ["tenant-a"])
    old = ovs_bed.vif_name(server)
    ovs_bed.call("VM.hard_reboot", server.vm_ref)
    new = ovs_bed.vif_name(server)
    assert new != old and ovs_bed.ovs.ports("br-int") == [new]
    port_id = ovs_bed.ports_tag(server)[0]["id"]
    assert ovs_bed.ovs.interface_external_ids(new)["iface-id"] == port_id
    compute.delete_server("rebooter")


def test_hybrid_plumbing(ovs_bed):
    compute = ovs_bed.ovs_compute(hybrid=True)
    before = ovs_bed.snapshot(compute)
    compute.create_server("warm", "tiny", "m1.tiny", ["x"])  # the dom0 version handshake
    compute.delete_server("warm")
    ovs_bed.counters()
    server = compute.create_server("fw", "tiny", "m1.tiny", ["tenant-a", "tenant-b"])
    # One dom0 call per VIF builds its Linux bridge and veth pairs.
    assert ovs_bed.counters().get(PLUGIN_CALLS) == 2
    ports = ovs_bed.ports_tag(server)
    ovs, ns = ovs_bed.ovs, ovs_bed.ns
    links = {link.name: link for link in ns.links()}
    assert sorted(ovs.ports("br-int")) == sorted(HybridNames.for_port(p["id"]).qvo
                                                 for p in ports)
    for device, port in zip("01", ports):
        names = HybridNames.for_port(port["id"])
        # guest vif -> interim OVS bridge -> vif/tap veth -> qbr -> qvb/qvo veth -> br-int
        vif = next(r for r in ovs_bed.call("VIF.get_all_records").values()
                   if r["MAC"] == port["mac"])
        interim = ovs_bed.call("network.get_record", vif["network"])
        assert interim["name_label"] == ("net-" + port["id"])[:14]
        assert ovs.ports(interim["bridge"]) == sorted([ovs_bed.vif_name(server, device),
                                                       names.patch])
        assert ns.ports(names.qbr) == sorted([names.qvb, names.tap])
        assert links[names.qbr].kind == "bridge" and links[names.qbr].up
        for end in (names.qvb, names.qvo, names.tap, names.patch):
            assert links[end].kind == "veth" and links[end].up
        assert neutron_ids(ovs.interface_external_ids(names.qvo)) == {
            "iface-id": port["id"], "attached-mac": port["mac"], "iface-status": "active",
            "vm-uuid": server.id}
        assert ovs.record("Interface", names.qvo, "ofport")["ofport"] > 0
        assert ovs.record("Interface", names.patch, "ofport")["ofport"] > 0
        # Only qvo carries the port id: no second OVS port claims it.
        guest = ovs.interface_external_ids(ovs_bed.vif_name(server, device))
        assert "iface-id" not in guest and "nicira-iface-id" not in vif["other_config"]
    # Hot unplug takes the plumbing away with the device and keeps the VIF;
    # hot plug builds it again.
    instance = api.instance_from_record(compute._find("fw")[1])
    port = instance.ports[0]
    names = HybridNames.for_port(port.id)
    vif_ref = next(r for r, v in ovs_bed.call("VIF.get_all_records").items()
                   if v["MAC"] == port.mac)
    compute.plugins.network_hot_unplug(compute.context(), instance, server.vm_ref, port, vif_ref)
    assert not {names.qbr, names.qvb, names.qvo, names.tap, names.patch} & ns.link_names()
    assert names.qvo not in ovs.ports("br-int")
    assert ovs_bed.call("VIF.get_currently_attached", vif_ref) is False
    compute.plugins.network_hot_plug(compute.context(), instance, server.vm_ref, port, vif_ref)
    assert ovs.interface_external_ids(names.qvo)["iface-id"] == port.id
    assert ns.ports(names.qbr) == sorted([names.qvb, names.tap])
    compute.delete_server("fw")
    assert not before.differences(ovs_bed.snapshot(compute))


def test_hot_plug_and_unplug_on_a_running_server(ovs_bed):
    compute = ovs_bed.computes[0]
    server = compute.create_server("hot", "tiny", "m1.tiny", ["tenant-a"])
    before = ovs_bed.snapshot()
    ovs_bed.counters()
    port = compute.attach_interface("hot", "tenant-b")
    assert ovs_bed.counters().get(PLUGIN_CALLS, 0) == 0
    assert port["device"] == "1" and port["network"] == "tenant-b"
    name = ovs_bed.vif_name(server, "1")
    assert neutron_ids(ovs_bed.ovs.interface_external_ids(name)) == {
        "iface-id": port["id"], "attached-mac": port["mac"], "iface-status": "active",
        "vm-uuid": server.id}
    assert ovs_bed.ports_tag(server)[1] == port
    shown = compute.show_server("hot")
    assert [p["id"] for p in shown.ports][1] == port["id"]
    key = "vm-data/networking/" + port["mac"].replace(":", "")
    assert key in ovs_bed.vm_of(server)["xenstore_data"]
    # A second one takes the next free device; unplugging the first frees it.
    second = compute.attach_interface("hot", "tenant-c", hybrid_plug=True)
    assert second["device"] == "2" and second["hybrid_plug"] is True
    assert HybridNames.for_port(second["id"]).qvo in ovs_bed.ovs.ports("br-int")
    # Something else left an Open vSwitch port claiming the port's iface-id:
    # removing the port removes it too.
    ovs_bed.ovs.vsctl("add-port", "br-int", "stray", "--", "set", "Interface", "stray",
                      "type=internal", f"external_ids:iface-id={port['id']}")
    assert compute.detach_interface("hot", port["id"]) is True
    assert name not in ovs_bed.ovs.ports("br-int") and "stray" not in ovs_bed.ovs.ports("br-int")
    assert compute.detach_interface("hot", second["mac"].upper()) is True
    assert not before.differences(ovs_bed.snapshot())
    assert [p["network"] for p in ovs_bed.ports_tag(server)] == ["tenant-a"]
    assert ovs_bed.vm_of(server)["power_state"] == "Running"
    with pytest.raises(api.PortNotFound, match="tenant-a"):
        compute.detach_interface("hot", "no-such-port")
    with pytest.raises(api.ServerNotFound):
        compute.attach_interface("nobody", "tenant-a")
    compute.delete_server("hot")


def test_hot_plug_on_a_halted_server_plugs_at_next_start(ovs_bed):
    compute = ovs_bed.computes[0]
    server = compute.create_server("cold", "tiny", "m1.tiny", [])
    ovs_bed.call("VM.hard_shutdown", server.vm_ref)
    port = compute.attach_interface("cold", "tenant-a")
    vif = next(r for r in ovs_bed.call("VIF.get_all_records").values()
               if r["MAC"] == port["mac"])
    assert not vif["currently_attached"] and ovs_bed.ovs.ports("br-int") == []
    ovs_bed.call("VM.start", server.vm_ref, False, False)
    # The hotplug script alone gives the new domain's port its iface-id.
    assert ovs_bed.ovs.interface_external_ids(ovs_bed.vif_name(server))["iface-id"] == port["id"]
    compute.delete_server("cold")
    assert ovs_bed.ovs.ports("br-int") == []


def test_a_failure_at_any_step_of_a_spawn_leaves_nothing(ovs_bed):
    """Direct plugging; the hybrid plumbing's steps are swept through a hot
    plug below (the same hooks, on a running VM)."""
    compute = ovs_bed.ovs_compute()
    errors = ovs_bed.sweep(
        lambda: compute.create_server("doomed", "tiny", "m1.tiny", ["tenant-a"]),
        lambda: compute.delete_server("doomed"), api.SpawnError, compute)
    assert len(errors) >= 8  # every call of a (lean) spawn failed in turn
    steps = " ".join(errors)
    assert "plugging network interfaces failed" in steps
    # The port is finished through OVSDB alone: no XAPI call, no dom0 script.
    assert "finishing network plumbing failed" not in steps
    assert "host.call_plugin" not in steps
    assert compute.journal.entries() == []


def test_a_failure_at_any_step_of_a_hot_plug_leaves_nothing(ovs_bed):
    compute = ovs_bed.computes[0]
    compute.create_server("target", "tiny", "m1.tiny", ["tenant-a"])
    errors = ovs_bed.sweep(
        lambda: compute.attach_interface("target", "tenant-b", hybrid_plug=True),
        lambda: [compute.detach_interface("target", p.id) for p in
                 api.instance_from_record(compute._find("target")[1]).ports
                 if p.network == "tenant-b"],
        api.AttachError, compute)
    assert len(errors) >= 10
    assert all(e.startswith("could not attach a port on 'tenant-b'") for e in errors)
    steps = " ".join(errors)
    assert "preparing the network failed: network.create" in steps
    assert "plugging the VIF failed: host.call_plugin" in steps
    compute.delete_server("target")


def test_unreachable_ovsdb_fails_with_the_fix_and_leaves_nothing(ovs_bed):
    compute = ovs_bed.compute("openvswitch", "[xenserver]\novs_integration_bridge = br-int\n"
                              "[network_openvswitch]\novsdb_connection = tcp:127.0.0.1:9\n"
                              "ovsdb_timeout = 2\n")
    before = ovs_bed.snapshot(compute)
    with pytest.raises(api.SpawnError, match="ovs-vsctl set-manager ptcp:6640"):
        compute.create_server("lonely", "tiny", "m1.tiny", ["tenant-a"])
    assert not before.differences(ovs_bed.snapshot(compute))


def test_default_ovsdb_connection_is_the_hosts_address_port_6640(ovs_bed):
    compute = ovs_bed.compute("openvswitch", "[xenserver]\novs_integration_bridge = br-int\n"
                              "[network_openvswitch]\novsdb_timeout = 1\nvif_timeout = 1\n")
    host = ovs_bed.call("host.get_all")[0]
    expected = f"tcp:{ovs_bed.call('host.get_address', host)}:6640"
    before = ovs_bed.snapshot(compute)
    with pytest.raises(api.SpawnError, match=f"Open vSwitch database {expected}"):
        compute.create_server("default", "tiny", "m1.tiny", ["tenant-a"])
    assert not before.differences(ovs_bed.snapshot(compute))


def test_openvswitch_on_a_linux_bridge_host_says_which_backend_to_use(bridge_bed):
    compute = bridge_bed.compute("openvswitch", "[network_openvswitch]\n"
                                 "ovsdb_connection = tcp:127.0.0.1:9\n")
    with pytest.raises(api.SpawnError, match=r"network backend is 'bridge' .*set \[xenserver\] "
                                             "network_backend = linux_bridge"):
        compute.create_server("wrong", "tiny", "m1.tiny", ["xenbr1"])


def test_missing_integration_network_is_a_clear_error(ovs_bed):
    compute = ovs_bed.compute("openvswitch", "[xenserver]\novs_integration_bridge = br-nope\n"
                              f"[network_openvswitch]\novsdb_connection = "
                              f"{ovs_bed.ovs.tcp_connection}\n")
    before = ovs_bed.snapshot(compute)
    with pytest.raises(api.SpawnError) as err:
        compute.create_server("lost", "tiny", "m1.tiny", ["tenant-a"])
    assert "no XAPI network with bridge 'br-nope' ([xenserver] ovs_integration_bridge)" \
        in str(err.value)
    assert "xe network-create name-label=br-nope bridge=br-nope" in str(err.value)
    assert "br-int" in str(err.value)  # what the host has
    assert not before.differences(ovs_bed.snapshot(compute))


def test_without_integration_bridge_ports_go_on_the_named_network(ovs_bed):
    compute = ovs_bed.compute("openvswitch", f"[network_openvswitch]\novsdb_connection = "
                                             f"{ovs_bed.ovs.tcp_connection}\n")
    server = compute.create_server("plain", "tiny", "m1.tiny", ["xenbr0"])
    name = ovs_bed.vif_name(server)
    assert ovs_bed.ovs.ports("xenbr0") == sorted(["eth0", name])
    port = ovs_bed.ports_tag(server)[0]
    assert ovs_bed.ovs.interface_external_ids(name)["iface-id"] == port["id"]
    compute.delete_server("plain")
    assert ovs_bed.ovs.ports("xenbr0") == ["eth0"]


def test_each_ovsdb_server_gets_its_own_connection(ovs_bed):
    """ovsdbapp keeps a connection per API class: two servers in one process
    must not share it."""
    from xhost.backends.network_openvswitch import ovsdb

    other = PrivateOVS().start()
    try:
        for server in (ovs_bed.ovs, other):
            server.vsctl("add-br", "br-x", "--", "set", "Bridge", "br-x", "datapath_type=netdev")
        first = ovsdb.connect(ovs_bed.ovs.tcp_connection, 5)
        second = ovsdb.connect(other.tcp_connection, 5)
        assert first is not second and first.api.ovsdb_connection is not \
            second.api.ovsdb_connection
        first.set_external_ids("br-x", {"mark": "first"})
        second.set_external_ids("br-x", {"mark": "second"})
        assert ovs_bed.ovs.interface_external_ids("br-x")["mark"] == "first"
        assert other.interface_external_ids("br-x")["mark"] == "second"
        assert ovsdb.connect(ovs_bed.ovs.tcp_connection, 5) is first
        # Adding a port for a device that does not exist is refused, not left at ofport -1.
        with pytest.raises(ovsdb.OvsdbError, match="cannot use device qvonosuchdev"):
            first.add_ports([("br-x", "qvonosuchdev", {})])
        first.delete_ports(["qvonosuchdev"])
        assert ovs_bed.ovs.ports("br-x") == []
        # Waiting for a port blocks on OVSDB's update notifications until it appears...
        timer = threading.Timer(0.3, ovs_bed.ovs.vsctl, ("add-port", "br-x", "late", "--", "set",
                                                         "Interface", "late", "type=internal"))
        started = time.monotonic()
        timer.start()
        assert first.wait_for_port("late", timeout=10) == "br-x"
        assert 0.25 < time.monotonic() - started < 5
        timer.join()
        # ... and gives up, naming what it waited for, when it never does.
        with pytest.raises(ovsdb.OvsdbTimeout, match="port never did not appear within 0.3 s"):
            first.wait_for_port("never", timeout=0.3)
        ovs_bed.ovs.vsctl("del-br", "br-x")
    finally:
        ovsdb.forget(other.tcp_connection)
        other.stop()
