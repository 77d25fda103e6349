"""Moving disk contents in bounded memory: readers, writers, sparse copies.

A *reader* is anything with ``virtual_size``, ``read(offset, length)`` and
optionally ``data_ranges()`` (byte ranges that may hold non-zero data; the
rest reads as zeros) -- an opened VHD chain (:func:`xhost_vhd.open_chain`)
or a raw file (:class:`xhost_vhd.RawSource`).  A *writer* (:class:`Writer`)
writes whole pieces and knows whether a range of its disk already reads as
zeros, so that zero data leaves holes and unallocated VHD blocks instead of
being written.

:func:`copy_disk` is what ``VDI.copy`` and the compute domain's write-back
use; it visits only the blocks that may differ, 2 MiB at a time.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

BLOCK = 2 * 1024 * 1024
_ZERO = bytes(BLOCK)


def is_zero(data: bytes | bytearray | memoryview) -> bool:
    """True when every byte is zero (memcmp speed)."""
    length = len(data)
    if length <= BLOCK:
        return data == _ZERO[:length] if not isinstance(data, memoryview) \
            else bytes(data) == _ZERO[:length]
    return all(is_zero(data[i:i + BLOCK]) for i in range(0, length, BLOCK))


class Reader(Protocol):
    virtual_size: int

    def read(self, offset: int, length: int) -> bytes: ...


class Writer(Protocol):
    """Where :func:`copy_disk` and the data plane put bytes."""

    virtual_size: int

    def write(self, offset: int, data: bytes) -> None:
        """Write ``data``; zero data over a range that reads as zeros is skipped."""

    def data_ranges(self) -> Iterable[tuple[int, int]]:
        """Ranges that may hold data now (to clear them when copying over)."""


def ranges_of(source: Any) -> Iterable[tuple[int, int]]:
    """``source.data_ranges()``, or the whole disk when it cannot tell."""
    ranges = getattr(source, "data_ranges", None)
    if ranges is None:
        return [(0, int(source.virtual_size))]
    return ranges()


def block_flags(size: int, *sources: Iterable[tuple[int, int]],
                block: int = BLOCK) -> bytearray:
    """One byte per ``block`` of a ``size``-byte disk: 1 where any range touches."""
    count = -(-size // block)
    flags = bytearray(count)
    for ranges in sources:
        for start, end in ranges:
            end = min(end, size)
            if end <= start:
                continue
            first, last = start // block, (end - 1) // block
            flags[first:last + 1] = b"\x01" * (last - first + 1)
    return flags


def flagged(flags: bytearray) -> Iterator[int]:
    index = flags.find(1)
    while index >= 0:
        yield index
        index = flags.find(1, index + 1)


def read_padded(source: Any, offset: int, length: int) -> bytes:
    """``length`` bytes at ``offset``; past the source's end reads zeros."""
    size = int(source.virtual_size)
    avail = max(0, min(length, size - offset))
    data = source.read(offset, avail) if avail else b""
    if len(data) < length:
        data = bytes(data) + bytes(length - len(data))
    return data


def copy_disk(source: Any, writer: Writer, *, base: Any = None, dest_fresh: bool = False,
              progress: Callable[[float], None] | None = None,
              check: Callable[[], None] | None = None) -> int:
    """Copy ``source`` into ``writer``; returns the bytes written.

    Without ``base`` the destination ends up reading exactly like the source
    (blocks the destination holds but the source does not are cleared,
    unless ``dest_fresh`` says the destination reads as zeros).  With
    ``base`` only the blocks where the source differs from the base are
    written -- ``VDI.copy(base_vdi=...)`` into a disk that already holds the
    base.  ``check`` is called between blocks (cancellation).
    """
    size = min(int(source.virtual_size), int(writer.virtual_size))
    sources = [ranges_of(source)]
    if base is not None:
        sources.append(ranges_of(base))
    elif not dest_fresh:
        sources.append(writer.data_ranges())
    flags = block_flags(size, *sources)
    total = max(1, flags.count(1))
    written = done = 0
    for index in flagged(flags):
        if check is not None:
            check()
        offset = index * BLOCK
        length = min(BLOCK, size - offset)
        data = read_padded(source, offset, length)
        if base is not None and data == read_padded(base, offset, length):
            pass
        elif not (dest_fresh and is_zero(data)):
            writer.write(offset, data)
            written += length
        done += 1
        if progress is not None and done % 16 == 0:
            progress(done / total)
    return written


class RawFileWriter:
    """A writer on a raw image file (LVM volume, ISO, materialised device)."""

    def __init__(self, path: str | os.PathLike[str], virtual_size: int | None = None) -> None:
        self.path = os.fspath(path)
        self._fd = os.open(self.path, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
        size = os.fstat(self._fd).st_size
        self.virtual_size = size if virtual_size is None else virtual_size

    def reads_zero(self, offset: int, length: int) -> bool:
        """True when [offset, offset+length) is a hole (or past the end)."""
        end = offset + length
        try:
            data = os.lseek(self._fd, offset, os.SEEK_DATA)
        except OSError:
            return True  # ENXIO: no data at or after offset
        return data >= end

    def write(self, offset: int, data: bytes) -> None:
        if offset + len(data) > self.virtual_size:
            raise ValueError(f"write of {len(data)} bytes at {offset} beyond the "
                             f"{self.virtual_size}-byte disk")
        if is_zero(data) and self.reads_zero(offset, len(data)):
            return
        view = memoryview(data)
        while len(view):
            n = os.pwrite(self._fd, view, offset)
            view = view[n:]
            offset += n

    def data_ranges(self) -> Iterator[tuple[int, int]]:
        pos, end = 0, self.virtual_size
        while pos < end:
            try:
                start = os.lseek(self._fd, pos, os.SEEK_DATA)
            except OSError:
                return
            if start >= end:
                return
            try:
                stop = os.lseek(self._fd, start, os.SEEK_HOLE)
            except OSError:
                stop = end
            yield start, min(stop, end)
            pos = stop

    def flush(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> RawFileWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def sparse_copy_file(src: str | os.PathLike[str], dst: str | os.PathLike[str],
                     size: int) -> None:
    """Copy a raw file into a new sparse file of ``size`` bytes, holes kept."""
    from xhost.dom0 import xhost_vhd

    with xhost_vhd.RawSource(src, size) as reader:
        fd = os.open(dst, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.ftruncate(fd, size)
        finally:
            os.close(fd)
        with RawFileWriter(dst, size) as writer:
            copy_disk(reader, writer, dest_fresh=True)
