"""Building small, real disk images: an MBR partition table with one ext4
filesystem, as raw, VHD, or the XenServer image tarball (``0.vhd`` in a
gzipped tar). Used by the demo and by tests; it runs the real ``sfdisk`` and
``mkfs.ext4``."""
from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from xhost import exception
from xhost.dom0 import xhost_vhd

MiB = 1024 * 1024
#: Where partition 1 starts (sector 2048, as sfdisk and Nova's make_partition).
PARTITION_START = MiB


class DiskImageError(exception.XhostError):
    msg_fmt = "cannot build the disk image: {reason}"


def _tool(name: str) -> str:
    for candidate in (shutil.which(name), f"/usr/sbin/{name}", f"/sbin/{name}"):
        if candidate and os.path.exists(candidate):
            return candidate
    raise DiskImageError(reason=f"{name} is not installed (Debian: apt-get install "
                                f"{'fdisk' if name == 'sfdisk' else 'e2fsprogs'})")


def build_raw(path: str | Path, size: int, files: dict[str, bytes] | None = None,
              label: str = "cloudimg-rootfs") -> Path:
    """A sparse raw disk of ``size`` bytes: partition 1 (Linux, from 1 MiB to
    the end) holding an ext4 filesystem with ``files`` (path -> bytes)."""
    path = Path(path)
    if size < 8 * MiB:
        raise DiskImageError(reason=f"size {size} is too small; use at least 8 MiB")
    with open(path, "wb") as f:
        f.truncate(size)
    try:
        subprocess.run([_tool("sfdisk"), "--quiet", "--no-reread", "--no-tell-kernel",
                        str(path)], input=f"start={PARTITION_START // 512}, type=83\n",
                       text=True, check=True, capture_output=True)
        fs_size_kib = (size - PARTITION_START) // 1024
        with tempfile.TemporaryDirectory(prefix="xhost-image-") as root:
            for name, data in (files or {}).items():
                target = Path(root) / name.lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            subprocess.run([_tool("mkfs.ext4"), "-q", "-F", "-L", label, "-d", root,
                            "-E", f"offset={PARTITION_START}", str(path), f"{fs_size_kib}k"],
                           check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as exc:
        path.unlink(missing_ok=True)
        raise DiskImageError(reason=f"{exc.cmd[0]} failed: {exc.stderr.strip()}") from exc
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def build_vhd(path: str | Path, size: int, files: dict[str, bytes] | None = None) -> Path:
    """The same as a dynamic VHD."""
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="xhost-image-") as tmp:
        raw = build_raw(Path(tmp) / "disk.raw", size, files)
        xhost_vhd.raw_to_vhd(str(raw), str(path), overwrite=True)
    return path


def build_vhd_tarball(path: str | Path, size: int, files: dict[str, bytes] | None = None) -> Path:
    """The same as a XenServer image: a gzipped tar holding ``0.vhd``
    (``disk_format=vhd``, ``container_format=ovf``)."""
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="xhost-image-") as tmp:
        vhd = build_vhd(Path(tmp) / "0.vhd", size, files)
        with tarfile.open(path, "w:gz") as tar:
            tar.add(vhd, arcname="0.vhd")
    return path
