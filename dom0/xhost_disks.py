#!/usr/bin/env python3
"""xhost dom0 plugin: partition, format and grow disks plugged into dom0.

xhost plugs a VDI into the control domain (``VBD.create`` + ``VBD.plug``),
passes the VBD's ``device`` (``xvdb``) to one of these functions, and unplugs
it afterwards, so a failure or a killed script never leaves a VBD that only
this script knew about. The functions run the host's real tools on the
device:

``make_filesystem(device, fs_type, label, start_sector, device_wait)``
    One partition from ``start_sector`` (2048, as Nova) to the end of the
    disk, written by ``sfdisk``, formatted by ``mke2fs`` (ext2/3/4),
    ``mkswap`` (swap), ``mkfs.vfat`` or ``mkfs.<fs_type>``.
``grow_partition(device, device_wait)``
    Auto disk config: a disk with exactly one partition, number 1, holding
    ext3 or ext4, gets that partition moved to end at the end of the disk
    (``sfdisk``) and its filesystem grown to fill it (``e2fsck -f``, then
    ``resize2fs``). A disk that does not qualify is left alone and the reason
    returned (``{"resized": false, "reason": ...}``), so that the caller can
    warn instead of failing.
``release_device(device)``
    Detach loop devices left on ``device`` (by a script that was killed),
    so that the VBD can be unplugged.

Partitions are reached without the kernel re-reading the partition table:
e2fsprogs take ``-E offset=`` / ``<device>?offset=<bytes>``, other tools a
loop device over the partition's byte range (``losetup --offset
--sizelimit``), detached on every path. This works the same on a dom0 block
device and on the XAPI simulator's device files.

Failures: ``XHOST_DISK_BAD_ARGS [reason]``, ``XHOST_DISK_NO_DEVICE [device,
seconds]``, ``XHOST_DISK_TOOL_MISSING [tool]``, ``XHOST_DISK_COMMAND_FAILED
[command, exit status, stderr]``.

Python >= 3.6, standard library only.
"""
import contextlib
import os
import re
import shutil
import struct
import subprocess
import time

import xhost_dom0lib
from xhost_dom0lib import Dom0Error

SECTOR = 512
#: Filesystems made with mke2fs (which writes at an offset by itself).
EXT_TYPES = ("ext2", "ext3", "ext4")
#: MBR partition type per filesystem.
PARTITION_TYPES = {
    "ext2": "83", "ext3": "83", "ext4": "83", "xfs": "83", "btrfs": "83",
    "swap": "82", "vfat": "c",
}
_DEVICE_NAME = re.compile(r"^[a-z][a-z0-9]{0,31}$")
_LABEL = re.compile(r"^[A-Za-z0-9_.-]{0,16}$")
_SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")


# -- plumbing -----------------------------------------------------------------

def _device_path(device):
    """The dom0 path of a VBD device name, refusing anything else."""
    if not isinstance(device, str) or not _DEVICE_NAME.match(device):
        raise Dom0Error("XHOST_DISK_BAD_ARGS",
                        "device must be a VBD device name such as xvdb, not %r" % (device,))
    return xhost_dom0lib.host_path("/dev/" + device)


def _wait_for(path, device, timeout):
    """Wait for the device node to appear (it follows VBD.plug)."""
    deadline = time.time() + max(0.0, float(timeout))
    while not os.path.exists(path):
        if time.time() >= deadline:
            raise Dom0Error("XHOST_DISK_NO_DEVICE", device, timeout)
        time.sleep(0.1)


def _tool(name):
    found = shutil.which(name)
    if found:
        return found
    for directory in _SBIN:
        candidate = os.path.join(directory, name)
        if os.access(candidate, os.X_OK):
            return candidate
    raise Dom0Error("XHOST_DISK_TOOL_MISSING", name)


def _run(argv, stdin=None, ok=(0,)):
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True)
    out, err = proc.communicate(stdin)
    if proc.returncode not in ok:
        raise Dom0Error("XHOST_DISK_COMMAND_FAILED", " ".join(argv), proc.returncode,
                        (err or out).strip()[-2000:])
    return out


