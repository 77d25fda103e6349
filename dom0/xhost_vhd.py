#!/usr/bin/env python3
"""Microsoft VHD disk images: fixed, dynamic and differencing.

One implementation shared by the dom0 scripts (``import xhost_vhd`` as a
sibling), by xhost core (``xhost.dom0.xhost_vhd``) and by the XAPI
simulator.  It must therefore run on Python >= 3.6 with the standard library
only.

File layout (all integers big-endian, "sector" = 512 bytes)::

    fixed:         [ data ........................ ][ footer ]
    dynamic/diff:  [ footer copy ][ header ][ BAT ][ parent locators ]
                   [ bitmap | block ] [ bitmap | block ] ... [ footer ]

* The 512-byte footer ("conectix") holds the disk type, the virtual size,
  the CHS geometry, the UUID and a one's-complement checksum.  blktap keeps
  its "hidden" flag in the first reserved byte (offset 85).
* The 1024-byte dynamic header ("cxsparse") holds the BAT offset, the block
  size, and, for differencing disks, the parent's UUID, timestamp, UTF-16
  name and up to eight parent locators.
* The BAT maps each block to the sector where its sector bitmap starts;
  0xFFFFFFFF means "not allocated".  A set bitmap bit (most significant bit
  first) means the sector is stored in this file; a clear bit means "read
  the parent" (differencing) or zeros (dynamic).

Public API, in brief (every failure raises :class:`VHDError`):

* create: :func:`create_fixed`, :func:`create_dynamic`,
  :func:`create_differencing`
* open and access: :func:`open_vhd`, :func:`open_chain`, :class:`VHDFile`
  (``read``, ``write``, ``allocated_blocks``, ``data_ranges``...),
  :class:`RawSource`
* chain maintenance: :func:`set_parent` (``vhd-util modify -p``),
  :func:`check` (``vhd-util check [-p]``), :func:`get_hidden` /
  :func:`set_hidden` (``vhd-util query -f`` / ``set -f hidden``),
  :func:`coalesce`, :func:`resize`, :func:`repair`
* streams: :func:`dynamic_stream_size`, :class:`DynamicStream` (produce),
  :func:`consume_stream` (parse a non-seekable stream), :class:`RawFileSink`
* conversion and inspection: :func:`vhd_to_raw`, :func:`raw_to_vhd`,
  :func:`info`
* a CLI: ``python3 xhost_vhd.py --help``

Files created here say creator application ``"tap\\0"`` version 1.1, the
way XenServer's blktap writes them: qemu then takes the footer's current
size as the virtual size (not the CHS geometry) and blktap expects no batmap.
"""

# This file must run on Python 3.6 (dom0), so it keeps typing.List & co,
# Optional[...] and %-formatting like the other dom0 scripts.

import argparse
import array
import errno
import json
import os
import stat
import struct
import sys
import time
import uuid as uuidlib
from collections import OrderedDict
from typing import (
    Any,
    BinaryIO,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Optional,
    Sequence,
    Tuple,
    Union,
)

__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "DISK_DIFFERENCING",
    "DISK_DYNAMIC",
    "DISK_FIXED",
    "MAX_CHAIN_DEPTH",
    "MAX_VIRTUAL_SIZE",
    "SECTOR_SIZE",
    "DynamicHeader",
    "DynamicStream",
    "Footer",
    "ParentLocator",
    "RawFileSink",
    "RawSource",
    "VHDError",
    "VHDFile",
    "check",
    "chs_geometry",
    "chs_rounded_size",
    "coalesce",
    "consume_stream",
    "create_differencing",
    "create_dynamic",
    "create_fixed",
    "dynamic_stream_size",
    "find_parent",
    "get_hidden",
    "info",
    "open_chain",
    "open_vhd",
    "raw_to_vhd",
    "repair",
    "resize",
    "set_hidden",
    "set_parent",
    "vhd_timestamp",
    "vhd_to_raw",
]

SECTOR_SIZE = 512
FOOTER_SIZE = 512
HEADER_SIZE = 1024
KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
DEFAULT_BLOCK_SIZE = 2 * MIB
MIN_BLOCK_SIZE = 4 * KIB
MAX_BLOCK_SIZE = 256 * MIB
#: Largest virtual size, as for XAPI's VHD-based SRs (and qemu's vpc driver).
MAX_VIRTUAL_SIZE = 2040 * GIB
#: Largest span a BAT may describe: SM pre-sizes BATs for 2 TiB ("vhd-util
#: create -S"), slightly more than MAX_VIRTUAL_SIZE.
MAX_TABLE_SPAN = 2048 * GIB
#: Number of files (leaf included) a chain may hold, as in XAPI's SM.
MAX_CHAIN_DEPTH = 30
#: vhd-util check tolerates timestamps this far in the future (NFS skew).
TIMESTAMP_SLACK = 1800
COPY_CHUNK = 4 * MIB

DISK_FIXED = 2
DISK_DYNAMIC = 3
DISK_DIFFERENCING = 4
DISK_TYPE_NAMES = {DISK_FIXED: "fixed", DISK_DYNAMIC: "dynamic",
                   DISK_DIFFERENCING: "differencing"}

FOOTER_COOKIE = b"conectix"
HEADER_COOKIE = b"cxsparse"
BATMAP_COOKIE = b"tdbatmap"
FEATURE_TEMPORARY = 0x1
FEATURE_RESERVED = 0x2
FILE_FORMAT_VERSION = 0x00010000
HEADER_VERSION = 0x00010000
NO_DATA_OFFSET = 0xFFFFFFFFFFFFFFFF
BAT_UNUSED = 0xFFFFFFFF
CREATOR_APP = b"tap\x00"
CREATOR_VERSION = 0x00010001
CREATOR_HOST_OS = 0
TAP_LATEST_VERSION = 0x00010003
BATMAP_LATEST_VERSION = 0x00010002

PLAT_NONE = 0
PLAT_WI2R = 0x57693272
PLAT_WI2K = 0x5769326B
PLAT_W2RU = 0x57327275
PLAT_W2KU = 0x57326B75
PLAT_MAC = 0x4D616320
PLAT_MACX = 0x4D616358
PLATFORM_NAMES = {PLAT_WI2R: "Wi2r", PLAT_WI2K: "Wi2k", PLAT_W2RU: "W2ru",
                  PLAT_W2KU: "W2ku", PLAT_MAC: "Mac ", PLAT_MACX: "MacX"}
PATH_PLATFORMS = (PLAT_MACX, PLAT_W2KU, PLAT_W2RU)

_VHD_EPOCH = 946684800  # 2000-01-01T00:00:00Z
_MAX_CHS_SECTORS = 65535 * 16 * 255
_FIX_CORRUPT = ("the file is damaged; restore it from its source or "
                "re-create it")

PathLike = Union[str, "os.PathLike[str]"]
Sink = Callable[[int, bytes], Any]


class VHDError(ValueError):
    """Any problem with a VHD file or stream.

    ``path`` names the file (or stream), ``problem`` says what is wrong and
    ``fix`` (possibly empty) says what to do about it.
    """

    def __init__(self, path: Any, problem: str, fix: str = "") -> None:
        self.path = str(path)
        self.problem = problem
        self.fix = fix
        message = "%s: %s" % (self.path, problem)
        if fix:
            message += " (fix: %s)" % fix
        super().__init__(message)


# --------------------------------------------------------------------------
# Small helpers


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _fspath(path: Any) -> str:
    return os.fspath(path) if hasattr(os, "fspath") else str(path)


_ZEROS = {}  # type: Dict[int, bytes]


def _zeros(length: int) -> bytes:
    block = _ZEROS.get(length)
    if block is None:
        block = bytes(length)
        if len(_ZEROS) < 16:
            _ZEROS[length] = block
    return block


def _is_zero(data: Union[bytes, bytearray]) -> bool:
    return data == _zeros(len(data))


def vhd_timestamp(unix_time: Optional[float] = None) -> int:
    """Seconds since 2000-01-01 00:00:00 UTC (the VHD epoch), clamped."""
    if unix_time is None:
        unix_time = time.time()
    return max(0, min(0xFFFFFFFF, int(unix_time) - _VHD_EPOCH))


def _unix_time(vhd_ts: int) -> int:
    return vhd_ts + _VHD_EPOCH


