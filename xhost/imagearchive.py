"""Reading and writing image archives as streams, safely.

An image's data arrives as an iterator of byte chunks (from the image
service). :class:`ArchiveReader` gunzips it when it is gzip, walks the tar
members one after the other without ever holding a member in memory or
writing it anywhere, and refuses what a hostile or broken archive may hold:
anything but regular files (and the ``./`` directory entry ``tar -C dir .``
writes), absolute or escaping names, names outside the expected set,
duplicates, too many members, members larger than their content can be,
more decompressed data than the image may hold (a gzip bomb), and data
hidden after the end of the archive. When the archive is done the rest of
the input is drained, so the image service's own size and checksum checks
run before the caller commits anything.

:func:`tarball` does the reverse: it turns members of known size into a
gzipped tar stream (PAX format, so members over 8 GiB are fine).
"""
from __future__ import annotations

import re
import tarfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from xhost.images import InvalidImage

CHUNK = 1024 * 1024
#: Compressed bytes handed to zlib at a time (see _Expanded).
INPUT_SIZE = 256 * 1024
#: Members of a VHD image tarball, leaf first.
NUMBERED = re.compile(r"^(0|[1-9][0-9]{0,2})\.vhd$")
#: Nova's pre-Grizzly names, leaf first.
LEGACY = ("snap.vhd", "image.vhd", "base.vhd")
#: Decompressed bytes tolerated after the end of the archive (tar padding).
TRAILING_LIMIT = 1024 * 1024
BLOCK = 512


class ChunkReader:
    """A read-only file object over an iterator of byte chunks.

    A read that a chunk covers exactly returns that chunk; others join the
    pieces once (no buffer that grows and shrinks by copying)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._current: bytes = b""
        self._offset = 0
        self.eof = False
        #: Bytes handed out so far.
        self.position = 0

    def _next(self) -> bool:
        for chunk in self._chunks:
            if chunk:
                self._current, self._offset = chunk, 0
                return True
        self._current, self._offset = b"", 0
        self.eof = True
        return False

    def read(self, count: int = -1) -> bytes:
        if count is None or count < 0:
            parts = [memoryview(self._current)[self._offset:]]
            parts.extend(self._chunks)
            self._current, self._offset = b"", 0
            self.eof = True
            data = b"".join(parts)
            self.position += len(data)
            return data
        parts: list[bytes | memoryview] = []
        want = count
        while want:
            if self._offset >= len(self._current) and (self.eof or not self._next()):
                break
            current, offset = self._current, self._offset
            take = min(len(current) - offset, want)
            if take == len(current):
                parts.append(current)
            else:
                parts.append(memoryview(current)[offset:offset + take])
            self._offset += take
            want -= take
        if len(parts) == 1 and type(parts[0]) is bytes:
            data = parts[0]
        else:
            data = b"".join(parts)
        self.position += len(data)
        return data

    def drain(self) -> int:
        """Read to the end; return the number of bytes skipped."""
        skipped = len(self._current) - self._offset
        self._current, self._offset = b"", 0
        for chunk in self._chunks:
            skipped += len(chunk)
        self.eof = True
        self.position += skipped
        return skipped


class _Expanded:
    """The decompressed (or plain) stream, refusing to exceed ``limit``.

    Compressed input goes to zlib in modest pieces and output comes in
    large ones, so zlib seldom leaves an unconsumed tail to copy; a read
    that wants all the output at hand gets zlib's buffer itself."""

    def __init__(self, source: ChunkReader, limit: int, image: str) -> None:
        self.source = source
        self.limit = limit
        self.image = image
        self.produced = 0
        head = source.read(2)
        self.compressed = head == b"\x1f\x8b"
        self._pending = head
        self._out = b""
        self._at = 0
        self._z: zlib._Decompress | None = None
        self._finished = False

    def _input(self) -> bytes:
        data, self._pending = self._pending, b""
        while len(data) < 2:
            more = self.source.read(INPUT_SIZE if self.compressed else CHUNK)
            if not more:
                break
            data = data + more if data else more
        return data

    def _fill(self) -> None:
        self._out, self._at = b"", 0
        while not self._out and not self._finished:
            data = self._input()
            if not self.compressed:
                self._out = data
                if not data:
                    self._finished = True
                break
            if not data:
                if self._z is not None:
                    raise InvalidImage(image=self.image, reason="the gzip stream ends in the "
                                       "middle of the data (truncated download?)")
                self._finished = True
                return
            if self._z is None:
                if data[:2] != b"\x1f\x8b":
                    if data.strip(b"\x00"):
                        raise InvalidImage(image=self.image, reason=f"{len(data)} bytes of "
                                           f"non-gzip data follow the compressed data")
                    continue
                self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
            try:
                out = self._z.decompress(data, CHUNK)
            except zlib.error as exc:
                raise InvalidImage(image=self.image, reason=f"corrupt gzip data: {exc}") from exc
            if self._z.eof:
                self._pending = self._z.unused_data
                self._z = None
            else:
                self._pending = self._z.unconsumed_tail
            self._out = out
        self.produced += len(self._out)
        if self.produced > self.limit:
            raise InvalidImage(image=self.image, reason=f"the data expands to more than "
                               f"{self.limit} bytes, more than its disks can hold "
                               f"(a gzip bomb?)")

    def read(self, count: int = -1) -> bytes:
        """Up to ``count`` bytes (short reads happen; ``b""`` is the end)."""
        if self._at >= len(self._out):
            self._fill()
        out, at = self._out, self._at
        if count is None or count < 0 or count >= len(out) - at:
            data = out[at:] if at else out
        else:
            data = out[at:at + count]
        self._at += len(data)
        return data