def _size(path):
    """Bytes of a block device or a device file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def _sfdisk_version():
    out = _run([_tool("sfdisk"), "--version"])
    match = re.search(r"(\d+)\.(\d+)", out)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def _sfdisk_write_flags():
    """Options to write a table without asking the kernel to re-read it
    (partitions are reached by offset): sfdisk before util-linux 2.26 counts
    in cylinders unless told otherwise and needs --force for sector units."""
    version = _sfdisk_version()
    if version < (2, 26):
        return ["-uS", "--force", "--no-reread"]
    if version < (2, 28):
        return ["--no-reread"]
    return ["--no-reread", "--no-tell-kernel"]


@contextlib.contextmanager
def _loop(path, offset, size):
    """A loop device over ``size`` bytes of ``path`` from ``offset``."""
    losetup = _tool("losetup")
    loop = _run([losetup, "--find", "--show", "--offset", str(offset), "--sizelimit",
                 str(size), path]).strip()
    try:
        yield loop
    finally:
        _run([losetup, "-d", loop], ok=(0, 1))


def _loops_on(path):
    """Loop devices whose backing file is ``path``."""
    out = _run([_tool("losetup"), "-j", path], ok=(0, 1))
    return [line.split(":", 1)[0] for line in out.splitlines() if line.startswith("/dev/")]


# -- partition tables ---------------------------------------------------------

def parse_sfdisk_dump(text, path):
    """The table of ``sfdisk -d`` output, old (util-linux < 2.26) or new format:
    ``{"label": "dos"|"gpt"|..., "partitions": [{"number", "start", "size",
    "type", "bootable"}]}`` (unused slots left out)."""
    label = None
    partitions = []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("label:"):
            label = line.split(":", 1)[1].strip()
            continue
        if " : " not in line or "start=" not in line:
            continue
        node, _, spec = line.partition(" : ")
        node = node.strip()
        fields, flags = {}, set()
        for item in spec.split(","):
            item = item.strip()
            if "=" in item:
                key, value = item.split("=", 1)
                fields[key.strip().lower()] = value.strip()
            elif item:
                flags.add(item.lower())
        size = int(fields.get("size", "0") or 0)
        if size == 0:
            continue
        suffix = node[len(path):] if node.startswith(path) else node
        number = re.search(r"(\d+)$", suffix)
        partitions.append({
            "number": int(number.group(1)) if number else 0,
            "start": int(fields.get("start", "0")),
            "size": size,
            "type": (fields.get("type") or fields.get("id") or "").lower(),
            "bootable": "bootable" in flags,
        })
    return {"label": label or "dos", "partitions": partitions}


def _read_table(path):
    proc = subprocess.Popen([_tool("sfdisk"), "-d", path], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True)
    out, _err = proc.communicate()
    if proc.returncode != 0:
        # No recognised partition table (new sfdisk exits 1).
        return {"label": None, "partitions": []}
    return parse_sfdisk_dump(out, path)


def _write_partition(path, number, start, size, ptype, bootable=False):
    """Write partition ``number``; ``size`` None = to the end of the disk."""
    line = "%d,%s,%s%s\n" % (start, "" if size is None else size, ptype, ",*" if bootable else "")
    argv = [_tool("sfdisk")] + _sfdisk_write_flags()
    if number is not None:
        argv += ["-N", str(number)]
    _run(argv + [path], stdin=line)


# -- filesystems ----------------------------------------------------------------

def ext_type(path, offset):
    """``ext2``/``ext3``/``ext4`` for the ext superblock at ``offset``, else None
    (the same feature rules as blkid)."""
    with open(path, "rb") as f:
        f.seek(offset + 1024)
        sb = f.read(1024)
    if len(sb) < 104 or struct.unpack_from("<H", sb, 56)[0] != 0xEF53:
        return None
    compat, incompat, ro_compat = struct.unpack_from("<III", sb, 92)
    ext4_incompat = 0x0040 | 0x0080 | 0x0100 | 0x0200 | 0x0400 | 0x1000 | 0x8000
    ext4_ro_compat = 0x0008 | 0x0010 | 0x0020 | 0x0040 | 0x0100 | 0x0200 | 0x0400
    if incompat & ext4_incompat or ro_compat & ext4_ro_compat:
        return "ext4"
    if compat & 0x0004:  # has_journal
        return "ext3"
    return "ext2"


def _other_type(path, offset):
    """What blkid sees at ``offset`` (for messages), or None."""
    try:
        out = _run([_tool("blkid"), "-p", "-O", str(offset), "-o", "value", "-s", "TYPE", path],
                   ok=(0, 2))
    except Dom0Error:
        return None
    return out.strip() or None


def _mkfs(path, fs_type, label, offset, size):
    if fs_type in EXT_TYPES:
        argv = [_tool("mke2fs"), "-q", "-F", "-t", fs_type]
        if label:
            argv += ["-L", label]
        _run(argv + ["-E", "offset=%d" % offset, path, "%dk" % (size // 1024)])
        return
    if fs_type == "swap":
        argv = [_tool("mkswap")] + (["-L", label] if label else [])
    elif fs_type == "vfat":
        argv = [_tool("mkfs.vfat")] + (["-n", label.upper()[:11]] if label else [])
    else:
        argv = [_tool("mkfs." + fs_type)] + (["-L", label] if label else [])
        if fs_type in ("xfs", "btrfs"):
            argv.append("-f")
    with _loop(path, offset, size) as partition:
        _run(argv + [partition])


# -- functions ------------------------------------------------------------------

def make_filesystem(session, device, fs_type, label="", start_sector=2048, device_wait=10):
    """Partition ``device`` (one partition from ``start_sector`` to the end)
    and format it."""
    if fs_type not in PARTITION_TYPES:
        raise Dom0Error("XHOST_DISK_BAD_ARGS", "unsupported filesystem %r (one of %s)"
                        % (fs_type, ", ".join(sorted(PARTITION_TYPES))))
    if not isinstance(label, str) or not _LABEL.match(label):
        raise Dom0Error("XHOST_DISK_BAD_ARGS",
                        "label must be up to 16 letters, digits, '_', '.', '-', not %r" % (label,))
    start = int(start_sector)
    path = _device_path(device)
    _wait_for(path, device, device_wait)
    disk = _size(path)
    if start < 1 or (start + 2048) * SECTOR > disk:
        raise Dom0Error("XHOST_DISK_BAD_ARGS", "a %d-byte disk has no room for a partition "
                        "from sector %d" % (disk, start))
    _write_partition(path, None, start, None, PARTITION_TYPES[fs_type])
    table = _read_table(path)
    part = next((p for p in table["partitions"] if p["number"] == 1), None)
    if part is None or part["start"] != start:
        raise Dom0Error("XHOST_DISK_COMMAND_FAILED", "sfdisk", 0,
                        "partition 1 from sector %d is not in the table written: %r"
                        % (start, table))
    _mkfs(path, fs_type, label, start * SECTOR, part["size"] * SECTOR)
    return {"device": device, "fs_type": fs_type, "label": label,
            "start": start, "size": part["size"]}


def grow_partition(session, device, device_wait=10):
    """Grow the single ext3/ext4 partition of ``device`` and its filesystem
    to the end of the disk (Nova's auto disk config rules)."""
    path = _device_path(device)
    _wait_for(path, device, device_wait)
    table = _read_table(path)
    parts = table["partitions"]
    if table["label"] is None or not parts:
        return {"resized": False, "reason": "the disk has no partition table"}
    if table["label"] != "dos":
        return {"resized": False, "reason": "the disk has a %s partition table; only MBR (dos) "
                                             "tables are grown" % table["label"]}
    if len(parts) != 1:
        return {"resized": False, "reason": "the disk has %d partitions; only a disk with "
                                             "exactly one is grown" % len(parts)}
    part = parts[0]
    if part["number"] != 1:
        return {"resized": False, "reason": "its partition is number %d; only partition 1 is "
                                             "grown" % part["number"]}
    offset = part["start"] * SECTOR
    fs_type = ext_type(path, offset)
    if fs_type not in ("ext3", "ext4"):
        found = fs_type or _other_type(path, offset) or "no recognised filesystem"
        return {"resized": False, "reason": "partition 1 holds %s; only ext3 and ext4 are "
                                             "grown" % found}
    disk_sectors = _size(path) // SECTOR
    new_size = disk_sectors - part["start"]
    result = {"fs_type": fs_type, "start": part["start"], "old_size": part["size"],
              "new_size": part["size"]}
    if new_size <= part["size"]:
        result.update(resized=False, unchanged=True,
                      reason="partition 1 already ends at the end of the disk")
        return result
    spec = "%s?offset=%d" % (path, offset)
    # 1: errors were corrected; anything above means the filesystem is not safe to grow.
    _run([_tool("e2fsck"), "-f", "-y", spec], ok=(0, 1))
    _write_partition(path, 1, part["start"], new_size, part["type"] or "83", part["bootable"])
    _run([_tool("resize2fs"), spec, "%ds" % new_size])
    result.update(resized=True, new_size=new_size)
    return result


def release_device(session, device):
    """Detach the loop devices left on ``device``."""
    path = _device_path(device)
    released = []
    if os.path.exists(path):
        for loop in _loops_on(path):
            _run([_tool("losetup"), "-d", loop], ok=(0, 1))
            released.append(loop)
    return {"released": released}


if __name__ == "__main__":
    xhost_dom0lib.dispatch({
        "make_filesystem": make_filesystem,
        "grow_partition": grow_partition,
        "release_device": release_device,
    })
