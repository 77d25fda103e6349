"""VHD validation (vhd-util check): every refusal path, on corrupted files.

unittest style, standard library only (Python 3.6 compatible).
"""
import importlib.util
import os
import struct
import sys
import time
import unittest

_spec = importlib.util.spec_from_file_location(
    "vhd_testlib", os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "vhd_testlib.py"))
testlib = sys.modules.get("vhd_testlib") or importlib.util.module_from_spec(
    _spec)
if "vhd_testlib" not in sys.modules:
    sys.modules["vhd_testlib"] = testlib
    _spec.loader.exec_module(testlib)

vhd = testlib.vhd
MIB = testlib.MIB
VHD_EPOCH = 946684800
W2RU = struct.unpack(">I", b"W2ru")[0]


class FooterCheckTest(testlib.VHDTestCase):
    def setUp(self):
        super().setUp()
        self.dynamic = self.path("d.vhd")
        vhd.create_dynamic(self.dynamic, 4 * MIB)
        with vhd.open_vhd(self.dynamic, writable=True) as disk:
            disk.write(MIB, b"data" * 128)
        self.fixed = self.path("f.vhd")
        vhd.create_fixed(self.fixed, 2 * MIB)

    def test_valid_files_pass(self):
        self.assertEqual(vhd.check(self.dynamic), [self.dynamic])
        self.assertEqual(vhd.check(self.fixed, parents=True), [self.fixed])

    def test_bad_primary_cookie_points_at_repair(self):
        self.write_at(self.dynamic, self.footer_offset(self.dynamic),
                      b"notavhd!")
        error = self.assertVHDError(lambda: vhd.check(self.dynamic),
                                    self.dynamic, "primary footer invalid",
                                    "cookie")
        self.assertIn("repair", error.fix)
        self.assertVHDError(lambda: vhd.open_vhd(self.dynamic), "cookie",
                            "repair")

    def test_bad_checksums(self):
        self.rewrite_footer(self.dynamic, checksum=False, timestamp=12345)
        self.assertVHDError(lambda: vhd.check(self.dynamic),
                            "invalid checksum")
        self.assertVHDError(lambda: vhd.open_vhd(self.dynamic),
                            "footer checksum")
        self.rewrite_footer(self.fixed, checksum=False, timestamp=12345)
        error = self.assertVHDError(lambda: vhd.check(self.fixed),
                                    "checksum")
        self.assertIn("damaged", error.fix)

    def test_footer_copy_must_match(self):
        self.rewrite_footer(self.dynamic, at=0, timestamp=12345)
        self.assertVHDError(lambda: vhd.check(self.dynamic), "differ")
        self.write_at(self.dynamic, 0, b"garbage!")
        self.assertVHDError(lambda: vhd.check(self.dynamic),
                            "footer copy at offset 0 invalid", "cookie")

    def test_feature_and_version_fields(self):
        cases = [({"features": 0}, "'reserved' feature bit"),
                 ({"features": 6}, "unknown feature bits"),
                 ({"format_version": 0x00020000}, "file format version"),
                 ({"hidden": 2}, "invalid hidden flag 2"),
                 ({"saved_state": 3}, "invalid saved state 3"),
                 ({"geometry": (65535 << 16) | (16 << 8) | 255},
                  "geometry 65535/16/255"),
                 ({"creator_version": 0x00020000},
                  "unsupported tap creator version")]
        for changes, words in cases:
            vhd.create_dynamic(self.dynamic, 4 * MIB, overwrite=True)
            self.rewrite_both_footers(self.dynamic, **changes)
            self.assertVHDError(lambda: vhd.check(self.dynamic), words)

    def test_reserved_bytes_must_be_zero(self):
        for at in (0, self.footer_offset(self.dynamic)):
            raw = bytearray(self.read_at(self.dynamic, at, 512))
            raw[300] = 1
            struct.pack_into(">I", raw, 64,
                             testlib.ones_complement_checksum(raw, 64))
            self.write_at(self.dynamic, at, bytes(raw))
        self.assertVHDError(lambda: vhd.check(self.dynamic),
                            "non-zero reserved bytes")

    def test_disk_type_and_data_offset(self):
        self.rewrite_footer(self.fixed, disk_type=5)
        self.assertVHDError(lambda: vhd.check(self.fixed),
                            "invalid disk type 5")
        self.assertVHDError(lambda: vhd.open_vhd(self.fixed),
                            "unknown disk type 5")
        vhd.create_fixed(self.fixed, 2 * MIB, overwrite=True)
        self.rewrite_footer(self.fixed, data_offset=512)
        self.assertVHDError(lambda: vhd.check(self.fixed),
                            "set on a non-dynamic disk")
        self.rewrite_both_footers(self.dynamic, data_offset=100 * MIB)
        self.assertVHDError(lambda: vhd.check(self.dynamic),
                            "does not point at a header")
        self.assertVHDError(lambda: vhd.open_vhd(self.dynamic),
                            "does not point at a header")

    def test_timestamps_in_the_future(self):
        future = time.time() + 7200
        self.rewrite_both_footers(self.dynamic,
                                  timestamp=vhd.vhd_timestamp(future))
        error = self.assertVHDError(lambda: vhd.check(self.dynamic),
                                    "in the future")
        self.assertIn("clocks", str(error))
        vhd.check(self.dynamic, ignore_timestamps=True)
        vhd.check(self.dynamic, now=future)
        # vhd-util allows 30 minutes of skew.
        self.rewrite_both_footers(
            self.dynamic, timestamp=vhd.vhd_timestamp(time.time() + 1000))
        vhd.check(self.dynamic)
        with vhd.open_vhd(self.dynamic):
            pass  # opening never looks at the clock

    def test_fixed_size_and_file_length(self):
        self.rewrite_footer(self.fixed, current_size=3 * MIB,
                            original_size=3 * MIB)
        self.assertVHDError(lambda: vhd.check(self.fixed),
                            f"has {2 * MIB} data bytes but a virtual size "
                            f"of {3 * MIB}")
        self.assertVHDError(lambda: vhd.open_vhd(self.fixed), "truncated")
        with open(self.dynamic, "ab") as handle:
            handle.write(b"\x00" * 100)
        self.assertVHDError(lambda: vhd.check(self.dynamic),
                            "invalid file size")
        self.assertVHDError(lambda: vhd.open_vhd(self.dynamic),
                            "not a multiple of 512")

    def test_short_footer_of_old_virtual_pc(self):
        with open(self.fixed, "r+b") as handle:
            handle.truncate(2 * MIB + 511)
        self.assertEqual(vhd.check(self.fixed), [self.fixed])
        with vhd.open_vhd(self.fixed) as disk:
            self.assertEqual(disk.virtual_size, 2 * MIB)


