"""VHD library: creation, reading, writing, chains, hidden flag, info, CLI.

unittest style, standard library only: runs under pytest and under
``python3.6 -m unittest discover -s tests/dom0``.
"""
import importlib.util
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import unittest
import uuid
from contextlib import redirect_stderr, redirect_stdout

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


class GeometryAndTimeTest(unittest.TestCase):
    def test_chs_of_known_sizes(self):
        # Values from the VHD specification's algorithm, checked by hand.
        self.assertEqual(vhd.chs_geometry(64 * MIB), (963, 8, 17))
        self.assertEqual(vhd.chs_geometry(1024 * MIB), (2080, 16, 63))
        self.assertEqual(vhd.chs_geometry(200 * 1024 * MIB),
                         (65535, 16, 255))

    def test_chs_rounding_matches_qemu(self):
        # qemu-img create -f vpc 64M gives 67125248 (see real-components).
        self.assertEqual(vhd.chs_rounded_size(64 * MIB), 67125248)
        self.assertEqual(vhd.chs_rounded_size(67125248), 67125248)
        huge = 200 * 1024 * MIB
        self.assertEqual(vhd.chs_rounded_size(huge), huge)

    def test_timestamps_count_from_2000(self):
        self.assertEqual(vhd.vhd_timestamp(VHD_EPOCH), 0)
        self.assertEqual(vhd.vhd_timestamp(VHD_EPOCH + 86400), 86400)
        self.assertEqual(vhd.vhd_timestamp(0), 0)


