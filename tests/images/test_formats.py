"""ISO and AMI images, image properties carried by uploads, and
independent_compute for vdi_local_dev."""
from __future__ import annotations

from pathlib import Path

import pytest
from imagehost import HANDLERS, MiB, instance, pattern, sparse_disk

from xhost import imagecache
from xhost.images import ImageError


def local_iso_sr(host) -> str:
    x = host.x
    sr = x.call("SR.create", host.connection.host_ref,
                {"location": "/var/opt/xen/iso_import", "legacy_mode": "true"}, "0", "Local ISO",
                "", "iso", "iso", False, {})
    x.call("SR.add_to_other_config", sr, "i18n-key", "local-storage-iso")
    return sr


@pytest.mark.parametrize("handler", HANDLERS)
def test_iso_goes_into_the_iso_sr_as_a_cd(hosts, handler):
    host = hosts(handler)
    data = pattern(MiB + 2048, 4)
    image = host.upload("installer", data, "iso", "bare")
    with pytest.raises(ImageError, match="no local ISO SR.*xe sr-create"):
        imagecache.image_disks(host.context(), instance(), host.sr(), image)
    iso_sr = local_iso_sr(host)
    inst = instance(root_gb=1)
    root, iso = imagecache.image_disks(host.context(), inst, host.sr(), image)
    assert (iso.kind, iso.vbd_type, iso.userdevice, iso.read_only, iso.bootable) == \
        ("iso", "CD", "1", True, True)
    assert host.x.call("VDI.get_SR", iso.vdi_ref) == iso_sr
    assert host.raw(iso.vdi_ref)[:len(data)] == data
    assert (root.kind, root.userdevice, root.bootable) == ("root", "0", False)
    assert int(host.x.call("VDI.get_virtual_size", root.vdi_ref)) == 1024 ** 3
    for disk in (root, iso):
        other = host.x.call("VDI.get_other_config", disk.vdi_ref)
        assert other["nova_instance_uuid"] == inst.uuid
    assert not [r for r in host.x.call("VDI.get_all_records").values()
                if r["name_label"].startswith("Glance Image")]  # ISOs are not cached


@pytest.mark.parametrize("handler", HANDLERS)
def test_ami_with_kernel_and_ramdisk(hosts, handler, simulator):
    host = hosts(handler)
    kernel_bytes, ramdisk_bytes = pattern(300 * 1024, 1), pattern(100 * 1024, 2)
    kernel = host.upload("vmlinuz", kernel_bytes, "aki", "aki")
    ramdisk = host.upload("initrd", ramdisk_bytes, "ari", "ari")
    fs = sparse_disk(2 * MiB, {0: pattern(4096, 3)})
    ami = host.upload("ami", fs, "ami", "ami", {"kernel_id": kernel.id,
                                               "ramdisk_id": ramdisk.id})
    inst = instance()
    ctx = host.context()
    root, k, r = imagecache.image_disks(ctx, inst, host.sr(), ami)
    disk = host.raw(root.vdi_ref)
    assert disk[510:512] == b"\x55\xaa" and disk[446 + 4] == 0x83  # one Linux partition
    assert disk[63 * 512:63 * 512 + len(fs)] == fs
    dom0 = Path(simulator.state_dir) / "dom0"
    assert (k.kind, k.dom0_path) == ("kernel", f"/boot/guest/xhost-{inst.uuid}-kernel")
    assert (dom0 / k.dom0_path.lstrip("/")).read_bytes() == kernel_bytes
    assert (dom0 / r.dom0_path.lstrip("/")).read_bytes() == ramdisk_bytes
    removed = imagecache.remove_instance_files(ctx, inst)
    assert sorted(removed) == sorted([k.dom0_path, r.dom0_path])
    assert not list((dom0 / "boot" / "guest").iterdir())
    # a failed spawn removes them too
    ctx = host.context()
    imagecache.image_disks(ctx, instance(), host.sr(), ami)
    ctx.undo.rollback()
    assert not list((dom0 / "boot" / "guest").iterdir())


def test_kernel_size_limit(hosts):
    host = hosts("vdi_remote_stream", extra="[xenserver]\nmax_kernel_ramdisk_size = 1000\n")
    kernel = host.upload("vmlinuz", pattern(4096), "aki", "aki")
    before = host.vdi_uuids()
    with pytest.raises(ImageError, match="max_kernel_ramdisk_size"):
        host.download(kernel, instance=instance())
    assert host.vdi_uuids() == before


@pytest.mark.parametrize("handler", HANDLERS)
def test_upload_carries_image_properties(hosts, handler):
    host = hosts(handler)
    source = host.upload("src", sparse_disk(2 * MiB, {0: pattern(4096)}), "raw", "bare",
                         {"os_type": "windows", "hw_vm_mode": "hvm", "xenapi_use_agent": "true",
                          "auto_disk_config": "disabled"})
    root = host.download(source).root
    ctx = host.context()
    target = ctx.plugins.image_service_create(ctx, "snap", "vhd", "ovf", {})
    inst = instance(image=source, os_type="windows")
    image = ctx.plugins.image_upload(ctx, target, [root.vdi_ref], inst)
    props = image.properties
    assert props["os_type"] == "windows" and props["hw_vm_mode"] == "hvm"
    assert props["xenapi_use_agent"] == "true" and props["auto_disk_config"] == "disabled"
    # defaults when the instance says nothing
    plain = ctx.plugins.image_upload(
        ctx, ctx.plugins.image_service_create(ctx, "snap2", "vhd", "ovf", {}), [root.vdi_ref],
        instance())
    assert plain.properties["os_type"] == "linux"
    assert plain.properties["auto_disk_config"] == "False"


def test_independent_compute_refuses_local_attach(hosts):
    host = hosts("vdi_local_dev", extra="[xenserver]\nindependent_compute = true\n")
    image = host.upload("img", sparse_disk(2 * MiB, {}), "raw", "bare")
    vbds = set(host.x.call("VBD.get_all"))
    with pytest.raises(ImageError, match="independent_compute.*vdi_remote_stream"):
        host.download(image)
    ctx = host.context()
    target = ctx.plugins.image_service_create(ctx, "snap", "vhd", "ovf", {})
    with pytest.raises(ImageError, match="independent_compute"):
        ctx.plugins.image_upload(ctx, target, [host.new_vdi(2 * MiB)], None)
    assert set(host.x.call("VBD.get_all")) == vbds  # nothing was attached


def test_local_dev_finds_the_compute_vm_by_its_tag(hosts, tmp_path):
    host = hosts("vdi_local_dev",
                 extra=f"[image_vdi_local_dev]\nvm_uuid_file = {tmp_path}/absent\n")
    disk = sparse_disk(2 * MiB, {MiB: pattern(4096)})
    image = host.upload("img", disk, "raw", "bare")
    assert host.raw(host.download(image).root.vdi_ref)[:len(disk)] == disk
    # no transfer VBD is left on the compute VM
    assert not [v for v in host.x.call("VBD.get_all_records").values()
                if v["other_config"].get("xhost_image_transfer")]
