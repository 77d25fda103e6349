"""The ``linux_bridge`` backend against real kernel bridges and veth pairs in
the network namespace standing for dom0."""
from __future__ import annotations

import pytest

from xhost.backends.network_common.names import HybridNames
from xhost.compute import api
from xhost.testing.netns import host_link_names

pytestmark = pytest.mark.real
PLUGIN_CALLS = "host.call_plugin"
HYBRID = "[network_linux_bridge]\nhybrid_plug = true\n"


def vif_record(bed, mac):
    return next(r for r in bed.call("VIF.get_all_records").values() if r["MAC"] == mac)


def networks_named(bed, label):
    return [r for r in bed.call("network.get_all_records").values() if r["name_label"] == label]


def test_plain_ports_go_on_the_named_bridges_without_dom0_calls(bridge_bed):
    compute = bridge_bed.compute("linux_bridge")
    host_links = host_link_names()
    before = bridge_bed.snapshot()
    bridge_bed.counters()
    server = compute.create_server(
        "plain", "tiny", "m1.tiny", ["xenbr1", "Pool-wide network associated with eth0"])
    assert bridge_bed.counters().get(PLUGIN_CALLS, 0) == 0
    vif0, vif1 = (bridge_bed.vif_name(server, d) for d in "01")
    assert bridge_bed.ns.bridges() == {"xenbr0": sorted(["eth0", vif1]),
                                       "xenbr1": sorted(["eth1", vif0])}
    assert bridge_bed.ns.link(vif0).up
    port = bridge_bed.ports_tag(server)[0]
    assert vif_record(bridge_bed, port["mac"])["other_config"] == {"neutron-port-id": port["id"]}
    assert host_link_names() == host_links
    compute.delete_server("plain")
    assert not before.differences(bridge_bed.snapshot())


def test_unknown_network_lists_the_networks_there_are(bridge_bed):
    compute = bridge_bed.compute("linux_bridge")
    with pytest.raises(api.SpawnError) as err:
        compute.create_server("lost", "tiny", "m1.tiny", ["xenbr9"])
    message = str(err.value)
    assert "no XAPI network with name, bridge or uuid 'xenbr9'" in message
    assert "Pool-wide network associated with eth1 (xenbr1)" in message
    assert "plugging network interfaces failed" in message


def test_vlan_network_made_on_demand_shared_and_removed_with_its_last_port(bridge_bed):
    compute = bridge_bed.compute("linux_bridge")
    first = compute.create_server("v1", "tiny", "m1.tiny", [])
    second = compute.create_server("v2", "tiny", "m1.tiny", [])
    before = bridge_bed.snapshot()
    port1 = compute.attach_interface("v1", "xenbr1", vlan=42)
    assert port1["vlan"] == 42
    (net,) = networks_named(bridge_bed, "Pool-wide network associated with eth1 VLAN 42")
    assert net["other_config"]["xhost-vlan-on-demand"] == "true"
    (vlan_pif,) = [bridge_bed.call("PIF.get_record", p) for p in net["PIFs"]]
    assert (vlan_pif["device"], vlan_pif["VLAN"]) == ("eth1", "42")
    # The port's VIF is on the VLAN network's bridge in dom0.
    vif = vif_record(bridge_bed, port1["mac"])
    assert vif["network"] == bridge_bed.call("network.get_by_uuid", net["uuid"])
    assert bridge_bed.vif_name(first, "0") in bridge_bed.ns.ports(net["bridge"])
    # A second port on the same VLAN reuses the network.
    port2 = compute.attach_interface("v2", "Pool-wide network associated with eth1", vlan=42)
    assert len(networks_named(bridge_bed, "Pool-wide network associated with eth1 VLAN 42")) == 1
    assert sorted(bridge_bed.ns.ports(net["bridge"])) == sorted(
        [bridge_bed.vif_name(first, "0"), bridge_bed.vif_name(second, "0")]
        + (["eth1.42"] if "eth1.42" in bridge_bed.ns.link_names() else []))
    compute.detach_interface("v1", port1["id"])
    assert networks_named(bridge_bed, "Pool-wide network associated with eth1 VLAN 42")
    compute.detach_interface("v2", port2["id"])
    # The last port gone, the network xhost made goes with its VLAN.
    assert not before.differences(bridge_bed.snapshot())
    # Deleting a server takes its VLAN port's on-demand network too.
    port3 = compute.attach_interface("v1", "xenbr1", vlan=43)
    compute.attach_interface("v2", "xenbr0")
    assert port3["vlan"] == 43
    compute.delete_server("v1")
    assert not networks_named(bridge_bed, "Pool-wide network associated with eth1 VLAN 43")
    compute.delete_server("v2")