class CreateTest(testlib.VHDTestCase):
    def check_footer_checksum(self, path, at):
        raw = self.read_at(path, at, 512)
        self.assertEqual(struct.unpack(">I", raw[64:68])[0],
                         testlib.ones_complement_checksum(raw, 64))

    def test_fixed(self):
        path = self.path("fixed.vhd")
        wanted = uuid.uuid4()
        got = vhd.create_fixed(path, 5 * MIB, uuid=wanted,
                               timestamp=VHD_EPOCH + 1000)
        self.assertEqual(got, wanted)
        self.assertEqual(os.path.getsize(path), 5 * MIB + 512)
        footer = self.footer(path)
        self.assertEqual(footer["cookie"], b"conectix")
        self.assertEqual(footer["features"], 2)
        self.assertEqual(footer["format_version"], 0x00010000)
        self.assertEqual(footer["data_offset"], 0xFFFFFFFFFFFFFFFF)
        self.assertEqual(footer["timestamp"], 1000)
        self.assertEqual(footer["creator_app"], b"tap\x00")
        self.assertEqual(footer["creator_version"], 0x00010001)
        self.assertEqual(footer["original_size"], 5 * MIB)
        self.assertEqual(footer["current_size"], 5 * MIB)
        cyl, heads, spt = vhd.chs_geometry(5 * MIB)
        self.assertEqual(footer["geometry"], (cyl << 16) | (heads << 8) | spt)
        self.assertEqual(footer["disk_type"], 2)
        self.assertEqual(footer["uuid"], wanted.bytes)
        self.check_footer_checksum(path, 5 * MIB)
        # The data area is a hole.
        self.assertLess(os.stat(path).st_blocks * 512, 1 * MIB)
        self.assertEqual(vhd.check(path), [path])

    def test_dynamic_layout(self):
        path = self.path("dyn.vhd")
        vhd.create_dynamic(path, 9 * MIB)
        entries = 5  # ceil(9 MiB / 2 MiB)
        self.assertEqual(os.path.getsize(path), 512 + 1024 + 512 + 512)
        self.assertEqual(self.read_at(path, 0, 512), self.read_at(
            path, self.footer_offset(path), 512))
        footer = self.footer(path)
        self.assertEqual(footer["disk_type"], 3)
        self.assertEqual(footer["data_offset"], 512)
        self.check_footer_checksum(path, 0)
        header = self.header(path)
        self.assertEqual(header["cookie"], b"cxsparse")
        self.assertEqual(header["data_offset"], 0xFFFFFFFFFFFFFFFF)
        self.assertEqual(header["table_offset"], 1536)
        self.assertEqual(header["header_version"], 0x00010000)
        self.assertEqual(header["max_table_entries"], entries)
        self.assertEqual(header["block_size"], 2 * MIB)
        raw = self.read_at(path, 512, 1024)
        self.assertEqual(header["checksum"],
                         testlib.ones_complement_checksum(raw, 36))
        self.assertEqual(header["parent_uuid"], bytes(16))
        self.assertEqual(self.read_at(path, 1536, 512), b"\xff" * 512)
        self.assertEqual(vhd.check(path), [path])

    def test_block_size_and_max_size(self):
        path = self.path("dyn.vhd")
        vhd.create_dynamic(path, 4 * MIB, block_size=512 * 1024,
                           max_size=64 * MIB)
        header = self.header(path)
        self.assertEqual(header["block_size"], 512 * 1024)
        self.assertEqual(header["max_table_entries"], 128)
        self.assertEqual(self.footer(path)["current_size"], 4 * MIB)
        vhd.check(path)

    def test_sizes_round_up_to_a_sector_or_chs(self):
        path = self.path("a.vhd")
        vhd.create_dynamic(path, 1000)
        self.assertEqual(self.footer(path)["current_size"], 1024)
        path = self.path("b.vhd")
        vhd.create_dynamic(path, 64 * MIB, chs_round=True)
        self.assertEqual(self.footer(path)["current_size"], 67125248)
        path = self.path("c.vhd")
        vhd.create_fixed(path, 64 * MIB, chs_round=True)
        self.assertEqual(os.path.getsize(path), 67125248 + 512)

    def test_differencing_fields_and_locators(self):
        parent = self.path("parent.vhd")
        child = self.path("child.vhd")
        parent_uuid = vhd.create_dynamic(parent, 4 * MIB)
        os.utime(parent, (VHD_EPOCH + 5000, VHD_EPOCH + 5000))
        vhd.create_differencing(child, parent, absolute_locator=True)
        footer = self.footer(child)
        self.assertEqual(footer["disk_type"], 4)
        self.assertEqual(footer["current_size"], 4 * MIB)
        header = self.header(child)
        self.assertEqual(header["parent_uuid"], parent_uuid.bytes)
        self.assertEqual(header["parent_timestamp"], 5000)
        self.assertEqual(header["parent_name"].decode("utf-16-be").rstrip(
            "\x00"), "parent.vhd")
        found = {}
        for code, space, length, reserved, offset in header["locators"]:
            if not code:
                continue
            self.assertEqual(reserved, 0)
            self.assertEqual(space % 512, 0)
            self.assertGreaterEqual(space, length)
            found[struct.pack(">I", code)] = self.read_at(child, offset,
                                                          length)
        self.assertEqual(found[b"W2ru"], ".\\parent.vhd".encode("utf-16-le"))
        self.assertEqual(found[b"MacX"], b"file://./parent.vhd")
        self.assertEqual(
            found[b"W2ku"],
            os.path.realpath(parent).replace("/", "\\").encode("utf-16-le"))
        self.assertEqual(vhd.check(child, parents=True),
                         [child, os.path.realpath(parent)])

    def test_differencing_child_may_be_larger(self):
        parent = self.path("p.vhd")
        vhd.create_dynamic(parent, 4 * MIB)
        child = self.path("c.vhd")
        vhd.create_differencing(child, parent, size=8 * MIB)
        model = bytearray(8 * MIB)
        self.assertReads(child, model)

    def test_refusals_leave_nothing_behind(self):
        path = self.path("x.vhd")
        for size in (0, -512, 2041 * 1024 * MIB, "1G", 1.5, True):
            self.assertVHDError(lambda s=size: vhd.create_dynamic(path, s),
                                path)
            self.assertFalse(os.path.exists(path))
        self.assertVHDError(lambda: vhd.create_fixed(path, 2041 * 1024 * MIB),
                            "2040 GiB")
        for block in (3 * MIB, 1024, 512 * MIB):
            self.assertVHDError(
                lambda b=block: vhd.create_dynamic(path, MIB, block_size=b),
                "invalid block size", "power of two")
        self.assertVHDError(lambda: vhd.create_dynamic(path, MIB, uuid="x"),
                            "invalid UUID")
        missing_dir = self.path("no/such/dir/x.vhd")
        self.assertVHDError(lambda: vhd.create_dynamic(missing_dir, MIB),
                            "cannot create")
        self.assertEqual(os.listdir(self.dir), [])

    def test_existing_file_is_kept_unless_overwrite(self):
        path = self.path("x.vhd")
        first = vhd.create_dynamic(path, MIB)
        self.assertVHDError(lambda: vhd.create_dynamic(path, 2 * MIB),
                            "already exists", "overwrite=True")
        self.assertEqual(vhd.info(path)["uuid"], str(first))
        second = vhd.create_fixed(path, 2 * MIB, overwrite=True)
        self.assertEqual(vhd.info(path)["uuid"], str(second))
        self.assertEqual(vhd.info(path)["disk_type"], "fixed")
        self.assertEqual(sorted(os.listdir(self.dir)), ["x.vhd"])

    def test_differencing_refusals(self):
        parent = self.path("p.vhd")
        vhd.create_dynamic(parent, 4 * MIB)
        child = self.path("c.vhd")
        self.assertVHDError(
            lambda: vhd.create_differencing(child, parent, size=2 * MIB),
            "smaller than the parent")
        self.assertVHDError(
            lambda: vhd.create_differencing(child, self.path("none.vhd")),
            "cannot open")
        raw = self.path("raw.img")
        with open(raw, "wb") as handle:
            handle.write(b"\x01" * 4096)
        self.assertVHDError(lambda: vhd.create_differencing(child, raw),
                            "cookie")
        self.assertFalse(os.path.exists(child))

    def test_chain_depth_limit_on_create(self):
        names = [self.path(f"d{i}.vhd") for i in range(4)]
        vhd.create_dynamic(names[0], MIB)
        for index in (1, 2):
            vhd.create_differencing(names[index], names[index - 1])
        self.assertVHDError(
            lambda: vhd.create_differencing(names[3], names[2], max_depth=3),
            "4 files deep", "coalesce")
        self.assertFalse(os.path.exists(names[3]))
        vhd.create_differencing(names[3], names[2], max_depth=4)


