"""VHD chains as streams: read them layer by layer, flatten them on the fly.

An image tarball holds a VHD chain leaf first (``0.vhd`` the leaf, ``N.vhd``
the base). Streaming handlers cannot seek back, so they flatten the chain
into one disk while it passes: every layer's sectors are written into the
same target, and a :class:`LayerMask` remembers which sectors the layers
above (closer to the leaf) already wrote, so a parent never overwrites its
child's data. Memory stays bounded by one block plus the mask (512 bytes per
2 MiB block the upper layers touched).

* :class:`VhdLayer` parses one VHD (dynamic, differencing or fixed) from a
  non-seekable file object: footer copy, header and BAT are checked before
  any data is delivered (cookies, checksums, geometry, every block after the
  metadata, inside the stream and not overlapping), the trailing footer must
  match, and a fixed VHD's footer must describe its data.
* :func:`masked_vhd_stream` re-emits a layer as a dynamic VHD whose bitmaps
  mark only the sectors not masked -- what ``PUT /import_raw_vdi?format=vhd``
  writes (a dynamic stream writes only the sectors its bitmaps mark).
* :func:`write_layer` writes a layer's unmasked sectors to a file (a block
  device of the compute VM).
* :class:`ChainCheck` checks, layer after layer, that each parent is the
  next layer (by UUID), without loops, and that the base has no parent.
* :func:`sized_export` measures a dynamic VHD stream (``GET
  /export_raw_vdi?format=vhd`` has no Content-Length) from its BAT, for a
  tar header.
"""
from __future__ import annotations

import array
import os
import sys
import uuid as uuidlib
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from xhost.dom0 import xhost_vhd
from xhost.images import InvalidImage

