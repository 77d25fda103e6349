"""The image cache behind ``xhost.imagecache.image_disks``."""
from __future__ import annotations

import threading

import pytest
from imagehost import MiB, instance, pattern, sparse_disk

from xhost import imagecache
from xhost.images import InvalidImage
from xhost.xapi.client import XapiClient

DISK = sparse_disk(4 * MiB, {0: pattern(MiB, 5)})


def cached(host, image_id):
    return [r for r in host.x.call("VDI.get_all_records").values()
            if r["name_label"] == f"Glance Image {image_id}"]


def tagged(host, inst):
    return [r for r in host.x.call("VDI.get_all_records").values()
            if r["other_config"].get("nova_instance_uuid") == inst.uuid]


@pytest.mark.parametrize("handler", ["direct_vhd", "vdi_remote_stream"])
def test_cached_once_cloned_per_instance(hosts, handler, simulator):
    host = hosts(handler)
    image = host.upload("img", DISK, "raw", "bare")
    simulator.controls.read_counters(reset=True)
    a, b = instance(name="a"), instance(name="b")
    ctx = host.context()
    (root_a,) = imagecache.image_disks(ctx, a, host.sr(), image)
    (root_b,) = imagecache.image_disks(ctx, b, host.sr(), image)
    counters = simulator.controls.read_counters()
    assert counters.get("VDI.create") == 1  # one download
    assert counters.get("VDI.clone") == 2  # copy-on-write per instance
    (cache,) = cached(host, image.id)
    other = cache["other_config"]
    # complete: the marker is the VDI's own uuid (never a clone's)
    assert other["image-id"] == image.id and other["xhost_image_complete"] == cache["uuid"]
    assert int(other["cached-time"]) > 0 and "nova_instance_uuid" not in other
    for inst, root in ((a, root_a), (b, root_b)):
        (rec,) = tagged(host, inst)
        assert rec["uuid"] == host.x.call("VDI.get_uuid", root.vdi_ref)
        assert rec["other_config"]["nova_disk_type"] == "root"
        assert rec["other_config"]["xhost_cached_from"] == cache["uuid"]
        assert rec["name_label"] == inst.name and "image-id" not in rec["other_config"]
        assert host.raw(root.vdi_ref)[:len(DISK)] == DISK
    # a failed spawn rolls its clone back and keeps the completed cache
    c = instance(name="c")
    ctx = host.context()
    imagecache.image_disks(ctx, c, host.sr(), image)
    ctx.undo.rollback()
    assert not tagged(host, c) and len(cached(host, image.id)) == 1


