"""Smaller behaviours: network settings, live memory, CBT, host switches."""
from __future__ import annotations


def test_vif_and_pif_addressing(x, new_vm, fail):
    vm = new_vm("addr")
    vif = x.VM.get_VIFs(vm)[0]
    x.VIF.configure_ipv4(vif, "Static", "192.0.2.5/24", "192.0.2.1")
    rec = x.VIF.get_record(vif)
    assert rec["ipv4_configuration_mode"] == "Static"
    assert rec["ipv4_addresses"] == ["192.0.2.5/24"] and rec["ipv4_gateway"] == "192.0.2.1"
    assert fail(x.VIF.configure_ipv4, vif, "Static", "", "")[0] == "INVALID_VALUE"
    x.VIF.configure_ipv6(vif, "Static", "2001:db8::5/64", "2001:db8::1")
    assert x.VIF.get_ipv6_addresses(vif) == ["2001:db8::5/64"]
    eth1 = [p for p in x.PIF.get_all() if x.PIF.get_device(p) == "eth1"][0]
    x.PIF.reconfigure_ip(eth1, "Static", "198.51.100.2", "255.255.255.0", "198.51.100.1", "")
    assert x.PIF.get_IP(eth1) == "198.51.100.2"
    x.PIF.set_property(eth1, "gro", "off")
    assert x.PIF.get_properties(eth1)["gro"] == "off"


def test_live_memory_and_vcpus(x, new_vm, fail):
    vm = new_vm("live")
    assert fail(x.VM.set_memory_target_live, vm, str(1 << 30))[0] == "VM_BAD_POWER_STATE"
    x.VM.set_memory_limits(vm, str(1 << 30), str(4 << 30), str(1 << 30), str(4 << 30))
    x.VM.set_VCPUs_max(vm, "4")
    x.VM.start(vm, False, False)
    x.VM.set_memory_target_live(vm, str(2 << 30))
    assert x.VM.get_memory_target(vm) == str(2 << 30)
    x.VM.set_VCPUs_number_live(vm, "3")
    assert x.VM_metrics.get_VCPUs_number(x.VM.get_metrics(vm)) == "3"
    assert fail(x.VM.set_VCPUs_number_live, vm, "9")[0] == "INVALID_VALUE"
    assert fail(x.VM.query_services, vm) == ["NOT_SYSTEM_DOMAIN", vm]


def test_cbt_and_host_switches(x, fail):
    sr = x.SR.get_by_name_label("Local storage")[0]
    vdi = x.VDI.create({"name_label": "cbt", "name_description": "", "SR": sr,
                        "virtual_size": "1048576", "type": "user", "sharable": False,
                        "read_only": False, "other_config": {}})
    x.VDI.enable_cbt(vdi)
    assert x.VDI.get_cbt_enabled(vdi) is True
    x.VDI.disable_cbt(vdi)
    host = x.host.get_all()[0]
    assert fail(x.host.reboot, host) == ["HOST_NOT_DISABLED"]
    x.host.disable(host)
    assert x.host.get_enabled(host) is False
    compute_vm = [vm for vm, rec in x.VM.get_all_records().items()
                  if rec["other_config"].get("xhost_compute_vm") == "true"][0]
    assert fail(x.host.reboot, host) == ["HOST_IN_USE", host, "VM", compute_vm]
    x.VM.hard_shutdown(compute_vm)
    x.host.reboot(host)
    assert x.host.get_enabled(host) is True
    x.host.set_power_on_mode(host, "wake-on-lan", {})
    assert x.host.get_power_on_mode(host) == "wake-on-lan"
    assert fail(x.host.apply_edition, host, "enterprise", False) == ["INVALID_EDITION",
                                                                     "enterprise"]
    assert x.host.get_sched_gran(host) == "cpu"