def chs_geometry(size: int) -> Tuple[int, int, int]:
    """CHS geometry (cylinders, heads, sectors per track) of a disk size.

    This is the algorithm of the VHD specification (appendix); it rounds
    down, so the CHS capacity may be smaller than ``size``.
    """
    total = min(size // SECTOR_SIZE, _MAX_CHS_SECTORS)
    if total >= 65535 * 16 * 63:
        spt, heads = 255, 16
        cyl_heads = total // spt
    else:
        spt = 17
        cyl_heads = total // spt
        heads = max(4, (cyl_heads + 1023) // 1024)
        if cyl_heads >= heads * 1024 or heads > 16:
            spt, heads = 31, 16
            cyl_heads = total // spt
        if cyl_heads >= heads * 1024:
            spt, heads = 63, 16
            cyl_heads = total // spt
    return cyl_heads // heads, heads, spt


def _encode_geometry(chs: Tuple[int, int, int]) -> int:
    return (chs[0] << 16) | (chs[1] << 8) | chs[2]


def chs_rounded_size(size: int) -> int:
    """Smallest CHS-addressable size >= ``size``, as ``qemu-img create -f
    vpc`` computes it without ``force_size`` (64 MiB -> 67125248).  Sizes
    beyond the CHS range (about 127 GiB) are returned unchanged."""
    total = size // SECTOR_SIZE
    if total >= _MAX_CHS_SECTORS:
        return size
    extra = 0
    while True:
        cyl, heads, spt = chs_geometry((total + extra) * SECTOR_SIZE)
        if cyl * heads * spt >= total:
            return cyl * heads * spt * SECTOR_SIZE
        extra += 1


def _checksum(data: bytes, checksum_at: int) -> int:
    total = sum(data) - sum(data[checksum_at:checksum_at + 4])
    return ~total & 0xFFFFFFFF


def _uuid_bytes(value: Any, path: Any) -> bytes:
    if value is None:
        return uuidlib.uuid4().bytes
    if isinstance(value, uuidlib.UUID):
        return value.bytes
    try:
        return uuidlib.UUID(str(value)).bytes
    except ValueError:
        raise VHDError(path, "invalid UUID %r" % (value,),
                       "pass a UUID such as %s" % uuidlib.uuid4())


def _validate_size(size: Any, path: Any, what: str = "virtual size") -> int:
    if isinstance(size, bool) or not isinstance(size, int):
        raise VHDError(path, "%s must be an integer number of bytes, not %r"
                       % (what, size))
    if size <= 0:
        raise VHDError(path, "%s must be positive, got %d" % (what, size))
    size = _round_up(size, SECTOR_SIZE)
    if size > MAX_VIRTUAL_SIZE:
        raise VHDError(path, "%s %d bytes exceeds the VHD limit of %d bytes "
                       "(2040 GiB)" % (what, size, MAX_VIRTUAL_SIZE),
                       "use a smaller disk")
    return size


def _validate_block_size(block_size: Any, path: Any) -> int:
    if (isinstance(block_size, bool) or not isinstance(block_size, int) or
            block_size < MIN_BLOCK_SIZE or block_size > MAX_BLOCK_SIZE or
            block_size & (block_size - 1)):
        raise VHDError(path, "invalid block size %r" % (block_size,),
                       "use a power of two between %d and %d bytes (the "
                       "default is %d)" % (MIN_BLOCK_SIZE, MAX_BLOCK_SIZE,
                                           DEFAULT_BLOCK_SIZE))
    return block_size


def _bitmap_size(block_size: int) -> int:
    return _round_up(block_size // SECTOR_SIZE // 8, SECTOR_SIZE)


def _bitmap_runs(bitmap: Union[bytes, bytearray], first: int,
                 end: int) -> Iterator[Tuple[int, int, bool]]:
    """Split sectors [first, end) into runs of equal bitmap bits.

    Yields ``(start, stop, is_set)``; bits are most significant first.
    """
    pos = first
    while pos < end:
        bit = (bitmap[pos >> 3] >> (7 - (pos & 7))) & 1
        fill = 0xFF if bit else 0x00
        stop = pos + 1
        while stop < end:
            if not stop & 7 and stop + 8 <= end:
                start_byte = stop >> 3
                segment = bytes(bitmap[start_byte:end >> 3])
                same = len(segment) - len(segment.lstrip(bytes((fill,))))
                if same:
                    stop += same * 8
                    continue
            if (bitmap[stop >> 3] >> (7 - (stop & 7))) & 1 != bit:
                break
            stop += 1
        yield pos, stop, bool(bit)
        pos = stop


def _set_bits(bitmap: bytearray, first: int, end: int) -> None:
    pos = first
    while pos < end and pos & 7:
        bitmap[pos >> 3] |= 0x80 >> (pos & 7)
        pos += 1
    whole = (end - pos) >> 3
    if whole:
        bitmap[pos >> 3:(pos >> 3) + whole] = b"\xff" * whole
        pos += whole * 8
    while pos < end:
        bitmap[pos >> 3] |= 0x80 >> (pos & 7)
        pos += 1


def _full_bitmap(bitmap_size: int, sectors: int) -> bytes:
    bitmap = bytearray(bitmap_size)
    _set_bits(bitmap, 0, sectors)
    return bytes(bitmap)


def _file_data_ranges(fd: int, start: int,
                      end: int) -> Iterator[Tuple[int, int]]:
    """Byte ranges of [start, end) that may hold data (skips holes)."""
    seek_data = getattr(os, "SEEK_DATA", None)
    seek_hole = getattr(os, "SEEK_HOLE", None)
    if seek_data is None or seek_hole is None:
        if start < end:
            yield start, end
        return
    pos = start
    while pos < end:
        try:
            data = os.lseek(fd, pos, seek_data)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                return
            yield pos, end  # the filesystem cannot tell: assume data
            return
        if data >= end:
            return
        try:
            hole = os.lseek(fd, data, seek_hole)
        except OSError:
            hole = end
        yield data, min(hole, end)
        pos = hole


def _pread(fd: int, offset: int, length: int, path: Any,
           what: str = "data") -> bytes:
    chunks = []
    remaining = length
    while remaining:
        chunk = os.pread(fd, remaining, offset + length - remaining)
        if not chunk:
            raise VHDError(path, "unexpected end of file reading %d bytes of "
                           "%s at offset %d" % (length, what, offset),
                           "the file is truncated; " + _FIX_CORRUPT)
        chunks.append(chunk)
        remaining -= len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _pwrite(fd: int, offset: int, data: Union[bytes, memoryview]) -> None:
    view = memoryview(data)
    while len(view):
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


SPARSE_GRANULE = 64 * KIB


def _write_sparse(fd: int, offset: int,
                  data: Union[bytes, memoryview]) -> None:
    """Write ``data`` into a region that already reads as zeros, skipping
    all-zero 64 KiB pieces so they stay holes."""
    # Compare bytes, not memoryviews: those compare item by item, ~100x
    # slower than the memcmp bytes get.
    raw = data if isinstance(data, bytes) else bytes(data)
    view = memoryview(raw)
    start = None  # start of a pending run of non-zero pieces
    for pos in range(0, len(raw), SPARSE_GRANULE):
        if _is_zero(raw[pos:pos + SPARSE_GRANULE]):
            if start is not None:
                _pwrite(fd, offset + start, view[start:pos])
                start = None
        elif start is None:
            start = pos
    if start is not None:
        _pwrite(fd, offset + start, view[start:])


def _file_size(fd: int) -> int:
    return os.lseek(fd, 0, os.SEEK_END)


# --------------------------------------------------------------------------
# On-disk structures


_FOOTER_STRUCT = struct.Struct(">8sIIQI4sIIQQIII16sBB426s")
_HEADER_STRUCT = struct.Struct(">8sQQIIII16sII512s")
_LOCATOR_STRUCT = struct.Struct(">IIIIQ")
_BATMAP_STRUCT = struct.Struct(">8sQIIIB")


class Footer:
    """The 512-byte hard disk footer (also stored at offset 0 of dynamic
    and differencing disks)."""

    __slots__ = (
        "checksum",
        "cookie",
        "creator_app",
        "creator_host_os",
        "creator_version",
        "current_size",
        "data_offset",
        "disk_type",
        "features",
        "format_version",
        "geometry",
        "hidden",
        "original_size",
        "reserved",
        "saved_state",
        "timestamp",
        "uuid_bytes",
    )

    def __init__(self, disk_type: int, current_size: int,
                 uuid_bytes: Optional[bytes] = None,
                 timestamp: Optional[int] = None,
                 data_offset: int = NO_DATA_OFFSET) -> None:
        self.cookie = FOOTER_COOKIE
        self.features = FEATURE_RESERVED
        self.format_version = FILE_FORMAT_VERSION
        self.data_offset = data_offset
        self.timestamp = vhd_timestamp() if timestamp is None else timestamp
        self.creator_app = CREATOR_APP
        self.creator_version = CREATOR_VERSION
        self.creator_host_os = CREATOR_HOST_OS
        self.original_size = current_size
        self.current_size = current_size
        self.geometry = _encode_geometry(chs_geometry(current_size))
        self.disk_type = disk_type
        self.checksum = 0
        self.uuid_bytes = uuid_bytes or uuidlib.uuid4().bytes
        self.saved_state = 0
        self.hidden = 0
        self.reserved = bytes(426)

    def _raw(self, checksum: int, hidden: Optional[int] = None) -> bytes:
        return _FOOTER_STRUCT.pack(
            self.cookie, self.features, self.format_version,
            self.data_offset, self.timestamp, self.creator_app,
            self.creator_version, self.creator_host_os, self.original_size,
            self.current_size, self.geometry, self.disk_type, checksum,
            self.uuid_bytes, self.saved_state,
            self.hidden if hidden is None else hidden, self.reserved)

    def compute_checksum(self, hidden: Optional[int] = None) -> int:
        return _checksum(self._raw(0, hidden), 64)

    def pack(self) -> bytes:
        """Serialise, storing a fresh checksum."""
        self.checksum = self.compute_checksum()
        return self._raw(self.checksum)

    def checksum_ok(self) -> bool:
        if self.compute_checksum() == self.checksum:
            return True
        # Early blktap marked disks hidden without updating the checksum.
        return bool(self.hidden and self.old_tapdisk() and
                    self.compute_checksum(0) == self.checksum)

    def old_tapdisk(self) -> bool:
        return (self.creator_app[:3] == b"tap" and
                self.creator_version in (0x00000001, 0x00010001))

    @classmethod
    def unpack(cls, data: bytes) -> "Footer":
        footer = cls.__new__(cls)
        (footer.cookie, footer.features, footer.format_version,
         footer.data_offset, footer.timestamp, footer.creator_app,
         footer.creator_version, footer.creator_host_os,
         footer.original_size, footer.current_size, footer.geometry,
         footer.disk_type, footer.checksum, footer.uuid_bytes,
         footer.saved_state, footer.hidden,
         footer.reserved) = _FOOTER_STRUCT.unpack(bytes(data[:FOOTER_SIZE]))
        return footer

    @property
    def uuid(self) -> uuidlib.UUID:
        return uuidlib.UUID(bytes=self.uuid_bytes)

    @property
    def chs(self) -> Tuple[int, int, int]:
        return (self.geometry >> 16, (self.geometry >> 8) & 0xFF,
                self.geometry & 0xFF)

    def copy(self) -> "Footer":
        return Footer.unpack(self._raw(self.checksum))


class ParentLocator:
    """One of the eight 24-byte parent locator entries of the header."""

    __slots__ = (
        "code",
        "data_length",
        "data_offset",
        "data_space",
        "reserved",
    )

    def __init__(self, code: int = PLAT_NONE, data_space: int = 0,
                 data_length: int = 0, data_offset: int = 0,
                 reserved: int = 0) -> None:
        self.code = code
        self.data_space = data_space
        self.data_length = data_length
        self.reserved = reserved
        self.data_offset = data_offset

    @property
    def space(self) -> int:
        """Bytes reserved for the locator data.  The specification says
        sectors, Windows and blktap write bytes: values below 512 are read
        as sectors, multiples of 512 as bytes, anything else is invalid
        (0), as blktap does."""
        if self.data_space < 512:
            return self.data_space * SECTOR_SIZE
        if self.data_space % SECTOR_SIZE == 0:
            return self.data_space
        return 0

    def pack(self) -> bytes:
        return _LOCATOR_STRUCT.pack(self.code, self.data_space,
                                    self.data_length, self.reserved,
                                    self.data_offset)

    @property
    def platform(self) -> str:
        return PLATFORM_NAMES.get(self.code, "0x%08x" % self.code)


class DynamicHeader:
    """The 1024-byte dynamic disk header."""

    __slots__ = (
        "block_size",
        "checksum",
        "cookie",
        "data_offset",
        "header_version",
        "locators",
        "max_table_entries",
        "parent_name_raw",
        "parent_timestamp",
        "parent_uuid_bytes",
        "reserved1",
        "reserved2",
        "table_offset",
    )

    def __init__(self, table_offset: int, max_table_entries: int,
                 block_size: int) -> None:
        self.cookie = HEADER_COOKIE
        self.data_offset = NO_DATA_OFFSET
        self.table_offset = table_offset
        self.header_version = HEADER_VERSION
        self.max_table_entries = max_table_entries
        self.block_size = block_size
        self.checksum = 0
        self.parent_uuid_bytes = bytes(16)
        self.parent_timestamp = 0
        self.reserved1 = 0
        self.parent_name_raw = bytes(512)
        self.locators = [ParentLocator() for _ in range(8)]
        self.reserved2 = bytes(256)

    def _raw(self, checksum: int) -> bytes:
        head = _HEADER_STRUCT.pack(
            self.cookie, self.data_offset, self.table_offset,
            self.header_version, self.max_table_entries, self.block_size,
            checksum, self.parent_uuid_bytes, self.parent_timestamp,
            self.reserved1, self.parent_name_raw)
        return (head + b"".join(loc.pack() for loc in self.locators) +
                self.reserved2)

    def compute_checksum(self) -> int:
        return _checksum(self._raw(0), 36)

    def pack(self) -> bytes:
        self.checksum = self.compute_checksum()
        return self._raw(self.checksum)

    def checksum_ok(self) -> bool:
        return self.compute_checksum() == self.checksum

    @classmethod
    def unpack(cls, data: bytes) -> "DynamicHeader":
        header = cls.__new__(cls)
        (header.cookie, header.data_offset, header.table_offset,
         header.header_version, header.max_table_entries, header.block_size,
         header.checksum, header.parent_uuid_bytes, header.parent_timestamp,
         header.reserved1,
         header.parent_name_raw) = _HEADER_STRUCT.unpack(bytes(data[:576]))
        header.locators = []
        for index in range(8):
            start = 576 + index * 24
            code, space, length, res, offset = _LOCATOR_STRUCT.unpack(
                bytes(data[start:start + 24]))
            header.locators.append(
                ParentLocator(code, space, length, offset, res))
        header.reserved2 = bytes(data[768:1024])
        return header

    @property
    def parent_uuid(self) -> Optional[uuidlib.UUID]:
        if self.parent_uuid_bytes == bytes(16):
            return None
        return uuidlib.UUID(bytes=self.parent_uuid_bytes)

    def parent_name(self, legacy_utf16: bool = False) -> str:
        """The parent's file name (UTF-16 big-endian, NUL-terminated)."""
        raw = self.parent_name_raw
        end = 0
        while end + 1 < len(raw) and raw[end:end + 2] != b"\x00\x00":
            end += 2
        # blktap 0.1 wrote host-endian UTF-16 with a byte order mark.
        return raw[:end].decode("utf-16" if legacy_utf16 else "utf-16-be")

    def set_parent_name(self, name: str, path: Any) -> None:
        encoded = name.encode("utf-16-be")
        if len(encoded) > 510:
            raise VHDError(path, "parent file name %r is longer than the 255 "
                           "UTF-16 units a VHD header holds" % name,
                           "give the parent a shorter file name")
        self.parent_name_raw = encoded + bytes(512 - len(encoded))


# --------------------------------------------------------------------------
# Parent locators


def _decode_locator(code: int, data: bytes) -> Optional[str]:
    """The path a MacX / W2ku / W2ru locator holds, or None."""
    try:
        if code == PLAT_MACX:
            text = data.decode("utf-8")
            if text.startswith("file://localhost/"):
                text = text[len("file://localhost"):]
            elif text.startswith("file://"):
                text = text[len("file://"):]
            else:
                return None
        elif code in (PLAT_W2KU, PLAT_W2RU):
            text = data.decode("utf-16-le").replace("\\", "/")
            if text[:2] in ("C:", "c:"):
                text = text[2:]
        else:
            return None
    except UnicodeDecodeError:
        return None
    text = text.rstrip("\x00")
    return text or None


def _relative_locator_path(child_path: str, parent_path: str) -> str:
    child_dir = os.path.dirname(os.path.realpath(child_path))
    relative = os.path.relpath(os.path.realpath(parent_path), child_dir)
    return relative if relative.startswith("../") else "./" + relative


def _locator_payloads(child_path: str, parent_path: str,
                      absolute_locator: bool) -> List[Tuple[int, bytes]]:
    """Locator entries for ``parent_path`` as seen from ``child_path``.

    Relative entries (W2ru and a MacX file URL) come first, as blktap writes
    them, so a chain keeps resolving after it is moved as a whole (tarball
    staging directory -> SR).  The absolute W2ku entry is optional because a
    stale absolute path makes ``vhd-util check`` fail after such a move.
    """
    relative = _relative_locator_path(child_path, parent_path)
    bare = relative[2:] if relative.startswith("./") else relative
    payloads = [
        (PLAT_W2RU, (".\\" + bare.replace("/", "\\")).encode("utf-16-le")),
        (PLAT_MACX, ("file://" + relative).encode("utf-8")),
    ]
    if absolute_locator:
        absolute = os.path.realpath(parent_path).replace("/", "\\")
        payloads.append((PLAT_W2KU, absolute.encode("utf-16-le")))
    return payloads


def _locator_space(payload: bytes) -> int:
    return max(SECTOR_SIZE, _round_up(len(payload), SECTOR_SIZE))


# --------------------------------------------------------------------------
# Opened VHD files


class VHDFile:
    """An opened VHD file.

    ``read``/``write`` take virtual byte offsets (any alignment).  For a
    differencing disk, sectors its bitmaps do not mark are read from
    ``parent`` (set by :func:`open_chain`); reading them without a parent
    raises :class:`VHDError`.  Objects are context managers.
    """

    def __init__(self, path: PathLike, writable: bool = False) -> None:
        self.path = _fspath(path)
        self.writable = writable
        self.parent = None  # type: Optional[VHDFile]
        self.header = None  # type: Optional[DynamicHeader]
        self.block_size = None  # type: Optional[int]
        self._block_count = 0
        self.batmap = None  # type: Optional[Dict[str, int]]
        self._bat = array.array("I")
        self._bitmaps = OrderedDict()  # type: OrderedDict
        try:
            self._fd = os.open(self.path, (os.O_RDWR if writable
                                           else os.O_RDONLY) |
                               getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            raise VHDError(self.path, "cannot open: %s" % exc.strerror,
                           "check the path and its permissions")
        try:
            self._load()
        except BaseException:
            os.close(self._fd)
            self._fd = -1
            raise

    # -- loading ----------------------------------------------------------

    def _load(self) -> None:
        mode = os.fstat(self._fd).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
            raise VHDError(self.path, "not a regular file or block device")
        size = _file_size(self._fd)
        if size < FOOTER_SIZE:
            raise VHDError(self.path, "only %d bytes long: too short for a "
                           "VHD, which ends with a 512-byte footer" % size,
                           "this is not a VHD file")
        if size % SECTOR_SIZE == FOOTER_SIZE - 1:
            # Old Virtual PC wrote 511-byte footers.
            self._footer_offset = size - (FOOTER_SIZE - 1)
            raw = _pread(self._fd, self._footer_offset, FOOTER_SIZE - 1,
                         self.path, "footer") + b"\x00"
        elif size % SECTOR_SIZE:
            raise VHDError(self.path, "length %d is not a multiple of 512 "
                           "bytes" % size, "the file is truncated or has "
                           "trailing bytes; " + _FIX_CORRUPT)
        else:
            self._footer_offset = size - FOOTER_SIZE
            raw = _pread(self._fd, self._footer_offset, FOOTER_SIZE,
                         self.path, "footer")
        footer = Footer.unpack(raw)
        if footer.cookie != FOOTER_COOKIE or not footer.checksum_ok():
            problem = ("footer cookie is %r, expected %r" % (
                footer.cookie, FOOTER_COOKIE)
                if footer.cookie != FOOTER_COOKIE else
                "footer checksum is 0x%08x, computed 0x%08x" % (
                    footer.checksum, footer.compute_checksum()))
            if _backup_footer_usable(self._fd):
                raise VHDError(self.path, problem + "; the footer copy at "
                               "offset 0 is intact",
                               "run repair() or 'xhost_vhd.py repair' "
                               "(like vhd-util repair)")
            raise VHDError(self.path, problem,
                           "this is not a VHD file or it is damaged; " +
                           _FIX_CORRUPT)
        _check_footer_basics(footer, self.path)
        self.footer = footer
        if footer.disk_type == DISK_FIXED:
            if self._footer_offset < footer.current_size:
                raise VHDError(self.path, "fixed VHD holds %d data bytes but "
                               "its virtual size is %d" % (
                                   self._footer_offset, footer.current_size),
                               "the file is truncated; " + _FIX_CORRUPT)
            return
        self._load_dynamic()

    def _load_dynamic(self) -> None:
        footer = self.footer
        offset = footer.data_offset
        if offset % SECTOR_SIZE or offset + HEADER_SIZE > self._footer_offset:
            raise VHDError(self.path, "footer data offset %d does not point "
                           "at a header inside the file" % offset,
                           _FIX_CORRUPT)
        header = DynamicHeader.unpack(
            _pread(self._fd, offset, HEADER_SIZE, self.path, "header"))
        if header.cookie != HEADER_COOKIE:
            raise VHDError(self.path, "dynamic header cookie is %r, expected "
                           "%r" % (header.cookie, HEADER_COOKIE),
                           _FIX_CORRUPT)
        if not header.checksum_ok():
            raise VHDError(self.path, "dynamic header checksum is 0x%08x, "
                           "computed 0x%08x" % (header.checksum,
                                                header.compute_checksum()),
                           _FIX_CORRUPT)
        _check_table_geometry(header, footer.current_size, self.path)
        bat_bytes = header.max_table_entries * 4
        if (header.table_offset % SECTOR_SIZE or
                header.table_offset + bat_bytes > self._footer_offset):
            raise VHDError(self.path, "BAT at offset %d (%d entries) does "
                           "not fit in the file" % (
                               header.table_offset,
                               header.max_table_entries),
                           "the file is truncated; " + _FIX_CORRUPT)
        self.header = header
        self.block_size = header.block_size
        self._sectors_per_block = header.block_size // SECTOR_SIZE
        self._bitmap_size = _bitmap_size(header.block_size)
        self._block_span = self._bitmap_size + header.block_size
        bat = array.array("I")
        bat.frombytes(_pread(self._fd, header.table_offset, bat_bytes,
                             self.path, "BAT"))
        if sys.byteorder == "little":
            bat.byteswap()
        self._bat = bat
        self._block_count = -(-footer.current_size // header.block_size)
        self._load_batmap()
        limit = self._footer_offset
        for index in range(self._block_count):
            entry = bat[index]
            if (entry != BAT_UNUSED and
                    entry * SECTOR_SIZE + self._block_span > limit):
                raise VHDError(self.path, "BAT entry for block %d points at "
                               "sector %d, past the end of the file" % (
                                   index, entry),
                               "the file is truncated; " + _FIX_CORRUPT)
        if (footer.disk_type == DISK_DIFFERENCING and
                header.parent_uuid is None):
            raise VHDError(self.path, "differencing disk with a null "
                           "parent UUID (a raw parent), which is not "
                           "supported", "convert the chain to VHD")

    def _load_batmap(self) -> None:
        """Note blktap's batmap (tap >= 1.1) so its space is not reused."""
        footer, header = self.footer, self.header
        if (footer.creator_app[:3] != b"tap" or
                footer.creator_version < 0x00010001):
            return
        offset = header.table_offset + _round_up(
            header.max_table_entries * 4, SECTOR_SIZE)
        if offset + SECTOR_SIZE > self._footer_offset:
            return
        raw = _pread(self._fd, offset, SECTOR_SIZE, self.path, "batmap")
        cookie, map_offset, map_sectors, version, checksum, _ = \
            _BATMAP_STRUCT.unpack(raw[:_BATMAP_STRUCT.size])
        if cookie != BATMAP_COOKIE:
            return
        self.batmap = {"header_offset": offset, "offset": map_offset,
                       "sectors": map_sectors, "version": version,
                       "checksum": checksum}

    # -- properties -------------------------------------------------------

    @property
    def disk_type(self) -> int:
        return self.footer.disk_type

    @property
    def disk_type_name(self) -> str:
        return DISK_TYPE_NAMES[self.footer.disk_type]

    @property
    def virtual_size(self) -> int:
        return self.footer.current_size

    @property
    def uuid(self) -> uuidlib.UUID:
        return self.footer.uuid

    @property
    def is_dynamic(self) -> bool:
        return self.footer.disk_type != DISK_FIXED

    @property
    def parent_uuid(self) -> Optional[uuidlib.UUID]:
        if self.footer.disk_type != DISK_DIFFERENCING:
            return None
        return self.header.parent_uuid

    @property
    def parent_name(self) -> Optional[str]:
        if self.footer.disk_type != DISK_DIFFERENCING:
            return None
        legacy = (self.footer.creator_app[:3] == b"tap" and
                  self.footer.creator_version == 0x00000001)
        try:
            return self.header.parent_name(legacy)
        except UnicodeDecodeError:
            return None

    @property
    def hidden(self) -> bool:
        """blktap's "hidden" flag (``vhd-util query -f``)."""
        if self.is_dynamic and self.footer.old_tapdisk():
            # Old blktap only kept the flag current in the copy at 0.
            copy = Footer.unpack(_pread(self._fd, 0, FOOTER_SIZE, self.path,
                                        "footer copy"))
            return bool(copy.hidden)
        return bool(self.footer.hidden)

    @property
    def block_count(self) -> int:
        """Blocks covering the virtual size (0 for fixed disks)."""
        return self._block_count if self.is_dynamic else 0

    @property
    def physical_size(self) -> int:
        return _file_size(self._fd)

    @property
    def footer_offset(self) -> int:
        return self._footer_offset

    def chain(self) -> List["VHDFile"]:
        """This file and its opened parents, leaf first."""
        chain = []
        node = self  # type: Optional[VHDFile]
        while node is not None:
            chain.append(node)
            node = node.parent
        return chain

    def allocated_blocks(self) -> List[int]:
        """Indices of this file's allocated blocks (not its parents')."""
        if not self.is_dynamic:
            return []
        bat = self._bat
        return [index for index in range(self._block_count)
                if bat[index] != BAT_UNUSED]

    def block_offset(self, index: int) -> Optional[int]:
        """File offset of a block's bitmap, or None when unallocated."""
        entry = self._bat[index]
        return None if entry == BAT_UNUSED else entry * SECTOR_SIZE

    def sector_bitmap(self, index: int) -> Optional[bytes]:
        """A block's sector bitmap, or None when the block is unallocated."""
        if self._bat[index] == BAT_UNUSED:
            return None
        return bytes(self._bitmap(index))

    def end_of_metadata(self) -> int:
        """First byte after the metadata (footer copy, header, BAT, batmap,
        parent locators) of a dynamic disk."""
        end = self._end_of_fixed_metadata()
        for loc in self.header.locators:
            if loc.code != PLAT_NONE:
                end = max(end, loc.data_offset + loc.space)
        return end

    def _end_of_fixed_metadata(self) -> int:
        header = self.header
        end = max(FOOTER_SIZE, self.footer.data_offset + HEADER_SIZE,
                  header.table_offset + _round_up(
                      header.max_table_entries * 4, SECTOR_SIZE))
        if self.batmap is not None:
            end = max(end, self.batmap["header_offset"] + SECTOR_SIZE,
                      self.batmap["offset"] +
                      self.batmap["sectors"] * SECTOR_SIZE)
        return end

    def parent_locator_paths(self) -> List[Tuple[str, str]]:
        """(platform, path) of each decodable path locator."""
        if self.footer.disk_type != DISK_DIFFERENCING:
            return []
        paths = []
        for loc in self.header.locators:
            if loc.code not in PATH_PLATFORMS or not loc.data_length:
                continue
            if loc.data_offset + loc.data_length > self._footer_offset:
                continue
            raw = _pread(self._fd, loc.data_offset, loc.data_length,
                         self.path, "parent locator")
            decoded = _decode_locator(loc.code, raw)
            if decoded:
                paths.append((loc.platform, decoded))
        return paths

    def data_ranges(self, stop_at: Optional["VHDFile"] = None
                    ) -> Iterator[Tuple[int, int]]:
        """Byte ranges of the virtual disk that may hold non-zero data.

        Covers this file and its opened parents, stopping before
        ``stop_at`` (an ancestor).  Ranges may overlap and are not sorted;
        everything outside them reads as zeros (or, with ``stop_at``, as
        ``stop_at`` reads).
        """
        limit = self.virtual_size
        for layer in self.chain():
            if stop_at is not None and _same_file(layer, stop_at):
                return
            end = min(limit, layer.virtual_size)
            if not layer.is_dynamic:
                yield from _file_data_ranges(layer._fd, 0, end)
                continue
            size = layer.block_size
            bat = layer._bat
            for index in range(layer._block_count):
                if bat[index] != BAT_UNUSED and index * size < end:
                    yield index * size, min(end, (index + 1) * size)

    # -- reading ----------------------------------------------------------

    def read(self, offset: int, length: int) -> bytes:
        """Read ``length`` bytes at virtual ``offset`` (any alignment)."""
        self._check_open()
        if offset < 0 or length < 0 or offset + length > self.virtual_size:
            raise VHDError(self.path, "read of %d bytes at offset %d is "
                           "outside the virtual size %d" % (
                               length, offset, self.virtual_size))
        buf = bytearray(length)
        if length:
            self._read_into(memoryview(buf), offset)
        return bytes(buf)

    def _read_into(self, view: memoryview, offset: int) -> None:
        """Fill ``view`` (zero-filled by the caller) from ``offset``."""
        length = len(view)
        if not self.is_dynamic:
            view[:] = _pread(self._fd, offset, length, self.path)
            return
        size = self.block_size
        end = offset + length
        pos = offset
        while pos < end:
            index = pos // size
            block_start = index * size
            stop = min(end, block_start + size)
            entry = self._bat[index] if index < len(self._bat) else BAT_UNUSED
            if entry == BAT_UNUSED:
                self._read_absent(view[pos - offset:stop - offset], pos)
                pos = stop
                continue
            data_at = entry * SECTOR_SIZE + self._bitmap_size - block_start
            bitmap = self._bitmap(index)
            first = (pos - block_start) // SECTOR_SIZE
            last = -(-(stop - block_start) // SECTOR_SIZE)
            for run_start, run_stop, present in _bitmap_runs(bitmap, first,
                                                             last):
                lo = max(pos, block_start + run_start * SECTOR_SIZE)
                hi = min(stop, block_start + run_stop * SECTOR_SIZE)
                part = view[lo - offset:hi - offset]
                if present:
                    part[:] = _pread(self._fd, data_at + lo, hi - lo,
                                     self.path)
                else:
                    self._read_absent(part, lo)
            pos = stop

    def _read_absent(self, view: memoryview, offset: int) -> None:
        if self.footer.disk_type != DISK_DIFFERENCING:
            return  # dynamic disks read unallocated sectors as zeros
        parent = self.parent
        if parent is None:
            raise VHDError(self.path, "reading sectors stored in the parent "
                           "of this differencing disk, which is not opened",
                           "open the file with open_chain()")
        end = min(offset + len(view), parent.virtual_size)
        if end > offset:
            parent._read_into(view[:end - offset], offset)

    def _bitmap(self, index: int) -> bytearray:
        cache = self._bitmaps
        bitmap = cache.get(index)
        if bitmap is not None:
            cache.move_to_end(index)
            return bitmap
        bitmap = bytearray(_pread(self._fd, self._bat[index] * SECTOR_SIZE,
                                  self._bitmap_size, self.path, "bitmap"))
        cache[index] = bitmap
        if len(cache) > 1024:
            cache.popitem(last=False)
        return bitmap

    # -- writing ----------------------------------------------------------

    def write(self, offset: int, data: Union[bytes, bytearray,
                                             memoryview]) -> None:
        """Write ``data`` at virtual ``offset`` (any alignment).

        Partial sectors are completed from the current contents (through
        the parent chain for a differencing disk).  New blocks are appended
        and the footer moves after them.
        """
        self._check_open()
        if not self.writable:
            raise VHDError(self.path, "opened read-only",
                           "open it with writable=True")
        length = len(data)
        if offset < 0 or offset + length > self.virtual_size:
            raise VHDError(self.path, "write of %d bytes at offset %d is "
                           "outside the virtual size %d" % (
                               length, offset, self.virtual_size),
                           "resize the disk first")
        if not length:
            return
        head = offset % SECTOR_SIZE
        tail = (offset + length) % SECTOR_SIZE
        if head or tail:
            start = offset - head
            end = _round_up(offset + length, SECTOR_SIZE)
            first = self.read(start, SECTOR_SIZE)
            last = (first if end - start == SECTOR_SIZE
                    else self.read(end - SECTOR_SIZE, SECTOR_SIZE))
            buf = bytearray(end - start)
            buf[:SECTOR_SIZE] = first
            buf[-SECTOR_SIZE:] = last
            buf[head:head + length] = data
            self._write_sectors(start, memoryview(buf))
        else:
            self._write_sectors(offset, memoryview(data).cast("B"))

    def _write_sectors(self, offset: int, view: memoryview) -> None:
        if not self.is_dynamic:
            _pwrite(self._fd, offset, view)
            return
        size = self.block_size
        end = offset + len(view)
        pos = offset
        while pos < end:
            index = pos // size
            block_start = index * size
            stop = min(end, block_start + size)
            if self._bat[index] == BAT_UNUSED:
                self._allocate_block(index)
            base = self._bat[index] * SECTOR_SIZE
            _pwrite(self._fd, base + self._bitmap_size + pos - block_start,
                    view[pos - offset:stop - offset])
            bitmap = self._bitmap(index)
            before = bytes(bitmap)
            _set_bits(bitmap, (pos - block_start) // SECTOR_SIZE,
                      (stop - block_start) // SECTOR_SIZE)
            if bitmap != before:
                _pwrite(self._fd, base, bitmap)
            pos = stop

    def _allocate_block(self, index: int) -> None:
        """Append a block at the footer's place; the footer moves after it.

        Order matters for crash safety: the block is initialised and the
        footer moved before the BAT entry makes the block visible.
        """
        offset = _round_up(self._footer_offset, SECTOR_SIZE)
        sector = offset // SECTOR_SIZE
        if sector >= BAT_UNUSED:
            raise VHDError(self.path, "file too large: a block at offset %d "
                           "cannot be addressed by the BAT" % offset)
        _pwrite(self._fd, offset, bytes(self._bitmap_size))
        new_footer = offset + self._block_span
        _pwrite(self._fd, new_footer, self.footer.pack())
        self._footer_offset = new_footer
        self._set_bat_entry(index, sector)
        self._bitmaps[index] = bytearray(self._bitmap_size)

    def _set_bat_entry(self, index: int, sector: int) -> None:
        _pwrite(self._fd, self.header.table_offset + 4 * index,
                struct.pack(">I", sector))
        self._bat[index] = sector

    def _write_footers(self) -> None:
        raw = self.footer.pack()
        if self.is_dynamic:
            _pwrite(self._fd, 0, raw)
        _pwrite(self._fd, self._footer_offset, raw)
        if self._footer_offset + FOOTER_SIZE < _file_size(self._fd):
            os.ftruncate(self._fd, self._footer_offset + FOOTER_SIZE)

    def _write_header(self) -> None:
        _pwrite(self._fd, self.footer.data_offset, self.header.pack())

    def _move_blocks_out_of(self, start: int, end: int) -> None:
        """Relocate blocks overlapping [start, end) to the end of the file,
        and move the footer to ``end`` or later, so metadata can grow there.
        """
        end = _round_up(end, SECTOR_SIZE)
        victims = sorted(
            (self._bat[i], i) for i in range(self._block_count)
            if self._bat[i] != BAT_UNUSED and
            self._bat[i] * SECTOR_SIZE < end and
            self._bat[i] * SECTOR_SIZE + self._block_span > start)
        for sector, index in victims:
            source = sector * SECTOR_SIZE
            target = max(_round_up(self._footer_offset, SECTOR_SIZE), end)
            # The bitmap overwrites whatever is at target (the old footer);
            # past it the file reads as zeros, so zero data can stay holes.
            _pwrite(self._fd, target, _pread(self._fd, source,
                                             self._bitmap_size, self.path))
            done = self._bitmap_size
            while done < self._block_span:
                count = min(COPY_CHUNK, self._block_span - done)
                _write_sparse(self._fd, target + done,
                              _pread(self._fd, source + done, count,
                                     self.path))
                done += count
            self._footer_offset = target + self._block_span
            _pwrite(self._fd, self._footer_offset, self.footer.pack())
            self._set_bat_entry(index, target // SECTOR_SIZE)
            self._bitmaps.pop(index, None)
        if self._footer_offset < end:
            self._footer_offset = end
            _pwrite(self._fd, end, self.footer.pack())

    def _write_locators(self, payloads: Sequence[Tuple[int, bytes]]) -> None:
        """Replace the parent locators; the caller writes the header."""
        start = _round_up(self._end_of_fixed_metadata(), SECTOR_SIZE)
        end = start + sum(_locator_space(p) for _, p in payloads)
        self._move_blocks_out_of(start, end)
        locators = []
        offset = start
        for code, payload in payloads:
            space = _locator_space(payload)
            _pwrite(self._fd, offset, payload + bytes(space - len(payload)))
            locators.append(ParentLocator(code, space, len(payload), offset))
            offset += space
        while len(locators) < 8:
            locators.append(ParentLocator())
        self.header.locators = locators

    def set_hidden(self, hidden: bool) -> None:
        """Set blktap's hidden flag (``vhd-util set -f hidden -v 0|1``)."""
        self._check_writable()
        self.footer.hidden = 1 if hidden else 0
        self._write_footers()

    def flush(self) -> None:
        """Make written data durable (fsync)."""
        self._check_open()
        os.fsync(self._fd)

    # -- housekeeping -----------------------------------------------------

    def _check_open(self) -> None:
        if self._fd < 0:
            raise VHDError(self.path, "file is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if not self.writable:
            raise VHDError(self.path, "opened read-only",
                           "open it with writable=True")

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        """Close this file and its opened parents."""
        for layer in self.chain():
            if layer._fd >= 0:
                os.close(layer._fd)
                layer._fd = -1

    def __enter__(self) -> "VHDFile":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        fd = getattr(self, "_fd", -1)
        if fd >= 0:
            os.close(fd)
            self._fd = -1

    def __repr__(self) -> str:
        return "<VHDFile %s %s %d bytes>" % (
            self.path, DISK_TYPE_NAMES.get(self.footer.disk_type, "?"),
            self.virtual_size)


def _same_file(a: VHDFile, b: VHDFile) -> bool:
    if a is b:
        return True
    sa, sb = os.fstat(a.fileno()), os.fstat(b.fileno())
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _backup_footer_usable(fd: int) -> bool:
    try:
        backup = Footer.unpack(os.pread(fd, FOOTER_SIZE, 0).ljust(
            FOOTER_SIZE, b"\x00"))
    except OSError:
        return False
    return (backup.cookie == FOOTER_COOKIE and backup.checksum_ok() and
            backup.disk_type in (DISK_DYNAMIC, DISK_DIFFERENCING))


def _check_footer_basics(footer: Footer, path: Any) -> None:
    """What any reader needs from a footer (checksum already checked)."""
    if footer.disk_type not in DISK_TYPE_NAMES:
        raise VHDError(path, "unknown disk type %d (expected 2 fixed, 3 "
                       "dynamic or 4 differencing)" % footer.disk_type,
                       _FIX_CORRUPT)
    if footer.current_size == 0 or footer.current_size % SECTOR_SIZE:
        raise VHDError(path, "virtual size %d is not a positive multiple of "
                       "512" % footer.current_size, _FIX_CORRUPT)
    if footer.current_size > MAX_VIRTUAL_SIZE:
        raise VHDError(path, "virtual size %d exceeds the 2040 GiB VHD "
                       "limit" % footer.current_size,
                       "such disks are not supported by XAPI's VHD SRs")


def _check_table_geometry(header: DynamicHeader, virtual_size: int,
                          path: Any) -> None:
    block_size = header.block_size
    if (block_size < MIN_BLOCK_SIZE or block_size > MAX_BLOCK_SIZE or
            block_size & (block_size - 1)):
        raise VHDError(path, "invalid block size %d (a power of two between "
                       "%d and %d is expected)" % (
                           block_size, MIN_BLOCK_SIZE, MAX_BLOCK_SIZE),
                       _FIX_CORRUPT)
    needed = -(-virtual_size // block_size)
    if header.max_table_entries < needed:
        raise VHDError(path, "BAT has %d entries but the virtual size needs "
                       "%d" % (header.max_table_entries, needed),
                       _FIX_CORRUPT)
    if header.max_table_entries * block_size > MAX_TABLE_SPAN:
        raise VHDError(path, "BAT has %d entries of %d bytes, more than the "
                       "2 TiB a VHD may span" % (
                           header.max_table_entries, block_size),
                       _FIX_CORRUPT)


# --------------------------------------------------------------------------
# Opening chains


def open_vhd(path: PathLike, writable: bool = False) -> VHDFile:
    """Open one VHD file (its parent, if any, is not opened)."""
    return VHDFile(path, writable)


def _parent_candidates(vhd: VHDFile,
                       search_dirs: Optional[Sequence[PathLike]]) -> List[str]:
    name = vhd.parent_name
    locators = [p for _, p in vhd.parent_locator_paths()]
    child_dir = os.path.dirname(os.path.realpath(vhd.path))
    candidates = []
    names = ([name] if name else []) + [os.path.basename(p)
                                        for p in locators]
    for directory in search_dirs or ():
        for base in names:
            candidates.append(os.path.join(_fspath(directory), base))
    for located in locators:
        candidates.append(located if os.path.isabs(located)
                          else os.path.join(child_dir, located))
    if name:
        candidates.append(os.path.join(child_dir, name))
    unique = []
    for candidate in candidates:
        candidate = os.path.normpath(candidate)
        if candidate not in unique:
            unique.append(candidate)
    return unique


def find_parent(vhd: VHDFile,
                search_dirs: Optional[Sequence[PathLike]] = None) -> str:
    """Path of the parent of a differencing disk, checked by UUID.

    Looks in ``search_dirs`` first (for the header's parent name and the
    locators' file names), then at each parent locator (relative ones
    against the child's directory), then for the header's parent name next
    to the child.  The first candidate whose footer UUID equals the child's
    parent UUID wins.
    """
    if vhd.disk_type != DISK_DIFFERENCING:
        raise VHDError(vhd.path, "is a %s disk, it has no parent"
                       % vhd.disk_type_name)
    wanted = vhd.header.parent_uuid
    mismatches = []
    tried = []
    for candidate in _parent_candidates(vhd, search_dirs):
        if not os.path.exists(candidate):
            tried.append(candidate)
            continue
        try:
            with VHDFile(candidate) as parent:
                found = parent.uuid
        except VHDError as exc:
            mismatches.append("%s (%s)" % (candidate, exc.problem))
            continue
        if found == wanted:
            return candidate
        mismatches.append("%s has UUID %s" % (candidate, found))
    if mismatches:
        raise VHDError(vhd.path, "parent UUID mismatch: the child expects "
                       "parent %s but %s" % (wanted, "; ".join(mismatches)),
                       "point the child at the right parent with "
                       "set_parent() (vhd-util modify -p)")
    raise VHDError(vhd.path, "parent %r (UUID %s) not found; tried %s" % (
        vhd.parent_name, wanted, ", ".join(tried) or "no candidates"),
        "put the parent next to the child, pass search_dirs, or re-point "
        "the child with set_parent()")


def open_chain(path: PathLike, writable: bool = False,
               search_dirs: Optional[Sequence[PathLike]] = None,
               max_depth: int = MAX_CHAIN_DEPTH) -> VHDFile:
    """Open a VHD and, for differencing disks, its parents.

    Returns the leaf; ``leaf.parent`` links the chain.  Only the leaf is
    opened ``writable``.  Refuses loops, UUID mismatches and chains of more
    than ``max_depth`` files.
    """
    leaf = VHDFile(path, writable)
    try:
        seen = {_inode(leaf)}
        node = leaf
        depth = 1
        while node.disk_type == DISK_DIFFERENCING:
            parent_path = find_parent(node, search_dirs)
            parent = VHDFile(parent_path)
            node.parent = parent
            if _inode(parent) in seen:
                raise VHDError(leaf.path, "parent chain loops back to %s"
                               % parent_path, "re-point the child at the "
                               "right parent with set_parent()")
            seen.add(_inode(parent))
            depth += 1
            if depth > max_depth:
                raise VHDError(leaf.path, "chain is deeper than %d files"
                               % max_depth, "coalesce the chain (or raise "
                               "max_depth)")
            node = parent
    except BaseException:
        leaf.close()
        raise
    return leaf


def _inode(vhd: VHDFile) -> Tuple[int, int]:
    st = os.fstat(vhd.fileno())
    return st.st_dev, st.st_ino


# --------------------------------------------------------------------------
# Creating files


class _NewFile:
    """Create a file, removing it again if anything fails.

    Without ``overwrite`` the final name is created exclusively; with it,
    a temporary file is renamed over the old one at the end, so a failure
    never destroys the old file.
    """

    def __init__(self, path: PathLike, overwrite: bool) -> None:
        self.path = _fspath(path)
        self.overwrite = overwrite
        if overwrite:
            directory = os.path.dirname(os.path.abspath(self.path))
            self.work = os.path.join(directory, ".%s.%s.tmp" % (
                os.path.basename(self.path), uuidlib.uuid4().hex[:8]))
        else:
            self.work = self.path
        self.fd = -1

    def __enter__(self) -> "_NewFile":
        try:
            self.fd = os.open(self.work, os.O_RDWR | os.O_CREAT | os.O_EXCL |
                              getattr(os, "O_CLOEXEC", 0), 0o644)
        except FileExistsError:
            raise VHDError(self.path, "already exists",
                           "choose another name, remove the file, or pass "
                           "overwrite=True")
        except OSError as exc:
            raise VHDError(self.path, "cannot create: %s" % exc.strerror,
                           "check the directory exists and is writable")
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        os.close(self.fd)
        if exc_type is not None:
            try:
                os.unlink(self.work)
            except OSError:
                pass
            if isinstance(exc, OSError):
                raise VHDError(self.path, "write failed: %s" % exc.strerror)
            return
        if self.work != self.path:
            os.replace(self.work, self.path)


def _normalise_size(size: Any, chs_round: bool, path: Any) -> int:
    size = _validate_size(size, path)
    if chs_round:
        size = _validate_size(chs_rounded_size(size), path,
                              "CHS-rounded virtual size")
    return size


def _timestamp(unix_time: Optional[float]) -> int:
    return vhd_timestamp(unix_time)


def create_fixed(path: PathLike, size: int, chs_round: bool = False,
                 uuid: Any = None, timestamp: Optional[float] = None,
                 overwrite: bool = False) -> uuidlib.UUID:
    """Create a fixed VHD: a sparse data area of ``size`` bytes + footer.

    ``size`` is rounded up to a sector; with ``chs_round`` it is rounded up
    to a CHS-addressable size like ``qemu-img create`` does, otherwise it is
    kept exact (like ``force_size=on`` and blktap).  ``timestamp`` is a UNIX
    time (default now).  Returns the disk's UUID.
    """
    size = _normalise_size(size, chs_round, path)
    footer = Footer(DISK_FIXED, size, _uuid_bytes(uuid, path),
                    _timestamp(timestamp))
    with _NewFile(path, overwrite) as new:
        os.ftruncate(new.fd, size)
        _pwrite(new.fd, size, footer.pack())
    return footer.uuid


def _dynamic_layout(size: int, block_size: int, max_size: Optional[int],
                    path: Any) -> Tuple[int, int]:
    span = size
    if max_size is not None:
        span = max(size, _validate_size(max_size, path, "max_size"))
    entries = -(-span // block_size)
    return entries, _round_up(entries * 4, SECTOR_SIZE)


def create_dynamic(path: PathLike, size: int,
                   block_size: int = DEFAULT_BLOCK_SIZE,
                   max_size: Optional[int] = None, chs_round: bool = False,
                   uuid: Any = None, timestamp: Optional[float] = None,
                   overwrite: bool = False) -> uuidlib.UUID:
    """Create an empty dynamic VHD.

    ``max_size`` sizes the BAT for later growth without moving data (as
    ``vhd-util create -S`` does).  Other arguments as in
    :func:`create_fixed`.  Returns the disk's UUID.
    """
    size = _normalise_size(size, chs_round, path)
    block_size = _validate_block_size(block_size, path)
    entries, bat_bytes = _dynamic_layout(size, block_size, max_size, path)
    footer = Footer(DISK_DYNAMIC, size, _uuid_bytes(uuid, path),
                    _timestamp(timestamp), data_offset=FOOTER_SIZE)
    header = DynamicHeader(FOOTER_SIZE + HEADER_SIZE, entries, block_size)
    raw_footer = footer.pack()
    with _NewFile(path, overwrite) as new:
        _pwrite(new.fd, 0, raw_footer + header.pack() +
                b"\xff" * bat_bytes + raw_footer)
    return footer.uuid


def create_differencing(path: PathLike, parent_path: PathLike,
                        size: Optional[int] = None,
                        block_size: int = DEFAULT_BLOCK_SIZE,
                        absolute_locator: bool = False, uuid: Any = None,
                        timestamp: Optional[float] = None,
                        overwrite: bool = False,
                        search_dirs: Optional[Sequence[PathLike]] = None,
                        max_depth: int = MAX_CHAIN_DEPTH) -> uuidlib.UUID:
    """Create an empty differencing VHD whose parent is ``parent_path``.

    The virtual size defaults to the parent's and may not be smaller.  The
    parent timestamp is the parent file's modification time, as blktap
    records it.  Locators: W2ru and MacX with the relative path, plus W2ku
    with the absolute path when ``absolute_locator``.  Refuses if the new
    chain would be deeper than ``max_depth``.  Returns the new UUID.
    """
    path = _fspath(path)
    parent_path = _fspath(parent_path)
    block_size = _validate_block_size(block_size, path)
    with open_chain(parent_path, search_dirs=search_dirs,
                    max_depth=max_depth) as parent:
        depth = len(parent.chain()) + 1
        parent_size = parent.virtual_size
        parent_uuid = parent.footer.uuid_bytes
        parent_mtime = os.fstat(parent.fileno()).st_mtime
    if depth > max_depth:
        raise VHDError(path, "the chain would be %d files deep, more than "
                       "the limit of %d" % (depth, max_depth),
                       "coalesce the parent chain first")
    if size is None:
        size = parent_size
    size = _validate_size(size, path)
    if size < parent_size:
        raise VHDError(path, "virtual size %d is smaller than the parent's "
                       "%d" % (size, parent_size),
                       "use at least the parent's size")
    entries, bat_bytes = _dynamic_layout(size, block_size, None, path)
    footer = Footer(DISK_DIFFERENCING, size, _uuid_bytes(uuid, path),
                    _timestamp(timestamp), data_offset=FOOTER_SIZE)
    header = DynamicHeader(FOOTER_SIZE + HEADER_SIZE, entries, block_size)
    header.parent_uuid_bytes = parent_uuid
    header.parent_timestamp = vhd_timestamp(parent_mtime)
    # Like blktap, name the parent after its canonical path (no symlinks),
    # so the header name matches the locators.
    header.set_parent_name(os.path.basename(os.path.realpath(parent_path)),
                           path)
    payloads = _locator_payloads(path, parent_path, absolute_locator)
    offset = FOOTER_SIZE + HEADER_SIZE + bat_bytes
    body = bytearray()
    for index, (code, payload) in enumerate(payloads):
        space = _locator_space(payload)
        header.locators[index] = ParentLocator(code, space, len(payload),
                                               offset + len(body))
        body += payload + bytes(space - len(payload))
    raw_footer = footer.pack()
    with _NewFile(path, overwrite) as new:
        _pwrite(new.fd, 0, raw_footer + header.pack() + b"\xff" * bat_bytes +
                bytes(body) + raw_footer)
    return footer.uuid


# --------------------------------------------------------------------------
# Chain maintenance


def set_parent(child_path: PathLike, parent_path: PathLike,
               absolute_locator: bool = False) -> None:
    """Point a differencing disk at a new parent (``vhd-util modify -p``).

    Rewrites the parent UUID (the parent's footer UUID), the parent
    timestamp (the parent file's modification time, as blktap does), the
    parent's name and the locators (see :func:`create_differencing`), then
    the header checksum.  Data blocks in the way of longer locators are
    moved to the end of the file.  Refuses a parent whose own chain leads
    back to the child.
    """
    child_path = _fspath(child_path)
    parent_path = _fspath(parent_path)
    with VHDFile(parent_path) as parent:
        parent_uuid = parent.footer.uuid_bytes
        parent_mtime = os.fstat(parent.fileno()).st_mtime
        parent_inode = _inode(parent)
    with VHDFile(child_path, writable=True) as child:
        if child.disk_type != DISK_DIFFERENCING:
            raise VHDError(child_path, "is a %s disk; only differencing "
                           "disks have a parent" % child.disk_type_name)
        if _inode(child) == parent_inode:
            raise VHDError(child_path, "cannot be its own parent",
                           "pass the parent's path")
        _refuse_loop(child, parent_path)
        child.header.parent_uuid_bytes = parent_uuid
        child.header.parent_timestamp = vhd_timestamp(parent_mtime)
        child.header.set_parent_name(
            os.path.basename(os.path.realpath(parent_path)), child_path)
        child._write_locators(_locator_payloads(child_path, parent_path,
                                                absolute_locator))
        child._write_header()


def _refuse_loop(child: VHDFile, parent_path: str) -> None:
    """Follow the would-be parent's chain as far as it resolves."""
    target = _inode(child)
    node_path = parent_path
    for _ in range(MAX_CHAIN_DEPTH * 4):
        try:
            node = VHDFile(node_path)
        except VHDError:
            return
        with node:
            if _inode(node) == target:
                raise VHDError(child.path, "%s descends from this disk, so "
                               "making it the parent would create a loop"
                               % parent_path, "pick a parent that is not "
                               "a descendant")
            if node.disk_type != DISK_DIFFERENCING:
                return
            try:
                node_path = find_parent(node)
            except VHDError:
                return


def get_hidden(path: PathLike) -> bool:
    """blktap's hidden flag (``vhd-util query -n path -f``)."""
    with VHDFile(path) as vhd:
        return vhd.hidden


def set_hidden(path: PathLike, hidden: bool = True) -> None:
    """Set or clear blktap's hidden flag (``vhd-util set -f hidden``)."""
    with VHDFile(path, writable=True) as vhd:
        vhd.set_hidden(hidden)


def coalesce(child_path: PathLike,
             search_dirs: Optional[Sequence[PathLike]] = None,
             grow_parent: bool = True) -> str:
    """Write every sector the child's bitmaps mark into its parent.

    Returns the parent's path.  The child is left unchanged; afterwards the
    caller normally re-points the child's children at the parent and
    deletes the child.  Coalescing changes what other children of the same
    parent see, so do it only when the child is the parent's only child.
    With ``grow_parent`` a parent smaller than the child is resized first.
    """
    with VHDFile(child_path) as child:
        if child.disk_type != DISK_DIFFERENCING:
            raise VHDError(child.path, "is a %s disk; only a differencing "
                           "disk can be coalesced into a parent"
                           % child.disk_type_name)
        parent_path = find_parent(child, search_dirs)
        with VHDFile(parent_path) as probe:
            parent_size = probe.virtual_size
        if parent_size < child.virtual_size:
            if not grow_parent:
                raise VHDError(parent_path, "parent (%d bytes) is smaller "
                               "than the child (%d bytes)" % (
                                   parent_size, child.virtual_size),
                               "pass grow_parent=True or resize the parent")
            resize(parent_path, child.virtual_size)
        with VHDFile(parent_path, writable=True) as parent:
            _copy_marked_sectors(child, parent)
            parent.flush()
    return parent_path


def _copy_marked_sectors(child: VHDFile, target: VHDFile) -> None:
    size = child.block_size
    for index in child.allocated_blocks():
        block_start = index * size
        sectors = min(size, child.virtual_size - block_start) // SECTOR_SIZE
        data_at = (child.block_offset(index) + child._bitmap_size -
                   block_start)
        for first, stop, present in _bitmap_runs(child._bitmap(index), 0,
                                                 sectors):
            if not present:
                continue
            lo = block_start + first * SECTOR_SIZE
            hi = block_start + stop * SECTOR_SIZE
            while lo < hi:
                count = min(COPY_CHUNK, hi - lo)
                target.write(lo, _pread(child.fileno(), data_at + lo, count,
                                        child.path))
                lo += count


def resize(path: PathLike, new_size: int) -> None:
    """Grow a VHD's virtual size (shrinking is refused, as XAPI does).

    Dynamic and differencing disks keep their data in place when the BAT
    already has room (see ``max_size`` of :func:`create_dynamic`); otherwise
    the BAT grows in place and the data blocks in its way move to the end of
    the file.  Fixed disks grow sparsely.  Not crash-safe: no journal.
    """
    with VHDFile(path, writable=True) as vhd:
        new_size = _validate_size(new_size, vhd.path, "new size")
        if new_size < vhd.virtual_size:
            raise VHDError(vhd.path, "cannot shrink from %d to %d bytes"
                           % (vhd.virtual_size, new_size),
                           "shrinking would lose data; copy the data to a "
                           "smaller disk instead")
        if new_size == vhd.virtual_size:
            return
        footer = vhd.footer
        if not vhd.is_dynamic:
            old = vhd.virtual_size
            os.ftruncate(vhd.fileno(), old)
            footer.current_size = new_size
            footer.geometry = _encode_geometry(chs_geometry(new_size))
            vhd._footer_offset = new_size
            _pwrite(vhd.fileno(), new_size, footer.pack())
            return
        header = vhd.header
        needed = -(-new_size // header.block_size)
        if needed > header.max_table_entries:
            _grow_bat(vhd, needed)
        footer.current_size = new_size
        footer.geometry = _encode_geometry(chs_geometry(new_size))
        vhd._write_footers()


def _grow_bat(vhd: VHDFile, entries: int) -> None:
    header = vhd.header
    if vhd.batmap is not None:
        raise VHDError(vhd.path, "growing the BAT of a blktap file with a "
                       "batmap is not supported", "convert the disk (e.g. "
                       "to a stream and back) before resizing it")
    if header.table_offset < vhd.footer.data_offset:
        raise VHDError(vhd.path, "the BAT lies before the header; growing it "
                       "in place is not supported", "convert the disk first")
    payloads = []
    for loc in header.locators:
        if loc.code != PLAT_NONE and loc.data_length:
            payloads.append((loc.code, _pread(vhd.fileno(), loc.data_offset,
                                              loc.data_length, vhd.path,
                                              "parent locator")))
    old_bytes = _round_up(header.max_table_entries * 4, SECTOR_SIZE)
    new_bytes = _round_up(entries * 4, SECTOR_SIZE)
    table_end = header.table_offset + new_bytes
    vhd._move_blocks_out_of(header.table_offset + old_bytes, table_end)
    bat = array.array("I", vhd._bat)
    bat.extend([BAT_UNUSED] * (entries - len(bat)))
    disk = array.array("I", bat)
    if sys.byteorder == "little":
        disk.byteswap()
    raw = disk.tobytes()
    _pwrite(vhd.fileno(), header.table_offset,
            raw + b"\xff" * (new_bytes - len(raw)))
    vhd._bat = bat
    header.max_table_entries = entries
    vhd._block_count = -(-vhd.virtual_size // header.block_size)
    if payloads:
        vhd._write_locators(payloads)
    else:
        header.locators = [ParentLocator() for _ in range(8)]
    vhd._write_header()


def repair(path: PathLike) -> bool:
    """Rewrite a lost or damaged primary footer from the copy at offset 0
    (``vhd-util repair``).  Returns False when the footer was fine."""
    path = _fspath(path)
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError as exc:
        raise VHDError(path, "cannot open: %s" % exc.strerror)
    try:
        size = _file_size(fd)
        if size >= FOOTER_SIZE and size % SECTOR_SIZE == 0:
            primary = Footer.unpack(_pread(fd, size - FOOTER_SIZE,
                                           FOOTER_SIZE, path))
            if primary.cookie == FOOTER_COOKIE and primary.checksum_ok():
                return False
        if not _backup_footer_usable(fd):
            raise VHDError(path, "neither the footer nor its copy at offset "
                           "0 is valid", "cannot repair; " + _FIX_CORRUPT)
        backup = Footer.unpack(_pread(fd, 0, FOOTER_SIZE, path))
        header = DynamicHeader.unpack(_pread(fd, backup.data_offset,
                                             HEADER_SIZE, path, "header"))
        if header.cookie != HEADER_COOKIE or not header.checksum_ok():
            raise VHDError(path, "the dynamic header is damaged too",
                           "cannot repair; " + _FIX_CORRUPT)
        _check_table_geometry(header, backup.current_size, path)
        bat = array.array("I")
        bat.frombytes(_pread(fd, header.table_offset,
                             header.max_table_entries * 4, path, "BAT"))
        if sys.byteorder == "little":
            bat.byteswap()
        span = _bitmap_size(header.block_size) + header.block_size
        end = max(backup.data_offset + HEADER_SIZE, header.table_offset +
                  _round_up(header.max_table_entries * 4, SECTOR_SIZE))
        for loc in header.locators:
            if loc.code != PLAT_NONE:
                end = max(end, loc.data_offset + loc.space)
        for entry in bat:
            if entry != BAT_UNUSED:
                end = max(end, entry * SECTOR_SIZE + span)
        end = _round_up(end, SECTOR_SIZE)
        if end > size:
            raise VHDError(path, "data blocks extend past the end of the "
                           "file", "cannot repair a truncated file; " +
                           _FIX_CORRUPT)
        _pwrite(fd, end, backup.pack())
        os.ftruncate(fd, end + FOOTER_SIZE)
        return True
    finally:
        os.close(fd)


# --------------------------------------------------------------------------
# Validation (vhd-util check)


def check(path: PathLike, parents: bool = False,
          search_dirs: Optional[Sequence[PathLike]] = None,
          ignore_timestamps: bool = False,
          max_depth: int = MAX_CHAIN_DEPTH,
          now: Optional[float] = None) -> List[str]:
    """Validate a VHD, and with ``parents`` its whole chain.

    The rules are blktap's ``vhd-util check [-p]``: cookies, checksums,
    features, versions, disk type, data offsets, geometry, reserved fields,
    the footer copy at offset 0, header fields, BAT bounds (every block
    after the metadata, before the footer, no two overlapping), batmap,
    parent locators (each must decode, name the header's parent file and
    resolve to a file whose footer UUID equals the child's parent UUID).
    Like vhd-util, timestamps are only checked against the clock (at most
    30 minutes in the future) -- vhd-util does not compare the parent
    timestamp with the parent.  Beyond vhd-util, metadata structures may
    not overlap, chains may not loop and may hold at most ``max_depth``
    files.  Returns the checked paths, leaf first; raises
    :class:`VHDError` at the first problem.
    """
    path = _fspath(path)
    clock = time.time() if now is None else now
    checked = [path]
    parent = _check_one(path, search_dirs, ignore_timestamps, clock)
    if not parents:
        return checked
    seen = {_stat_key(path)}
    while parent is not None:
        key = _stat_key(parent)
        if key in seen:
            raise VHDError(path, "parent chain loops back to %s" % parent,
                           "re-point the child at the right parent with "
                           "set_parent()")
        seen.add(key)
        checked.append(parent)
        if len(checked) > max_depth:
            raise VHDError(path, "chain is deeper than %d files" % max_depth,
                           "coalesce the chain")
        parent = _check_one(parent, search_dirs, ignore_timestamps, clock)
    return checked


def _stat_key(path: str) -> Tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _footer_problem(footer: Footer, clock: float,
                    ignore_timestamps: bool) -> Optional[str]:
    if footer.cookie != FOOTER_COOKIE:
        return "invalid cookie %r (expected %r)" % (footer.cookie,
                                                    FOOTER_COOKIE)
    if not footer.checksum_ok():
        return "invalid checksum 0x%08x (computed 0x%08x)" % (
            footer.checksum, footer.compute_checksum())
    if not footer.features & FEATURE_RESERVED:
        return "the always-set 'reserved' feature bit is clear"
    if footer.features & ~(FEATURE_TEMPORARY | FEATURE_RESERVED):
        return "unknown feature bits 0x%08x" % footer.features
    if footer.format_version != FILE_FORMAT_VERSION:
        return "unsupported file format version 0x%08x" % (
            footer.format_version)
    if (footer.disk_type not in (DISK_DYNAMIC, DISK_DIFFERENCING) and
            footer.data_offset != NO_DATA_OFFSET):
        return "data offset 0x%x set on a non-dynamic disk" % (
            footer.data_offset)
    if (not ignore_timestamps and
            _unix_time(footer.timestamp) > clock + TIMESTAMP_SLACK):
        return "creation time %s is in the future (clocks out of sync?)" % (
            time.strftime("%Y-%m-%d %H:%M:%S UTC",
                          time.gmtime(_unix_time(footer.timestamp))))
    if (footer.creator_app[:3] == b"tap" and
            footer.creator_version > TAP_LATEST_VERSION):
        return "unsupported tap creator version 0x%08x" % (
            footer.creator_version)
    if _encode_geometry(chs_geometry(footer.current_size)) < footer.geometry:
        return "geometry %d/%d/%d is larger than the virtual size allows" % (
            footer.chs)
    if footer.disk_type not in DISK_TYPE_NAMES:
        return "invalid disk type %d" % footer.disk_type
    if footer.saved_state not in (0, 1):
        return "invalid saved state %d" % footer.saved_state
    if footer.hidden not in (0, 1):
        return "invalid hidden flag %d" % footer.hidden
    if footer.reserved != bytes(len(footer.reserved)):
        return "non-zero reserved bytes"
    try:
        _check_footer_basics(footer, "")
    except VHDError as exc:
        return exc.problem
    return None


def _check_one(path: str, search_dirs: Optional[Sequence[PathLike]],
               ignore_timestamps: bool, clock: float) -> Optional[str]:
    """Check one file; return its parent's path (None without parent)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise VHDError(path, "cannot stat: %s" % exc.strerror)
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)):
        raise VHDError(path, "not a regular file or block device")
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise VHDError(path, "cannot open: %s" % exc.strerror)
    try:
        return _check_fd(path, fd, search_dirs, ignore_timestamps, clock)
    finally:
        os.close(fd)


def _check_fd(path: str, fd: int, search_dirs: Optional[Sequence[PathLike]],
              ignore_timestamps: bool, clock: float) -> Optional[str]:
    eof = _file_size(fd)
    if eof < FOOTER_SIZE:
        raise VHDError(path, "only %d bytes long, too short for a VHD" % eof)
    if eof % SECTOR_SIZE not in (0, SECTOR_SIZE - 1):
        raise VHDError(path, "invalid file size %d (not a multiple of 512)"
                       % eof, _FIX_CORRUPT)
    footer_at = eof - (FOOTER_SIZE if eof % SECTOR_SIZE == 0
                       else FOOTER_SIZE - 1)
    primary = Footer.unpack(_pread(fd, footer_at, eof - footer_at,
                                   path).ljust(FOOTER_SIZE, b"\x00"))
    problem = _footer_problem(primary, clock, ignore_timestamps)
    if problem:
        fix = ("the copy at offset 0 is intact: run repair()"
               if _backup_footer_usable(fd) else _FIX_CORRUPT)
        raise VHDError(path, "primary footer invalid: " + problem, fix)
    if primary.disk_type == DISK_FIXED:
        if footer_at != primary.current_size:
            raise VHDError(path, "fixed VHD has %d data bytes but a virtual "
                           "size of %d" % (footer_at, primary.current_size),
                           _FIX_CORRUPT)
        return None
    backup = Footer.unpack(_pread(fd, 0, FOOTER_SIZE, path, "footer copy"))
    problem = _footer_problem(backup, clock, ignore_timestamps)
    if problem:
        raise VHDError(path, "footer copy at offset 0 invalid: " + problem,
                       _FIX_CORRUPT)
    if backup._raw(backup.checksum) != primary._raw(primary.checksum):
        unhidden = backup.copy()
        unhidden.hidden = 0
        if not (backup.hidden and backup.old_tapdisk() and
                unhidden._raw(backup.checksum) ==
                primary._raw(primary.checksum)):
            raise VHDError(path, "the footer and its copy at offset 0 "
                           "differ", _FIX_CORRUPT)
    _check_header_raw(path, fd, primary, eof, clock, ignore_timestamps)
    with VHDFile(path) as vhd:
        if vhd.disk_type == DISK_DIFFERENCING:
            _check_locator_entries(vhd)
        _check_metadata_layout(vhd)
        _check_blocks(vhd)
        if vhd.batmap is not None:
            _check_batmap(vhd)
        if vhd.disk_type == DISK_DIFFERENCING:
            return _check_locators(vhd, search_dirs)
    return None


def _check_header_raw(path: str, fd: int, footer: Footer, eof: int,
                      clock: float, ignore_timestamps: bool) -> None:
    offset = footer.data_offset
    if offset % SECTOR_SIZE or offset + HEADER_SIZE > eof - FOOTER_SIZE:
        raise VHDError(path, "footer data offset 0x%x does not point at a "
                       "header inside the file" % offset, _FIX_CORRUPT)
    header = DynamicHeader.unpack(_pread(fd, offset, HEADER_SIZE, path,
                                         "header"))

    def bad(problem: str) -> VHDError:
        return VHDError(path, "header invalid: " + problem, _FIX_CORRUPT)

    if header.cookie != HEADER_COOKIE:
        raise bad("cookie %r (expected %r)" % (header.cookie, HEADER_COOKIE))
    if not header.checksum_ok():
        raise bad("checksum 0x%08x (computed 0x%08x)" % (
            header.checksum, header.compute_checksum()))
    if header.header_version != HEADER_VERSION:
        raise bad("version 0x%08x" % header.header_version)
    if header.data_offset != NO_DATA_OFFSET:
        raise bad("data offset 0x%x (must be all ones)" % header.data_offset)
    if (header.table_offset <= 0 or header.table_offset % SECTOR_SIZE or
            header.table_offset + header.max_table_entries * 4 >
            eof - FOOTER_SIZE):
        raise bad("BAT offset %d with %d entries does not fit in the file"
                  % (header.table_offset, header.max_table_entries))
    block = header.block_size
    if block <= 0 or block & (block - 1):
        raise bad("block size %d is not a power of two" % block)
    if header.reserved1 or header.reserved2 != bytes(256):
        raise bad("non-zero reserved bytes")
    try:
        _check_table_geometry(header, footer.current_size, path)
    except VHDError as exc:
        raise bad(exc.problem)
    if footer.disk_type == DISK_DIFFERENCING:
        if (not ignore_timestamps and
                _unix_time(header.parent_timestamp) >
                clock + TIMESTAMP_SLACK):
            raise VHDError(path, "parent timestamp is in the future (clocks "
                           "out of sync?)", "re-point the child with "
                           "set_parent() or check with ignore_timestamps")
        try:
            name = header.parent_name()
        except UnicodeDecodeError:
            name = ""
        if not name:
            raise bad("invalid parent name")
        if header.parent_uuid is None:
            raise bad("null parent UUID (raw parents are not supported)")
    else:
        if header.parent_name_raw != bytes(512):
            raise bad("parent name set on a disk without parent")
        if any(loc.pack() != bytes(24) for loc in header.locators):
            raise bad("parent locators set on a disk without parent")
        if header.parent_uuid is not None:
            raise bad("parent UUID set on a disk without parent")
        if header.parent_timestamp:
            raise bad("parent timestamp set on a disk without parent")


def _check_metadata_layout(vhd: VHDFile) -> None:
    header = vhd.header
    regions = [(0, FOOTER_SIZE, "footer copy"),
               (vhd.footer.data_offset,
                vhd.footer.data_offset + HEADER_SIZE, "header"),
               (header.table_offset, header.table_offset + _round_up(
                   header.max_table_entries * 4, SECTOR_SIZE), "BAT")]
    if vhd.batmap is not None:
        regions.append((vhd.batmap["header_offset"],
                        vhd.batmap["header_offset"] + SECTOR_SIZE,
                        "batmap header"))
        regions.append((vhd.batmap["offset"], vhd.batmap["offset"] +
                        vhd.batmap["sectors"] * SECTOR_SIZE, "batmap"))
    if vhd.disk_type == DISK_DIFFERENCING:
        for index, loc in enumerate(header.locators):
            if loc.code != PLAT_NONE and loc.space:
                regions.append((loc.data_offset, loc.data_offset + loc.space,
                                "parent locator %d" % index))
    regions.sort()
    for (a_start, a_end, a_name), (b_start, b_end, b_name) in zip(
            regions, regions[1:]):
        if b_start < a_end:
            raise VHDError(vhd.path, "%s (bytes %d-%d) overlaps %s (bytes "
                           "%d-%d)" % (a_name, a_start, a_end, b_name,
                                       b_start, b_end), _FIX_CORRUPT)
    for start, end, name in regions:
        if end > vhd.footer_offset:
            raise VHDError(vhd.path, "%s (bytes %d-%d) runs into the footer "
                           "at %d" % (name, start, end, vhd.footer_offset),
                           _FIX_CORRUPT)


def _check_blocks(vhd: VHDFile) -> None:
    end_of_headers = vhd.end_of_metadata()
    span = vhd._block_span
    blocks = sorted((vhd._bat[i] * SECTOR_SIZE, i)
                    for i in range(vhd.block_count)
                    if vhd._bat[i] != BAT_UNUSED)
    previous = None  # type: Optional[Tuple[int, int]]
    for offset, index in blocks:
        if offset < end_of_headers:
            raise VHDError(vhd.path, "block %d (offset 0x%x) clobbers the "
                           "metadata, which ends at 0x%x" % (
                               index, offset, end_of_headers), _FIX_CORRUPT)
        if offset + span > vhd.footer_offset:
            raise VHDError(vhd.path, "block %d (offset 0x%x) clobbers the "
                           "footer at 0x%x" % (index, offset,
                                               vhd.footer_offset),
                           _FIX_CORRUPT)
        if previous is not None and offset < previous[0] + span:
            raise VHDError(vhd.path, "block %d (offset 0x%x) overlaps block "
                           "%d (offset 0x%x)" % (index, offset, previous[1],
                                                 previous[0]), _FIX_CORRUPT)
        previous = (offset, index)


def _check_batmap(vhd: VHDFile) -> None:
    batmap = vhd.batmap

    def bad(problem: str) -> VHDError:
        return VHDError(vhd.path, "batmap invalid: " + problem, _FIX_CORRUPT)

    if batmap["version"] > BATMAP_LATEST_VERSION:
        raise bad("unsupported version 0x%08x" % batmap["version"])
    if not batmap["sectors"]:
        raise bad("size zero")
    if batmap["sectors"] << 12 < vhd.header.max_table_entries:
        raise bad("smaller than the BAT")
    if not batmap["offset"] or batmap["offset"] % SECTOR_SIZE:
        raise bad("offset %d" % batmap["offset"])
    if (batmap["offset"] + batmap["sectors"] * SECTOR_SIZE >
            vhd.footer_offset):
        raise bad("runs past the footer")
    # blktap sums a map sized for 2 MiB blocks whatever the block size.
    map_bytes = max(1, -(-(vhd.virtual_size >> 24) // SECTOR_SIZE)) * 512
    bits = _pread(vhd.fileno(), batmap["offset"],
                  min(map_bytes, batmap["sectors"] * SECTOR_SIZE), vhd.path,
                  "batmap")
    if batmap["version"] == 0x00010001:
        total = sum(b - 256 if b > 127 else b for b in bits)
    else:
        total = sum(bits)
    if ~total & 0xFFFFFFFF != batmap["checksum"]:
        raise bad("checksum 0x%08x (computed 0x%08x)" % (
            batmap["checksum"], ~total & 0xFFFFFFFF))
    for index in range(min(vhd.block_count, len(bits) * 8)):
        if ((bits[index >> 3] >> (7 - (index & 7))) & 1 and
                vhd._bat[index] == BAT_UNUSED):
            raise bad("marks unallocated block %d full" % index)


def _locator_error(vhd: VHDFile, index: int, problem: str,
                   fix: str = _FIX_CORRUPT) -> VHDError:
    return VHDError(vhd.path, "parent locator %d invalid: %s" % (
        index, problem), fix)


def _check_locator_entries(vhd: VHDFile) -> None:
    """The fields of each locator entry, as vhd-util checks them."""
    seen_codes = set()
    for index, loc in enumerate(vhd.header.locators):
        def bad(problem: str, index: int = index) -> VHDError:
            return _locator_error(vhd, index, problem)

        if loc.code == PLAT_NONE:
            if loc.pack() != bytes(24):
                raise bad("empty entry with non-zero fields")
            continue
        if loc.code not in PLATFORM_NAMES:
            raise bad("unknown platform code 0x%08x" % loc.code)
        if loc.code in seen_codes:
            raise bad("duplicate platform code %s" % loc.platform)
        seen_codes.add(loc.code)
        if not loc.data_offset:
            raise bad("zero data offset")
        if not loc.space:
            raise bad("invalid data space %d" % loc.data_space)
        if not loc.data_length or loc.data_length > loc.space:
            raise bad("invalid data length %d" % loc.data_length)
        if loc.reserved:
            raise bad("non-zero reserved field")


def _check_locators(vhd: VHDFile,
                    search_dirs: Optional[Sequence[PathLike]]) -> str:
    """Each path locator must name and reach the parent; returns it."""
    name = vhd.parent_name
    wanted = vhd.header.parent_uuid
    child_dir = os.path.dirname(os.path.realpath(vhd.path))
    found = None
    for index, loc in enumerate(vhd.header.locators):
        def bad(problem: str, fix: str = _FIX_CORRUPT,
                index: int = index) -> VHDError:
            return _locator_error(vhd, index, problem, fix)

        if loc.code not in PATH_PLATFORMS:
            continue
        raw = _pread(vhd.fileno(), loc.data_offset, loc.data_length,
                     vhd.path, "parent locator")
        located = _decode_locator(loc.code, raw)
        if not located:
            raise bad("%s data does not decode to a path" % loc.platform)
        if os.path.basename(located) != name:
            raise bad("%s names %r but the header names %r" % (
                loc.platform, os.path.basename(located), name),
                "re-point the child with set_parent()")
        if search_dirs:
            continue
        target = (located if os.path.isabs(located)
                  else os.path.normpath(os.path.join(child_dir, located)))
        if not os.path.exists(target):
            raise bad("%s points to missing file %s" % (loc.platform,
                                                        target),
                      "re-point the child with set_parent() after moving "
                      "files")
        _check_parent_uuid(vhd, target, wanted)
        found = found or target
    if search_dirs:
        found = find_parent(vhd, search_dirs)
    if found is None:
        raise VHDError(vhd.path, "could not find parent %r: no path locator"
                       % name, "re-point the child with set_parent()")
    return found


def _check_parent_uuid(vhd: VHDFile, parent_path: str,
                       wanted: Optional[uuidlib.UUID]) -> None:
    try:
        with VHDFile(parent_path) as parent:
            found = parent.uuid
    except VHDError as exc:
        raise VHDError(vhd.path, "error opening parent %s: %s" % (
            parent_path, exc.problem))
    if found != wanted:
        raise VHDError(vhd.path, "invalid parent UUID: expected %s but %s "
                       "has %s" % (wanted, parent_path, found),
                       "re-point the child at its real parent with "
                       "set_parent() (vhd-util modify -p)")


# --------------------------------------------------------------------------
# Raw sources


class RawSource:
    """A raw disk image (file path or binary file object) as a source for
    :class:`DynamicStream`.  Reads past the end of the file give zeros; the
    virtual size is the file size rounded up to a sector unless given."""

    def __init__(self, source: Union[PathLike, BinaryIO],
                 size: Optional[int] = None) -> None:
        if isinstance(source, (str, bytes)) or hasattr(source,
                                                       "__fspath__"):
            self.path = _fspath(source)
            try:
                self._fd = os.open(self.path, os.O_RDONLY)
            except OSError as exc:
                raise VHDError(self.path, "cannot open: %s" % exc.strerror)
            self._owned = True
        else:
            self.path = getattr(source, "name", "<raw>")
            self._fd = source.fileno()
            self._owned = False
        self._length = _file_size(self._fd)
        if size is None:
            size = _round_up(max(self._length, 1), SECTOR_SIZE)
        self.virtual_size = _validate_size(size, self.path)

    def read(self, offset: int, length: int) -> bytes:
        end = min(offset + length, self._length)
        data = os.pread(self._fd, end - offset, offset) if end > offset \
            else b""
        if len(data) < length:
            data += bytes(length - len(data))
        return data

    def data_ranges(self) -> Iterator[Tuple[int, int]]:
        return _file_data_ranges(self._fd, 0, min(self._length,
                                                  self.virtual_size))

    def close(self) -> None:
        if self._owned and self._fd >= 0:
            os.close(self._fd)
        self._fd = -1

    def __enter__(self) -> "RawSource":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# --------------------------------------------------------------------------
# Producing dynamic VHD streams


def dynamic_stream_size(virtual_size: int, allocated_blocks: Union[int,
                                                                   Iterable],
                        block_size: int = DEFAULT_BLOCK_SIZE) -> int:
    """Exact length of the dynamic VHD :class:`DynamicStream` produces:
    footer copy + header + BAT + (bitmap + block) per allocated block +
    footer.  ``allocated_blocks`` is a count or a collection of indices."""
    virtual_size = _validate_size(virtual_size, "<stream>")
    block_size = _validate_block_size(block_size, "<stream>")
    count = (allocated_blocks if isinstance(allocated_blocks, int)
             else len(set(allocated_blocks)))
    entries = -(-virtual_size // block_size)
    if count < 0 or count > entries:
        raise VHDError("<stream>", "%d allocated blocks for a disk of %d "
                       "blocks" % (count, entries))
    return (FOOTER_SIZE + HEADER_SIZE + _round_up(entries * 4, SECTOR_SIZE) +
            count * (_bitmap_size(block_size) + block_size) + FOOTER_SIZE)


class DynamicStream:
    """A dynamic VHD built on the fly from a readable source.

    ``source`` is anything with ``virtual_size`` and ``read(offset,
    length)`` -- a :class:`VHDFile` chain (flattened) or a
    :class:`RawSource`; a ``data_ranges()`` method, when present, lets
    holes and unallocated blocks be skipped without reading them.  Blocks
    that read as all zeros are left out (``skip_zero_blocks``).

    With ``base`` (another source) the stream is differential: it holds
    only the blocks whose contents differ from ``base``.  When ``base`` is
    an ancestor in the source's opened chain, only blocks allocated above
    it are considered.

    The source is scanned once to plan the stream (``size``, ``blocks``)
    and read again while iterating; it must not change in between.
    Iterating yields bytes chunks of at most one block; memory use is
    bounded by the block size and the BAT (4 bytes per block).
    """

    def __init__(self, source: Any, block_size: int = DEFAULT_BLOCK_SIZE,
                 base: Any = None, skip_zero_blocks: bool = True,
                 uuid: Any = None, timestamp: Optional[float] = None) -> None:
        name = getattr(source, "path", "<stream source>")
        self.source = source
        self.base = base
        self.virtual_size = _validate_size(int(source.virtual_size), name)
        self.block_size = _validate_block_size(block_size, name)
        self.skip_zero_blocks = skip_zero_blocks
        self._bitmap_size = _bitmap_size(self.block_size)
        self._entries = -(-self.virtual_size // self.block_size)
        self._bat_bytes = _round_up(self._entries * 4, SECTOR_SIZE)
        self._data_start = FOOTER_SIZE + HEADER_SIZE + self._bat_bytes
        self.footer = Footer(DISK_DYNAMIC, self.virtual_size,
                             _uuid_bytes(uuid, name), _timestamp(timestamp),
                             data_offset=FOOTER_SIZE)
        self._blocks = None  # type: Optional[array.array]
        last = (self._data_start + self._entries *
                (self._bitmap_size + self.block_size)) // SECTOR_SIZE
        if last >= BAT_UNUSED:
            raise VHDError(name, "a %d-byte disk with %d-byte blocks cannot "
                           "be addressed by a VHD BAT" % (
                               self.virtual_size, self.block_size),
                           "use a larger block size")

    def _read_block(self, source: Any, index: int) -> bytes:
        start = index * self.block_size
        size = getattr(source, "virtual_size", self.virtual_size)
        length = min(self.block_size, self.virtual_size - start,
                     max(0, size - start))
        data = source.read(start, length) if length > 0 else b""
        if len(data) < self.block_size:
            data = bytes(data) + bytes(self.block_size - len(data))
        return data

    def _candidates(self) -> bytearray:
        flags = bytearray(self._entries)
        base = self.base
        ancestor = (base is not None and isinstance(self.source, VHDFile) and
                    isinstance(base, VHDFile) and
                    any(_same_file(layer, base)
                        for layer in self.source.chain()[1:]))
        if ancestor:
            ranges = [self.source.data_ranges(stop_at=base)]
        else:
            ranges = [_ranges_of(self.source, self.virtual_size)]
            if base is not None:
                ranges.append(_ranges_of(base, self.virtual_size))
        size = self.block_size
        for iterator in ranges:
            for start, end in iterator:
                end = min(end, self.virtual_size)
                if end <= start:
                    continue
                first, last = start // size, (end - 1) // size
                flags[first:last + 1] = b"\x01" * (last - first + 1)
        return flags

    def _plan(self) -> array.array:
        if self._blocks is None:
            blocks = array.array("I")
            flags = self._candidates()
            index = flags.find(1)
            while index >= 0:
                if self.base is not None:
                    keep = (self._read_block(self.source, index) !=
                            self._read_block(self.base, index))
                elif self.skip_zero_blocks:
                    keep = not _is_zero(self._read_block(self.source, index))
                else:
                    keep = True
                if keep:
                    blocks.append(index)
                index = flags.find(1, index + 1)
            self._blocks = blocks
        return self._blocks

    @property
    def blocks(self) -> List[int]:
        """Indices of the blocks the stream holds."""
        return list(self._plan())

    @property
    def size(self) -> int:
        """Exact length of the stream in bytes."""
        return dynamic_stream_size(self.virtual_size, len(self._plan()),
                                   self.block_size)

    def metadata(self) -> bytes:
        """Footer copy, header and BAT: the first bytes of the stream."""
        blocks = self._plan()
        bat = array.array("I", [BAT_UNUSED]) * self._entries
        sector = self._data_start // SECTOR_SIZE
        step = (self._bitmap_size + self.block_size) // SECTOR_SIZE
        for index in blocks:
            bat[index] = sector
            sector += step
        if sys.byteorder == "little":
            bat.byteswap()
        raw_bat = bat.tobytes()
        header = DynamicHeader(FOOTER_SIZE + HEADER_SIZE, self._entries,
                               self.block_size)
        return (self.footer.pack() + header.pack() + raw_bat +
                b"\xff" * (self._bat_bytes - len(raw_bat)))

    def __iter__(self) -> Iterator[bytes]:
        blocks = self._plan()
        yield self.metadata()
        full = _full_bitmap(self._bitmap_size,
                            self.block_size // SECTOR_SIZE)
        last_index = self._entries - 1
        for index in blocks:
            if index == last_index:
                sectors = (self.virtual_size - index * self.block_size
                           ) // SECTOR_SIZE
                yield _full_bitmap(self._bitmap_size, sectors)
            else:
                yield full
            yield self._read_block(self.source, index)
        yield self.footer.pack()

    def save(self, path: PathLike, overwrite: bool = False) -> int:
        """Write the stream to a (sparse) file; returns its length."""
        offset = 0
        with _NewFile(path, overwrite) as new:
            for chunk in self:
                _write_sparse(new.fd, offset, chunk)
                offset += len(chunk)
            os.ftruncate(new.fd, offset)
        return offset


def _ranges_of(source: Any, virtual_size: int) -> Iterable[Tuple[int, int]]:
    ranges = getattr(source, "data_ranges", None)
    if ranges is None:
        return [(0, virtual_size)]
    return ranges()


# --------------------------------------------------------------------------
# Consuming streams


class _StreamReader:
    def __init__(self, fileobj: BinaryIO, name: str,
                 length: Optional[int]) -> None:
        self.fileobj = fileobj
        self.name = name
        self.length = length
        self.pos = 0

    def _truncated(self, wanted: int, what: str) -> VHDError:
        return VHDError(self.name, "truncated stream: ended at byte %d while "
                        "reading %d bytes of %s" % (self.pos, wanted, what),
                        "send the complete file")

    def read(self, count: int, what: str) -> bytes:
        if self.length is not None and self.pos + count > self.length:
            raise VHDError(self.name, "%s at byte %d runs past the announced "
                           "stream length %d" % (what, self.pos,
                                                 self.length),
                           "send the complete file with the right length")
        parts = []
        remaining = count
        while remaining:
            chunk = self.fileobj.read(min(remaining, COPY_CHUNK))
            if not chunk:
                raise self._truncated(count, what)
            parts.append(chunk)
            remaining -= len(chunk)
            self.pos += len(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def skip_to(self, target: int, what: str) -> None:
        if target < self.pos:
            raise VHDError(self.name, "%s at byte %d overlaps data already "
                           "read (position %d)" % (what, target, self.pos),
                           _FIX_CORRUPT)
        while self.pos < target:
            self.read(min(COPY_CHUNK, target - self.pos), what)

    def read_tail(self, count: int) -> bytes:
        """Read to the end of the stream; return its last ``count`` bytes."""
        if self.length is not None:
            self.skip_to(self.length - count, "footer")
            return self.read(count, "footer")
        tail = b""
        while True:
            chunk = self.fileobj.read(COPY_CHUNK)
            if not chunk:
                break
            self.pos += len(chunk)
            tail = (tail + chunk)[-count:]
        return tail


def consume_stream(fileobj: BinaryIO, sink: Sink,
                   max_virtual_size: int = MAX_VIRTUAL_SIZE,
                   stream_length: Optional[int] = None,
                   name: str = "<vhd stream>",
                   allow_differencing: bool = False,
                   allow_fixed: bool = False) -> Dict[str, Any]:
    """Parse a VHD from a sequential (non-seekable) file object.

    Reads the footer copy, the header and the BAT, checks them (cookies,
    checksums, sizes, every block after the metadata and inside the
    stream, no overlaps), then reads the blocks in file order -- whatever
    order the BAT gives them -- and calls ``sink(virtual_offset, data)``
    for each run of sectors their bitmaps mark (chunks of at most 4 MiB,
    in file order, never beyond the virtual size).  Unmarked ranges are
    not delivered: the target must already read as zeros there (a fresh
    disk) or hold the base of a differential stream.  Finally the trailing
    footer must match the copy.

    ``stream_length`` (e.g. Content-Length or a tar member's size), when
    known, lets bad BAT entries be refused before any data is delivered.
    ``max_virtual_size`` refuses larger disks up front.  A differencing
    VHD is refused unless ``allow_differencing``.  A fixed VHD (raw data +
    footer, no copy at offset 0) needs ``allow_fixed`` and
    ``stream_length``; its footer can only be checked after its data has
    been delivered.

    Returns ``{"virtual_size", "disk_type", "uuid", "block_size",
    "blocks", "bytes_delivered", "stream_length"}``.
    """
    reader = _StreamReader(fileobj, name, stream_length)
    limit = min(max_virtual_size, MAX_VIRTUAL_SIZE)
    if stream_length is not None and stream_length < FOOTER_SIZE:
        raise VHDError(name, "stream of %d bytes is too short for a VHD"
                       % stream_length, "send a VHD file")
    first = reader.read(FOOTER_SIZE, "footer copy")
    copy = Footer.unpack(first)
    if copy.cookie != FOOTER_COOKIE:
        return _consume_fixed(reader, first, sink, limit, allow_fixed)
    if not copy.checksum_ok():
        raise VHDError(name, "footer copy checksum is 0x%08x, computed "
                       "0x%08x" % (copy.checksum, copy.compute_checksum()),
                       _FIX_CORRUPT)
    if copy.current_size > limit:
        raise VHDError(name, "virtual size %d exceeds the limit of %d bytes"
                       % (copy.current_size, limit),
                       "import into a larger disk or raise the limit")
    _check_footer_basics(copy, name)
    if copy.disk_type == DISK_FIXED:
        raise VHDError(name, "footer copy at offset 0 says 'fixed'",
                       _FIX_CORRUPT)
    if copy.disk_type == DISK_DIFFERENCING and not allow_differencing:
        raise VHDError(name, "differencing VHD streams need their parent",
                       "export the chain flattened (a dynamic VHD) or move "
                       "the chain as files")
    if copy.data_offset % SECTOR_SIZE or copy.data_offset < FOOTER_SIZE:
        raise VHDError(name, "header offset %d is not after the footer copy"
                       % copy.data_offset, _FIX_CORRUPT)
    reader.skip_to(copy.data_offset, "header")
    header = DynamicHeader.unpack(reader.read(HEADER_SIZE, "header"))
    if header.cookie != HEADER_COOKIE:
        raise VHDError(name, "header cookie is %r, expected %r" % (
            header.cookie, HEADER_COOKIE), _FIX_CORRUPT)
    if not header.checksum_ok():
        raise VHDError(name, "header checksum is 0x%08x, computed 0x%08x" % (
            header.checksum, header.compute_checksum()), _FIX_CORRUPT)
    _check_table_geometry(header, copy.current_size, name)
    if header.table_offset % SECTOR_SIZE or header.table_offset < reader.pos:
        raise VHDError(name, "BAT offset %d is not after the header"
                       % header.table_offset, "a stream must hold the BAT "
                       "after the header; re-export it")
    reader.skip_to(header.table_offset, "BAT")
    block_size = header.block_size
    blocks_needed = -(-copy.current_size // block_size)
    bat = array.array("I")
    bat.frombytes(reader.read(blocks_needed * 4, "BAT"))
    if sys.byteorder == "little":
        bat.byteswap()
    bitmap_size = _bitmap_size(block_size)
    span = bitmap_size + block_size
    metadata_end = max(header.table_offset + _round_up(
        header.max_table_entries * 4, SECTOR_SIZE), reader.pos)
    order = _stream_block_order(bat)
    previous_end = metadata_end
    previous_index = None  # type: Optional[int]
    for index in order:
        start = bat[index] * SECTOR_SIZE
        if start < metadata_end:
            raise VHDError(name, "BAT entry for block %d points into the "
                           "metadata (offset %d)" % (index, start),
                           _FIX_CORRUPT)
        if start < previous_end and previous_index is not None:
            raise VHDError(name, "block %d (offset %d) overlaps block %d" % (
                index, start, previous_index), _FIX_CORRUPT)
        if (stream_length is not None and
                start + span > stream_length - FOOTER_SIZE):
            raise VHDError(name, "BAT entry for block %d points past the end "
                           "of the %d-byte stream" % (index, stream_length),
                           "the stream is truncated or corrupt; send the "
                           "complete file")
        previous_end = start + span
        previous_index = index
    delivered = 0
    for index in order:
        start = bat[index] * SECTOR_SIZE
        reader.skip_to(start, "block %d" % index)
        bitmap = reader.read(bitmap_size, "bitmap of block %d" % index)
        block_start = index * block_size
        sectors = min(block_size, copy.current_size - block_start
                      ) // SECTOR_SIZE
        pos = 0
        for _first, stop, present in _bitmap_runs(bitmap, 0, sectors):
            hi = stop * SECTOR_SIZE
            if not present:
                reader.skip_to(start + bitmap_size + hi, "block %d" % index)
                pos = hi
                continue
            while pos < hi:
                count = min(COPY_CHUNK, hi - pos)
                data = reader.read(count, "block %d" % index)
                sink(block_start + pos, data)
                delivered += count
                pos += count
        reader.skip_to(start + span, "block %d" % index)
    tail = reader.read_tail(FOOTER_SIZE)
    if len(tail) < FOOTER_SIZE or reader.pos - FOOTER_SIZE < previous_end:
        raise VHDError(name, "truncated stream: no footer after the last "
                       "block", "send the complete file")
    footer = Footer.unpack(tail)
    if footer.cookie != FOOTER_COOKIE or not footer.checksum_ok():
        raise VHDError(name, "trailing footer is invalid (bad cookie or "
                       "checksum)", "the stream is truncated or corrupt")
    if (footer.uuid_bytes, footer.current_size, footer.disk_type) != (
            copy.uuid_bytes, copy.current_size, copy.disk_type):
        raise VHDError(name, "trailing footer does not match the footer "
                       "copy at offset 0", _FIX_CORRUPT)
    return {"virtual_size": copy.current_size,
            "disk_type": DISK_TYPE_NAMES[copy.disk_type],
            "uuid": str(copy.uuid), "block_size": block_size,
            "blocks": len(order), "bytes_delivered": delivered,
            "stream_length": reader.pos}


def _stream_block_order(bat: array.array) -> List[int]:
    """Allocated block indices in file order (usually index order)."""
    used = [index for index, entry in enumerate(bat) if entry != BAT_UNUSED]
    for a, b in zip(used, used[1:]):
        if bat[a] > bat[b]:
            used.sort(key=bat.__getitem__)
            break
    return used


def _consume_fixed(reader: _StreamReader, first: bytes, sink: Sink,
                   limit: int, allow_fixed: bool) -> Dict[str, Any]:
    name = reader.name
    if not allow_fixed or reader.length is None:
        raise VHDError(name, "not a dynamic VHD: no footer copy ('conectix') "
                       "at offset 0", "send a dynamic VHD (qemu-img convert "
                       "-O vpc -o subformat=dynamic); fixed VHDs need "
                       "allow_fixed and a known stream length")
    size = reader.length - FOOTER_SIZE
    if size <= 0 or size % SECTOR_SIZE:
        raise VHDError(name, "fixed VHD stream of %d bytes is not data + a "
                       "512-byte footer" % reader.length, _FIX_CORRUPT)
    if size > limit:
        raise VHDError(name, "virtual size %d exceeds the limit of %d bytes"
                       % (size, limit), "import into a larger disk")
    pending = first
    delivered = 0
    while delivered < size:
        if pending:
            data, pending = pending, b""
        else:
            data = reader.read(min(COPY_CHUNK, size - delivered), "data")
        sink(delivered, data)
        delivered += len(data)
    footer = Footer.unpack(reader.read(FOOTER_SIZE, "footer"))
    if footer.cookie != FOOTER_COOKIE or not footer.checksum_ok():
        raise VHDError(name, "fixed VHD footer is invalid (bad cookie or "
                       "checksum)", "the data delivered must be discarded; "
                       "send a valid VHD")
    if footer.disk_type != DISK_FIXED or footer.current_size != size:
        raise VHDError(name, "fixed VHD footer says type %d, %d bytes, but "
                       "the stream holds %d data bytes" % (
                           footer.disk_type, footer.current_size, size),
                       _FIX_CORRUPT)
    return {"virtual_size": size, "disk_type": "fixed",
            "uuid": str(footer.uuid), "block_size": None, "blocks": None,
            "bytes_delivered": delivered, "stream_length": reader.pos}


class RawFileSink:
    """A ``consume_stream`` sink writing into a raw image file.

    With ``sparse`` (for a fresh, zero-filled target) all-zero chunks are
    not written, keeping holes.  ``size`` truncates/extends the file first.
    """

    def __init__(self, path: PathLike, size: Optional[int] = None,
                 sparse: bool = True) -> None:
        self.path = _fspath(path)
        self.sparse = sparse
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise VHDError(self.path, "cannot open: %s" % exc.strerror)
        if size is not None:
            os.ftruncate(self._fd, size)

    def __call__(self, offset: int, data: bytes) -> None:
        if self.sparse:
            _write_sparse(self._fd, offset, data)
        else:
            _pwrite(self._fd, offset, data)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "RawFileSink":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# --------------------------------------------------------------------------
# Conversion and inspection


def vhd_to_raw(source: PathLike, target: PathLike,
               search_dirs: Optional[Sequence[PathLike]] = None,
               overwrite: bool = False) -> int:
    """Flatten a VHD (chain) into a sparse raw image; returns its size."""
    with open_chain(source, search_dirs=search_dirs) as vhd:
        size = vhd.virtual_size
        with _NewFile(target, overwrite) as new:
            os.ftruncate(new.fd, size)
            for start, end in _merged(vhd.data_ranges()):
                pos = start
                while pos < end:
                    count = min(COPY_CHUNK, end - pos)
                    _write_sparse(new.fd, pos, vhd.read(pos, count))
                    pos += count
    return size


def _merged(ranges: Iterable[Tuple[int, int]]) -> List[Tuple[int, int]]:
    merged = []  # type: List[Tuple[int, int]]
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def raw_to_vhd(source: PathLike, target: PathLike, disk_type: str = "dynamic",
               block_size: int = DEFAULT_BLOCK_SIZE, chs_round: bool = False,
               uuid: Any = None, overwrite: bool = False) -> uuidlib.UUID:
    """Convert a raw image to a sparse dynamic or fixed VHD.

    The virtual size is the raw size rounded up to a sector (or, with
    ``chs_round``, to a CHS size like qemu-img).  All-zero blocks stay
    unallocated.  Returns the new disk's UUID.
    """
    if disk_type not in ("dynamic", "fixed"):
        raise VHDError(target, "unknown disk type %r" % disk_type,
                       "use 'dynamic' or 'fixed'")
    with RawSource(source) as probe:
        size = _normalise_size(probe.virtual_size, chs_round, target)
    with RawSource(source, size) as raw:
        if disk_type == "dynamic":
            stream = DynamicStream(raw, block_size=block_size, uuid=uuid)
            stream.save(target, overwrite)
            return stream.footer.uuid
        footer = Footer(DISK_FIXED, size, _uuid_bytes(uuid, target))
        with _NewFile(target, overwrite) as new:
            os.ftruncate(new.fd, size)
            for start, end in _merged(raw.data_ranges()):
                pos = start
                while pos < end:
                    data = raw.read(pos, min(COPY_CHUNK, end - pos))
                    _write_sparse(new.fd, pos, data)
                    pos += len(data)
            _pwrite(new.fd, size, footer.pack())
        return footer.uuid


def info(path: PathLike) -> Dict[str, Any]:
    """Facts about one VHD file (its parent is not opened).

    Keys: path, disk_type, virtual_size, uuid, parent_uuid, parent_name,
    parent_locators, block_size, max_table_entries, allocated_blocks,
    physical_size (file length), disk_usage (bytes the file occupies),
    hidden, timestamp (UNIX time), creator_app, creator_version.
    """
    with VHDFile(path) as vhd:
        footer = vhd.footer
        st = os.fstat(vhd.fileno())
        result = {
            "path": vhd.path,
            "disk_type": vhd.disk_type_name,
            "virtual_size": vhd.virtual_size,
            "uuid": str(vhd.uuid),
            "parent_uuid": (str(vhd.parent_uuid) if vhd.parent_uuid
                            else None),
            "parent_name": vhd.parent_name,
            "parent_locators": [{"platform": platform, "path": located}
                                for platform, located
                                in vhd.parent_locator_paths()],
            "block_size": vhd.block_size if vhd.is_dynamic else None,
            "max_table_entries": (vhd.header.max_table_entries
                                  if vhd.is_dynamic else None),
            "allocated_blocks": (len(vhd.allocated_blocks())
                                 if vhd.is_dynamic else None),
            "physical_size": st.st_size,
            "disk_usage": getattr(st, "st_blocks", 0) * 512,
            "hidden": vhd.hidden,
            "timestamp": _unix_time(footer.timestamp),
            "creator_app": footer.creator_app.decode("latin-1").rstrip(
                "\x00"),
            "creator_version": "%d.%d" % (footer.creator_version >> 16,
                                          footer.creator_version & 0xFFFF),
        }
    return result


# --------------------------------------------------------------------------
# Command line


_UNITS = {"": 1, "B": 1, "K": KIB, "M": MIB, "G": GIB, "T": 1024 * GIB}


def _parse_size(text: str) -> int:
    value = text.strip().upper()
    if value.endswith("IB"):
        value = value[:-2]
    unit = value[-1:] if value[-1:] in "KMGTB" else ""
    number = value[:len(value) - len(unit)]
    try:
        return int(number) * _UNITS[unit]
    except (ValueError, KeyError):
        raise argparse.ArgumentTypeError(
            "invalid size %r (use bytes or a K/M/G/T suffix)" % text)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xhost_vhd.py", description="Inspect and edit VHD files "
        "(fixed, dynamic, differencing).")
    sub = parser.add_subparsers(dest="command")
    sub.required = True

    cmd = sub.add_parser("info", help="print facts about a VHD as JSON")
    cmd.add_argument("path")

    cmd = sub.add_parser("check", help="validate a VHD (vhd-util check)")
    cmd.add_argument("path")
    cmd.add_argument("-p", "--parents", action="store_true",
                     help="also check the parent chain")
    cmd.add_argument("-t", "--ignore-timestamps", action="store_true")
    cmd.add_argument("--search-dir", action="append", default=[])
    cmd.add_argument("--max-depth", type=int, default=MAX_CHAIN_DEPTH)

    cmd = sub.add_parser("create", help="create a VHD")
    cmd.add_argument("path")
    cmd.add_argument("--size", type=_parse_size,
                     help="virtual size (default: the parent's)")
    cmd.add_argument("--type", choices=("dynamic", "fixed"),
                     default="dynamic")
    cmd.add_argument("--parent", help="create a differencing child of this")
    cmd.add_argument("--block-size", type=_parse_size,
                     default=DEFAULT_BLOCK_SIZE)
    cmd.add_argument("--max-size", type=_parse_size,
                     help="size the BAT for growth up to this size")
    cmd.add_argument("--chs", action="store_true",
                     help="round the size up to a CHS size like qemu-img")
    cmd.add_argument("--absolute-locator", action="store_true")

    cmd = sub.add_parser("modify", help="re-point a child at a parent "
                         "(vhd-util modify -p)")
    cmd.add_argument("path")
    cmd.add_argument("-p", "--parent", required=True)
    cmd.add_argument("--absolute-locator", action="store_true")

    cmd = sub.add_parser("hidden", help="query or set blktap's hidden flag")
    cmd.add_argument("path")
    cmd.add_argument("--set", type=int, choices=(0, 1))

    cmd = sub.add_parser("coalesce", help="write a child into its parent")
    cmd.add_argument("path")
    cmd.add_argument("--search-dir", action="append", default=[])

    cmd = sub.add_parser("resize", help="grow the virtual size")
    cmd.add_argument("path")
    cmd.add_argument("--size", type=_parse_size, required=True)

    cmd = sub.add_parser("repair", help="restore the footer from its copy")
    cmd.add_argument("path")

    cmd = sub.add_parser("convert", help="convert between raw and VHD")
    cmd.add_argument("source")
    cmd.add_argument("target")
    cmd.add_argument("--to", choices=("raw", "vhd"), required=True)
    cmd.add_argument("--type", choices=("dynamic", "fixed"),
                     default="dynamic")
    cmd.add_argument("--search-dir", action="append", default=[])
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the exit status."""
    args = _build_parser().parse_args(argv)
    try:
        if args.command == "info":
            print(json.dumps(info(args.path), indent=2, sort_keys=True))
        elif args.command == "check":
            for checked in check(args.path, parents=args.parents,
                                 search_dirs=args.search_dir or None,
                                 ignore_timestamps=args.ignore_timestamps,
                                 max_depth=args.max_depth):
                print("%s is valid" % checked)
        elif args.command == "create":
            if args.parent:
                created = create_differencing(
                    args.path, args.parent, size=args.size,
                    block_size=args.block_size,
                    absolute_locator=args.absolute_locator)
            elif args.size is None:
                raise VHDError(args.path, "no size given",
                               "pass --size or --parent")
            elif args.type == "fixed":
                created = create_fixed(args.path, args.size,
                                       chs_round=args.chs)
            else:
                created = create_dynamic(args.path, args.size,
                                         block_size=args.block_size,
                                         max_size=args.max_size,
                                         chs_round=args.chs)
            print(created)
        elif args.command == "modify":
            set_parent(args.path, args.parent,
                       absolute_locator=args.absolute_locator)
        elif args.command == "hidden":
            if args.set is None:
                print("hidden: %d" % int(get_hidden(args.path)))
            else:
                set_hidden(args.path, bool(args.set))
        elif args.command == "coalesce":
            print(coalesce(args.path, search_dirs=args.search_dir or None))
        elif args.command == "resize":
            resize(args.path, args.size)
        elif args.command == "repair":
            print("repaired" if repair(args.path) else "footer was intact")
        elif args.command == "convert":
            if args.to == "raw":
                vhd_to_raw(args.source, args.target,
                           search_dirs=args.search_dir or None)
            else:
                raw_to_vhd(args.source, args.target, disk_type=args.type)
    except VHDError as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