class ReadWriteTest(testlib.VHDTestCase):
    def test_dynamic_random_writes_round_trip(self):
        path = self.path("d.vhd")
        size = 9 * MIB + 3 * 512
        vhd.create_dynamic(path, size)
        model = bytearray(size)
        with vhd.open_vhd(path, writable=True) as disk:
            self.assertEqual(disk.read(0, size), bytes(size))
            self.random_writes(disk, model, 40)
            self.assertEqual(disk.read(0, size), bytes(model))
            # Unaligned reads across block boundaries.
            for _ in range(20):
                start = self.rnd.randrange(0, size - 1)
                count = self.rnd.randrange(0, min(3 * MIB, size - start))
                self.assertEqual(disk.read(start, count),
                                 bytes(model[start:start + count]))
        self.assertReads(path, model)
        self.assertEqual(vhd.check(path), [path])

    def test_allocation_appends_blocks_and_moves_the_footer(self):
        path = self.path("d.vhd")
        vhd.create_dynamic(path, 8 * MIB)
        empty = os.path.getsize(path)
        with vhd.open_vhd(path, writable=True) as disk:
            disk.write(6 * MIB + 512, b"\x07" * 512)
            disk.write(0, b"\x09" * 1024)
            self.assertEqual(disk.allocated_blocks(), [0, 3])
        bat = self.bat(path)
        span = 512 + 2 * MIB
        self.assertEqual(bat[3] * 512, empty - 512)
        self.assertEqual(bat[0] * 512, empty - 512 + span)
        self.assertEqual(bat[1], 0xFFFFFFFF)
        self.assertEqual(os.path.getsize(path), empty + 2 * span)
        self.assertEqual(self.read_at(path, 0, 512),
                         self.read_at(path, self.footer_offset(path), 512))
        # Bitmap of block 3: only sector 1 is marked (MSB first).
        bitmap = self.read_at(path, bat[3] * 512, 512)
        self.assertEqual(bitmap[0], 0x40)
        self.assertEqual(bitmap[1:], bytes(511))
        bitmap = self.read_at(path, bat[0] * 512, 512)
        self.assertEqual(bitmap[:1], b"\xc0")
        with vhd.open_vhd(path) as disk:
            self.assertEqual(disk.sector_bitmap(3)[0], 0x40)
            self.assertIsNone(disk.sector_bitmap(1))
        # Unwritten data of an allocated block stays a hole.
        self.assertLess(os.stat(path).st_blocks * 512, 256 * 1024)

    def test_small_blocks(self):
        path = self.path("d.vhd")
        size = 3 * MIB
        vhd.create_dynamic(path, size, block_size=64 * 1024)
        model = bytearray(size)
        with vhd.open_vhd(path, writable=True) as disk:
            self.random_writes(disk, model, 60, max_length=200000)
        self.assertReads(path, model)
        vhd.check(path)

    def test_fixed_random_writes(self):
        path = self.path("f.vhd")
        size = 3 * MIB
        vhd.create_fixed(path, size)
        model = bytearray(size)
        with vhd.open_vhd(path, writable=True) as disk:
            self.random_writes(disk, model, 30)
        self.assertEqual(os.path.getsize(path), size + 512)
        self.assertReads(path, model)
        vhd.check(path)

    def test_partial_sector_write_in_child_keeps_parent_bytes(self):
        parent = self.path("p.vhd")
        child = self.path("c.vhd")
        vhd.create_dynamic(parent, 4 * MIB)
        with vhd.open_vhd(parent, writable=True) as disk:
            disk.write(0, b"P" * 4096)
        vhd.create_differencing(child, parent)
        with vhd.open_chain(child, writable=True) as disk:
            disk.write(700, b"c" * 10)
            self.assertEqual(disk.read(512, 512),
                             b"P" * 188 + b"c" * 10 + b"P" * 314)
            bitmap = disk.sector_bitmap(0)
        self.assertEqual(bitmap[0], 0x40)  # only sector 1 is the child's

    def test_bounds_and_modes(self):
        path = self.path("d.vhd")
        vhd.create_dynamic(path, MIB)
        with vhd.open_vhd(path) as disk:
            self.assertVHDError(lambda: disk.read(MIB - 10, 11),
                                "outside the virtual size")
            self.assertVHDError(lambda: disk.read(-1, 1), "outside")
            self.assertVHDError(lambda: disk.write(0, b"x"), "read-only",
                                "writable=True")
        with vhd.open_vhd(path, writable=True) as disk:
            self.assertVHDError(lambda: disk.write(MIB - 1, b"xy"),
                                "outside the virtual size", "resize")
            disk.write(MIB - 2, b"xy")
        self.assertVHDError(lambda: disk.read(0, 1), "closed")

    def test_differencing_without_parent_refuses_parent_reads(self):
        parent = self.path("p.vhd")
        child = self.path("c.vhd")
        vhd.create_dynamic(parent, MIB)
        vhd.create_differencing(child, parent)
        with vhd.open_vhd(child, writable=True) as disk:
            disk.write(0, b"\x05" * 512)  # aligned: no parent needed
            self.assertEqual(disk.read(0, 512), b"\x05" * 512)
            self.assertVHDError(lambda: disk.read(0, 1024), "not opened",
                                "open_chain")
            self.assertVHDError(lambda: disk.write(1024, b"x"),
                                "open_chain")

    def test_open_refuses_non_vhd_and_damaged_files(self):
        path = self.path("junk")
        with open(path, "wb") as handle:
            handle.write(b"\x00" * 2048)
        self.assertVHDError(lambda: vhd.open_vhd(path), path, "cookie",
                            "not a VHD")
        with open(path, "wb") as handle:
            handle.write(b"\x00" * 100)
        self.assertVHDError(lambda: vhd.open_vhd(path), "too short")
        self.assertVHDError(lambda: vhd.open_vhd(self.path("none")),
                            "cannot open")
        self.assertVHDError(lambda: vhd.open_vhd(self.dir),
                            "not a regular file")


