"""Each handler downloads VHD, raw and raw-in-tgz images into a VDI that reads
as the image's disk."""
from __future__ import annotations

import pytest
from imagehost import HANDLERS, MiB, pattern, sparse_disk, tarball, vhd_chain

from xhost.dom0 import xhost_vhd


@pytest.mark.parametrize("handler", HANDLERS)
def test_chain_tarball_downloads_flattened(hosts, handler, tmp_path):
    host = hosts(handler)
    size = 8 * MiB
    files, expected = vhd_chain(tmp_path / "chain", size,
                                {0: pattern(3 * MiB, 1), 5 * MiB: pattern(MiB, 2)},
                                {MiB + 512: pattern(4096 + 512, 3), 7 * MiB: pattern(512, 4)})
    tgz = tarball(tmp_path / "img.tgz", [("0.vhd", files[0]), ("1.vhd", files[1])])
    image = host.upload("chain", tgz, "vhd", "ovf")
    before = host.vdi_uuids()
    result = host.download(image)
    root = result.root
    assert root.kind == "root" and root.userdevice == "0" and root.bootable
    assert host.raw(root.vdi_ref)[:size] == expected
    assert not host.staging_dirs()
    assert root.vdi_uuid not in before


@pytest.mark.parametrize("handler", HANDLERS)
def test_raw_and_raw_tgz(hosts, handler, tmp_path):
    host = hosts(handler)
    disk = sparse_disk(4 * MiB, {0: pattern(MiB), 3 * MiB: pattern(4096, 7)})
    raw = host.upload("raw", disk, "raw", "bare")
    assert host.raw(host.download(raw).root.vdi_ref)[:len(disk)] == disk
    tgz = host.upload("rawtgz", tarball(tmp_path / "r.tgz", [("disk.raw", disk)]), "raw", "tgz")
    assert host.raw(host.download(tgz).root.vdi_ref)[:len(disk)] == disk


@pytest.mark.parametrize("handler", HANDLERS)
def test_bare_vhd(hosts, handler, tmp_path):
    host = hosts(handler)
    disk = sparse_disk(6 * MiB, {2 * MiB: pattern(MiB, 9)})
    (tmp_path / "d.raw").write_bytes(disk)
    xhost_vhd.raw_to_vhd(str(tmp_path / "d.raw"), str(tmp_path / "d.vhd"))
    image = host.upload("bare", tmp_path / "d.vhd", "vhd", "bare")
    assert host.raw(host.download(image).root.vdi_ref)[:len(disk)] == disk