SECTOR = xhost_vhd.SECTOR_SIZE
FOOTER = xhost_vhd.FOOTER_SIZE
HEADER = xhost_vhd.HEADER_SIZE
UNUSED = xhost_vhd.BAT_UNUSED
#: Granularity of the mask (one bitmap of 4096 bits per 2 MiB).
MASK_SPAN = 2 * 1024 * 1024
MASK_SECTORS = MASK_SPAN // SECTOR
MAX_HEADER_OFFSET = 64 * 1024
FIXED_BLOCK = 2 * 1024 * 1024


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _bitmap_bytes(block_size: int) -> int:
    return _round_up(-(-(block_size // SECTOR) // 8), SECTOR)


class _Reader:
    def __init__(self, fileobj: BinaryIO, name: str, image: str, length: int | None) -> None:
        self.fileobj = fileobj
        self.name = name
        self.image = image
        self.length = length
        self.pos = 0

    def invalid(self, reason: str) -> InvalidImage:
        return InvalidImage(image=self.image, reason=f"{self.name}: {reason}")

    def read(self, count: int, what: str) -> bytes:
        if self.length is not None and self.pos + count > self.length:
            raise self.invalid(f"{what} at byte {self.pos} runs past the end of the "
                               f"{self.length}-byte file")
        parts = []
        want = count
        while want:
            data = self.fileobj.read(want)
            if not data:
                raise self.invalid(f"truncated: the data ends at byte {self.pos} while "
                                   f"reading {what}")
            parts.append(data)
            want -= len(data)
            self.pos += len(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def skip_to(self, target: int, what: str) -> None:
        if target < self.pos:
            raise self.invalid(f"{what} at byte {target} overlaps data before it")
        while self.pos < target:
            self.read(min(xhost_vhd.COPY_CHUNK, target - self.pos), what)


class VhdLayer:
    """One VHD read from a stream (see the module docstring).

    ``length`` is the file's size when known (a tar member, a
    Content-Length); a fixed VHD needs it.
    """

    def __init__(self, fileobj: BinaryIO, name: str, image: str, length: int | None,
                 max_virtual_size: int = xhost_vhd.MAX_VIRTUAL_SIZE) -> None:
        self.r = _Reader(fileobj, name, image, length)
        self.name = name
        limit = min(max_virtual_size, xhost_vhd.MAX_VIRTUAL_SIZE)
        first = self.r.read(FOOTER, "the footer copy")
        copy = xhost_vhd.Footer.unpack(first)
        self._first = first
        if copy.cookie != xhost_vhd.FOOTER_COOKIE:
            self._init_fixed(length, limit)
            return
        if not copy.checksum_ok():
            raise self.r.invalid(f"bad VHD footer checksum 0x{copy.checksum:08x} (computed "
                                 f"0x{copy.compute_checksum():08x})")
        if copy.current_size > limit:
            raise self.r.invalid(f"virtual size {copy.current_size} is larger than the "
                                 f"{limit} bytes allowed")
        try:
            xhost_vhd._check_footer_basics(copy, name)
        except xhost_vhd.VHDError as exc:
            raise self.r.invalid(exc.problem) from None
        if copy.disk_type == xhost_vhd.DISK_FIXED:
            raise self.r.invalid("a footer copy at offset 0 says 'fixed'")
        self.footer = copy
        self.disk_type = copy.disk_type
        self.virtual_size = copy.current_size
        self.uuid = copy.uuid
        if copy.data_offset % SECTOR or not FOOTER <= copy.data_offset <= MAX_HEADER_OFFSET:
            raise self.r.invalid(f"implausible header offset {copy.data_offset}")
        self.r.skip_to(copy.data_offset, "the header")
        header = xhost_vhd.DynamicHeader.unpack(self.r.read(HEADER, "the header"))
        if header.cookie != xhost_vhd.HEADER_COOKIE:
            raise self.r.invalid(f"bad VHD header cookie {header.cookie!r}")
        if not header.checksum_ok():
            raise self.r.invalid(f"bad VHD header checksum 0x{header.checksum:08x} (computed "
                                 f"0x{header.compute_checksum():08x})")
        try:
            xhost_vhd._check_table_geometry(header, copy.current_size, name)
        except xhost_vhd.VHDError as exc:
            raise self.r.invalid(exc.problem) from None
        self.parent_uuid = header.parent_uuid if self.disk_type == \
            xhost_vhd.DISK_DIFFERENCING else None
        if header.table_offset % SECTOR or header.table_offset < self.r.pos:
            raise self.r.invalid(f"the block table (offset {header.table_offset}) is not "
                                 f"after the header; streams need it there")
        self.r.skip_to(header.table_offset, "the block table")
        self.block_size = header.block_size
        self.bitmap_size = _bitmap_bytes(self.block_size)
        entries = -(-self.virtual_size // self.block_size)
        bat = array.array("I")
        bat.frombytes(self.r.read(entries * 4, "the block table"))
        if sys.byteorder == "little":
            bat.byteswap()
        self._bat = bat
        metadata_end = max(header.table_offset + _round_up(header.max_table_entries * 4,
                                                            SECTOR), self.r.pos)
        for loc in header.locators:
            if loc.code and loc.data_offset >= metadata_end:
                metadata_end = max(metadata_end, loc.data_offset + loc.space)
        self.order = [i for i, entry in enumerate(bat) if entry != UNUSED]
        self.order.sort(key=bat.__getitem__)
        span = self.bitmap_size + self.block_size
        previous_end = metadata_end
        for index in self.order:
            start = bat[index] * SECTOR
            if start < metadata_end:
                raise self.r.invalid(f"the block table points block {index} into the "
                                     f"metadata (offset {start})")
            if start < previous_end:
                raise self.r.invalid(f"block {index} (offset {start}) overlaps the block "
                                     f"before it")
            if length is not None and start + span > length - FOOTER:
                raise self.r.invalid(f"the block table points block {index} past the end of "
                                     f"the {length}-byte file (offset {start})")
            previous_end = start + span
        self._end = previous_end
        # What may follow the last block: padding, misplaced locators.
        self._slack = MAX_HEADER_OFFSET + sum(loc.space for loc in header.locators)
        if length is not None and length > previous_end + FOOTER + self._slack:
            raise self.r.invalid(f"is {length} bytes, more than a VHD with these "
                                 f"{len(self.order)} blocks can be "
                                 f"({previous_end + FOOTER + self._slack}); the archive lies "
                                 f"about its size, or it is a bomb")
        self._fixed = False

    def _init_fixed(self, length: int | None, limit: int) -> None:
        if length is None:
            raise self.r.invalid("not a dynamic VHD (no footer copy at offset 0) and its "
                                 "length is unknown")
        size = length - FOOTER
        if size <= 0 or size % SECTOR:
            raise self.r.invalid(f"{length} bytes are neither a dynamic VHD nor a fixed one "
                                 f"(data + a 512-byte footer)")
        if size > limit:
            raise self.r.invalid(f"virtual size {size} is larger than the {limit} bytes "
                                 f"allowed")
        self._fixed = True
        self.disk_type = xhost_vhd.DISK_FIXED
        self.virtual_size = size
        self.uuid = None
        self.parent_uuid = None
        self.block_size = FIXED_BLOCK
        self.bitmap_size = _bitmap_bytes(FIXED_BLOCK)
        self.order = list(range(-(-size // FIXED_BLOCK)))

    @property
    def disk_type_name(self) -> str:
        return xhost_vhd.DISK_TYPE_NAMES.get(self.disk_type, "?")

    def blocks(self) -> Iterator[tuple[int, bytes, bytes]]:
        """``(index, sector bitmap, block data)`` in file order; the trailing
        footer is checked after the last block."""
        if self._fixed:
            yield from self._fixed_blocks()
            return
        last = -(-self.virtual_size // self.block_size) - 1
        tail_sectors = (self.virtual_size - last * self.block_size) // SECTOR
        for index in self.order:
            start = self._bat[index] * SECTOR
            self.r.skip_to(start, f"block {index}")
            # bitmap and data read apart: no copy of the data to split them
            bitmap = self.r.read(self.bitmap_size, f"block {index}")
            if index == last and tail_sectors < self.block_size // SECTOR:
                bitmap = _clip(bitmap, tail_sectors)
            yield index, bitmap, self.r.read(self.block_size, f"block {index}")
        self._finish_dynamic()

    def _finish_dynamic(self) -> None:
        if self.r.length is not None:
            self.r.skip_to(self.r.length - FOOTER, "the footer")
            tail = self.r.read(FOOTER, "the footer")
        else:
            self.r.skip_to(self._end, "the footer")
            tail = b""
            limit = self._end + FOOTER + self._slack
            while True:
                data = self.r.fileobj.read(xhost_vhd.COPY_CHUNK)
                if not data:
                    break
                self.r.pos += len(data)
                if self.r.pos > limit:
                    raise self.r.invalid(f"more than {limit} bytes: data follows the last "
                                         f"block and the footer")
                tail = (tail + data)[-FOOTER:]
            if len(tail) < FOOTER:
                raise self.r.invalid("truncated: no footer after the last block")
        footer = xhost_vhd.Footer.unpack(tail)
        if footer.cookie != xhost_vhd.FOOTER_COOKIE or not footer.checksum_ok():
            raise self.r.invalid("the trailing footer is invalid (bad cookie or checksum)")
        if (footer.uuid_bytes, footer.current_size, footer.disk_type) != (
                self.footer.uuid_bytes, self.footer.current_size, self.footer.disk_type):
            raise self.r.invalid("the trailing footer does not match the copy at offset 0")

    def _fixed_blocks(self) -> Iterator[tuple[int, bytes, bytes]]:
        full = b"\xff" * (FIXED_BLOCK // SECTOR // 8) + bytes(
            self.bitmap_size - FIXED_BLOCK // SECTOR // 8)
        pending = self._first
        self._first = b""
        for index in self.order:
            length = min(FIXED_BLOCK, self.virtual_size - index * FIXED_BLOCK)
            data = pending + self.r.read(length - len(pending), f"block {index}")
            pending = b""
            bitmap = full if length == FIXED_BLOCK else _clip(full, length // SECTOR)
            yield index, bitmap, data + bytes(FIXED_BLOCK - length)
        footer = xhost_vhd.Footer.unpack(self.r.read(FOOTER, "the footer"))
        if footer.cookie != xhost_vhd.FOOTER_COOKIE or not footer.checksum_ok():
            raise self.r.invalid("the fixed VHD's footer is invalid (bad cookie or checksum)")
        if footer.disk_type != xhost_vhd.DISK_FIXED or footer.current_size != self.virtual_size:
            raise self.r.invalid(f"the footer says {footer.current_size} bytes of type "
                                 f"{footer.disk_type}, the file holds a fixed disk of "
                                 f"{self.virtual_size}")
        self.uuid = footer.uuid


def _clip(bitmap: bytes, sectors: int) -> bytes:
    """Clear the bits of sectors at and after ``sectors``."""
    keep = bytearray(bitmap)
    whole, rest = divmod(sectors, 8)
    if rest:
        keep[whole] &= (0xFF << (8 - rest)) & 0xFF
        whole += 1
    keep[whole:] = bytes(len(keep) - whole)
    return bytes(keep)


class LayerMask:
    """Which sectors upper layers wrote: one 512-byte bitmap per touched
    2 MiB span (a shared marker for fully covered spans)."""

    _FULL = b"\xff" * (MASK_SECTORS // 8)

    def __init__(self) -> None:
        self._spans: dict[int, bytes] = {}

    def bits(self, offset: int, sectors: int) -> int:
        """The mask of ``sectors`` sectors from ``offset`` as an integer
        (most significant bit = first sector)."""
        value = 0
        first = offset // SECTOR
        done = 0
        while done < sectors:
            sector = first + done
            span, within = divmod(sector, MASK_SECTORS)
            count = min(sectors - done, MASK_SECTORS - within)
            bitmap = self._spans.get(span)
            value <<= count
            if bitmap is not None:
                whole = int.from_bytes(bitmap, "big")
                value |= (whole >> (MASK_SECTORS - within - count)) & ((1 << count) - 1)
            done += count
        return value

    def add(self, offset: int, sectors: int, bits: int) -> None:
        """Mark the sectors whose bits are set (same layout as :meth:`bits`)."""
        first = offset // SECTOR
        done = sectors
        while done > 0:
            # walk from the last sector backwards, consuming low bits first
            sector = first + done - 1
            span, within = divmod(sector, MASK_SECTORS)
            start_within = max(0, within - done + 1)
            count = within - start_within + 1
            piece = bits & ((1 << count) - 1)
            bits >>= count
            done -= count
            if not piece:
                continue
            shift = MASK_SECTORS - within - 1
            old = self._spans.get(span)
            merged = (int.from_bytes(old, "big") if old else 0) | (piece << shift)
            data = merged.to_bytes(MASK_SECTORS // 8, "big")
            self._spans[span] = self._FULL if data == self._FULL else data

    def covers(self, offset: int, length: int) -> bool:
        sectors = length // SECTOR
        return self.bits(offset, sectors) == (1 << sectors) - 1


class ChainCheck:
    """Checks layers as they arrive, leaf first."""

    def __init__(self, image: str) -> None:
        self.image = image
        self.layers: list[VhdLayer] = []
        self.uuids: set[uuidlib.UUID] = set()

    def add(self, layer: VhdLayer) -> None:
        if not self.layers:
            self.layers.append(layer)
            if layer.uuid is not None:
                self.uuids.add(layer.uuid)
            return
        child = self.layers[-1]
        if child.disk_type != xhost_vhd.DISK_DIFFERENCING:
            raise InvalidImage(image=self.image, reason=f"{child.name} is a "
                               f"{child.disk_type_name} disk, so it has no parent, but "
                               f"{layer.name} follows it")
        if layer.uuid is not None and layer.uuid in self.uuids:
            raise InvalidImage(image=self.image, reason=f"{layer.name} has the UUID of a disk "
                               f"above it: the chain loops")
        if child.parent_uuid in self.uuids:
            raise InvalidImage(image=self.image, reason=f"{child.name} names a disk above it "
                               f"as its parent: the chain loops")
        if layer.uuid is not None and child.parent_uuid != layer.uuid:
            raise InvalidImage(image=self.image, reason=f"{child.name}'s parent UUID "
                               f"{child.parent_uuid} is not {layer.name}'s ({layer.uuid})")
        if layer.virtual_size > child.virtual_size:
            raise InvalidImage(image=self.image, reason=f"{layer.name} ({layer.virtual_size} "
                               f"bytes) is larger than its child {child.name}")
        self.layers.append(layer)
        if layer.uuid is not None:
            self.uuids.add(layer.uuid)

    def parent_checked(self, layer: VhdLayer) -> None:
        """A fixed layer's UUID is known only after its data: check it then."""
        if len(self.layers) > 1 and self.layers[-1] is layer and layer.uuid is not None:
            child = self.layers[-2]
            if child.parent_uuid != layer.uuid:
                raise InvalidImage(image=self.image, reason=f"{child.name}'s parent UUID "
                                   f"{child.parent_uuid} is not {layer.name}'s ({layer.uuid})")

    def done(self) -> None:
        if not self.layers:
            raise InvalidImage(image=self.image, reason="the archive holds no disk")
        last = self.layers[-1]
        if last.disk_type == xhost_vhd.DISK_DIFFERENCING:
            raise InvalidImage(image=self.image, reason=f"{last.name} is a differencing disk "
                               f"whose parent UUID {last.parent_uuid} matches no disk of the "
                               f"image")


def masked_vhd_stream(layer: VhdLayer, mask: LayerMask | None, record: bool
                      ) -> tuple[int, Iterator[bytes]]:
    """``(length, chunks)`` of a dynamic VHD holding the layer's sectors that
    ``mask`` does not cover; with ``record`` the layer's sectors are added to
    the mask as they pass."""
    block = layer.block_size
    bitmap_size = layer.bitmap_size
    out = [i for i in layer.order
           if mask is None or not mask.covers(i * block, min(block, layer.virtual_size -
                                                               i * block))]
    keep = set(out)
    entries = -(-layer.virtual_size // block)
    bat_bytes = _round_up(entries * 4, SECTOR)
    data_start = FOOTER + HEADER + bat_bytes
    span = bitmap_size + block
    length = data_start + len(out) * span + FOOTER
    footer = xhost_vhd.Footer(xhost_vhd.DISK_DYNAMIC, layer.virtual_size,
                              uuidlib.uuid4().bytes, data_offset=FOOTER)
    header = xhost_vhd.DynamicHeader(FOOTER + HEADER, entries, block)
    bat = array.array("I", [UNUSED]) * entries
    sector = data_start // SECTOR
    for index in out:
        bat[index] = sector
        sector += span // SECTOR
    if sys.byteorder == "little":
        bat.byteswap()
    raw_bat = bat.tobytes()
    raw_bat += b"\xff" * (bat_bytes - len(raw_bat))
    sectors = block // SECTOR

    def chunks() -> Iterator[bytes]:
        yield footer.pack() + header.pack() + raw_bat
        for index, bitmap, data in layer.blocks():
            offset = index * block
            present = int.from_bytes(bitmap[:sectors // 8], "big")
            if mask is not None:
                wanted = present & ~mask.bits(offset, sectors)
                if record:
                    mask.add(offset, sectors, present)
            else:
                wanted = present
            if index in keep:
                yield wanted.to_bytes(sectors // 8, "big") + bytes(bitmap_size - sectors // 8)
                yield data
        yield footer.pack()

    return length, chunks()


def write_layer(layer: VhdLayer, fd: int, mask: LayerMask | None, record: bool) -> int:
    """Write the layer's unmasked sectors at their offsets in ``fd``;
    returns the bytes written."""
    block = layer.block_size
    sectors = block // SECTOR
    written = 0
    for index, bitmap, data in layer.blocks():
        offset = index * block
        present = int.from_bytes(bitmap[:sectors // 8], "big")
        wanted = present
        if mask is not None:
            wanted = present & ~mask.bits(offset, sectors)
            if record:
                mask.add(offset, sectors, present)
        if not wanted:
            continue
        if wanted == (1 << sectors) - 1:
            written += _pwrite_nonzero(fd, data, offset)
            continue
        for start, stop in _runs(wanted, sectors):
            written += _pwrite_nonzero(fd, data[start * SECTOR:stop * SECTOR],
                                       offset + start * SECTOR)
    return written


def _pwrite_nonzero(fd: int, data: bytes, offset: int) -> int:
    """Write ``data`` unless it is all zeros on a fresh target."""
    if not data.strip(b"\x00"):
        return 0
    view = memoryview(data)
    while view:
        done = os.pwrite(fd, view, offset)
        view = view[done:]
        offset += done
    return len(data)


def _runs(bits: int, sectors: int) -> Iterator[tuple[int, int]]:
    """``(first, stop)`` sector runs of set bits (MSB = sector 0)."""
    text = bin(bits)[2:].zfill(sectors)
    pos = 0
    while True:
        start = text.find("1", pos)
        if start < 0:
            return
        stop = text.find("0", start)
        if stop < 0:
            stop = sectors
        yield start, stop
        pos = stop


def sized_export(chunks: Iterable[bytes], name: str = "export") -> tuple[int, Iterator[bytes]]:
    """``(length, chunks)`` of a dynamic VHD stream of unknown length, the
    length computed from its block table (the stream is re-yielded whole and
    checked against it)."""
    it = iter(chunks)
    head = b""
    wanted = FOOTER + HEADER

    def fill(size: int) -> None:
        nonlocal head
        while len(head) < size:
            chunk = next(it, None)
            if chunk is None:
                raise InvalidImage(image=name, reason=f"the VHD export ended after "
                                   f"{len(head)} bytes, inside its metadata")
            head += chunk

    fill(wanted)
    footer = xhost_vhd.Footer.unpack(head[:FOOTER])
    if footer.cookie != xhost_vhd.FOOTER_COOKIE or footer.disk_type != xhost_vhd.DISK_DYNAMIC:
        raise InvalidImage(image=name, reason="the host's VHD export is not a dynamic VHD")
    fill(footer.data_offset + HEADER)
    header = xhost_vhd.DynamicHeader.unpack(head[footer.data_offset:footer.data_offset + HEADER])
    entries = -(-footer.current_size // header.block_size)
    fill(header.table_offset + entries * 4)
    bat = array.array("I")
    bat.frombytes(head[header.table_offset:header.table_offset + entries * 4])
    if sys.byteorder == "little":
        bat.byteswap()
    span = _bitmap_bytes(header.block_size) + header.block_size
    end = header.table_offset + _round_up(header.max_table_entries * 4, SECTOR)
    for entry in bat:
        if entry != UNUSED:
            end = max(end, entry * SECTOR + span)
    length = end + FOOTER

    def body() -> Iterator[bytes]:
        sent = len(head)
        yield head
        for chunk in it:
            sent += len(chunk)
            if sent > length:
                raise InvalidImage(image=name, reason=f"the VHD export is longer than its "
                                   f"block table says ({length} bytes)")
            yield chunk
        if sent != length:
            raise InvalidImage(image=name, reason=f"the VHD export ended after {sent} bytes; "
                               f"its block table says {length}")

    return length, body()
