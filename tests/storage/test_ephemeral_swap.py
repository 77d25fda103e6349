"""Ephemeral and swap disks, partitioned and formatted by the real tools in dom0."""
from __future__ import annotations

import shutil

import pytest

from xhost.backends.storage_sr import ephemeral
from xhost.backends.storage_sr.errors import DiskScriptFailed, UnsupportedFilesystem

GiB = 1024 ** 3
MiB = 1024 ** 2
PART = MiB


@pytest.mark.parametrize("total, sizes", [
    (0, []), (1, [1]), (2000, [2000]), (2001, [2000, 1]), (2048, [1024, 1024]),
    (3000, [2000, 1000]), (4096, [1024] * 4), (4100, [2000, 2000, 100]),
])
def test_split_into_vdis_of_at_most_2000_gb(total, sizes):
    assert list(ephemeral.ephemeral_sizes(total)) == sizes


def formatted(env, tools, tmp_path, disk, name):
    raw = env.export(disk.vdi_ref, tmp_path / f"{name}.raw")
    table = tools.sfdisk_table(raw)
    return raw, table, tools.blkid(raw, PART)


def test_one_ext3_ephemeral_disk_by_default(env, tools, tmp_path):
    instance = env.instance(ephemeral_gb=1)
    ctx = env.ctx()
    (disk,) = env.plugins.storage_create_ephemeral_disks(ctx, instance, env.sr("Local storage"))
    assert (disk.kind, disk.userdevice, disk.bootable, disk.read_only) == ("ephemeral", "4",
                                                                          False, False)
    rec = env.vdi(disk.vdi_uuid)
    assert (rec["name_label"], int(rec["virtual_size"])) == ("vm1 ephemeral", GiB)
    assert rec["other_config"] == {"nova_instance_uuid": instance.uuid,
                                   "nova_disk_type": "ephemeral"}
    raw, table, probe = formatted(env, tools, tmp_path, disk, "eph")
    assert table["label"] == "dos"
    assert [(p["start"], p["size"], p["type"]) for p in table["partitions"]] == [
        (2048, GiB // 512 - 2048, "83")]
    assert (probe["TYPE"], probe["LABEL"]) == ("ext3", "ephemeral")
    info = tools.dumpe2fs(raw, PART)
    assert int(info["Block count"]) * int(info["Block size"]) == GiB - PART
    tools.run(["e2fsck", "-f", "-n", f"{raw}?offset={PART}"])
    left = env.leftovers()
    assert left.dom0_devices == [] and left.loops == []


@pytest.mark.parametrize("fs, label", [("ext4", "ephemeral"), ("vfat", "EPHEMERAL")])
def test_default_ephemeral_format(make_env, tools, tmp_path, fs, label):
    env = make_env(f"[DEFAULT]\ndefault_ephemeral_format = {fs}\n")
    (disk,) = env.plugins.storage_create_ephemeral_disks(env.ctx(), env.instance(ephemeral_gb=1),
                                                         env.sr("Local storage"))
    _, _, probe = formatted(env, tools, tmp_path, disk, "eph")
    assert (probe["TYPE"], probe["LABEL"]) == (fs, label)


def test_split_disks_are_numbered_and_labelled(env, tools, tmp_path, monkeypatch):
    # Nova's 2000 GB / 1024 GB chunks, scaled down to 1 GB so the disks stay small.
    monkeypatch.setattr(ephemeral, "MAX_EPHEMERAL_VDI_GB", 1)
    monkeypatch.setattr(ephemeral, "ALIGNED_EPHEMERAL_VDI_GB", 1)
    instance = env.instance(ephemeral_gb=3)
    disks = env.plugins.storage_create_ephemeral_disks(env.ctx(), instance,
                                                       env.sr("Local LVM storage"))
    assert [d.userdevice for d in disks] == ["4", "5", "6"]
    assert [env.vdi(d.vdi_uuid)["name_label"] for d in disks] == [
        "vm1 ephemeral", "vm1 ephemeral (1)", "vm1 ephemeral (2)"]
    labels = [formatted(env, tools, tmp_path, d, f"e{i}")[2]["LABEL"] for i, d in enumerate(disks)]
    assert labels == ["ephemeral", "ephemeral1", "ephemeral2"]


def test_unsupported_format_is_refused_before_anything_is_made(make_env):
    env = make_env("[DEFAULT]\ndefault_ephemeral_format = zfs\n")
    before = env.leftovers()
    with pytest.raises(UnsupportedFilesystem) as err:
        env.plugins.storage_create_ephemeral_disks(env.ctx(), env.instance(ephemeral_gb=1),
                                                   env.sr("Local storage"))
    assert str(err.value) == ("[DEFAULT] default_ephemeral_format = 'zfs' is not supported; use "
                              "one of ext2, ext3, ext4, xfs, btrfs, vfat (unset: ext3)")
    assert env.leftovers() == before


@pytest.mark.skipif(bool(shutil.which("mkfs.xfs")), reason="needs a host without mkfs.xfs")
def test_missing_mkfs_in_dom0_is_named_and_rolled_back(make_env):
    env = make_env("[DEFAULT]\ndefault_ephemeral_format = xfs\n")
    before = env.leftovers()
    ctx = env.ctx()
    with pytest.raises(DiskScriptFailed) as err:
        env.plugins.storage_create_ephemeral_disks(ctx, env.instance(ephemeral_gb=1),
                                                   env.sr("Local storage"))
    assert str(err.value) == ("formatting the ephemeral disk 'vm1 ephemeral' failed in dom0: "
                              "mkfs.xfs is not installed in dom0; install it there")
    assert ctx.undo.rollback() == []
    assert env.leftovers() == before


def test_failing_mkfs_leaves_nothing_behind(env, simulator):
    fake = simulator.dom0.root / "usr" / "sbin" / "mke2fs"
    fake.parent.mkdir(parents=True, exist_ok=True)
    fake.write_text("#!/bin/sh\necho 'mke2fs: No space left on device' >&2\nexit 1\n")
    fake.chmod(0o755)
    before = env.leftovers()
    ctx = env.ctx()
    with pytest.raises(DiskScriptFailed, match="exited with status 1: mke2fs: No space left"):
        env.plugins.storage_create_ephemeral_disks(ctx, env.instance(ephemeral_gb=1),
                                                   env.sr("Local storage"))
    assert ctx.undo.rollback() == []
    assert env.leftovers() == before


def test_swap_disk(env, tools, tmp_path):
    instance = env.instance(swap_mb=64)
    (disk,) = env.plugins.storage_create_swap_disk(env.ctx(), instance, env.sr("Local storage"))
    assert (disk.kind, disk.userdevice) == ("swap", "2")
    rec = env.vdi(disk.vdi_uuid)
    assert (rec["name_label"], int(rec["virtual_size"])) == ("vm1 swap", 64 * MiB)
    assert rec["other_config"]["nova_disk_type"] == "swap"
    raw, table, probe = formatted(env, tools, tmp_path, disk, "swap")
    assert [(p["start"], p["type"]) for p in table["partitions"]] == [(2048, "82")]
    assert probe["TYPE"] == "swap"
    assert env.leftovers().loops == []


def test_windows_swap_is_vfat(env, tools, tmp_path):
    instance = env.instance(swap_mb=64)
    instance.os_type = "windows"
    (disk,) = env.plugins.storage_create_swap_disk(env.ctx(), instance, env.sr("Local storage"))
    _, table, probe = formatted(env, tools, tmp_path, disk, "swap")
    assert (table["partitions"][0]["type"], probe["TYPE"]) == ("c", "vfat")


def test_no_swap_no_ephemeral_makes_nothing(env, simulator):
    ctx = env.ctx()
    instance = env.instance()
    simulator.controls.read_counters(reset=True)
    assert env.plugins.storage_create_ephemeral_disks(ctx, instance, "OpaqueRef:x") == []
    assert env.plugins.storage_create_swap_disk(ctx, instance, "OpaqueRef:x") == []
    assert simulator.controls.read_counters() == {}
