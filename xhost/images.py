"""Image-related errors and helpers shared by image services, handlers and the CLI."""
from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

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


class _DigestThread(threading.Thread):
    """Feeds one digest from a bounded queue on its own thread."""

    def __init__(self, digest: Any, backlog: int) -> None:
        super().__init__(name=f"xhost-hash-{digest.name}", daemon=True)
        self.digest = digest
        self.queue: queue.Queue[bytes | None] = queue.Queue(backlog)
        #: What hashing a chunk raised; :meth:`finish` re-raises it.
        self.error: BaseException | None = None

    def run(self) -> None:
        update, get = self.digest.update, self.queue.get
        while (chunk := get()) is not None:
            if self.error is None:
                try:
                    update(chunk)
                except BaseException as exc:  # kept for finish(); the queue is still drained
                    self.error = exc

    def finish(self) -> None:
        """Wait until every chunk given is hashed; end the thread."""
        self.queue.put(None)
        self.join()
        if self.error is not None:
            raise self.error


class Hasher:
    """md5 (Glance's ``checksum``) and the ``os_hash`` of a stream, with its size.

    With ``parallel`` each digest runs on a thread of its own (hashlib
    releases the GIL on large buffers), so the two digests and the rest of a
    transfer use separate cores; call :meth:`close` (done by the digests'
    properties) when the stream is over, also after a failure. The chunks
    must not be modified after :meth:`update`; at most ``backlog`` of them
    wait per digest.
    """

    def __init__(self, algo: str = HASH_ALGO, parallel: bool = False, backlog: int = 4) -> None:
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.algo = algo
        self.multihash = hashlib.new(algo)
        self.size = 0
        self._threads = [_DigestThread(d, backlog) for d in (self.md5, self.multihash)] \
            if parallel else []
        for thread in self._threads:
            thread.start()

    def update(self, chunk: bytes) -> None:
        if self._threads:
            for thread in self._threads:
                thread.queue.put(chunk)
        else:
            self.md5.update(chunk)
            self.multihash.update(chunk)
        self.size += len(chunk)

    def close(self) -> None:
        """Wait for the digest threads to hash what they were given, and end them."""
        threads, self._threads = self._threads, []
        for thread in threads:
            thread.queue.put(None)
        for thread in threads:
            thread.join()
        for thread in threads:
            if thread.error is not None:
                raise thread.error

    @property
    def checksum(self) -> str:
        self.close()
        return self.md5.hexdigest()

    @property
    def os_hash_value(self) -> str:
        self.close()
        return self.multihash.hexdigest()


def verified(chunks: Iterable[bytes], image: ImageMeta) -> Iterator[bytes]:
    """Pass ``chunks`` through, and raise :class:`ImageDataError` at the end if
    their size or strongest hash differs from the image record's.

    As glanceclient does, the ``os_hash_value`` is verified when the record
    has one and the md5 ``checksum`` only otherwise: md5 proves nothing the
    multihash does not, and hashing every byte twice would take a core of
    its own. The hash is computed on a thread of its own while the consumer
    works."""
    if image.os_hash_value and image.os_hash_algo:
        algo, expected, what = image.os_hash_algo, image.os_hash_value, "os_hash_value"
    elif image.checksum:
        algo, expected, what = "md5", image.checksum, "checksum"
    else:
        algo, expected, what = "", "", ""
    thread = None
    if algo:
        try:
            digest = hashlib.new(algo, usedforsecurity=False)
        except ValueError as exc:
            raise ImageDataError(image=image.id, reason=f"its hash algorithm {algo!r} is not "
                                 f"available here ({exc})") from exc
        thread = _DigestThread(digest, backlog=4)
        thread.start()
    size = 0
    try:
        for chunk in chunks:
            if thread is not None:
                thread.queue.put(chunk)
            size += len(chunk)
            yield chunk
    finally:
        if thread is not None:
            thread.finish()
    problems = []
    if image.size is not None and size != image.size:
        problems.append(f"{size} bytes received, the image has {image.size}")
    if thread is not None and thread.digest.hexdigest() != expected:
        problems.append(f"md5 {thread.digest.hexdigest()} != checksum {expected}"
                        if algo == "md5" else f"{algo} does not match {what}")
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
