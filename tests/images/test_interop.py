"""The interop matrix: a disk uploaded by any handler boots with any handler.

For a chain (a disk written after a snapshot, so its VHD has a parent) and
for a single disk, each handler uploads the disk as an image, then each
handler downloads that image; the VDI it makes must read exactly as the
source disk."""
from __future__ import annotations

import io
import tarfile

import pytest
from imagehost import HANDLERS, MiB, pattern

from xhost.xapi import datapath

SIZE = 8 * MiB


def tar_members(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return [m.name for m in tar.getmembers()]


def source_disk(host, chained: bool) -> tuple[str, bytes]:
    base = bytearray(SIZE)
    base[0:2 * MiB] = pattern(2 * MiB, 11)
    base[6 * MiB:6 * MiB + 4096] = pattern(4096, 12)
    vdi = host.new_vdi(SIZE, data=bytes(base))
    if not chained:
        return vdi, bytes(base)
    host.x.call("VDI.snapshot", vdi, {})  # the disk becomes a child of a base copy
    top = bytearray(base)
    top[MiB:MiB + 8192] = pattern(8192, 13)
    top[7 * MiB:7 * MiB + 512] = pattern(512, 14)
    datapath.import_raw_vdi(host.x, vdi, [bytes(top)], SIZE)  # only changed blocks land in the leaf
    rec = host.x.call("VDI.get_record", vdi)
    assert rec["sm_config"].get("vhd-parent"), "the source disk should be a chain"
    return vdi, bytes(top)


@pytest.mark.parametrize("chained", [True, False], ids=["chain", "single"])
def test_every_handler_boots_what_any_handler_uploaded(hosts, chained):
    handlers = {name: hosts(name) for name in HANDLERS}
    host = handlers["vdi_remote_stream"]
    vdi, expected = source_disk(host, chained)
    for uploader, up in handlers.items():
        ctx = up.context()
        image = ctx.plugins.image_service_create(ctx, f"from-{uploader}", "vhd", "ovf", {})
        image = ctx.plugins.image_upload(ctx, image, [vdi], None)
        assert image.status == "active", uploader
        assert image.disk_format == "vhd" and image.container_format == "ovf"
        members = tar_members(b"".join(ctx.plugins.image_service_download(ctx, image.id)))
        # direct_vhd ships the chain as it is; the others flatten it
        assert members == (["0.vhd", "1.vhd"] if chained and uploader == "direct_vhd"
                           else ["0.vhd"]), uploader
        for downloader, down in handlers.items():
            root = down.download(image).root
            got = down.raw(root.vdi_ref)
            assert got[:SIZE] == expected, f"{uploader} -> {downloader}"
            assert not got[SIZE:].strip(b"\0")
            down.x.call("VDI.destroy", root.vdi_ref)
    assert not host.staging_dirs()
