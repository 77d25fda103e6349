"""The ``local`` image service, through the plugin facade and the CLI."""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from xhost import images, plugins
from xhost.context import Context

XHOST = shutil.which("xhost") or str(pathlib.Path(sys.executable).parent / "xhost")


@pytest.fixture
def store(tmp_path, make_conf):
    conf = make_conf(f"[xenserver]\nimage_service = local\n[image_local]\npath = {tmp_path}/images\n")
    host = plugins.load(conf, roles=["image_service"])
    return Context(conf=conf, plugins=host), tmp_path / "images"


def test_create_upload_show_download_delete(store):
    ctx, path = store
    data = os.urandom(3 * 1024 * 1024 + 7)
    image = ctx.plugins.image_service_create(ctx, "disk", "raw", "bare", {"os_type": "linux"})
    assert image.status == "queued"
    image = ctx.plugins.image_service_upload(ctx, image.id, iter([data[:1000], data[1000:]]),
                                             len(data))
    assert (image.status, image.size) == ("active", len(data))
    assert image.checksum == hashlib.md5(data).hexdigest()
    assert (image.os_hash_algo, image.os_hash_value) == ("sha512", hashlib.sha512(data).hexdigest())
    assert ctx.plugins.image_service_show(ctx, image.id).properties == {"os_type": "linux"}
    assert b"".join(ctx.plugins.image_service_download(ctx, image.id)) == data
    assert [i.id for i in ctx.plugins.image_service_list(ctx, {"name": "disk"})] == [image.id]
    ctx.plugins.image_service_delete(ctx, image.id)
    assert sorted(os.listdir(path)) == [".lock"]
    with pytest.raises(images.ImageNotFound):
        ctx.plugins.image_service_show(ctx, image.id)


def test_corrupt_data_is_detected_when_streamed(store):
    ctx, path = store
    image = ctx.plugins.image_service_create(ctx, "disk", "raw", "bare", {})
    ctx.plugins.image_service_upload(ctx, image.id, [b"a" * 4096], 4096)
    with open(path / f"{image.id}.data", "r+b") as f:
        f.write(b"b")
    with pytest.raises(images.ImageDataError, match="corrupt data"):
        b"".join(ctx.plugins.image_service_download(ctx, image.id))


def test_failed_upload_leaves_the_image_queued_and_no_partial_file(store):
    ctx, path = store
    image = ctx.plugins.image_service_create(ctx, "disk", "raw", "bare", {})

    def broken():
        yield b"x" * 100
        raise ConnectionError("stream cut")

    with pytest.raises(ConnectionError):
        ctx.plugins.image_service_upload(ctx, image.id, broken(), None)
    assert ctx.plugins.image_service_show(ctx, image.id).status == "queued"
    assert sorted(os.listdir(path)) == [".lock", f"{image.id}.json"]
    with pytest.raises(images.ImageError, match="announced"):
        ctx.plugins.image_service_upload(ctx, image.id, [b"abc"], 4)


def test_resolve_by_id_or_unique_name(store):
    ctx, _ = store
    a = ctx.plugins.image_service_create(ctx, "same", "raw", "bare", {})
    b = ctx.plugins.image_service_create(ctx, "same", "raw", "bare", {})
    c = ctx.plugins.image_service_create(ctx, "unique", "raw", "bare", {})
    assert images.resolve(ctx, a.id).id == a.id
    assert images.resolve(ctx, "unique").id == c.id
    with pytest.raises(images.AmbiguousImage, match=b.id):
        images.resolve(ctx, "same")
    with pytest.raises(images.ImageNotFound, match="xhost image list"):
        images.resolve(ctx, "nope")


def test_update_properties(store):
    ctx, _ = store
    image = ctx.plugins.image_service_create(ctx, "d", "vhd", "ovf", {"a": "1", "b": "2"})
    image = ctx.plugins.image_service_update(ctx, image.id, {"a": "9", "name": "e"}, ["b"])
    assert (image.name, image.properties) == ("e", {"a": "9"})
    with pytest.raises(images.ImageError, match="checksum"):
        ctx.plugins.image_service_update(ctx, image.id, {"checksum": "x"}, [])


def cli(tmp_path, *args, check=True):
    conf = tmp_path / "x.conf"
    conf.write_text(f"[image_local]\npath = {tmp_path}/cli-images\n")
    proc = subprocess.run([XHOST, "--config-file", str(conf), *args], capture_output=True,
                          text=True, timeout=60)
    if check and proc.returncode:
        raise AssertionError(proc.stderr)
    return proc


def test_image_cli_round_trip(tmp_path):
    src = tmp_path / "disk.raw"
    src.write_bytes(os.urandom(2 * 1024 * 1024))
    created = json.loads(cli(tmp_path, "image", "create", "mydisk", "--file", str(src),
                             "--disk-format", "raw", "--container-format", "bare",
                             "--property", "os_type=linux", "-f", "json").stdout)
    assert created["status"] == "active" and created["properties"] == {"os_type": "linux"}
    rows = json.loads(cli(tmp_path, "image", "list", "-f", "json").stdout)
    assert [set(r) for r in rows] == [{"id", "name", "status", "disk_format", "container_format",
                                       "size", "checksum"}]
    assert rows[0]["size"] == src.stat().st_size
    shown = json.loads(cli(tmp_path, "image", "show", "mydisk", "-f", "json").stdout)
    assert shown["id"] == created["id"]
    out = tmp_path / "back.raw"
    cli(tmp_path, "image", "download", "mydisk", "--file", str(out))
    assert out.read_bytes() == src.read_bytes()
    cli(tmp_path, "image", "delete", created["id"])
    proc = cli(tmp_path, "image", "show", "mydisk", check=False)
    assert proc.returncode != 0 and "no image 'mydisk'" in proc.stderr


def test_image_create_with_missing_file_creates_nothing(tmp_path):
    proc = cli(tmp_path, "image", "create", "x", "--file", str(tmp_path / "nope"),
               "--disk-format", "raw", "--container-format", "bare", check=False)
    assert proc.returncode != 0 and "no such file" in proc.stderr
    assert json.loads(cli(tmp_path, "image", "list", "-f", "json").stdout) == []
