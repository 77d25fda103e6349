"""The config drive: a config-2 ISO (Rock Ridge, Joliet) streamed into a VDI."""
from __future__ import annotations

import io
import json
import shutil
import subprocess
import tracemalloc

import pytest

from xhost.backends.storage_sr import configdrive
from xhost.backends.storage_sr.errors import StorageError
from xhost.compute import configdrive as drive_files

MiB = 1024 ** 2


def drive_instance(env):
    instance = env.instance()
    instance.user_data = b"#cloud-config\nhostname: vm1\n"
    instance.key_data = "ssh-ed25519 AAAAC3Nza test@example"
    instance.files = {"/etc/motd": b"welcome\n"}
    instance.metadata = {"role": "web"}
    return instance


def make_drive(env, tmp_path, instance, sr="Local storage"):
    files = drive_files.files_for(instance)
    disk = env.plugins.storage_create_config_drive(env.ctx(), instance, env.sr(sr), files)
    return disk, files, env.export(disk.vdi_ref, tmp_path / "drive.raw")


def read_back(path):
    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        found = {}
        for root, _dirs, names in iso.walk(rr_path="/"):
            for name in names:
                out = io.BytesIO()
                iso.get_file_from_iso_fp(out, rr_path=f"{root.rstrip('/')}/{name}")
                found[f"{root.rstrip('/')}/{name}".lstrip("/")] = out.getvalue()
        return found
    finally:
        iso.close()


def test_config_drive_holds_the_files_under_label_config_2(env, tools, tmp_path):
    instance = drive_instance(env)
    disk, files, raw = make_drive(env, tmp_path, instance)
    assert (disk.kind, disk.userdevice, disk.read_only, disk.bootable) == ("config_drive", "3",
                                                                          True, False)
    rec = env.vdi(disk.vdi_uuid)
    assert (rec["name_label"], int(rec["virtual_size"])) == ("config-2", 64 * MiB)
    assert rec["other_config"] == {"nova_instance_uuid": instance.uuid,
                                   "nova_disk_type": "config_drive"}
    probe = tools.blkid(raw, 0)
    assert (probe["TYPE"], probe["LABEL"]) == ("iso9660", "config-2")
    assert read_back(raw) == files
    meta = json.loads(files["openstack/latest/meta_data.json"])
    assert meta["uuid"] == instance.uuid and meta["files"][0]["path"] == "/etc/motd"
    assert env.leftovers().tasks == []


@pytest.mark.skipif(not shutil.which("isoinfo"), reason="isoinfo (apt-get install genisoimage)")
def test_isoinfo_reads_rock_ridge_and_joliet(env, tmp_path):
    instance = drive_instance(env)
    _, files, raw = make_drive(env, tmp_path, instance)

    def isoinfo(*args):
        return subprocess.run(["isoinfo", "-i", str(raw), *args], capture_output=True,
                              check=True).stdout

    header = isoinfo("-d").decode()
    assert "Volume id: config-2" in header
    assert "Rock Ridge signatures" in header and "Joliet" in header
    assert isoinfo("-R", "-x", "/openstack/latest/user_data") == instance.user_data
    assert isoinfo("-R", "-x", "/openstack/content/0000") == b"welcome\n"
    assert isoinfo("-J", "-x", "/openstack/2013-10-17/meta_data.json") == \
        files["openstack/2013-10-17/meta_data.json"]
    rr_listing = isoinfo("-R", "-f").decode().split()
    assert "/openstack/latest/network_data.json" in rr_listing


def test_larger_drive_gets_a_larger_disk_on_lvm(make_env, tools, tmp_path):
    env = make_env("[storage_sr]\nconfig_drive_size_mb = 1\n")
    instance = env.instance()
    instance.files = {"/var/blob": bytes(range(256)) * 12288}  # 3 MiB
    disk, files, raw = make_drive(env, tmp_path, instance, sr="Local LVM storage")
    rec = env.vdi(disk.vdi_uuid)
    assert rec["SR"] == env.sr("Local LVM storage")
    assert 3 * MiB < int(rec["virtual_size"]) <= 8 * MiB
    assert read_back(raw)["openstack/content/0000"] == instance.files["/var/blob"]


@pytest.mark.parametrize("files, message", [
    ({"../etc/passwd": b"x"}, "is not a relative file path"),
    ({"a//b": b"x"}, "is not a relative file path"),
    ({"a": b"x", "a/b": b"y"}, "'a' is both a file and a directory"),
    ({"a/b": b"x", "/a/b": b"y"}, "is given twice"),
    ({"x" * 65: b"x"}, "longer than 64 characters"),
])
def test_bad_paths_are_refused_before_anything_is_made(env, files, message):
    before = env.leftovers()
    with pytest.raises(StorageError, match=message):
        env.plugins.storage_create_config_drive(env.ctx(), env.instance(),
                                                env.sr("Local storage"), files)
    assert env.leftovers() == before


def test_names_outside_iso9660_keep_their_real_names(tmp_path):
    files = {"data/Über große Datei.txt": b"1", "data/uber_grosse_datei.txt": b"2",
             "data/a b": b"3", "data/a_b": b"4"}
    path = tmp_path / "d.iso"
    with open(path, "wb") as out:
        configdrive.write_iso(files, out)
    assert read_back(path) == files


def test_memory_stays_bounded(tmp_path):
    """Building a drive adds no copy of its contents to memory: the ISO is
    written to a file from the caller's buffers."""
    files = {f"openstack/content/{i:04d}": bytes([i]) * (2 * MiB) for i in range(16)}
    tracemalloc.start()
    try:
        with open(tmp_path / "d.iso", "wb") as out:
            configdrive.write_iso(files, out)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * MiB, f"peak {peak} bytes for 32 MiB of files"
    assert (tmp_path / "d.iso").stat().st_size > 32 * MiB
