"""VHD chain maintenance: set_parent, coalesce, resize, repair.

unittest style, standard library only (Python 3.6 compatible).
"""
import importlib.util
import os
import struct
import sys
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


def locator_paths(path):
    with vhd.open_vhd(path) as disk:
        return disk.parent_locator_paths()


class SetParentTest(testlib.VHDTestCase):
    def make_pair(self, size=6 * MIB):
        """parent with data, child with data; returns (parent, child,
        model of the child)."""
        parent, child = self.path("p1.vhd"), self.path("child.vhd")
        model = bytearray(size)
        vhd.create_dynamic(parent, size)
        with vhd.open_vhd(parent, writable=True) as disk:
            self.random_writes(disk, model, 10, max_length=100000)
        vhd.create_differencing(child, parent)
        with vhd.open_chain(child, writable=True) as disk:
            self.random_writes(disk, model, 10, max_length=100000)
        return parent, child, model

    def copy_of(self, source, name):
        """A byte-identical (contents) VHD with a new UUID."""
        target = self.path(name)
        with vhd.open_chain(source) as disk:
            vhd.DynamicStream(disk).save(target)
        return target

    def test_repoint_updates_every_parent_field(self):
        parent, child, model = self.make_pair()
        other = self.copy_of(parent, "p2.vhd")
        os.utime(other, (VHD_EPOCH + 4242, VHD_EPOCH + 4242))
        vhd.set_parent(child, other)
        header = self.header(child)
        self.assertEqual(header["parent_uuid"], self.footer(other)["uuid"])
        self.assertEqual(header["parent_timestamp"], 4242)
        self.assertEqual(header["parent_name"].decode("utf-16-be").rstrip(
            "\x00"), "p2.vhd")
        raw = self.read_at(child, 512, 1024)
        self.assertEqual(header["checksum"],
                         testlib.ones_complement_checksum(raw, 36))
        self.assertEqual(locator_paths(child),
                         [("W2ru", "./p2.vhd"), ("MacX", "./p2.vhd")])
        os.unlink(parent)
        self.assertReads(child, model)
        self.assertEqual(vhd.check(child, parents=True),
                         [child, os.path.realpath(other)])

    def test_longer_locators_move_data_blocks(self):
        parent, child, model = self.make_pair()
        with vhd.open_vhd(child) as disk:
            first_block = min(disk.block_offset(i)
                              for i in disk.allocated_blocks())
            metadata_end = disk.end_of_metadata()
        self.assertEqual(first_block, metadata_end)
        sub = self.path("deeper")
        os.mkdir(sub)
        long_name = "x" * 251 + ".vhd"  # 255 bytes, the longest name
        other = self.copy_of(parent, os.path.join("deeper", long_name))
        vhd.set_parent(child, other, absolute_locator=True)
        paths = dict(locator_paths(child))
        self.assertEqual(paths["W2ru"], "./deeper/" + long_name)
        self.assertEqual(paths["MacX"], "./deeper/" + long_name)
        self.assertEqual(paths["W2ku"], os.path.realpath(other))
        with vhd.open_vhd(child) as disk:
            self.assertGreater(disk.end_of_metadata(), metadata_end)
            self.assertGreaterEqual(
                min(disk.block_offset(i) for i in disk.allocated_blocks()),
                disk.end_of_metadata())
        os.unlink(parent)
        self.assertReads(child, model)
        vhd.check(child, parents=True)

    def test_parent_in_another_directory(self):
        parent, child, model = self.make_pair()
        sub = self.path("sub")
        os.mkdir(sub)
        moved = os.path.join(sub, "p1.vhd")
        os.rename(parent, moved)
        vhd.set_parent(child, moved)
        self.assertEqual(locator_paths(child)[0], ("W2ru", "./sub/p1.vhd"))
        self.assertReads(child, model)
        # And back up the tree from a child in a subdirectory.
        grandchild = os.path.join(sub, "gc.vhd")
        vhd.create_differencing(grandchild, child)
        # blktap writes relative W2ru paths as ".\\" + path, even "..\\".
        self.assertEqual(locator_paths(grandchild),
                         [("W2ru", "./../child.vhd"),
                          ("MacX", "../child.vhd")])
        self.assertReads(grandchild, model)
        vhd.check(grandchild, parents=True)

    def test_symlinked_parent_is_named_by_its_real_file(self):
        parent, child, model = self.make_pair()
        link = self.path("link.vhd")
        os.symlink(parent, link)
        vhd.set_parent(child, link)
        self.assertEqual(vhd.info(child)["parent_name"], "p1.vhd")
        self.assertEqual(locator_paths(child)[0], ("W2ru", "./p1.vhd"))
        vhd.check(child, parents=True)
        grandchild = self.path("gc.vhd")
        other = self.path("link-to-child.vhd")
        os.symlink(child, other)
        vhd.create_differencing(grandchild, other)
        self.assertEqual(vhd.info(grandchild)["parent_name"], "child.vhd")
        self.assertReads(grandchild, model)
        vhd.check(grandchild, parents=True)

    def test_refusals(self):
        parent, child, _ = self.make_pair()
        self.assertVHDError(lambda: vhd.set_parent(parent, child),
                            "dynamic disk", "only differencing")
        self.assertVHDError(lambda: vhd.set_parent(child, child),
                            "its own parent")
        self.assertVHDError(lambda: vhd.set_parent(child, self.path("no")),
                            "cannot open")
        before = self.read_at(child, 0, 4096)
        grandchild = self.path("gc.vhd")
        vhd.create_differencing(grandchild, child)
        self.assertVHDError(lambda: vhd.set_parent(child, grandchild),
                            "loop")
        self.assertEqual(self.read_at(child, 0, 4096), before)


