"""``xhost image ...`` as a user runs it: create with a progress bar, list and
show with the documented columns, and the image cache commands."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from imagehost import MiB, instance, pattern, sparse_disk

from xhost import imagecache
from xhost.testing.simfixtures import SIM_PASSWORD

XHOST = shutil.which("xhost") or str(Path(sys.executable).parent / "xhost")
COLUMNS = {"id", "name", "status", "disk_format", "container_format", "size", "checksum"}


@pytest.fixture
def cli(simulator, tmp_path, write_conf):
    conf = write_conf(f"""
        [xenserver]
        connection_url = {simulator.url}
        connection_password = {SIM_PASSWORD}
        image_handler = vdi_remote_stream
        [image_local]
        path = {tmp_path}/images
        [compute]
        state_dir = {tmp_path}/state
    """)

    def run(*args: str, check: bool = True, tty: bool = False) -> subprocess.CompletedProcess:
        argv = [XHOST, "--config-file", str(conf), *args]
        if tty:  # progress bars only show on a terminal (of some width)
            argv = ["script", "-qec", "stty cols 100 rows 40; " + " ".join(argv), "/dev/null"]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                              env={**os.environ, "COLUMNS": "100"})
        if check and proc.returncode:
            raise AssertionError(proc.stderr + proc.stdout)
        return proc

    return run


def test_create_list_show_download(cli, tmp_path):
    disk = tmp_path / "disk.raw"
    disk.write_bytes(sparse_disk(3 * MiB, {0: pattern(MiB)}))
    shown = json.loads(cli("image", "create", "tiny", "--file", str(disk), "--disk-format",
                           "raw", "--container-format", "bare", "--property", "os_type=linux",
                           "-f", "json").stdout)
    assert shown["status"] == "active" and shown["properties"]["os_type"] == "linux"
    rows = json.loads(cli("image", "list", "-f", "json").stdout)
    assert [set(r) for r in rows] == [COLUMNS] and rows[0]["name"] == "tiny"
    assert json.loads(cli("image", "show", "tiny", "-f", "json").stdout)["id"] == shown["id"]
    out = tmp_path / "back.raw"
    cli("image", "download", "tiny", "--file", str(out))
    assert out.read_bytes() == disk.read_bytes()
    # on a terminal the transfers show a progress bar
    bar = cli("image", "create", "tty", "--file", str(disk), "--disk-format", "raw",
              "--container-format", "bare", tty=True).stdout
    assert "uploading tty: 100%" in bar and "3.00M/3.00M" in bar
    bar = cli("image", "download", "tty", "--file", str(out), tty=True).stdout
    assert "downloading tty: 100%" in bar
    cli("image", "delete", "tiny", "tty")
    assert json.loads(cli("image", "list", "-f", "json").stdout) == []


def test_image_cache_list_and_clean(cli, hosts, tmp_path):
    host = hosts("vdi_remote_stream")
    used = host.upload("used", sparse_disk(2 * MiB, {0: pattern(4096)}), "raw", "bare")
    unused = host.upload("unused", sparse_disk(2 * MiB, {0: pattern(4096, 2)}), "raw", "bare")
    imagecache.image_disks(host.context(), instance(), host.sr(), used)
    imagecache.cached_root(host.context(), host.sr(), unused)
    rows = {r["image_id"]: r for r in json.loads(cli("image", "cache", "list", "-f",
                                                     "json").stdout)}
    assert set(rows) == {used.id, unused.id}
    assert rows[used.id]["instances"] == 1 and rows[unused.id]["instances"] == 0
    assert rows[used.id]["status"] == "complete" and rows[used.id]["sr"] == "Local storage"
    assert json.loads(cli("image", "cache", "clean", "--keep-days", "1", "-f",
                          "json").stdout) == []
    removed = json.loads(cli("image", "cache", "clean", "-f", "json").stdout)
    assert [r["image_id"] for r in removed] == [unused.id]
    left = json.loads(cli("image", "cache", "list", "-f", "json").stdout)
    assert [r["image_id"] for r in left] == [used.id]
    removed = json.loads(cli("image", "cache", "clean", "--include-used", "-f", "json").stdout)
    assert [r["image_id"] for r in removed] == [used.id]
    assert json.loads(cli("image", "cache", "list", "-f", "json").stdout) == []


def test_abandoned_downloads_are_cleaned(cli, hosts):
    host = hosts("vdi_remote_stream")
    vdi = host.new_vdi(2 * MiB)
    host.x.call("VDI.set_other_config", vdi, {"xhost_downloading": "img-1",
                                             "xhost_download_owner": "nohost:1:1"})
    dead = host.new_vdi(2 * MiB)
    import socket

    host.x.call("VDI.set_other_config", dead, {"xhost_downloading": "img-2",
                                              "xhost_download_owner":
                                              f"{socket.gethostname()}:999999999:1"})
    rows = {r["image_id"]: r["status"] for r in json.loads(cli("image", "cache", "list", "-f",
                                                               "json").stdout)}
    assert rows == {"img-1": "downloading", "img-2": "abandoned"}
    removed = json.loads(cli("image", "cache", "clean", "-f", "json").stdout)
    assert [r["image_id"] for r in removed] == ["img-2"]
