"""Image-related errors and helpers shared by image services, handlers and the CLI."""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from xhost import exception

if TYPE_CHECKING:
    from xhost.context import Context
    from xhost.objects import ImageMeta

#: Image attributes (as opposed to free-form properties), Glance's v2 names.
ATTRIBUTES = ("id", "name", "status", "disk_format", "container_format", "size", "virtual_size",
              "checksum", "os_hash_algo", "os_hash_value", "created_at", "updated_at")
DISK_FORMATS = ("vhd", "raw", "iso", "aki", "ari", "ami", "qcow2", "vmdk", "vdi", "vhdx", "ploop")
CONTAINER_FORMATS = ("bare", "ovf", "tgz", "aki", "ari", "ami", "ova", "docker", "compressed")
HASH_ALGO = "sha512"


class ImageError(exception.XhostError):
    msg_fmt = "image error: {reason}"


class ImageNotFound(ImageError):
    msg_fmt = "no image {image!r}{hint}"


class AmbiguousImage(ImageError):
    msg_fmt = "{count} images are named {name!r}: {ids}. Use the id instead."


class ImageDataError(ImageError):
    """The data of an image is not what its record says (size, checksums)."""

    msg_fmt = "image {image}: {reason}"


class TransientImageError(ImageDataError):
    """The transfer failed in a way another attempt may not (a stream cut in
    the middle, a stalled connection); callers retry per ``[glance]
    num_retries``."""


class InvalidImage(ImageError):
    """The data of an image cannot be used (bad format, hostile archive...)."""

    msg_fmt = "image {image}: {reason}"


class Hasher:
    """md5 (Glance's ``checksum``) and the ``os_hash`` of a stream, with its size."""

    def __init__(self, algo: str = HASH_ALGO) -> None:
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.algo = algo
        self.multihash = hashlib.new(algo)
        self.size = 0

    def update(self, chunk: bytes) -> None:
        self.md5.update(chunk)
        self.multihash.update(chunk)
        self.size += len(chunk)

    @property
    def checksum(self) -> str:
        return self.md5.hexdigest()

    @property
    def os_hash_value(self) -> str:
        return self.multihash.hexdigest()


def verified(chunks: Iterable[bytes], image: ImageMeta) -> Iterator[bytes]:
    """Pass ``chunks`` through, and raise :class:`ImageDataError` at the end if
    their size or checksums differ from the image record's."""
    hasher = Hasher(image.os_hash_algo or HASH_ALGO)
    for chunk in chunks:
        hasher.update(chunk)
        yield chunk
    problems = []
    if image.size is not None and hasher.size != image.size:
        problems.append(f"{hasher.size} bytes received, the image has {image.size}")
    if image.checksum and hasher.checksum != image.checksum:
        problems.append(f"md5 {hasher.checksum} != checksum {image.checksum}")
    if image.os_hash_value and hasher.os_hash_value != image.os_hash_value:
        problems.append(f"{hasher.algo} does not match os_hash_value")
    if problems:
        raise ImageDataError(image=image.id, reason="corrupt data: " + "; ".join(problems))


def resolve(ctx: Context, ref: str) -> ImageMeta:
    """The image whose id is ``ref``, else the only image named ``ref``."""
    try:
        return ctx.plugins.image_service_show(ctx, ref)
    except ImageNotFound:
        pass
    matches = ctx.plugins.image_service_list(ctx, {"name": ref})
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise AmbiguousImage(count=len(matches), name=ref, ids=", ".join(m.id for m in matches))
    raise ImageNotFound(image=ref, hint=" (no image has this id or name; `xhost image list` "
                                        "shows them)")