class HeaderAndBatCheckTest(testlib.VHDTestCase):
    def setUp(self):
        super().setUp()
        self.disk = self.path("d.vhd")
        vhd.create_dynamic(self.disk, 6 * MIB)
        with vhd.open_vhd(self.disk, writable=True) as disk:
            disk.write(0, b"a" * 512)
            disk.write(2 * MIB, b"b" * 512)

    def test_header_fields(self):
        # (changes, words, whether opening refuses it too: reading needs
        # the cookie, block size, BAT position and size, not the rest)
        cases = [({"cookie": b"xxsparse"}, "cookie", True),
                 ({"header_version": 0x00020000}, "version", False),
                 ({"data_offset": 0}, "data offset", False),
                 ({"block_size": 3 * MIB}, "power of two", True),
                 ({"table_offset": 700 * MIB}, "does not fit", True),
                 ({"reserved1": 1}, "reserved", False),
                 ({"max_table_entries": 2}, "needs 3", True)]
        original = self.read_at(self.disk, 0, os.path.getsize(self.disk))
        for changes, words, open_refuses in cases:
            with open(self.disk, "wb") as handle:
                handle.write(original)
            self.rewrite_header(self.disk, **changes)
            self.assertVHDError(lambda: vhd.check(self.disk),
                                "header invalid", words)
            if open_refuses:
                self.assertRaises(vhd.VHDError, vhd.open_vhd, self.disk)
            else:
                vhd.open_vhd(self.disk).close()
        with open(self.disk, "wb") as handle:
            handle.write(original)
        self.rewrite_header(self.disk, checksum=False, block_size=4 * MIB)
        self.assertVHDError(lambda: vhd.check(self.disk), "header invalid",
                            "checksum")
        self.assertVHDError(lambda: vhd.open_vhd(self.disk),
                            "dynamic header checksum")

    def set_bat(self, index, sector):
        table = self.header(self.disk)["table_offset"]
        self.write_at(self.disk, table + 4 * index, struct.pack(">I", sector))

    def test_bat_entry_past_the_end(self):
        self.set_bat(2, 0x00100000)
        self.assertVHDError(lambda: vhd.check(self.disk), "block 2",
                            "past the end")
        self.assertVHDError(lambda: vhd.open_vhd(self.disk), "block 2",
                            "past the end", "truncated")

    def test_overlapping_blocks(self):
        bat = self.bat(self.disk)
        self.set_bat(1, bat[0] + 1)
        self.assertVHDError(lambda: vhd.check(self.disk), "overlaps block")
        self.set_bat(1, bat[0])
        self.assertVHDError(lambda: vhd.check(self.disk), "overlaps block")

    def test_block_inside_the_metadata(self):
        self.set_bat(1, 2)  # sector 2 is inside the header
        self.assertVHDError(lambda: vhd.check(self.disk), "block 1",
                            "clobbers the metadata")

    def test_truncated_file(self):
        size = os.path.getsize(self.disk)
        with open(self.disk, "r+b") as handle:
            handle.truncate(size - 2 * MIB)
            handle.seek(size - 2 * MIB - 512)
            handle.write(self.read_at(self.disk, 0, 512))
        self.assertVHDError(lambda: vhd.check(self.disk), "past the end")