def test_an_existing_vlan_network_is_used_and_kept(bridge_bed):
    compute = bridge_bed.compute("linux_bridge")
    eth1 = next(r for r, p in bridge_bed.call("PIF.get_all_records").items()
                if p["device"] == "eth1" and p["VLAN"] == "-1")
    admin = bridge_bed.call("network.create", {"name_label": "storage vlan",
                                               "name_description": "", "MTU": "1500",
                                               "other_config": {}})
    bridge_bed.call("VLAN.create", eth1, "7", admin)
    server = compute.create_server("v", "tiny", "m1.tiny", [])
    before = bridge_bed.snapshot()
    port = compute.attach_interface("v", "xenbr1", vlan=7)
    assert vif_record(bridge_bed, port["mac"])["network"] == admin
    assert len(bridge_bed.call("network.get_all_records")) == len(before.networks)
    compute.detach_interface("v", port["id"])
    assert not before.differences(bridge_bed.snapshot())
    assert bridge_bed.call("network.get_name_label", admin) == "storage vlan"
    compute.delete_server(server.name)


def test_vlan_needs_a_network_with_a_nic(bridge_bed):
    compute = bridge_bed.compute("linux_bridge")
    bridge_bed.call("network.create", {"name_label": "inside", "name_description": "",
                                       "MTU": "1500", "other_config": {}})
    compute.create_server("v", "tiny", "m1.tiny", [])
    before = bridge_bed.snapshot()
    with pytest.raises(api.AttachError, match="'inside' has no physical interface"):
        compute.attach_interface("v", "inside", vlan=5)
    with pytest.raises(api.AttachError, match="VLAN tag 5000 is out of range"):
        compute.attach_interface("v", "xenbr1", vlan=5000)
    assert not before.differences(bridge_bed.snapshot())


def test_hybrid_plumbing_builds_nova_bridges_in_one_dom0_call_per_vif(bridge_bed):
    compute = bridge_bed.compute("linux_bridge", HYBRID)
    before = bridge_bed.snapshot()
    compute.create_server("warm", "tiny", "m1.tiny", ["xenbr1"])  # dom0 version handshake
    compute.delete_server("warm")
    bridge_bed.counters()
    server = compute.create_server("fw", "tiny", "m1.tiny", ["xenbr1", "xenbr0"])
    assert bridge_bed.counters().get(PLUGIN_CALLS) == 2
    ns = bridge_bed.ns
    links = {link.name: link for link in ns.links()}
    expected = {"xenbr0": ["eth0"], "xenbr1": ["eth1"]}
    for device, port in zip("01", bridge_bed.ports_tag(server)):
        names = HybridNames.for_port(port["id"])
        target = "xenbr1" if device == "0" else "xenbr0"
        # guest vif -> qbr (the interim network's bridge) -> qvb ~ qvo -> xenbrN
        interim = bridge_bed.call("network.get_record",
                                  vif_record(bridge_bed, port["mac"])["network"])
        assert (interim["name_label"], interim["bridge"]) == (("net-" + port["id"])[:14],
                                                              names.qbr)
        expected[names.qbr] = sorted([bridge_bed.vif_name(server, device), names.qvb])
        expected[target] = sorted(expected[target] + [names.qvo])
        assert links[names.qvb].kind == links[names.qvo].kind == "veth"
        assert links[names.qvb].up and links[names.qvo].up and links[names.qbr].up
    assert ns.bridges() == expected
    compute.delete_server("fw")
    assert not before.differences(bridge_bed.snapshot())


def test_hybrid_hot_plug_with_vlan_and_unplug(bridge_bed):
    compute = bridge_bed.compute("linux_bridge")
    server = compute.create_server("hot", "tiny", "m1.tiny", ["xenbr0"])
    before = bridge_bed.snapshot()
    port = compute.attach_interface("hot", "xenbr1", vlan=99, hybrid_plug=True)
    names = HybridNames.for_port(port["id"])
    (net,) = networks_named(bridge_bed, "Pool-wide network associated with eth1 VLAN 99")
    assert names.qvo in bridge_bed.ns.ports(net["bridge"])
    assert bridge_bed.ns.ports(names.qbr) == sorted([bridge_bed.vif_name(server, "1"),
                                                     names.qvb])
    instance = api.instance_from_record(compute._find("hot")[1])
    vif_ref = next(r for r, v in bridge_bed.call("VIF.get_all_records").items()
                   if v["MAC"] == port["mac"])
    compute.plugins.network_hot_unplug(compute.context(), instance, server.vm_ref,
                                       instance.ports[1], vif_ref)
    assert not {names.qbr, names.qvb, names.qvo} & bridge_bed.ns.link_names()
    compute.plugins.network_hot_plug(compute.context(), instance, server.vm_ref,
                                     instance.ports[1], vif_ref)
    assert names.qvo in bridge_bed.ns.ports(net["bridge"])
    compute.detach_interface("hot", port["id"])
    assert not before.differences(bridge_bed.snapshot())
    compute.delete_server("hot")


