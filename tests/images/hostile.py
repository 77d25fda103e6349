"""Hostile and broken image tarballs, built byte by byte where tarfile would
refuse to write them."""
from __future__ import annotations

import gzip
import io
import struct
import tarfile
import uuid
from pathlib import Path

from imagehost import MiB, pattern, vhd_chain

from xhost.dom0 import xhost_vhd

CASES = ("traversal", "absolute", "symlink", "hardlink", "device", "duplicate", "too_many",
         "gzip_bomb", "trailing_bomb", "lying_size", "truncated_member", "bad_cookie",
         "bad_checksum", "bat_past_end", "orphan_parent", "wrong_parent", "loop")


def _tar(entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _info(name: str, size: int = 0, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.type = kind
    info.linkname = link
    return info


def gz(data: bytes) -> bytes:
    return gzip.compress(data, 1)


def small_vhd(tmp: Path, size: int = 4 * MiB, seed: int = 1) -> bytes:
    raw = tmp / f"s{seed}.raw"
    raw.write_bytes(pattern(MiB, seed) + bytes(size - MiB))
    target = tmp / f"s{seed}.vhd"
    xhost_vhd.raw_to_vhd(str(raw), str(target), overwrite=True)
    return target.read_bytes()


def vhd_member(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    return _info(name, len(data)), data


def cases(tmp: Path) -> dict[str, tuple[bytes, str]]:
    """name -> (gzipped tarball, what the error must say)."""
    tmp.mkdir(parents=True, exist_ok=True)
    good = small_vhd(tmp)
    out: dict[str, tuple[bytes, str]] = {}
    out["traversal"] = (gz(_tar([vhd_member("../0.vhd", good)])), "escaping|not an image disk")
    out["absolute"] = (gz(_tar([vhd_member("/tmp/0.vhd", good)])), "absolute|not an image disk")
    out["symlink"] = (gz(_tar([(_info("0.vhd", kind=tarfile.SYMTYPE, link="/etc/passwd"), None)])),
                      "symbolic link")
    out["hardlink"] = (gz(_tar([vhd_member("0.vhd", good),
                                (_info("1.vhd", kind=tarfile.LNKTYPE, link="0.vhd"), None)])),
                       "hard link")
    device = _info("0.vhd", kind=tarfile.CHRTYPE)
    device.devmajor, device.devminor = 1, 3
    out["device"] = (gz(_tar([(device, None)])), "character device")
    out["duplicate"] = (gz(_tar([vhd_member("0.vhd", good), vhd_member("0.vhd", good)])),
                        "twice")
    out["too_many"] = (gz(_tar(_deep_chain(tmp, 32))), "more than")
    # a 4 MiB disk whose member claims 300 MiB (zeros compress to nothing)
    bomb = good + bytes(300 * MiB)
    out["gzip_bomb"] = (gz(_tar([vhd_member("0.vhd", bomb)])), "bomb|lies|larger than|more than")
    # a valid archive followed by gigabytes of zeros in the same gzip stream
    out["trailing_bomb"] = (gz(_tar([vhd_member("0.vhd", good)]) + bytes(64 * MiB)),
                            "bomb|follows the end")
    # the header says 4096 bytes: the rest of the VHD becomes garbage headers
    lying = bytearray(_tar([vhd_member("0.vhd", good)]))
    _set_size(lying, 0, 4096)
    out["lying_size"] = (gz(bytes(lying)), "truncated|corrupt|follows|runs past|past the end|footer")
    # the header says more than the archive holds
    short = bytearray(_tar([vhd_member("0.vhd", good)]))
    _set_size(short, 0, len(good) + 10 * MiB)
    out["truncated_member"] = (gz(bytes(short[:len(short) - 1024])),
                               "corrupt|truncated|unexpected end|lies|more than")
    cookie = bytearray(good)
    cookie[0:8] = b"notavhd!"
    cookie[-512:-504] = b"notavhd!"
    out["bad_cookie"] = (gz(_tar([vhd_member("0.vhd", bytes(cookie))])),
                         "cookie|not a dynamic VHD|neither|footer")
    checksum = bytearray(good)
    checksum[70] ^= 0xFF  # inside the footer copy, covered by its checksum
    checksum[-512 + 70] ^= 0xFF
    out["bad_checksum"] = (gz(_tar([vhd_member("0.vhd", bytes(checksum))])), "checksum")
    out["bat_past_end"] = (gz(_tar([vhd_member("0.vhd", _bat_past_end(good))])),
                           "past the end|beyond|BAT|block table")
    files, _ = vhd_chain(tmp / "orphan", 4 * MiB, {0: pattern(4096, 1)}, {0: pattern(512, 2)})
    out["orphan_parent"] = (gz(_tar([vhd_member("0.vhd", files[0].read_bytes())])),
                            "matches no disk")
    other_base = small_vhd(tmp, seed=9)
    out["wrong_parent"] = (gz(_tar([vhd_member("0.vhd", files[0].read_bytes()),
                                    vhd_member("1.vhd", other_base)])), "parent")
    out["loop"] = (gz(_tar(_loop(tmp))), "loop|parent")
    assert set(out) == set(CASES)
    return out


def _deep_chain(tmp: Path, depth: int) -> list[tuple[tarfile.TarInfo, bytes]]:
    """A valid chain deeper than any handler accepts, leaf first."""
    paths = [tmp / "deep-0.vhd"]
    xhost_vhd.create_dynamic(str(paths[0]), 4 * MiB)
    for level in range(1, depth):
        paths.append(tmp / f"deep-{level}.vhd")
        xhost_vhd.create_differencing(str(paths[-1]), str(paths[-2]), max_depth=depth + 1)
    leaf_first = list(reversed(paths))
    return [vhd_member(f"{i}.vhd", p.read_bytes()) for i, p in enumerate(leaf_first)]


def _set_size(tar: bytearray, offset: int, size: int) -> None:
    header = tar[offset:offset + 512]
    header[124:136] = b"%011o\0" % size
    header[148:156] = b"        "
    header[148:156] = b"%06o\0 " % sum(header)
    tar[offset:offset + 512] = header


def _bat_past_end(vhd: bytes) -> bytes:
    data = bytearray(vhd)
    footer = xhost_vhd.Footer.unpack(bytes(data[:512]))
    header = xhost_vhd.DynamicHeader.unpack(bytes(data[footer.data_offset:footer.data_offset +
                                                       1024]))
    bat = header.table_offset
    struct.pack_into(">I", data, bat, (len(data) + 100 * MiB) // 512)
    return bytes(data)


def _loop(tmp: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    """Two differencing disks, each the other's parent."""
    a, b = tmp / "loop-a.vhd", tmp / "loop-b.vhd"
    base = tmp / "loop-base.vhd"
    xhost_vhd.create_dynamic(str(base), 4 * MiB)
    xhost_vhd.create_differencing(str(a), str(base), uuid=uuid.uuid4())
    xhost_vhd.create_differencing(str(b), str(a), uuid=uuid.uuid4())
    data_a = bytearray(a.read_bytes())
    uuid_b = xhost_vhd.open_vhd(str(b)).uuid
    footer = xhost_vhd.Footer.unpack(bytes(data_a[:512]))
    offset = footer.data_offset
    header = xhost_vhd.DynamicHeader.unpack(bytes(data_a[offset:offset + 1024]))
    header.parent_uuid_bytes = uuid_b.bytes
    data_a[offset:offset + 1024] = header.pack()
    return [vhd_member("0.vhd", bytes(data_a)), vhd_member("1.vhd", b.read_bytes())]
