"""Guests publish what PV tools publish; the simulator maps it into
VM_guest_metrics the way xapi does.  Checked through the real XenAPI client."""
from __future__ import annotations

import ipaddress
import json
import time

from xhost.sim.guest_metrics import collect
from xhost.testing.waiting import wait_for


def networking(mac: str, *ips: dict, **extra) -> str:
    return json.dumps({"label": "public", "mac": mac, "ips": list(ips), **extra})



def test_metrics_from_nova_networking(x, new_vm):
    vm = new_vm("nova")
    mac = x.VIF.get_MAC(x.VM.get_VIFs(vm)[0])
    x.VM.add_to_xenstore_data(vm, f"vm-data/networking/{mac.replace(':', '')}", networking(
        mac, {"ip": "192.0.2.50", "netmask": "255.255.255.0", "gateway": "192.0.2.1",
              "enabled": "1"}, {"ip": "192.0.2.51", "netmask": "255.255.255.0", "enabled": "1"},
        ip6s=[{"ip": "2001:db8::50", "netmask": "64", "enabled": "1"}]))
    x.VM.start(vm, False, False)
    gm = x.VM_guest_metrics.get_record(x.VM.get_guest_metrics(vm))
    assert gm["networks"] == {"0/ip": "192.0.2.50", "0/ipv4/0": "192.0.2.50",
                              "0/ipv4/1": "192.0.2.51", "0/ipv6/0": "2001:db8::50"}
    assert gm["os_version"]["distro"] == "debian" and gm["os_version"]["major"] == "12"
    assert "uname" in gm["os_version"]
    assert gm["PV_drivers_version"] == {"major": "8", "minor": "3", "micro": "0", "build": "1"}
    assert gm["PV_drivers_detected"] is True and gm["PV_drivers_up_to_date"] is True
    for feature in ("feature-shutdown", "feature-reboot", "feature-suspend"):
        assert gm["other"][feature] == "1"
    assert gm["other"]["platform-feature-multiprocessor-suspend"] == "1"
    assert gm["can_use_hotplug_vif"] == "yes" and gm["live"] is True


def test_deterministic_lease_without_configuration(x, new_vm):
    vm = new_vm("dhcp")
    x.VM.start(vm, False, False)
    ip = x.VM_guest_metrics.get_networks(x.VM.get_guest_metrics(vm))["0/ip"]
    assert ipaddress.IPv4Address(ip) in ipaddress.IPv4Network("10.0.0.0/8")
    x.VM.clean_reboot(vm)
    assert x.VM_guest_metrics.get_networks(x.VM.get_guest_metrics(vm))["0/ip"] == ip
    other = new_vm("dhcp-2")
    x.VM.start(other, False, False)
    assert x.VM_guest_metrics.get_networks(x.VM.get_guest_metrics(other))["0/ip"] != ip


def test_legacy_networks_key_and_windows(x, new_vm):
    vm = new_vm("win", template="Windows Server 2022 (64-bit)")
    x.VM.add_to_xenstore_data(vm, "vm-data/networks/0/ip", "192.0.2.10")
    x.VM.start(vm, False, False)
    gm = x.VM_guest_metrics.get_record(x.VM.get_guest_metrics(vm))
    assert gm["networks"]["0/ip"] == "192.0.2.10"
    assert gm["os_version"]["distro"] == "windows"


def test_one_address_per_vif(x, new_vm):
    vm = new_vm("two-nics")
    net = x.network.get_by_name_label("Pool-wide network associated with eth1")[0]
    x.VIF.create({"device": "1", "network": net, "VM": vm, "MAC": "", "MTU": "1500",
                  "other_config": {}, "qos_algorithm_type": "", "qos_algorithm_params": {}})
    x.VM.start(vm, False, False)
    networks = x.VM_guest_metrics.get_networks(x.VM.get_guest_metrics(vm))
    assert set(networks) == {"0/ip", "0/ipv4/0", "1/ip", "1/ipv4/0"}
    assert networks["0/ip"] != networks["1/ip"]