class CoalesceTest(testlib.VHDTestCase):
    def test_child_into_parent(self):
        base, child = self.path("base.vhd"), self.path("child.vhd")
        size = 8 * MIB
        model = bytearray(size)
        vhd.create_dynamic(base, size)
        with vhd.open_vhd(base, writable=True) as disk:
            self.random_writes(disk, model, 12, max_length=400000)
        vhd.create_differencing(child, base, block_size=512 * 1024)
        with vhd.open_chain(child, writable=True) as disk:
            self.random_writes(disk, model, 25, max_length=400000)
        child_bytes = self.read_at(child, 0, os.path.getsize(child))
        self.assertEqual(vhd.coalesce(child), base)
        self.assertReads(base, model)
        self.assertEqual(self.read_at(child, 0, os.path.getsize(child)),
                         child_bytes)
        vhd.check(base)

    def test_middle_of_a_chain_then_relink(self):
        paths = [self.path(f"l{i}.vhd") for i in range(3)]
        size = 6 * MIB
        model = bytearray(size)
        vhd.create_dynamic(paths[0], size)
        with vhd.open_vhd(paths[0], writable=True) as disk:
            self.random_writes(disk, model, 10, max_length=300000)
        for index in (1, 2):
            vhd.create_differencing(paths[index], paths[index - 1])
            with vhd.open_chain(paths[index], writable=True) as disk:
                self.random_writes(disk, model, 10, max_length=300000)
        vhd.coalesce(paths[1])
        vhd.set_parent(paths[2], paths[0])
        os.unlink(paths[1])
        self.assertReads(paths[2], model)
        self.assertEqual(len(vhd.check(paths[2], parents=True)), 2)

    def test_into_a_fixed_parent(self):
        base, child = self.path("base.vhd"), self.path("child.vhd")
        vhd.create_fixed(base, 4 * MIB)
        vhd.create_differencing(child, base)
        model = bytearray(4 * MIB)
        with vhd.open_chain(child, writable=True) as disk:
            self.random_writes(disk, model, 10)
        vhd.coalesce(child)
        self.assertReads(base, model)
        self.assertEqual(os.path.getsize(base), 4 * MIB + 512)

    def test_parent_grows_to_the_child(self):
        base, child = self.path("base.vhd"), self.path("child.vhd")
        vhd.create_dynamic(base, 2 * MIB)
        vhd.create_differencing(child, base, size=5 * MIB)
        with vhd.open_chain(child, writable=True) as disk:
            disk.write(5 * MIB - 512, b"e" * 512)
        self.assertVHDError(lambda: vhd.coalesce(child, grow_parent=False),
                            "smaller than the child", "grow_parent")
        vhd.coalesce(child)
        with vhd.open_vhd(base) as disk:
            self.assertEqual(disk.virtual_size, 5 * MIB)
            self.assertEqual(disk.read(5 * MIB - 512, 512), b"e" * 512)
        vhd.check(base)

    def test_refusals(self):
        base = self.path("base.vhd")
        vhd.create_dynamic(base, MIB)
        self.assertVHDError(lambda: vhd.coalesce(base),
                            "only a differencing disk")
        child = self.path("child.vhd")
        vhd.create_differencing(child, base)
        os.unlink(base)
        self.assertVHDError(lambda: vhd.coalesce(child), "not found")


