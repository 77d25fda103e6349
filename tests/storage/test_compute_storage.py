"""The ``sr`` backend under the compute API: a spawn with every kind of disk,
its warnings, its failures and its deletion."""
from __future__ import annotations

import pytest

from xhost.compute.api import SpawnError
from xhost.objects import Flavor

GiB = 1024 ** 3
MiB = 1024 ** 2
PART = MiB
FULL = Flavor("full", 1, 256, root_gb=1, ephemeral_gb=1, swap_mb=32)


def test_spawn_with_every_disk_then_delete(env, tools, tmp_path):
    compute = env.compute()
    before = env.leftovers()
    server = compute.create_server("web", "adc", FULL, config_drive=True,
                                   user_data=b"#cloud-config\n", key_data="ssh-ed25519 AAAA k")
    assert (server.status, server.power_state) == ("active", "Running")
    assert server.faults == []
    disks = {d["userdevice"]: d for d in server.disks}
    assert {k: (d["kind"], d["mode"], d["bootable"]) for k, d in disks.items()} == {
        "0": ("root", "RW", True), "2": ("swap", "RW", False),
        "3": ("config_drive", "RO", False), "4": ("ephemeral", "RW", False)}
    assert disks["0"]["size"] == GiB and disks["4"]["size"] == GiB

    def exported(userdevice):
        ref = env.xapi.call("VDI.get_by_uuid", disks[userdevice]["vdi"])
        return env.export(ref, tmp_path / f"d{userdevice}.raw")

    root = exported("0")
    assert tools.sfdisk_table(root)["partitions"][0]["size"] == GiB // 512 - 2048
    assert tools.blkid(exported("2"), PART)["TYPE"] == "swap"
    assert tools.blkid(exported("3"), 0)["LABEL"] == "config-2"
    assert tools.blkid(exported("4"), PART)["LABEL"] == "ephemeral"

    assert compute.delete_server("web") is True
    after = env.leftovers()
    assert after.vdis == before.vdis and after.vbds == before.vbds
    assert after.dom0_devices == [] and after.loops == [] and after.tasks == []
    assert env.xapi.call("VDI.get_by_name_label", "Glance Image adc")  # the cache stays


def test_auto_disk_config_warning_is_kept_on_the_server(env):
    compute = env.compute()
    compute.create_server("two", "twoparts", Flavor("f", 1, 256, 1))
    shown = compute.show_server("two")
    assert shown.status == "active"
    assert shown.faults == [
        "auto disk config: the root disk was grown to 1 GB but its partition and filesystem "
        "were left as they were: the disk has 2 partitions; only a disk with exactly one is "
        "grown"]


@pytest.mark.parametrize("plugin_fn, step", [
    ("make_filesystem", "creating ephemeral and swap disks"),
    ("grow_partition", "creating the root disk"),
])
def test_dom0_script_failure_rolls_back(env, simulator, plugin_fn, step):
    compute = env.compute()
    env.xapi.call("VDI.get_all")  # log in before taking the baseline
    before = env.leftovers()
    simulator.controls.add_fault("host.call_plugin",
                                 ["XENAPI_PLUGIN_FAILURE", plugin_fn, "OSError", "injected"],
                                 plugin="xhost_disks", fn=plugin_fn, times=1)
    with pytest.raises(SpawnError) as err:
        compute.create_server("doomed", "adc", FULL, config_drive=True)
    message = str(err.value)
    assert f"{step} failed" in message and "XENAPI_PLUGIN_FAILURE" in message
    assert "Everything the attempt had created was removed." in message
    after = env.leftovers()
    assert after.vdis == before.vdis and after.vbds == before.vbds
    assert after.dom0_devices == [] and after.loops == []
    assert compute.list_servers() == [] and compute.journal.entries() == []