class ChainTest(testlib.VHDTestCase):
    def build_chain(self, depth, size=6 * MIB, directory=None, sizes=None):
        """base + (depth-1) differencing layers with random writes;
        returns the paths (base first) and the leaf's model."""
        directory = directory or self.dir
        paths = [os.path.join(directory, f"layer{i}.vhd")
                 for i in range(depth)]
        model = bytearray(size)
        vhd.create_dynamic(paths[0], size)
        with vhd.open_vhd(paths[0], writable=True) as disk:
            self.random_writes(disk, model, 15, max_length=300000)
        for index in range(1, depth):
            block = (sizes or {}).get(index, 2 * MIB)
            vhd.create_differencing(paths[index], paths[index - 1],
                                    block_size=block)
            with vhd.open_chain(paths[index], writable=True) as disk:
                self.random_writes(disk, model, 15, max_length=300000)
        return paths, model

    def test_depth_four_reads_through(self):
        paths, model = self.build_chain(4, sizes={2: 512 * 1024,
                                                  3: 64 * 1024})
        self.assertReads(paths[-1], model)
        with vhd.open_chain(paths[-1]) as leaf:
            self.assertEqual([os.path.basename(d.path) for d in leaf.chain()],
                             ["layer3.vhd", "layer2.vhd", "layer1.vhd",
                              "layer0.vhd"])
        self.assertEqual(len(vhd.check(paths[-1], parents=True)), 4)

    def test_moved_chain_resolves_relative_locators(self):
        paths, model = self.build_chain(3)
        moved = self.path("moved")
        os.mkdir(moved)
        for path in paths:
            shutil.move(path, moved)
        leaf = os.path.join(moved, "layer2.vhd")
        self.assertReads(leaf, model)
        vhd.check(leaf, parents=True)

    def test_search_dir_override_and_header_name(self):
        paths, model = self.build_chain(3)
        elsewhere = self.path("parents")
        os.mkdir(elsewhere)
        for path in paths[:2]:
            shutil.move(path, elsewhere)
        self.assertVHDError(lambda: vhd.open_chain(paths[2]), "not found",
                            "search_dirs")
        self.assertReads(paths[2], model, search_dirs=[elsewhere])
        self.assertEqual(
            len(vhd.check(paths[2], parents=True, search_dirs=[elsewhere])),
            3)
        # Without locators, the header's parent name next to the child
        # still finds the parent.
        shutil.move(os.path.join(elsewhere, "layer1.vhd"), self.dir)
        self.rewrite_header(paths[2], locators={
            i: (0, 0, 0, 0, 0) for i in range(8)})
        with vhd.open_vhd(paths[2]) as leaf:
            self.assertEqual(leaf.parent_locator_paths(), [])
            self.assertEqual(vhd.find_parent(leaf), paths[1])

    def test_wrong_parent_uuid_is_refused(self):
        paths, _ = self.build_chain(2)
        os.unlink(paths[0])
        vhd.create_dynamic(paths[0], 6 * MIB)  # same name, new UUID
        error = self.assertVHDError(lambda: vhd.open_chain(paths[1]),
                                    "parent UUID mismatch", paths[1])
        self.assertIn("set_parent", error.fix)
        self.assertVHDError(lambda: vhd.check(paths[1]),
                            "invalid parent UUID")

    def test_loops_are_refused(self):
        paths, _ = self.build_chain(3)
        # set_parent itself refuses to make a loop...
        self.assertVHDError(lambda: vhd.set_parent(paths[1], paths[2]),
                            "loop")
        self.assertVHDError(lambda: vhd.set_parent(paths[1], paths[1]),
                            "its own parent")
        # ...so craft one by hand: layer1's parent becomes layer2.
        leaf_uuid = self.footer(paths[2])["uuid"]
        self.make_raw_parent_link(paths[1], "layer2.vhd", leaf_uuid)
        self.assertVHDError(lambda: vhd.open_chain(paths[2]), "loops")
        self.assertVHDError(lambda: vhd.check(paths[2], parents=True),
                            "loops")

    def make_raw_parent_link(self, child, parent_name, parent_uuid):
        """Point ``child`` at ``parent_name`` by editing bytes only."""
        header = self.header(child)
        locators = {}
        for index, (code, space, _length, res, offset) in enumerate(
                header["locators"]):
            if code == struct.unpack(">I", b"W2ru")[0]:
                data = (".\\" + parent_name).encode("utf-16-le")
            elif code == struct.unpack(">I", b"MacX")[0]:
                data = ("file://./" + parent_name).encode("utf-8")
            else:
                continue
            self.write_at(child, offset, data + bytes(space - len(data)))
            locators[index] = (code, space, len(data), res, offset)
        name = parent_name.encode("utf-16-be")
        self.rewrite_header(child, parent_uuid=parent_uuid,
                            parent_name=name + bytes(512 - len(name)),
                            locators=locators)

    def test_depth_limit(self):
        paths, model = self.build_chain(4, size=2 * MIB)
        self.assertVHDError(lambda: vhd.open_chain(paths[3], max_depth=3),
                            "deeper than 3")
        self.assertVHDError(
            lambda: vhd.check(paths[3], parents=True, max_depth=3),
            "deeper than 3", "coalesce")
        self.assertReads(paths[3], model, max_depth=4)

    def test_data_ranges_cover_all_layers(self):
        paths, model = self.build_chain(3)
        with vhd.open_chain(paths[2]) as leaf:
            ranges = list(leaf.data_ranges())
            covered = bytearray(len(model))
            for start, end in ranges:
                covered[start:end] = b"\x01" * (end - start)
            for start in range(0, len(model), 4096):
                if any(model[start:start + 4096]):
                    self.assertTrue(covered[start], start)
            base = leaf.parent.parent
            above = list(leaf.data_ranges(stop_at=base))
            own = [(b * 2 * MIB, min(len(model), (b + 1) * 2 * MIB))
                   for layer in (leaf, leaf.parent)
                   for b in layer.allocated_blocks()]
            self.assertEqual(sorted(above), sorted(own))


