"""The root disk: from the image cache, grown to the flavor, auto disk config."""
from __future__ import annotations

import json
import subprocess

import pytest

from xhost import hookimpl
from xhost.backends.storage_sr.errors import FlavorDiskSmallerThanImage, SrNeedsVhdFiles
from xhost.objects import ImageHandlerCapabilities

MiB = 1024 ** 2
GiB = 1024 ** 3
IMAGE_SIZE = 64 * MiB  # the test images (tests/storage/conftest.py)
PART = 1024 ** 2  # where their partition 1 starts


def make_root(env, instance, sr=None):
    ctx = env.ctx()
    sr = sr or env.plugins.storage_choose_sr(ctx, instance)
    disks = env.plugins.storage_create_root_disk(ctx, instance, sr, instance.image)
    return ctx, disks


def partition(env, vdi_ref, tmp_path):
    raw = env.export(vdi_ref, tmp_path / "root.raw")
    return raw, json.loads(subprocess.run(["sfdisk", "--json", str(raw)], capture_output=True,
                                          text=True, check=True).stdout)["partitiontable"][
        "partitions"]


def test_grown_to_the_flavor_partition_untouched_without_auto_disk_config(env, tmp_path):
    instance = env.instance("plain", root_gb=1)
    ctx, disks = make_root(env, instance)
    (root,) = disks
    assert (root.kind, root.userdevice, root.bootable) == ("root", "0", True)
    rec = env.vdi(root.vdi_uuid)
    assert int(rec["virtual_size"]) == GiB
    assert rec["other_config"]["nova_instance_uuid"] == instance.uuid
    raw, parts = partition(env, root.vdi_ref, tmp_path)
    assert [(p["start"], p["size"]) for p in parts] == [(2048, IMAGE_SIZE // 512 - 2048)]
    assert instance.faults == []
    assert len(ctx.undo) >= 1  # the clone's removal, should the spawn fail later


def test_root_gb_0_keeps_the_image_size(env):
    instance = env.instance("adc", root_gb=0)
    _, (root,) = make_root(env, instance)
    assert int(env.vdi(root.vdi_uuid)["virtual_size"]) == IMAGE_SIZE
    assert env.leftovers().dom0_devices == []


def test_flavor_smaller_than_the_image_is_refused(env):
    instance = env.instance("big", root_gb=1)
    before = env.leftovers()
    ctx = env.ctx()
    with pytest.raises(FlavorDiskSmallerThanImage) as err:
        env.plugins.storage_create_root_disk(ctx, instance, env.sr("Local storage"), instance.image)
    assert str(err.value) == (
        "flavor 'test' has a 1 GB root disk, smaller than the 1.50 GiB virtual disk "
        "of image 'big'; choose a flavor with a root disk of at least 2 GB, or one with "
        "root_gb 0 to keep the image's size")
    assert ctx.undo.rollback() == []
    assert env.leftovers() == before


def test_known_image_size_is_refused_before_anything_is_made(env):
    instance = env.instance("plain", root_gb=1)
    instance.image.virtual_size = 3 * GiB
    before = env.leftovers()
    try:
        with pytest.raises(FlavorDiskSmallerThanImage, match="at least 3 GB"):
            make_root(env, instance)
    finally:
        instance.image.virtual_size = None
    assert not env.xapi.call("VDI.get_by_name_label", "Glance Image plain")
    assert env.leftovers() == before


def test_auto_disk_config_grows_partition_and_filesystem(env, tmp_path, tools):
    instance = env.instance("adc", root_gb=1)
    assert instance.auto_disk_config
    _, (root,) = make_root(env, instance)
    raw, parts = partition(env, root.vdi_ref, tmp_path)
    new = GiB // 512 - 2048
    assert [(p["start"], p["size"], p["type"]) for p in parts] == [(2048, new, "83")]
    info = tools.dumpe2fs(raw, PART)
    assert int(info["Block count"]) * int(info["Block size"]) == new * 512
    assert tools.blkid(raw, PART)["TYPE"] == "ext4"
    tools.run(["e2fsck", "-f", "-n", f"{raw}?offset={PART}"])
    assert tools.run(["debugfs", "-R", "cat /etc/hostname", f"{raw}?offset={PART}"]) == "image-host\n"
    assert instance.faults == []
    left = env.leftovers()
    assert left.dom0_devices == [] and left.loops == []
    dom0_vbds = [v for v in env.xapi.call("VBD.get_all_records").values()
                 if "xhost_dom0_attach" in v["other_config"]]
    assert dom0_vbds == []


@pytest.mark.parametrize("image, reason", [
    ("twoparts", "the disk has 2 partitions; only a disk with exactly one is grown"),
    ("ext2", "partition 1 holds ext2; only ext3 and ext4 are grown"),
])
def test_auto_disk_config_declines_with_a_warning_fault(env, tmp_path, tools, image, reason):
    instance = env.instance(image, root_gb=1)
    original = tools.sfdisk_table(env.imagecache.raw_images[image])["partitions"]
    _, (root,) = make_root(env, instance)
    assert int(env.vdi(root.vdi_uuid)["virtual_size"]) == GiB
    assert instance.faults == [
        "auto disk config: the root disk was grown to 1 GB but its partition and filesystem "
        f"were left as they were: {reason}"]
    _, parts = partition(env, root.vdi_ref, tmp_path)
    assert [(p["start"], p["size"]) for p in parts] == [(p["start"], p["size"]) for p in original]


def test_auto_disk_config_on_an_lvm_sr(env, tmp_path):
    instance = env.instance("adc", root_gb=1)
    lvm = env.sr("Local LVM storage")
    _, (root,) = make_root(env, instance, sr=lvm)
    assert env.vdi(root.vdi_uuid)["SR"] == lvm
    _, parts = partition(env, root.vdi_ref, tmp_path)
    assert parts[0]["size"] == GiB // 512 - 2048


class VhdFileHandler:
    """An image handler that writes VHD files (as direct_vhd does)."""

    @hookimpl
    def xhost_image_capabilities(self):
        return ImageHandlerCapabilities(disk_formats=frozenset({"vhd"}),
                                        container_formats=frozenset({"ovf"}),
                                        sr_types=frozenset({"ext", "nfs"}),
                                        upload_format=("vhd", "ovf"))


def test_handler_needing_vhd_files_refuses_an_lvm_sr_first(make_env):
    env = make_env(image_handler=VhdFileHandler())
    instance = env.instance("plain", root_gb=1)
    before = env.leftovers()
    with pytest.raises(SrNeedsVhdFiles) as err:
        make_root(env, instance, sr=env.sr("Local LVM storage"))
    assert str(err.value) == (
        "image handler 'direct_vhd' needs VHD files, which SR 'Local LVM storage' "
        "(type lvm) does not have: only file-based SRs (ext, nfs) do. Choose an ext or nfs SR "
        "with [xenserver] sr_matching_filter (e.g. other-config:i18n-key=local-storage), or "
        "set [xenserver] image_handler = vdi_remote_stream, which streams into any SR.")
    assert env.leftovers() == before
    _, (root,) = make_root(env, instance)  # an ext SR is fine
    assert root.kind == "root"


def test_image_cache_without_a_root_disk_is_an_error(env, monkeypatch):
    monkeypatch.setattr(env.imagecache, "image_disks", lambda *a: [])
    from xhost.backends.storage_sr.errors import StorageError

    with pytest.raises(StorageError, match="made no root disk for image plain"):
        make_root(env, env.instance("plain"))


def test_e2fsck_failure_fails_the_spawn_step(env, simulator, tmp_path):
    """A real tool failure (not a layout Nova's rules decline) is an error."""
    fake = simulator.dom0.root / "usr" / "sbin" / "e2fsck"
    fake.parent.mkdir(parents=True, exist_ok=True)
    fake.write_text("#!/bin/sh\necho 'e2fsck: Bad magic number in super-block' >&2\nexit 8\n")
    fake.chmod(0o755)
    instance = env.instance("adc", root_gb=1)
    before = env.leftovers()
    ctx = env.ctx()
    from xhost.backends.storage_sr.errors import DiskScriptFailed

    with pytest.raises(DiskScriptFailed) as err:
        env.plugins.storage_create_root_disk(ctx, instance, env.sr("Local storage"),
                                             instance.image)
    assert "growing the root partition (auto disk config) failed in dom0" in str(err.value)
    assert "exited with status 8: e2fsck: Bad magic number in super-block" in str(err.value)
    assert ctx.undo.rollback() == []
    assert env.leftovers() == before


def test_iso_image_boots_a_cd_onto_a_blank_root_disk(env):
    instance = env.instance("installer", root_gb=1)
    _, disks = make_root(env, instance)
    (iso,) = [d for d in disks if d.kind == "iso"]
    (root,) = [d for d in disks if d.kind == "root"]
    assert (iso.userdevice, iso.vbd_type, iso.read_only, iso.bootable) == ("1", "CD", True, True)
    rec = env.vdi(root.vdi_uuid)
    assert (root.userdevice, int(rec["virtual_size"])) == ("0", GiB)
    assert rec["other_config"] == {"nova_instance_uuid": instance.uuid, "nova_disk_type": "root"}


def test_iso_image_needs_a_root_disk(env):
    from xhost.backends.storage_sr.errors import StorageError

    before = env.leftovers()
    with pytest.raises(StorageError, match="is an ISO image.*has root_gb 0; choose a flavor"):
        make_root(env, env.instance("installer", root_gb=0))
    assert env.leftovers() == before


def test_iso_boot_through_the_compute_api(env):
    from xhost.objects import Flavor

    compute = env.compute()
    server = compute.create_server("inst", "installer", Flavor("f", 1, 256, 1))
    rec = env.xapi.call("VM.get_record", server.vm_ref)
    assert (rec["HVM_boot_policy"], rec["HVM_boot_params"]) == ("BIOS order", {"order": "dc"})
    disks = {d["userdevice"]: (d["kind"], d["type"], d["mode"]) for d in server.disks}
    assert disks == {"0": ("root", "Disk", "RW"), "1": ("iso", "CD", "RO")}
    assert compute.delete_server("inst")
    assert not [r for r in env.xapi.call("VDI.get_all_records").values()
                if r["other_config"].get("nova_instance_uuid") == server.id]
