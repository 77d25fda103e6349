"""xhost_disks: partitioning, formatting and growing disks with the real tools.

unittest style, standard library only (runs under pytest and under Python 3.6
through ``tools/run_dom0_tests.py``). Disks are sparse files standing for
``/dev/<device>`` under a dom0 root (``XHOST_DOM0_ROOT``), as under the XAPI
simulator; results are checked with tools the script does not use for the
check (``sfdisk --json``, ``blkid -p``, ``dumpe2fs``, ``e2fsck -n``,
``debugfs``). Needs root for loop devices (swap, vfat).
"""
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DOM0 = os.path.join(ROOT, "dom0")
MIB = 1024 * 1024


def _load():
    if DOM0 not in sys.path:
        sys.path.insert(0, DOM0)
    spec = importlib.util.spec_from_file_location("xhost_disks_under_test",
                                                  os.path.join(DOM0, "xhost_disks.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


disks = _load()
Dom0Error = sys.modules["xhost_dom0lib"].Dom0Error


def run(argv, stdin=None, ok=(0,)):
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True)
    out, err = proc.communicate(stdin)
    if proc.returncode not in ok:
        raise AssertionError("%s failed (%d): %s" % (argv, proc.returncode, err))
    return out


def blkid(path, offset):
    out = run(["blkid", "-p", "-O", str(offset), "-o", "export", path], ok=(0, 2))
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def dumpe2fs(path, offset):
    out = run(["dumpe2fs", "-h", "%s?offset=%d" % (path, offset)])
    fields = {}
    for line in out.splitlines():
        if ":" in line:
            key, value = line.split(":", 1)
            fields[key.strip()] = value.strip()
    return fields


def digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(MIB), b""):
            h.update(chunk)
    return h.hexdigest()


class DiskTestCase(unittest.TestCase):
    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="xhost-disks-")
        os.makedirs(os.path.join(self.root, "dev"))
        self._env = os.environ.get("XHOST_DOM0_ROOT")
        os.environ["XHOST_DOM0_ROOT"] = self.root

    def tearDown(self):
        if self._env is None:
            os.environ.pop("XHOST_DOM0_ROOT", None)
        else:
            os.environ["XHOST_DOM0_ROOT"] = self._env
        shutil.rmtree(self.root)

    def disk(self, name, size):
        path = os.path.join(self.root, "dev", name)
        with open(path, "wb") as f:
            f.truncate(size)
        return path

    def assert_no_loops(self, path):
        self.assertEqual(run(["losetup", "-j", path]).strip(), "")

    def table(self, path):
        return json.loads(run(["sfdisk", "--json", path]))["partitiontable"]


class ParseDumpTest(unittest.TestCase):
    def test_new_format(self):
        text = ("label: dos\nlabel-id: 0x1234\ndevice: /dev/xvdb\nunit: sectors\n"
                "sector-size: 512\n\n"
                "/dev/xvdb1 : start=        2048, size=    20969472, type=83, bootable\n")
        self.assertEqual(disks.parse_sfdisk_dump(text, "/dev/xvdb"), {
            "label": "dos", "partitions": [{"number": 1, "start": 2048, "size": 20969472,
                                            "type": "83", "bootable": True}]})

    def test_old_format_skips_empty_slots(self):
        # util-linux 2.23 (XenServer 7 / XCP-ng 8 dom0) layout.
        text = ("# partition table of /dev/xvdc\nunit: sectors\n\n"
                "/dev/xvdc1 : start=     2048, size=  4192256, Id=83\n"
                "/dev/xvdc2 : start=        0, size=        0, Id= 0\n"
                "/dev/xvdc3 : start=        0, size=        0, Id= 0\n"
                "/dev/xvdc4 : start=        0, size=        0, Id= 0\n")
        self.assertEqual(disks.parse_sfdisk_dump(text, "/dev/xvdc"), {
            "label": "dos", "partitions": [{"number": 1, "start": 2048, "size": 4192256,
                                            "type": "83", "bootable": False}]})

    def test_partition_number_after_a_device_ending_in_a_digit(self):
        text = "label: gpt\n/x/disk2p3 : start=34, size=100, type=0FC63DAF\n"
        table = disks.parse_sfdisk_dump(text, "/x/disk2")
        self.assertEqual(table["label"], "gpt")
        self.assertEqual(table["partitions"][0]["number"], 3)


