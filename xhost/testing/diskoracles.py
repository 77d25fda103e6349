"""Independent readers of disk images, for tests that check bytes.

``qemu-img`` (apt ``qemu-utils``, always ``-f vpc``) reads dynamic and
fixed VHDs; libvhdi (PyPI ``libvhdi-python``, ``import pyvhdi``) also reads
differencing chains once their parents are linked with ``set_parent``.
Neither shares code with :mod:`xhost_vhd`, so agreement means the files are
right.  A missing oracle raises :class:`ComponentUnavailable` (tests fail
rather than skip).

libvhdi (20260901) quirks, which callers must respect:

* a differencing layer whose writes do not cover whole 4 KiB pieces can
  read zeros instead of the parent there (a bitmap bit is taken as
  ``byte >> (7 - bit)`` without ``& 1``): write 4 KiB-aligned data into
  layers checked through libvhdi;
* the media size is the footer's *original* size, so a resized disk reads
  at its old size (use qemu-img for resized disks).
"""
from __future__ import annotations

import itertools
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from xhost.testing.errors import ComponentUnavailable


def require_oracles() -> None:
    """Raise ComponentUnavailable unless qemu-img and libvhdi are installed."""
    if shutil.which("qemu-img") is None:
        raise ComponentUnavailable("qemu-img not found: apt-get install qemu-utils")
    try:
        import pyvhdi  # noqa: F401
    except ImportError:
        raise ComponentUnavailable("libvhdi is missing: pip install libvhdi-python") from None


def _run(*argv: str) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)}: {result.stderr or result.stdout}")
    return result.stdout


def qemu_info(path: str | Path) -> dict[str, Any]:
    """``qemu-img info`` of a VHD."""
    return json.loads(_run("qemu-img", "info", "--output=json", "-f", "vpc", str(path)))


def qemu_raw(path: str | Path, scratch: Path) -> bytes:
    """The virtual disk of a dynamic or fixed VHD, as qemu-img reads it."""
    out = scratch / f"{Path(path).name}.qemu.raw"
    _run("qemu-img", "convert", "-f", "vpc", "-O", "raw", str(path), str(out))
    try:
        return out.read_bytes()
    finally:
        out.unlink()


def qemu_identical(raw: str | Path, image: str | Path) -> bool:
    """``qemu-img compare`` of a raw file with a VHD."""
    result = subprocess.run(
        ["qemu-img", "compare", "-f", "raw", "-F", "vpc", str(raw), str(image)],
        capture_output=True, text=True, check=False)
    if result.returncode not in (0, 1):
        raise AssertionError(result.stderr)
    return result.returncode == 0


def qemu_make_vhd(raw: str | Path, target: str | Path, subformat: str = "dynamic") -> None:
    """Convert a raw image to a VHD with qemu-img (a VHD xhost did not write)."""
    _run("qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o",
         f"subformat={subformat},force_size=on", str(raw), str(target))


class LibvhdiChain:
    """Read a VHD chain with libvhdi: ``read(leaf, parent, grandparent...)``.

    Reads go in ``piece``-sized aligned pieces that must not cross a VHD
    block (libvhdi can return another block's bytes for a read crossing a
    block smaller than 2 MiB); the default suits 2 MiB blocks.
    """

    def __init__(self, piece: int = 2 * 1024 * 1024) -> None:
        import pyvhdi

        self._pyvhdi = pyvhdi
        self.piece = piece
        self.handles: list[Any] = []

    def open(self, *paths: str | Path) -> Any:
        handles = []
        for path in paths:
            handle = self._pyvhdi.file()
            handle.open(str(path))
            handles.append(handle)
        for child, parent in itertools.pairwise(handles):
            child.set_parent(parent)
        self.handles.extend(handles)
        return handles[0]

    def read(self, *paths: str | Path) -> bytes:
        """The whole virtual disk of the chain ``paths`` (leaf first)."""
        leaf = self.open(*paths)
        size = leaf.get_media_size()
        return b"".join(leaf.read_buffer_at_offset(min(self.piece, size - offset), offset)
                        for offset in range(0, size, self.piece))

    def close(self) -> None:
        for handle in reversed(self.handles):
            handle.close()
        self.handles.clear()

    def __enter__(self) -> LibvhdiChain:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