class DifferencingCheckTest(testlib.VHDTestCase):
    def setUp(self):
        super().setUp()
        self.parent = self.path("parent.vhd")
        self.child = self.path("child.vhd")
        vhd.create_dynamic(self.parent, 4 * MIB)
        vhd.create_differencing(self.child, self.parent)

    def locator(self, index):
        return self.header(self.child)["locators"][index]

    def test_parent_fields(self):
        future = vhd.vhd_timestamp(time.time() + 7200)
        self.rewrite_header(self.child, parent_timestamp=future)
        self.assertVHDError(lambda: vhd.check(self.child),
                            "parent timestamp is in the future")
        vhd.check(self.child, ignore_timestamps=True)
        self.rewrite_header(self.child, parent_timestamp=0,
                            parent_name=bytes(512))
        self.assertVHDError(lambda: vhd.check(self.child),
                            "invalid parent name")
        name = "parent.vhd".encode("utf-16-be")
        self.rewrite_header(self.child, parent_name=name + bytes(
            512 - len(name)), parent_uuid=bytes(16))
        self.assertVHDError(lambda: vhd.check(self.child),
                            "null parent UUID")
        self.assertVHDError(lambda: vhd.open_vhd(self.child), "raw parent")

    def test_parent_timestamp_is_not_compared_with_the_parent(self):
        # Like vhd-util: only the clock matters, not the parent's mtime.
        os.utime(self.parent, (time.time() - 86400, time.time() - 86400))
        self.rewrite_header(self.child, parent_timestamp=1)
        self.assertEqual(len(vhd.check(self.child, parents=True)), 2)

    def test_locator_name_must_match_header(self):
        name = "other.vhd".encode("utf-16-be")
        self.rewrite_header(self.child,
                            parent_name=name + bytes(512 - len(name)))
        error = self.assertVHDError(lambda: vhd.check(self.child),
                                    "names 'parent.vhd'",
                                    "header names 'other.vhd'")
        self.assertIn("set_parent", error.fix)

    def test_missing_parent(self):
        os.unlink(self.parent)
        error = self.assertVHDError(lambda: vhd.check(self.child),
                                    "points to missing file")
        self.assertIn("set_parent", error.fix)

    def test_stale_absolute_locator_fails_like_vhd_util(self):
        child = self.path("abs.vhd")
        vhd.create_differencing(child, self.parent, absolute_locator=True)
        moved = self.path("moved")
        os.mkdir(moved)
        for path in (self.parent, child):
            os.rename(path, os.path.join(moved, os.path.basename(path)))
        moved_child = os.path.join(moved, "abs.vhd")
        self.assertVHDError(lambda: vhd.check(moved_child), "W2ku",
                            "missing file")
        # Reading still works: the relative locators resolve.
        with vhd.open_chain(moved_child) as disk:
            self.assertEqual(disk.read(0, 512), bytes(512))
        vhd.set_parent(moved_child, os.path.join(moved, "parent.vhd"))
        vhd.check(moved_child, parents=True)

    def test_locator_entries(self):
        code, space, length, _, offset = self.locator(0)
        cases = [({1: (W2RU, space, length, 0, offset + space)},
                  "duplicate platform code W2ru"),
                 ({0: (0x12345678, space, length, 0, offset)},
                  "unknown platform code"),
                 ({0: (code, space, length, 0, 0)}, "zero data offset"),
                 ({0: (code, 700, length, 0, offset)}, "invalid data space"),
                 ({0: (code, space, 0, 0, offset)}, "invalid data length"),
                 ({0: (code, space, length, 5, offset)}, "reserved"),
                 ({5: (0, 512, 0, 0, 0)}, "empty entry with non-zero"),
                 ({0: (code, space, length, 0, 1536)}, "overlaps"),
                 ({0: (code, space, length, 0, 50 * MIB)},
                  "runs into the footer")]
        original = self.read_at(self.child, 0, os.path.getsize(self.child))
        for locators, words in cases:
            with open(self.child, "wb") as handle:
                handle.write(original)
            self.rewrite_header(self.child, locators=locators)
            self.assertVHDError(lambda: vhd.check(self.child), words)

    def test_undecodable_locator(self):
        _, _, length, _, offset = self.locator(1)  # MacX
        self.write_at(self.child, offset, b"http://x" + b"y" * (length - 8))
        self.assertVHDError(lambda: vhd.check(self.child), "MacX",
                            "does not decode")

    def test_no_path_locator(self):
        self.rewrite_header(self.child, locators={
            i: (0, 0, 0, 0, 0) for i in range(8)})
        self.assertVHDError(lambda: vhd.check(self.child),
                            "could not find parent 'parent.vhd'")

    def test_parent_fields_on_a_dynamic_disk(self):
        cases = [({"parent_timestamp": 5}, "parent timestamp set"),
                 ({"parent_uuid": b"u" * 16}, "parent UUID set"),
                 ({"parent_name": b"x" + bytes(511)}, "parent name set"),
                 ({"locators": {0: (W2RU, 512, 4, 0, 4096)}},
                  "parent locators set")]
        for changes, words in cases:
            vhd.create_dynamic(self.parent, 4 * MIB, overwrite=True)
            self.rewrite_header(self.parent, **changes)
            self.assertVHDError(lambda: vhd.check(self.parent), words)

    def test_invalid_parent_in_the_chain(self):
        self.rewrite_header(self.parent, checksum=False, block_size=1)
        self.assertVHDError(lambda: vhd.check(self.child),
                            "error opening parent", "checksum")
        with self.assertRaises(vhd.VHDError) as caught:
            vhd.check(self.child, parents=True)
        self.assertIn("checksum", str(caught.exception))