class ResizeTest(testlib.VHDTestCase):
    def test_within_the_preallocated_bat(self):
        path = self.path("d.vhd")
        vhd.create_dynamic(path, 4 * MIB, max_size=16 * MIB)
        with vhd.open_vhd(path, writable=True) as disk:
            disk.write(3 * MIB, b"keep")
        length = os.path.getsize(path)
        vhd.resize(path, 12 * MIB)
        self.assertEqual(os.path.getsize(path), length)
        for at in (0, self.footer_offset(path)):
            footer = self.footer(path, at)
            self.assertEqual(footer["current_size"], 12 * MIB)
            self.assertEqual(footer["original_size"], 4 * MIB)
            cyl, heads, spt = vhd.chs_geometry(12 * MIB)
            self.assertEqual(footer["geometry"],
                             (cyl << 16) | (heads << 8) | spt)
        with vhd.open_vhd(path, writable=True) as disk:
            self.assertEqual(disk.read(3 * MIB, 4), b"keep")
            self.assertEqual(disk.read(11 * MIB, 512), bytes(512))
            disk.write(11 * MIB, b"new")
        vhd.check(path)

    def test_bat_growth_moves_blocks(self):
        path = self.path("d.vhd")
        size = 6 * MIB
        vhd.create_dynamic(path, size, block_size=64 * 1024)
        model = bytearray(size)
        with vhd.open_vhd(path, writable=True) as disk:
            self.random_writes(disk, model, 30, max_length=200000)
        new_size = 80 * MIB  # 1280 entries: the BAT needs 10 sectors
        vhd.resize(path, new_size)
        self.assertEqual(self.header(path)["max_table_entries"], 1280)
        model.extend(bytes(new_size - size))
        self.assertReads(path, model)
        vhd.check(path)
        with vhd.open_vhd(path, writable=True) as disk:
            disk.write(new_size - 100, b"z" * 100)
        model[new_size - 100:] = b"z" * 100
        self.assertReads(path, model)
        vhd.check(path)

    def test_differencing_disk_keeps_its_locators(self):
        base, child = self.path("base.vhd"), self.path("child.vhd")
        vhd.create_dynamic(base, 4 * MIB)
        with vhd.open_vhd(base, writable=True) as disk:
            disk.write(0, b"B" * 4096)
        vhd.create_differencing(child, base, block_size=64 * 1024)
        with vhd.open_chain(child, writable=True) as disk:
            disk.write(100 * 1024, b"C" * 70000)
        vhd.resize(child, 64 * MIB)
        self.assertEqual(locator_paths(child),
                         [("W2ru", "./base.vhd"), ("MacX", "./base.vhd")])
        with vhd.open_chain(child) as disk:
            self.assertEqual(disk.virtual_size, 64 * MIB)
            self.assertEqual(disk.read(0, 4096), b"B" * 4096)
            self.assertEqual(disk.read(100 * 1024, 70000), b"C" * 70000)
            self.assertEqual(disk.read(10 * MIB, 512), bytes(512))
        vhd.check(child, parents=True)

    def test_fixed(self):
        path = self.path("f.vhd")
        vhd.create_fixed(path, 2 * MIB)
        with vhd.open_vhd(path, writable=True) as disk:
            disk.write(2 * MIB - 4, b"tail")
        vhd.resize(path, 3 * MIB)
        self.assertEqual(os.path.getsize(path), 3 * MIB + 512)
        with vhd.open_vhd(path) as disk:
            self.assertEqual(disk.read(2 * MIB - 4, 4), b"tail")
            # The old footer's place now reads as zeros.
            self.assertEqual(disk.read(2 * MIB, 512), bytes(512))
        vhd.check(path)

    def test_refusals(self):
        path = self.path("d.vhd")
        vhd.create_dynamic(path, 4 * MIB)
        self.assertVHDError(lambda: vhd.resize(path, 2 * MIB),
                            "cannot shrink")
        self.assertVHDError(lambda: vhd.resize(path, 4096 * 1024 * MIB),
                            "2040 GiB")
        vhd.resize(path, 4 * MIB)  # no-op
        self.assertEqual(vhd.info(path)["virtual_size"], 4 * MIB)

    def test_blktap_batmap_refuses_bat_growth(self):
        path = self.path("tap.vhd")
        vhd.create_dynamic(path, 4 * MIB)
        header = struct.pack(">8sQIIIB", b"tdbatmap", 2560, 1, 0x00010002,
                             0xFFFFFFFF, 0)
        self.write_at(path, 2048, header + bytes(512 - len(header)))
        self.write_at(path, 2560, bytes(512))
        self.write_at(path, 3072, self.read_at(path, 0, 512))
        self.rewrite_both_footers(path, creator_version=0x00010003)
        vhd.check(path)
        self.assertVHDError(lambda: vhd.resize(path, 64 * MIB), "batmap")
        vhd.resize(path, 4 * MIB)


