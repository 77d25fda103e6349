"""The config drive: an ISO 9660 image labelled ``config-2`` (Rock Ridge and
Joliet names, as ``genisoimage -J -r -V config-2`` made them for Nova), built
with pycdlib into a temporary file and streamed into a new VDI through
``/import_raw_vdi``, so memory holds the file list, never the image."""
from __future__ import annotations

import io
import re
import tempfile
from typing import BinaryIO

from xhost.context import Context
from xhost.objects import Disk, Instance
from xhost.xapi import datapath

from .errors import StorageError
from .vdis import MiB, create_vdi

VOLUME_LABEL = "config-2"
USERDEVICE = "3"
#: Longest name component Joliet records hold.
_MAX_COMPONENT = 64
_ISO_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def _components(path: str) -> list[str]:
    parts = path.strip("/").split("/")
    if not parts or any(p in ("", ".", "..") for p in parts):
        raise StorageError(reason=f"config drive path {path!r} is not a relative file path")
    for part in parts:
        if len(part) > _MAX_COMPONENT:
            raise StorageError(reason=f"config drive path {path!r}: {part!r} is longer than "
                                      f"{_MAX_COMPONENT} characters (Joliet's limit)")
    return parts


class _Names:
    """ISO 9660 names (level 4: up to 207 characters) for the real names,
    kept unique in each directory; Rock Ridge and Joliet carry the real ones."""

    def __init__(self) -> None:
        self.taken: dict[str, set[str]] = {}
        self.assigned: dict[str, str] = {}

    def iso_path(self, parts: list[str]) -> str:
        parent = "/"
        for part in parts:
            real = parent.rstrip("/") + "/" + part
            if real not in self.assigned:
                used = self.taken.setdefault(self.assigned.get(parent, parent), set())
                name = _ISO_UNSAFE.sub("_", part)[:200] or "_"
                base, n = name, 1
                while name.lower() in used:
                    n += 1
                    name = f"{base}~{n}"
                used.add(name.lower())
                self.assigned[real] = self.assigned.get(parent, parent).rstrip("/") + "/" + name
            parent = real
        return self.assigned[parent]


def write_iso(files: dict[str, bytes], out: BinaryIO) -> None:
    """Write a ``config-2`` ISO holding ``files`` (path -> bytes) to ``out``."""
    import pycdlib

    by_path: dict[str, tuple[list[str], str]] = {}
    for path in files:
        parts = _components(path)
        key = "/" + "/".join(parts)
        if key in by_path:
            raise StorageError(reason=f"config drive path {path!r} is given twice")
        by_path[key] = (parts, path)
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=4, joliet=3, rock_ridge="1.09", vol_ident=VOLUME_LABEL,
            sys_ident="LINUX", pub_ident_str="xhost", app_ident_str="xhost config drive")
    names = _Names()
    made: set[str] = set()
    try:
        for key, (parts, path) in sorted(by_path.items()):
            for depth in range(1, len(parts)):
                joliet = "/" + "/".join(parts[:depth])
                if joliet in made:
                    continue
                if joliet in by_path:
                    raise StorageError(reason=f"config drive path {joliet.lstrip('/')!r} is "
                                              f"both a file and a directory")
                iso.add_directory(names.iso_path(parts[:depth]), rr_name=parts[depth - 1],
                                  joliet_path=joliet)
                made.add(joliet)
            data = files[path]
            iso.add_fp(io.BytesIO(data), len(data), names.iso_path(parts), rr_name=parts[-1],
                       joliet_path=key)
        iso.write_fp(out)
    finally:
        iso.close()


def create_config_drive(ctx: Context, instance: Instance, sr_ref: str, files: dict[str, bytes],
                        min_size_mb: int) -> Disk:
    """Build the ISO, then a VDI of at least ``min_size_mb`` MiB holding it."""
    with tempfile.TemporaryFile(prefix="xhost-config-drive-") as image:
        write_iso(files, image)  # bad file names fail here, before any VDI exists
        size = image.tell()
        image.seek(0)
        vdi_size = max(min_size_mb * MiB, -(-size // MiB) * MiB)
        vdi, uuid = create_vdi(ctx, sr_ref, instance, VOLUME_LABEL, "config_drive", vdi_size,
                               description=f"config drive of {instance.name}")
        datapath.import_raw_vdi(ctx.xapi, vdi, image, size, "raw")
    return Disk(vdi_ref=vdi, vdi_uuid=uuid, kind="config_drive", userdevice=USERDEVICE,
                read_only=True)