class HiddenTest(testlib.VHDTestCase):
    def test_query_and_set(self):
        path = self.path("d.vhd")
        vhd.create_dynamic(path, MIB)
        self.assertFalse(vhd.get_hidden(path))
        vhd.set_hidden(path, True)
        self.assertTrue(vhd.get_hidden(path))
        self.assertEqual(self.footer(path)["hidden"], 1)
        self.assertEqual(self.footer(path, at=0)["hidden"], 1)
        raw = self.read_at(path, self.footer_offset(path), 512)
        self.assertEqual(struct.unpack(">I", raw[64:68])[0],
                         testlib.ones_complement_checksum(raw, 64))
        vhd.check(path)
        self.assertTrue(vhd.info(path)["hidden"])
        vhd.set_hidden(path, False)
        self.assertFalse(vhd.get_hidden(path))

    def test_fixed_disks_have_the_flag_too(self):
        path = self.path("f.vhd")
        vhd.create_fixed(path, MIB)
        vhd.set_hidden(path)
        self.assertTrue(vhd.get_hidden(path))
        self.assertEqual(os.path.getsize(path), MIB + 512)

    def test_old_tapdisk_checksum_quirk(self):
        # Early blktap set "hidden" without updating the checksum; blktap
        # accepts such footers, so must we.
        path = self.path("d.vhd")
        vhd.create_dynamic(path, MIB)
        for at in (0, self.footer_offset(path)):
            self.rewrite_footer(path, at=at, checksum=False, hidden=1)
        self.assertTrue(vhd.get_hidden(path))
        vhd.check(path)
        # A newer tap version gets no such leniency.
        for at in (0, self.footer_offset(path)):
            self.rewrite_footer(path, at=at, hidden=0,
                                creator_version=0x00010003)
            self.rewrite_footer(path, at=at, checksum=False, hidden=1)
        self.assertVHDError(lambda: vhd.open_vhd(path), "checksum")