def test_guest_changes_reach_the_metrics(simulator, x, new_vm):
    vm = new_vm("changing")
    x.VM.start(vm, False, False)
    gm = x.VM.get_guest_metrics(vm)
    guest = simulator.guests.get(vm)
    guest.xenstore.write("attr/vif/0/ipv4/1", "198.51.100.9")
    guest.xenstore.write("control/feature-hibernate", "1")
    assert wait_for(lambda: x.VM_guest_metrics.get_networks(gm).get("0/ipv4/1") == "198.51.100.9")
    assert wait_for(lambda: x.VM_guest_metrics.get_other(gm).get("feature-hibernate") == "1")
    # The guest cannot suspend: xapi reports why instead of feature-suspend.
    guest.xenstore.write("data/cant_suspend_reason", "GPU passthrough")
    guest.xenstore.write("data/updated", "1")
    assert wait_for(lambda: x.VM_guest_metrics.get_other(gm).get("data-cant-suspend-reason")
                    == "GPU passthrough")
    assert "feature-suspend" not in x.VM_guest_metrics.get_other(gm)


def test_no_tools_mode(simulator, x, new_vm, fail):
    vm = new_vm("bare")
    x.VM.add_to_other_config(vm, "xhost_sim_tools", "false")
    x.VM.start(vm, False, False)
    guest = simulator.guests.get(vm)
    assert guest.booted.is_set() and not guest.tools
    time.sleep(0.2)
    assert x.VM.get_guest_metrics(vm) == "OpaqueRef:NULL"
    assert not simulator.xenstore.exists(f"/local/domain/{x.VM.get_domid(vm)}/data/updated")
    assert fail(x.VM.clean_shutdown, vm) == ["VM_MISSING_PV_DRIVERS", vm]
    assert fail(x.VM.clean_reboot, vm) == ["VM_MISSING_PV_DRIVERS", vm]
    x.VM.hard_shutdown(vm)


def test_metrics_appear_after_boot_when_the_host_is_slow(simulator, x, new_vm):
    vm = new_vm("slow-boot")
    simulator.speed = 0.03          # a 12 s boot takes ~0.4 s
    x.VM.start(vm, False, False)
    assert x.VM.get_guest_metrics(vm) == "OpaqueRef:NULL"
    assert wait_for(lambda: x.VM.get_guest_metrics(vm) != "OpaqueRef:NULL")
    assert x.VM_guest_metrics.get_PV_drivers_detected(x.VM.get_guest_metrics(vm)) is True


def test_a_paused_start_boots_on_unpause(simulator, x, new_vm):
    vm = new_vm("paused")
    x.VM.start(vm, True, False)
    time.sleep(0.3)
    assert x.VM.get_guest_metrics(vm) == "OpaqueRef:NULL"
    x.VM.unpause(vm)
    assert wait_for(lambda: x.VM.get_guest_metrics(vm) != "OpaqueRef:NULL")


def test_collect_follows_xapis_mapping():
    keys = {
        "attr/eth0/ip": "192.0.2.1", "attr/eth0/ipv6/0/addr": "2001:db8::1",
        "attr/PVAddons/MajorVersion": "7", "attr/PVAddons/MinorVersion": "2",
        "drivers/0": "XenServer XENBUS 9.1.9.105 ",
        "data/host_name_dns": "srv", "data/domain": "example.org",
        "data/service/sshd/port": "22", "feature/hotplug/vbd": "0",
        "data/ts": "1", "control/feature-shutdown": "1",
    }

    def lookup(key):
        return keys.get(key)

    def listdir(key):
        prefix = key + "/"
        return list(dict.fromkeys(k[len(prefix):].split("/")[0] for k in keys
                                  if k.startswith(prefix)))

    got = collect(lookup, listdir)
    assert got["networks"] == {"0/ip": "192.0.2.1", "0/ipv4/0": "192.0.2.1",
                               "0/ipv6/0": "2001:db8::1"}
    assert got["PV_drivers_version"] == {"major": "7", "minor": "2", "micro": "-1",
                                         "xenbus": "XenServer 9.1.9.105"}
    assert got["netbios_name"] == {"host_name": "srv.example.org"}
    assert got["services"] == {"sshd/port": "22"}
    assert got["other"] == {"feature-shutdown": "1", "data-ts": "1"}
    assert (got["can_use_hotplug_vbd"], got["can_use_hotplug_vif"]) == ("no", "unspecified")
