"""The disk script under dom0's Python 3.6, through the simulator's real
host.call_plugin."""
from __future__ import annotations

from xhost.testing.pythons import pyenv_python
from xhost.testing.realfixtures import component_guard


def test_disks_made_by_a_python36_dom0(env, simulator, tools, tmp_path):
    with component_guard():
        simulator.dom0.interpreter = pyenv_python()
    ctx = env.ctx()
    instance = env.instance("adc", root_gb=1, ephemeral_gb=1, swap_mb=16)
    sr = env.plugins.storage_choose_sr(ctx, instance)
    (root,) = env.plugins.storage_create_root_disk(ctx, instance, sr, instance.image)
    (eph,) = env.plugins.storage_create_ephemeral_disks(ctx, instance, sr)
    (swap,) = env.plugins.storage_create_swap_disk(ctx, instance, sr)
    raw = env.export(root.vdi_ref, tmp_path / "root.raw")
    assert tools.sfdisk_table(raw)["partitions"][0]["size"] == tools.GiB // 512 - 2048
    assert instance.faults == []
    assert tools.blkid(env.export(eph.vdi_ref, tmp_path / "e.raw"), tools.PART)["TYPE"] == "ext3"
    assert tools.blkid(env.export(swap.vdi_ref, tmp_path / "s.raw"), tools.PART)["TYPE"] == "swap"