class InfoTest(testlib.VHDTestCase):
    def test_info_of_each_type(self):
        fixed = self.path("f.vhd")
        vhd.create_fixed(fixed, 3 * MIB, timestamp=VHD_EPOCH + 77)
        facts = vhd.info(fixed)
        self.assertEqual(facts["disk_type"], "fixed")
        self.assertEqual(facts["virtual_size"], 3 * MIB)
        self.assertIsNone(facts["block_size"])
        self.assertIsNone(facts["allocated_blocks"])
        self.assertEqual(facts["physical_size"], 3 * MIB + 512)
        self.assertEqual(facts["timestamp"], VHD_EPOCH + 77)
        self.assertEqual(facts["creator_app"], "tap")
        self.assertEqual(facts["creator_version"], "1.1")

        base = self.path("b.vhd")
        base_uuid = vhd.create_dynamic(base, 6 * MIB)
        with vhd.open_vhd(base, writable=True) as disk:
            disk.write(3 * MIB, b"x" * 512)
        facts = vhd.info(base)
        self.assertEqual(facts["disk_type"], "dynamic")
        self.assertEqual(facts["uuid"], str(base_uuid))
        self.assertEqual(facts["block_size"], 2 * MIB)
        self.assertEqual(facts["max_table_entries"], 3)
        self.assertEqual(facts["allocated_blocks"], 1)
        self.assertEqual(facts["physical_size"], os.path.getsize(base))
        self.assertIsNone(facts["parent_uuid"])
        self.assertFalse(facts["hidden"])

        child = self.path("c.vhd")
        vhd.create_differencing(child, base)
        facts = vhd.info(child)
        self.assertEqual(facts["disk_type"], "differencing")
        self.assertEqual(facts["parent_uuid"], str(base_uuid))
        self.assertEqual(facts["parent_name"], "b.vhd")
        self.assertEqual(facts["allocated_blocks"], 0)
        self.assertEqual(facts["parent_locators"],
                         [{"platform": "W2ru", "path": "./b.vhd"},
                          {"platform": "MacX", "path": "./b.vhd"}])