class _Forward:
    """A forward-only seekable view of the expanded stream: tarfile reads
    the headers in place ("r:" mode) and member data is taken from the
    stream directly (:class:`_MemberData`), not copied through tarfile's
    stream buffer."""

    def __init__(self, source: _Expanded, image: str) -> None:
        self.source = source
        self.image = image
        self.pos = 0

    def tell(self) -> int:
        return self.pos

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence != 0 or pos < self.pos:
            raise InvalidImage(image=self.image, reason=f"the tar archive refers back to "
                               f"offset {pos} (now at {self.pos})")
        while self.pos < pos and self.read_some(min(CHUNK, pos - self.pos)):
            pass
        return self.pos

    def read_some(self, count: int) -> bytes:
        data = self.source.read(count)
        self.pos += len(data)
        return data

    def read(self, count: int = -1) -> bytes:
        if count is None or count < 0:
            count = CHUNK
        data = self.read_some(count)
        if data and len(data) < count:
            parts = [data]
            got = len(data)
            while got < count:
                more = self.read_some(count - got)
                if not more:
                    break
                parts.append(more)
                got += len(more)
            data = b"".join(parts)
        return data


class _MemberData:
    """A regular member's data straight from the archive stream; reads may
    be short, the stream ending first is a corrupt archive."""

    def __init__(self, archive: _Forward, info: tarfile.TarInfo, reader: ArchiveReader) -> None:
        archive.seek(info.offset_data)
        self.archive = archive
        self.left = info.size
        self.reader = reader

    def read(self, count: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        if count is None or count < 0:
            count = self.left
        data = self.archive.read_some(min(count, self.left))
        if not data:
            raise self.reader._invalid("the tar archive is corrupt: unexpected end of data")
        self.left -= len(data)
        return data


@dataclass
class Member:
    """One accepted member: its position in the chain (0 = leaf), its name,
    its size, and a file object reading its data (valid until the next
    member is requested)."""

    index: int
    name: str
    size: int
    data: BinaryIO


def _kind(member: tarfile.TarInfo) -> str:
    for attr, text in (("issym", "a symbolic link"), ("islnk", "a hard link"),
                       ("ischr", "a character device"), ("isblk", "a block device"),
                       ("isfifo", "a FIFO"), ("isdir", "a directory")):
        if getattr(member, attr)():
            return text
    return f"an entry of type {member.type!r}"


def vhd_member_index(name: str, legacy_seen: list[str]) -> int:
    """Chain position of a VHD tarball member name; refuses other names."""
    if name in LEGACY:
        legacy_seen.append(name)
        return len(legacy_seen) - 1
    match = NUMBERED.match(name)
    if not match:
        raise ValueError(name)
    return int(match.group(1))


class ArchiveReader:
    """The members of a (gzipped) tar image, validated as they come.

    ``expect`` is ``"vhd"`` (members ``0.vhd`` ... ``N.vhd`` in that order,
    or the legacy names) or ``"single"`` (exactly one regular file, e.g. the
    raw disk of a raw-in-tgz image). ``max_members`` bounds the count,
    ``member_limit(size)`` may refuse a member by its declared size, and
    ``max_expanded`` bounds the decompressed bytes.
    """

    def __init__(self, chunks: Iterable[bytes], image: str, expect: str = "vhd",
                 max_members: int = 30, max_expanded: int = 1 << 62,
                 member_limit: Callable[[str, int], None] | None = None) -> None:
        self.image = image
        self.expect = expect
        self.max_members = max_members
        self.member_limit = member_limit
        self.source = ChunkReader(chunks)
        self.stream = _Expanded(self.source, max_expanded, image)
        self.names: list[str] = []

    def _invalid(self, reason: str) -> InvalidImage:
        return InvalidImage(image=self.image, reason=reason)

    def members(self) -> Iterator[Member]:
        archive = _Forward(self.stream, self.image)
        try:
            tar = tarfile.open(fileobj=archive, mode="r:")
        except tarfile.TarError as exc:
            raise self._invalid(f"not a tar archive: {exc}") from exc
        legacy: list[str] = []
        try:
            while True:
                try:
                    info = tar.next()
                except tarfile.TarError as exc:
                    raise self._invalid(f"the tar archive is corrupt: {exc}") from exc
                if info is None:
                    break
                if info.isdir() and info.name in (".", "./"):
                    continue
                name = info.name[2:] if info.name.startswith("./") else info.name
                if name.startswith("/") or ".." in name.split("/"):
                    raise self._invalid(f"member {info.name!r} has an absolute or escaping "
                                        f"path")
                if not info.isreg():
                    raise self._invalid(f"member {info.name!r} is {_kind(info)}; only regular "
                                        f"files are accepted")
                if name in self.names:
                    raise self._invalid(f"member {name!r} appears twice")
                if len(self.names) >= self.max_members:
                    raise self._invalid(f"the archive holds more than {self.max_members} "
                                        f"disks")
                index = self._index(name, legacy)
                if self.member_limit is not None:
                    self.member_limit(name, info.size)
                self.names.append(name)
                if info.sparse is None:
                    data: BinaryIO = _MemberData(archive, info, self)  # type: ignore[assignment]
                else:  # a GNU sparse member: tarfile puts its holes back
                    data = _Checked(tar.extractfile(info), self)  # type: ignore[arg-type]
                yield Member(index=index, name=name, size=info.size, data=data)
        finally:
            try:
                tar.close()
            except (tarfile.TarError, OSError):
                pass
        if not self.names:
            raise self._invalid("the archive holds no disk")
        if legacy and len(legacy) != len(self.names):
            raise self._invalid("the archive mixes legacy names (snap.vhd, image.vhd, "
                                "base.vhd) with numbered ones")

    def _index(self, name: str, legacy: list[str]) -> int:
        if self.expect == "single":
            if self.names:
                raise self._invalid("a raw-in-tgz image holds one disk file; this one holds "
                                    "more")
            if "/" in name:
                raise self._invalid(f"member {name!r} is in a directory; the disk must be "
                                    f"at the top of the archive")
            return 0
        try:
            index = vhd_member_index(name, legacy)
        except ValueError:
            raise self._invalid(f"member {name!r} is not an image disk: only 0.vhd ... N.vhd "
                                f"(or the legacy snap.vhd, image.vhd, base.vhd) are "
                                f"accepted") from None
        if index != len(self.names):
            raise self._invalid(f"member {name!r} comes where "
                                f"{len(self.names)}.vhd was expected: streaming needs the "
                                f"chain leaf first (0.vhd, 1.vhd, ...); the direct_vhd handler "
                                f"accepts any order")
        return index

    def finish(self) -> None:
        """Check what follows the archive and read the input to its end."""
        trailing = 0
        while True:
            data = self.stream.read(CHUNK)
            if not data:
                break
            trailing += len(data)
            if trailing > TRAILING_LIMIT or data.strip(b"\x00"):
                raise self._invalid("data follows the end of the tar archive (a hidden "
                                    "member, or a bomb)")
        self.source.drain()


class _Checked:
    """A member's data, with tarfile errors reported as invalid images."""

    def __init__(self, data: BinaryIO, archive: ArchiveReader) -> None:
        self.data = data
        self.archive = archive

    def read(self, count: int = -1) -> bytes:
        try:
            return self.data.read(count)
        except tarfile.TarError as exc:
            raise self.archive._invalid(f"the tar archive is corrupt: {exc}") from exc


def _tar_header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.uname = info.gname = "root"
    return info.tobuf(format=tarfile.PAX_FORMAT)


def tarball(members: Iterable[tuple[str, int, Iterable[bytes]]], level: int | None = None
            ) -> Iterator[bytes]:
    """A gzipped tar of ``(name, size, chunks)`` members, produced lazily.

    Each member must deliver exactly ``size`` bytes (checked).
    """
    z = zlib.compressobj(level or 6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    pending: list[bytes] = []
    buffered = 0

    def emit(data: bytes) -> Iterator[bytes]:
        nonlocal buffered
        out = z.compress(data)
        if out:
            pending.append(out)
            buffered += len(out)
        if buffered >= CHUNK:
            yield b"".join(pending)
            pending.clear()
            buffered = 0

    for name, size, chunks in members:
        yield from emit(_tar_header(name, size))
        sent = 0
        for chunk in chunks:
            sent += len(chunk)
            if sent > size:
                raise ValueError(f"{name}: more than the announced {size} bytes")
            yield from emit(chunk)
        if sent != size:
            raise ValueError(f"{name}: {sent} bytes instead of the announced {size}")
        if size % BLOCK:
            yield from emit(bytes(BLOCK - size % BLOCK))
    yield from emit(bytes(2 * BLOCK))
    pending.append(z.flush())
    yield b"".join(pending)
