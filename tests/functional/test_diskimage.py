"""Real disk images for the demo and the tests, checked with independent tools."""
from __future__ import annotations

import json
import subprocess
import tarfile

import pytest

from xhost import diskimage

MiB = 1024 * 1024


def test_raw_image_has_one_ext4_partition_with_the_files(tmp_path):
    raw = diskimage.build_raw(tmp_path / "d.raw", 32 * MiB, {"etc/motd": b"hello\n"})
    table = json.loads(subprocess.run(["sfdisk", "--json", str(raw)], capture_output=True,
                                      text=True, check=True).stdout)["partitiontable"]
    (part,) = table["partitions"]
    assert (part["start"], part["type"]) == (2048, "83")
    probe = subprocess.run(["blkid", "-p", "-O", str(diskimage.PARTITION_START), "-o", "export",
                            str(raw)], capture_output=True, text=True, check=True).stdout
    assert "TYPE=ext4" in probe
    motd = subprocess.run(["debugfs", "-R", "cat /etc/motd",
                           f"{raw}?offset={diskimage.PARTITION_START}"],
                          capture_output=True, check=True).stdout
    assert motd == b"hello\n"


def test_vhd_and_tarball_hold_the_same_bytes(tmp_path):
    raw = diskimage.build_raw(tmp_path / "d.raw", 16 * MiB)
    vhd = tmp_path / "d.vhd"
    from xhost.dom0 import xhost_vhd

    xhost_vhd.raw_to_vhd(str(raw), str(vhd))
    subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "vpc", str(raw), str(vhd)],
                   check=True, capture_output=True)
    tgz = diskimage.build_vhd_tarball(tmp_path / "img.tgz", 16 * MiB)
    with tarfile.open(tgz) as tar:
        assert tar.getnames() == ["0.vhd"]


def test_too_small_is_refused(tmp_path):
    with pytest.raises(diskimage.DiskImageError, match="too small"):
        diskimage.build_raw(tmp_path / "x.raw", MiB)
    assert not (tmp_path / "x.raw").exists()
