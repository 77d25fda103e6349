"""Helpers shared by the VHD library tests (standard library, Python 3.6).

The tests load ``dom0/xhost_vhd.py`` by path, the way dom0 scripts see it,
so they run under pytest (``--import-mode=importlib``) and directly under
``python3.6 -m unittest discover -s tests/dom0``.

Raw structure edits here use field offsets taken from the VHD
specification and their own checksum code, independent of the library.
"""
import importlib.util
import os
import random
import shutil
import struct
import sys
import tempfile
import unittest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DOM0 = os.path.join(ROOT, "dom0")
MIB = 1024 * 1024


def _load_vhd():
    name = "xhost_vhd"
    path = os.path.join(DOM0, "xhost_vhd.py")
    module = sys.modules.get(name)
    if module is not None and os.path.abspath(module.__file__) == path:
        return module
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


vhd = _load_vhd()

# Footer fields: name -> (offset, struct format), from the specification.
FOOTER_FIELDS = {
    "cookie": (0, "8s"), "features": (8, ">I"), "format_version": (12, ">I"),
    "data_offset": (16, ">Q"), "timestamp": (24, ">I"),
    "creator_app": (28, "4s"), "creator_version": (32, ">I"),
    "creator_host_os": (36, ">I"), "original_size": (40, ">Q"),
    "current_size": (48, ">Q"), "geometry": (56, ">I"),
    "disk_type": (60, ">I"), "checksum": (64, ">I"), "uuid": (68, "16s"),
    "saved_state": (84, "B"), "hidden": (85, "B"),
}
HEADER_FIELDS = {
    "cookie": (0, "8s"), "data_offset": (8, ">Q"), "table_offset": (16, ">Q"),
    "header_version": (24, ">I"), "max_table_entries": (28, ">I"),
    "block_size": (32, ">I"), "checksum": (36, ">I"),
    "parent_uuid": (40, "16s"), "parent_timestamp": (56, ">I"),
    "reserved1": (60, ">I"), "parent_name": (64, "512s"),
}
LOCATOR_FORMAT = ">IIIIQ"  # code, data space, data length, reserved, offset


def rand_bytes(rnd, count):
    if not count:
        return b""
    return rnd.getrandbits(8 * count).to_bytes(count, "little")


def ones_complement_checksum(data, at):
    """The VHD checksum: one's complement of the byte sum, with the
    checksum field itself counted as zero."""
    total = sum(bytearray(data)) - sum(bytearray(data[at:at + 4]))
    return ~total & 0xFFFFFFFF


def unpack_fields(data, fields):
    result = {}
    for name, (offset, fmt) in fields.items():
        result[name] = struct.unpack_from(fmt, data, offset)[0]
    return result


def pack_fields(data, fields, changes):
    buf = bytearray(data)
    for name, value in changes.items():
        offset, fmt = fields[name]
        struct.pack_into(fmt, buf, offset, value)
    return buf


class VHDTestCase(unittest.TestCase):
    """A temporary directory and a seeded random generator per test."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="xhost-vhd-test-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.rnd = random.Random(self.id())

    def path(self, name):
        return os.path.join(self.dir, name)

    # -- raw file access --------------------------------------------------

    def read_at(self, path, offset, count):
        with open(path, "rb") as handle:
            handle.seek(offset)
            return handle.read(count)

    def write_at(self, path, offset, data):
        with open(path, "r+b") as handle:
            handle.seek(offset)
            handle.write(data)

    def footer_offset(self, path):
        return os.path.getsize(path) - 512

    def footer(self, path, at=None):
        if at is None:
            at = self.footer_offset(path)
        return unpack_fields(self.read_at(path, at, 512), FOOTER_FIELDS)

    def header(self, path):
        offset = self.footer(path)["data_offset"]
        data = self.read_at(path, offset, 1024)
        fields = unpack_fields(data, HEADER_FIELDS)
        fields["locators"] = [struct.unpack_from(LOCATOR_FORMAT, data,
                                                 576 + 24 * i)
                              for i in range(8)]
        return fields

    def bat(self, path):
        header = self.header(path)
        raw = self.read_at(path, header["table_offset"],
                           header["max_table_entries"] * 4)
        return list(struct.unpack(f">{header['max_table_entries']}I", raw))

    def rewrite_footer(self, path, at=None, checksum=True, **changes):
        """Change footer fields (at the end, or ``at``), fixing the
        checksum unless ``checksum`` is False."""
        if at is None:
            at = self.footer_offset(path)
        data = pack_fields(self.read_at(path, at, 512), FOOTER_FIELDS,
                           changes)
        if checksum:
            struct.pack_into(">I", data, 64, ones_complement_checksum(
                data, 64))
        self.write_at(path, at, bytes(data))

    def rewrite_both_footers(self, path, **changes):
        self.rewrite_footer(path, **changes)
        self.rewrite_footer(path, at=0, **changes)

    def rewrite_header(self, path, checksum=True, locators=None, **changes):
        offset = self.footer(path)["data_offset"]
        data = pack_fields(self.read_at(path, offset, 1024), HEADER_FIELDS,
                           changes)
        for index, entry in (locators or {}).items():
            struct.pack_into(LOCATOR_FORMAT, data, 576 + 24 * index, *entry)
        if checksum:
            struct.pack_into(">I", data, 36, ones_complement_checksum(
                data, 36))
        self.write_at(path, offset, bytes(data))

    # -- models -----------------------------------------------------------

    def random_writes(self, disk, model, count, max_length=5000,
                      aligned=False):
        """Random writes to an open VHDFile, mirrored into ``model``."""
        size = len(model)
        for _ in range(count):
            length = self.rnd.randrange(1, max_length)
            offset = self.rnd.randrange(0, size - length)
            if aligned:
                offset -= offset % 512
                length = max(512, length - length % 512)
            data = rand_bytes(self.rnd, length)
            disk.write(offset, data)
            model[offset:offset + length] = data

    def assertVHDError(self, func, *words):
        """``func`` raises VHDError whose message holds every word."""
        with self.assertRaises(vhd.VHDError) as caught:
            func()
        message = str(caught.exception)
        for word in words:
            self.assertIn(word, message)
        return caught.exception

    def assertReads(self, path, model, **kwargs):
        with vhd.open_chain(path, **kwargs) as disk:
            self.assertEqual(disk.virtual_size, len(model))
            self.assertEqual(disk.read(0, len(model)), bytes(model))