class BlktapBatmapTest(testlib.VHDTestCase):
    """A blktap 1.3 file: batmap after the BAT, blocks after the batmap."""

    def setUp(self):
        super().setUp()
        self.disk = self.path("tap.vhd")
        vhd.create_dynamic(self.disk, 8 * MIB)
        self.pattern = b"T" * (2 * MIB)
        # BAT 1536..2048, batmap header 2048, map 2560, block 0 at 3072.
        self.write_batmap(bits=0x80)
        block = 3072
        self.write_at(self.disk, block, b"\xff" * 512 + self.pattern)
        footer = self.read_at(self.disk, 0, 512)
        self.write_at(self.disk, block + 512 + 2 * MIB, footer)
        self.write_at(self.disk, 1536, struct.pack(">I", block // 512))
        self.rewrite_both_footers(self.disk, creator_version=0x00010003)

    def write_batmap(self, bits, checksum=None, version=0x00010002):
        bitmap = bytes([bits]) + bytes(511)
        if checksum is None:
            checksum = ~sum(bytearray(bitmap)) & 0xFFFFFFFF
        header = struct.pack(">8sQIIIB", b"tdbatmap", 2560, 1, version,
                             checksum, 0)
        self.write_at(self.disk, 2048, header + bytes(512 - len(header)))
        self.write_at(self.disk, 2560, bitmap)

    def test_valid_file_reads_and_writes(self):
        self.assertEqual(vhd.check(self.disk), [self.disk])
        with vhd.open_vhd(self.disk, writable=True) as disk:
            self.assertEqual(disk.batmap["offset"], 2560)
            self.assertEqual(disk.end_of_metadata(), 3072)
            self.assertEqual(disk.read(0, 2 * MIB), self.pattern)
            disk.write(5 * MIB, b"new")
        vhd.check(self.disk)
        with vhd.open_vhd(self.disk) as disk:
            self.assertEqual(disk.read(5 * MIB, 3), b"new")
            self.assertEqual(disk.read(0, 4), b"TTTT")

    def test_batmap_checksum(self):
        self.write_batmap(bits=0x80, checksum=1)
        self.assertVHDError(lambda: vhd.check(self.disk), "batmap invalid",
                            "checksum")

    def test_batmap_marking_unallocated_block(self):
        self.write_batmap(bits=0xC0)
        self.assertVHDError(lambda: vhd.check(self.disk),
                            "marks unallocated block 1 full")

    def test_block_inside_batmap(self):
        self.write_at(self.disk, 1536 + 4, struct.pack(">I", 5))
        self.assertVHDError(lambda: vhd.check(self.disk),
                            "clobbers the metadata")

    def test_batmap_version(self):
        self.write_batmap(bits=0x80, version=0x00020000)
        self.assertVHDError(lambda: vhd.check(self.disk),
                            "unsupported version")


if __name__ == "__main__":
    unittest.main()