class CommandLineTest(testlib.VHDTestCase):
    def run_main(self, *argv):
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            status = vhd.main(list(argv))
        return status, out.getvalue(), err.getvalue()

    def test_commands(self):
        base = self.path("base.vhd")
        child = self.path("child.vhd")
        status, out, _ = self.run_main("create", base, "--size", "4M")
        self.assertEqual(status, 0)
        uuid.UUID(out.strip())
        self.assertEqual(self.run_main("create", child, "--parent", base)[0],
                         0)
        with vhd.open_chain(child, writable=True) as disk:
            disk.write(1000, b"hello")
        status, out, _ = self.run_main("info", child)
        self.assertEqual(json.loads(out)["parent_name"], "base.vhd")
        status, out, _ = self.run_main("check", "-p", child)
        self.assertEqual(status, 0)
        self.assertIn("base.vhd is valid", out)
        self.assertEqual(self.run_main("hidden", base, "--set", "1")[0], 0)
        self.assertEqual(self.run_main("hidden", base)[1], "hidden: 1\n")
        other = self.path("other.vhd")
        self.run_main("convert", base, self.path("b.raw"), "--to", "raw")
        self.run_main("convert", self.path("b.raw"), other, "--to", "vhd")
        self.assertEqual(self.run_main("modify", child, "-p", other)[0], 0)
        self.assertEqual(vhd.info(child)["parent_name"], "other.vhd")
        status, out, _ = self.run_main("coalesce", child)
        self.assertEqual(out.strip(), other)
        with vhd.open_vhd(other) as disk:
            self.assertEqual(disk.read(1000, 5), b"hello")
        self.assertEqual(self.run_main("resize", other, "--size", "6M")[0],
                         0)
        self.assertEqual(vhd.info(other)["virtual_size"], 6 * MIB)
        self.assertEqual(self.run_main("repair", other)[1],
                         "footer was intact\n")
        fixed = self.path("fixed.vhd")
        self.assertEqual(self.run_main("create", fixed, "--size", "1M",
                                       "--type", "fixed")[0], 0)
        self.assertEqual(vhd.info(fixed)["disk_type"], "fixed")

    def test_errors_exit_1_with_message(self):
        missing = self.path("missing.vhd")
        status, _, err = self.run_main("info", missing)
        self.assertEqual(status, 1)
        self.assertIn(missing, err)
        self.assertIn("cannot open", err)
        status, _, err = self.run_main("create", self.path("x.vhd"))
        self.assertEqual(status, 1)
        self.assertIn("--size", err)

    def test_script_entry_point(self):
        path = self.path("d.vhd")
        vhd.create_dynamic(path, MIB)
        # Python 3.6 has neither capture_output nor text.
        result = subprocess.run(
            [sys.executable, os.path.join(testlib.DOM0, "xhost_vhd.py"),
             "check", path], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            universal_newlines=True, check=False)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout, f"{path} is valid\n")


if __name__ == "__main__":
    unittest.main()