def test_two_racing_spawns_download_once(hosts, simulator):
    host = hosts("vdi_remote_stream")
    image = host.upload("img", DISK, "raw", "bare")
    simulator.controls.read_counters(reset=True)
    results, errors = [], []

    def spawn(name):
        try:
            client = XapiClient(simulator.url, "root", "xhost-sim-password")
            ctx = host.context()
            ctx.xapi = client
            results.append(imagecache.image_disks(ctx, instance(name=name), host.sr(), image))
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=spawn, args=(f"vm{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(results) == 3
    assert simulator.controls.read_counters().get("VDI.create") == 1
    assert len(cached(host, image.id)) == 1


def test_cache_none_and_some(hosts):
    host = hosts("vdi_remote_stream", extra="[xenserver]\ncache_images = none\n")
    image = host.upload("img", DISK, "raw", "bare")
    inst = instance()
    (root,) = imagecache.image_disks(host.context(), inst, host.sr(), image)
    assert not cached(host, image.id)
    (rec,) = tagged(host, inst)
    assert rec["uuid"] == root.vdi_uuid and "xhost_downloading" not in rec["other_config"]

    some = hosts("vdi_remote_stream", extra="[xenserver]\ncache_images = some\n")
    plain = some.upload("plain", DISK, "raw", "bare")
    wanted = some.upload("wanted", DISK, "raw", "bare", {"cache_in_nova": "true"})
    imagecache.image_disks(some.context(), instance(), some.sr(), plain)
    imagecache.image_disks(some.context(), instance(), some.sr(), wanted)
    assert not cached(some, plain.id) and len(cached(some, wanted.id)) == 1


def test_incomplete_cache_vdi_is_never_used_and_removed(hosts):
    host = hosts("vdi_remote_stream")
    image = host.upload("img", DISK, "raw", "bare")
    stale = host.new_vdi(4 * MiB, data=bytes(4 * MiB))
    host.x.call("VDI.set_name_label", stale, f"Glance Image {image.id}")
    host.x.call("VDI.set_other_config", stale, {"image-id": image.id})  # no marker
    inst = instance()
    (root,) = imagecache.image_disks(host.context(), inst, host.sr(), image)
    assert host.raw(root.vdi_ref)[:len(DISK)] == DISK
    (cache,) = cached(host, image.id)
    assert cache["other_config"]["xhost_image_complete"] == cache["uuid"]
    assert stale not in host.x.call("VDI.get_all")


def test_no_copy_on_write_copies(hosts, simulator):
    host = hosts("vdi_remote_stream", extra="[DEFAULT]\nuse_cow_images = false\n")
    image = host.upload("img", DISK, "raw", "bare")
    simulator.controls.read_counters(reset=True)
    (root,) = imagecache.image_disks(host.context(), instance(), host.sr(), image)
    counters = simulator.controls.read_counters()
    assert counters.get("Async.VDI.copy") == 1 and not counters.get("Async.VDI.clone")
    assert not host.x.call("VDI.get_sm_config", root.vdi_ref).get("vhd-parent")
    assert host.raw(root.vdi_ref)[:len(DISK)] == DISK


def test_failed_download_leaves_nothing(hosts, simulator):
    host = hosts("vdi_remote_stream")
    image = host.upload("img", DISK, "raw", "bare")
    before = host.vdi_uuids()
    simulator.controls.add_fault("VDI.set_other_config", ["INTERNAL_ERROR", "boom"], times=1)
    ctx = host.context()
    with pytest.raises(Exception, match="boom"):
        imagecache.image_disks(ctx, instance(), host.sr(), image)
    ctx.undo.rollback()
    assert host.vdi_uuids() == before
    # and the lock was released: the next attempt works
    imagecache.image_disks(host.context(), instance(), host.sr(), image)
    assert len(cached(host, image.id)) == 1


def test_flavor_smaller_than_image(hosts):
    host = hosts("vdi_remote_stream")
    image = host.upload("img", DISK, "raw", "bare")
    imagecache.image_disks(host.context(), instance(root_gb=1), host.sr(), image)  # fits
    # the cached disk now says 2 GiB: more than a 1 GiB root disk
    (cache,) = cached(host, image.id)
    host.x.call("VDI.resize", host.x.call("VDI.get_by_uuid", cache["uuid"]), str(2 * 1024 ** 3))
    # what this connection knows of the cache is now stale: as a new xhost would, look again
    host.context().xapi.forget("imagecache.known")
    with pytest.raises(imagecache.FlavorDiskSmallerThanImage, match="larger flavor"):
        imagecache.image_disks(host.context(), instance(), host.sr(), image)


def test_lvm_sr(hosts):
    lvm = "Local LVM storage"
    direct = hosts("direct_vhd")
    image = direct.upload("img", DISK, "raw", "bare")
    with pytest.raises(imagecache.ImageCacheError, match="type lvm.*vdi_remote_stream"):
        imagecache.image_disks(direct.context(), instance(), direct.sr(lvm), image)
    assert not cached(direct, image.id)
    stream = hosts("vdi_remote_stream")
    (root,) = imagecache.image_disks(stream.context(), instance(), stream.sr(lvm), image)
    assert stream.raw(root.vdi_ref)[:len(DISK)] == DISK


def test_aki_is_not_a_boot_disk(hosts):
    host = hosts("vdi_remote_stream")
    kernel = host.upload("vmlinuz", b"\x7fELF" + bytes(4092), "aki", "aki")
    with pytest.raises(InvalidImage, match="boot the AMI"):
        imagecache.image_disks(host.context(), instance(), host.sr(), kernel)