def test_hybrid_refused_on_an_openvswitch_host(ovs_bed):
    compute = ovs_bed.compute("linux_bridge", HYBRID)
    before = ovs_bed.snapshot(compute)
    with pytest.raises(api.SpawnError, match="network backend is 'openvswitch'; use "
                                             r"\[xenserver\] network_backend = openvswitch"):
        compute.create_server("x", "tiny", "m1.tiny", ["xenbr0"])
    assert not before.differences(ovs_bed.snapshot(compute))


def test_a_failure_at_any_step_of_a_hybrid_spawn_leaves_nothing(bridge_bed):
    compute = bridge_bed.compute("linux_bridge", HYBRID)
    errors = bridge_bed.sweep(
        lambda: compute.create_server("doomed", "tiny", "m1.tiny", ["xenbr1"]),
        lambda: compute.delete_server("doomed"), api.SpawnError, compute)
    assert len(errors) >= 12
    assert any("finishing network plumbing failed: host.call_plugin" in e for e in errors)


def test_a_failure_at_any_step_of_a_vlan_hot_plug_leaves_nothing(bridge_bed):
    """A VLAN network made on demand (the hybrid steps are swept in the spawn above)."""
    compute = bridge_bed.compute("linux_bridge")
    compute.create_server("target", "tiny", "m1.tiny", [])

    def detach_all():
        for port in api.instance_from_record(compute._find("target")[1]).ports:
            compute.detach_interface("target", port.id)

    errors = bridge_bed.sweep(
        lambda: compute.attach_interface("target", "xenbr1", vlan=12),
        detach_all, api.AttachError, compute)
    assert len(errors) >= 10
    steps = " ".join(errors)
    assert "VLAN.create failed" in steps and "network.create failed" in steps
    compute.delete_server("target")


def test_the_embedded_simulator_without_real_network_needs_no_dom0(simulator, make_conf,
                                                                    tmp_path, embedded_compute):
    """Zero configuration: xhost's embedded simulator has no dom0 network; the
    backends plug VIFs at the XAPI level and do no dom0 work."""
    for backend, conf in (("linux_bridge", ""),
                          ("openvswitch", "[network_openvswitch]\nhybrid_plug = true\n"),
                          ("openvswitch", "")):
        compute = embedded_compute(simulator, make_conf(f"[compute]\nstate_dir = {tmp_path}\n"
                                                        + conf), backend)
        simulator.controls.read_counters(reset=True)
        server = compute.create_server("demo", "tiny", "m1.tiny", ["xenbr0"])
        assert server.status == "active" and len(server.ports) == 1
        assert simulator.controls.read_counters().get(PLUGIN_CALLS, 0) == 0
        compute.delete_server("demo")
        assert not compute.xapi.call("VIF.get_all_records")


LOOKUP = "network.get_all_records_where"


def test_a_found_network_is_reused_until_it_is_gone_or_a_spawn_fails(bridge_bed):
    compute = bridge_bed.compute("linux_bridge")

    def lab_network():
        return bridge_bed.call("network.create", {"name_label": "lab", "name_description": "",
                                                  "MTU": "1500", "other_config": {}})

    first_net = lab_network()
    bridge_bed.counters()
    compute.create_server("n1", "tiny", "m1.tiny", ["lab"])
    assert bridge_bed.counters().get(LOOKUP) == 1
    compute.create_server("n2", "tiny", "m1.tiny", ["lab"])
    assert LOOKUP not in bridge_bed.counters()

    # A spawn that fails forgets it: the next one looks the name up again.
    rule = bridge_bed.sim.controls.add_fault("VM.start_on", ["INTERNAL_ERROR", "boom"])
    with pytest.raises(api.SpawnError, match="boom"):
        compute.create_server("n3", "tiny", "m1.tiny", ["lab"])
    bridge_bed.sim.controls.clear_faults(rule.id)
    bridge_bed.counters()
    compute.create_server("n3", "tiny", "m1.tiny", ["lab"])
    assert bridge_bed.counters().get(LOOKUP) == 1

    # The network re-created under the same name: found again, the spawn works.
    for name in ("n1", "n2", "n3"):
        compute.delete_server(name)
    bridge_bed.call("network.destroy", first_net)
    second_net = lab_network()
    server = compute.create_server("n4", "tiny", "m1.tiny", ["lab"])
    vif = vif_record(bridge_bed, bridge_bed.ports_tag(server)[0]["mac"])
    assert vif["network"] == second_net
    compute.delete_server("n4")


def test_network_cache_seconds_zero_looks_the_name_up_for_every_spawn(bridge_bed):
    compute = bridge_bed.compute("linux_bridge",
                                 "[network_linux_bridge]\nnetwork_cache_seconds = 0\n")
    for name in ("z1", "z2"):
        bridge_bed.counters()
        compute.create_server(name, "tiny", "m1.tiny", ["xenbr1"])
        assert bridge_bed.counters().get(LOOKUP) == 1