class MakeFilesystemTest(DiskTestCase):
    def test_ext3_from_sector_2048_with_label(self):
        path = self.disk("xvdb", 64 * MIB)
        result = disks.make_filesystem(None, "xvdb", "ext3", label="ephemeral")
        self.assertEqual((result["start"], result["size"]), (2048, 64 * MIB // 512 - 2048))
        table = self.table(path)
        self.assertEqual(table["label"], "dos")
        self.assertEqual([(p["start"], p["size"], p["type"]) for p in table["partitions"]],
                         [(2048, 64 * MIB // 512 - 2048, "83")])
        probe = blkid(path, MIB)
        self.assertEqual((probe["TYPE"], probe["LABEL"]), ("ext3", "ephemeral"))
        info = dumpe2fs(path, MIB)
        self.assertIn("has_journal", info["Filesystem features"])
        self.assertNotIn("extent", info["Filesystem features"])
        self.assertEqual(int(info["Block count"]) * int(info["Block size"]), 64 * MIB - MIB)
        run(["e2fsck", "-f", "-n", "%s?offset=%d" % (path, MIB)])

    def test_ext4(self):
        path = self.disk("xvdc", 40 * MIB)
        disks.make_filesystem(None, "xvdc", "ext4", label="ephemeral1")
        probe = blkid(path, MIB)
        self.assertEqual((probe["TYPE"], probe["LABEL"]), ("ext4", "ephemeral1"))
        self.assertEqual(disks.ext_type(path, MIB), "ext4")

    def test_swap_through_a_loop_device_that_is_released(self):
        path = self.disk("xvdd", 32 * MIB)
        disks.make_filesystem(None, "xvdd", "swap")
        self.assertEqual(self.table(path)["partitions"][0]["type"], "82")
        probe = blkid(path, MIB)
        self.assertEqual(probe["TYPE"], "swap")
        with open(path, "rb") as f:
            f.seek(MIB + 4096 - 10)
            self.assertEqual(f.read(10), b"SWAPSPACE2")
        self.assert_no_loops(path)

    def test_vfat(self):
        path = self.disk("xvde", 40 * MIB)
        disks.make_filesystem(None, "xvde", "vfat", label="swap")
        self.assertEqual(self.table(path)["partitions"][0]["type"], "c")
        probe = blkid(path, MIB)
        self.assertEqual((probe["TYPE"], probe["LABEL"]), ("vfat", "SWAP"))
        self.assert_no_loops(path)

    def test_refusals(self):
        self.disk("xvdf", 64 * MIB)
        cases = [
            (dict(device="../../etc/passwd", fs_type="ext3"), "XHOST_DISK_BAD_ARGS"),
            (dict(device="xvdf", fs_type="zfs"), "XHOST_DISK_BAD_ARGS"),
            (dict(device="xvdf", fs_type="ext3", label="bad label!"), "XHOST_DISK_BAD_ARGS"),
            (dict(device="xvdf", fs_type="ext3", start_sector=131000), "XHOST_DISK_BAD_ARGS"),
            (dict(device="xvdq", fs_type="ext3", device_wait=0.2), "XHOST_DISK_NO_DEVICE"),
        ]
        for kwargs, code in cases:
            with self.assertRaises(Dom0Error) as err:
                disks.make_filesystem(None, **kwargs)
            self.assertEqual(err.exception.code, code, kwargs)

    def test_missing_tool_is_named(self):
        self.disk("xvdg", 64 * MIB)
        saved_path, saved_sbin = os.environ.get("PATH", ""), disks._SBIN
        os.environ["PATH"] = self.root
        disks._SBIN = ()
        try:
            with self.assertRaises(Dom0Error) as err:
                disks.make_filesystem(None, "xvdg", "ext3")
        finally:
            os.environ["PATH"], disks._SBIN = saved_path, saved_sbin
        self.assertEqual((err.exception.code, err.exception.params), ("XHOST_DISK_TOOL_MISSING",
                                                                      ["sfdisk"]))

    def test_failing_command_reports_its_output(self):
        self.disk("xvdh", 64 * MIB)
        bin_dir = os.path.join(self.root, "bin")
        os.makedirs(bin_dir)
        fake = os.path.join(bin_dir, "mke2fs")
        with open(fake, "w") as f:
            f.write("#!/bin/sh\necho 'mke2fs: Device size reported to be zero' >&2\nexit 1\n")
        os.chmod(fake, 0o755)
        saved = os.environ.get("PATH", "")
        os.environ["PATH"] = bin_dir + os.pathsep + saved
        try:
            with self.assertRaises(Dom0Error) as err:
                disks.make_filesystem(None, "xvdh", "ext3")
        finally:
            os.environ["PATH"] = saved
        self.assertEqual(err.exception.code, "XHOST_DISK_COMMAND_FAILED")
        self.assertIn("mke2fs", err.exception.params[0])
        self.assertEqual(err.exception.params[1:], ["1", "mke2fs: Device size reported to be zero"])


class GrowPartitionTest(DiskTestCase):
    def image(self, name, size, fs="ext4", part_mib=24, extra=""):
        """An image with one partition of ``part_mib`` holding ``fs`` and a
        file, in a disk of ``size`` bytes."""
        path = self.disk(name, size)
        run(["sfdisk", "-q", "--no-reread", "--no-tell-kernel", path],
            stdin="start=2048, size=%d, type=83\n%s" % (part_mib * 2048, extra))
        content = os.path.join(self.root, "content")
        os.makedirs(os.path.join(content, "etc"), exist_ok=True)
        with open(os.path.join(content, "etc", "hostname"), "w") as f:
            f.write("image-host\n")
        if fs.startswith("ext"):
            run(["mke2fs", "-q", "-F", "-t", fs, "-d", content, "-E", "offset=%d" % MIB, path,
                 "%dk" % (part_mib * 1024)])
        else:
            disks._mkfs(path, fs, "", MIB, part_mib * MIB)
        return path

    def test_grows_partition_and_filesystem_keeping_files(self):
        path = self.image("xvdb", 24 * MIB + MIB)
        with open(path, "r+b") as f:
            f.truncate(128 * MIB)  # VDI.resize
        result = disks.grow_partition(None, "xvdb")
        new = 128 * MIB // 512 - 2048
        self.assertEqual(result, {"resized": True, "fs_type": "ext4", "start": 2048,
                                  "old_size": 24 * 2048, "new_size": new})
        table = self.table(path)
        self.assertEqual([(p["start"], p["size"]) for p in table["partitions"]], [(2048, new)])
        info = dumpe2fs(path, MIB)
        self.assertEqual(int(info["Block count"]) * int(info["Block size"]), new * 512)
        run(["e2fsck", "-f", "-n", "%s?offset=%d" % (path, MIB)])
        out = run(["debugfs", "-R", "cat /etc/hostname", "%s?offset=%d" % (path, MIB)])
        self.assertEqual(out, "image-host\n")

    def test_ext3_and_bootable_flag_kept(self):
        path = self.disk("xvdc", 64 * MIB)
        run(["sfdisk", "-q", "--no-reread", "--no-tell-kernel", path],
            stdin="start=2048, size=40960, type=83, bootable\n")
        run(["mke2fs", "-q", "-F", "-t", "ext3", "-E", "offset=%d" % MIB, path, "20480k"])
        result = disks.grow_partition(None, "xvdc")
        self.assertTrue(result["resized"])
        self.assertEqual(result["fs_type"], "ext3")
        part = self.table(path)["partitions"][0]
        self.assertEqual((part["size"], part.get("bootable")), (64 * 2048 - 2048, True))

    def test_already_at_the_end_is_unchanged(self):
        path = self.image("xvdd", 25 * MIB)
        before = digest(path)
        result = disks.grow_partition(None, "xvdd")
        self.assertEqual((result["resized"], result["unchanged"]), (False, True))
        self.assertEqual(digest(path), before)

    def assert_refused(self, path, device, reason):
        with open(path, "r+b") as f:
            f.truncate(max(os.path.getsize(path), 40 * MIB) + 8 * MIB)  # VDI.resize
        before = digest(path)
        result = disks.grow_partition(None, device)
        self.assertFalse(result["resized"])
        self.assertNotIn("unchanged", result)
        self.assertIn(reason, result["reason"])
        self.assertEqual(digest(path), before)

    def test_two_partitions_refused(self):
        path = self.image("xvde", 64 * MIB, extra="start=51200, size=2048, type=83\n")
        self.assert_refused(path, "xvde", "2 partitions")

    def test_partition_other_than_1_refused(self):
        path = self.disk("xvdf", 32 * MIB)
        run(["sfdisk", "-q", "--no-reread", "--no-tell-kernel", path],
            stdin="label: dos\n\n%s2 : start=2048, size=40960, type=83\n" % path)
        self.assert_refused(path, "xvdf", "number 2")

    def test_ext2_and_vfat_refused(self):
        self.assert_refused(self.image("xvdg", 32 * MIB, fs="ext2"), "xvdg", "holds ext2")
        self.assert_refused(self.image("xvdh", 32 * MIB, fs="vfat"), "xvdh", "holds vfat")

    def test_no_table_and_gpt_refused(self):
        self.assert_refused(self.disk("xvdi", 32 * MIB), "xvdi", "no partition table")
        path = self.disk("xvdj", 32 * MIB)
        run(["sfdisk", "-q", "--no-reread", "--no-tell-kernel", path],
            stdin="label: gpt\nstart=2048, size=40960\n")
        self.assert_refused(path, "xvdj", "gpt partition table")


class ReleaseDeviceTest(DiskTestCase):
    def test_detaches_leftover_loops(self):
        path = self.disk("xvdb", 8 * MIB)
        loop = run(["losetup", "--find", "--show", "--offset", str(MIB), path]).strip()
        try:
            self.assertEqual(disks.release_device(None, "xvdb"), {"released": [loop]})
        finally:
            run(["losetup", "-d", loop], ok=(0, 1))
        self.assert_no_loops(path)
        self.assertEqual(disks.release_device(None, "xvdz"), {"released": []})


if __name__ == "__main__":
    unittest.main()
