#!/usr/bin/env python3
"""xhost dom0 plugin: kernels and ramdisks of PV guests in ``/boot/guest``.

A PV instance booted from an AMI image runs a kernel (``aki``) and a ramdisk
(``ari``) that must be files in dom0.  xhost puts the image's bytes into a
temporary VDI; ``copy_vdi`` attaches that VDI read-only to dom0 and copies
exactly ``size`` bytes (at most ``max_size``, from ``[xenserver]
max_kernel_ramdisk_size``) into ``/boot/guest/<name>``.  The files are named
``xhost-<instance uuid>-kernel`` / ``-ramdisk``, so ``remove_files`` finds
them when the instance is destroyed.

Failure codes: ``XHOST_KERNEL_TOO_LARGE [size, max]``, ``XHOST_KERNEL_ERROR
[reason]``.
"""
import os
import re
import time

import xhost_dom0lib

BOOT_DIR = "/boot/guest"
NAME = re.compile(r"^xhost-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
                  r"-(kernel|ramdisk)$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
CHUNK = 1024 * 1024
UNPLUG_RETRIES = 30


def _error(reason):
    return xhost_dom0lib.Dom0Error("XHOST_KERNEL_ERROR", reason)


def _bad(fn, reason):
    return xhost_dom0lib.Dom0Error("XHOST_DOM0_BAD_ARGS", fn, reason)


def _dom0(session):
    x = session.xenapi
    host = x.session.get_this_host(session.handle)
    found = x.VM.get_all_records_where('field "is_control_domain"="true" and '
                                       'field "resident_on"="%s"' % host)
    if not found:
        raise _error("no control domain on this host")
    return list(found)[0]


def _unplug(x, vbd):
    for attempt in range(UNPLUG_RETRIES):
        try:
            x.VBD.unplug(vbd)
            return
        except Exception as exc:  # XenAPI.Failure: the class depends on the library
            details = getattr(exc, "details", [""])
            if details and details[0] == "DEVICE_ALREADY_DETACHED":
                return
            if details and details[0] == "DEVICE_DETACH_REJECTED" and \
                    attempt + 1 < UNPLUG_RETRIES:
                time.sleep(1)
                continue
            raise


def _wait_for(path, seconds):
    deadline = time.time() + seconds
    while not os.path.exists(path):
        if time.time() > deadline:
            raise _error("device %s did not appear within %ss" % (path, seconds))
        time.sleep(0.1)


def copy_vdi(session, vdi_uuid, size, name, max_size, device_timeout=10):
    """Copy the first ``size`` bytes of a VDI to ``/boot/guest/<name>``;
    return ``{"path": "/boot/guest/<name>"}``."""
    if not NAME.match(name or ""):
        raise _bad("copy_vdi", "name must be xhost-<instance uuid>-kernel|ramdisk")
    if not UUID.match(vdi_uuid or ""):
        raise _bad("copy_vdi", "bad VDI uuid %r" % vdi_uuid)
    size, max_size = int(size), int(max_size)
    if size > max_size:
        raise xhost_dom0lib.Dom0Error("XHOST_KERNEL_TOO_LARGE", size, max_size)
    if size <= 0:
        raise _error("an empty kernel or ramdisk image")
    x = session.xenapi
    vdi = x.VDI.get_by_uuid(vdi_uuid)
    directory = xhost_dom0lib.host_path(BOOT_DIR)
    if not os.path.isdir(directory):
        os.makedirs(directory, 0o755)
    target = os.path.join(directory, name)
    partial = target + ".partial"
    vbd = x.VBD.create({"VM": _dom0(session), "VDI": vdi, "userdevice": "autodetect",
                        "bootable": False, "mode": "RO", "type": "Disk", "empty": False,
                        "other_config": {}, "qos_algorithm_type": "",
                        "qos_algorithm_params": {}})
    try:
        x.VBD.plug(vbd)
        try:
            device = xhost_dom0lib.host_path("/dev/" + x.VBD.get_device(vbd))
            _wait_for(device, int(device_timeout))
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC |
                         getattr(os, "O_NOFOLLOW", 0), 0o644)
            try:
                with open(device, "rb") as source:
                    left = size
                    while left:
                        data = source.read(min(CHUNK, left))
                        if not data:
                            raise _error("the disk holds fewer than %d bytes" % size)
                        view = memoryview(data)
                        while view:
                            view = view[os.write(fd, view):]
                        left -= len(data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(partial, target)
        finally:
            _unplug(x, vbd)
    finally:
        try:
            x.VBD.destroy(vbd)
        finally:
            if os.path.lexists(partial):
                os.unlink(partial)
    return {"path": "%s/%s" % (BOOT_DIR, name)}


def remove_files(session, instance_uuid=None, names=None):
    """Remove an instance's kernel and ramdisk (or the named files) from
    ``/boot/guest``; missing files are fine.  Returns ``{"removed": [...]}``."""
    wanted = list(names or [])
    if instance_uuid is not None:
        if not UUID.match(instance_uuid):
            raise _bad("remove_files", "bad instance uuid %r" % instance_uuid)
        wanted += ["xhost-%s-kernel" % instance_uuid, "xhost-%s-ramdisk" % instance_uuid]
    removed = []
    directory = xhost_dom0lib.host_path(BOOT_DIR)
    for name in wanted:
        if not NAME.match(name):
            raise _bad("remove_files", "refusing to remove %r" % name)
        path = os.path.join(directory, name)
        if os.path.lexists(path):
            os.unlink(path)
            removed.append("%s/%s" % (BOOT_DIR, name))
    return {"removed": removed}


if __name__ == "__main__":
    xhost_dom0lib.dispatch({"copy_vdi": copy_vdi, "remove_files": remove_files})