class RepairTest(testlib.VHDTestCase):
    def make_disk(self):
        path = self.path("d.vhd")
        model = bytearray(6 * MIB)
        vhd.create_dynamic(path, len(model))
        with vhd.open_vhd(path, writable=True) as disk:
            self.random_writes(disk, model, 10, max_length=200000)
        return path, model

    def test_lost_footer(self):
        path, model = self.make_disk()
        with open(path, "r+b") as handle:
            handle.truncate(os.path.getsize(path) - 512)
        error = self.assertVHDError(lambda: vhd.open_vhd(path),
                                    "copy at offset 0 is intact")
        self.assertIn("repair", error.fix)
        self.assertTrue(vhd.repair(path))
        self.assertReads(path, model)
        vhd.check(path)

    def test_damaged_footer(self):
        path, model = self.make_disk()
        self.write_at(path, self.footer_offset(path), b"\xde\xad" * 256)
        self.assertTrue(vhd.repair(path))
        self.assertFalse(vhd.repair(path))
        self.assertReads(path, model)
        vhd.check(path)

    def test_unrepairable(self):
        path, _ = self.make_disk()
        self.write_at(path, 0, b"x" * 512)
        self.write_at(path, self.footer_offset(path), b"x" * 512)
        self.assertVHDError(lambda: vhd.repair(path), "neither",
                            "cannot repair")
        fixed = self.path("f.vhd")
        vhd.create_fixed(fixed, MIB)
        self.write_at(fixed, MIB, b"y" * 512)
        self.assertVHDError(lambda: vhd.repair(fixed), "neither")


if __name__ == "__main__":
    unittest.main()
