"""The Glance harness: a real Glance API (sqlite, file store, no keystone) under gunicorn."""
import hashlib
import os
import socket
import subprocess
import sys

import pytest

from xhost.testing._common import pid_alive
from xhost.testing.errors import ComponentUnavailable, HarnessError
from xhost.testing.glance import (
    GlanceServer,
    default_venv,
    ensure_installed,
    find_install,
)
from xhost.testing.realfixtures import require_binaries_or_skip

pytestmark = pytest.mark.real



@pytest.fixture(scope="module")
def vhd_bytes(tmp_path_factory):
    """A real dynamic VHD with data in it, made by qemu-img and qemu-io."""
    require_binaries_or_skip("VHD test images", {"qemu-img": "qemu-utils",
                                                 "qemu-io": "qemu-utils"})
    path = tmp_path_factory.mktemp("vhd") / "disk.vhd"
    subprocess.run(["qemu-img", "create", "-q", "-f", "vpc", "-o", "subformat=dynamic",
                    str(path), "16M"], check=True)
    subprocess.run(["qemu-io", "-f", "vpc", "-c", "write -P 0xab 0 1M",
                    "-c", "write -P 0xcd 9M 512k", str(path)], check=True,
                   capture_output=True)
    data = path.read_bytes()
    assert data[-512:].startswith(b"conectix")  # the VHD footer cookie
    return data


def _create(glance, **fields):
    body = {"name": "harness-test", "disk_format": "vhd", "container_format": "bare", **fields}
    resp = glance.request("POST", "/v2/images", json_body=body)
    assert resp.status == 201, resp.body
    return resp.json()


def test_vhd_round_trip_with_checksums(glance, vhd_bytes):
    image = _create(glance)
    assert image["status"] == "queued"
    image_id = image["id"]
    try:
        put = glance.request("PUT", f"/v2/images/{image_id}/file", data=vhd_bytes,
                             headers={"Content-Type": "application/octet-stream"})
        assert put.status == 204, put.body

        meta = glance.request("GET", f"/v2/images/{image_id}").json()
        assert meta["status"] == "active"
        assert meta["size"] == len(vhd_bytes)
        assert meta["checksum"] == hashlib.md5(vhd_bytes).hexdigest()
        assert meta["os_hash_algo"] == "sha512"
        assert meta["os_hash_value"] == hashlib.sha512(vhd_bytes).hexdigest()

        got = glance.request("GET", f"/v2/images/{image_id}/file")
        assert got.status == 200
        assert got.body == vhd_bytes
        # The bytes really are in the private file store.
        assert (glance.image_dir / image_id).read_bytes() == vhd_bytes
    finally:
        deleted = glance.request("DELETE", f"/v2/images/{image_id}")
    assert deleted.status == 204
    assert glance.request("GET", f"/v2/images/{image_id}").status == 404
    assert not (glance.image_dir / image_id).exists()


def test_patch_properties(glance):
    image = _create(glance, disk_format="raw", os_type="linux")
    try:
        patch = [{"op": "add", "path": "/auto_disk_config", "value": "True"},
                 {"op": "replace", "path": "/name", "value": "renamed"}]
        resp = glance.request(
            "PATCH", f"/v2/images/{image['id']}", json_body=patch,
            headers={"Content-Type": "application/openstack-images-v2.1-json-patch"})
        assert resp.status == 200, resp.body
        meta = glance.request("GET", f"/v2/images/{image['id']}").json()
        assert (meta["name"], meta["os_type"], meta["auto_disk_config"]) == \
            ("renamed", "linux", "True")
    finally:
        assert glance.request("DELETE", f"/v2/images/{image['id']}").status == 204


def test_bytes_that_are_not_a_vhd_are_refused(glance):
    # Glance's format inspector: fixtures must upload real VHDs (documented gotcha).
    image = _create(glance)
    try:
        resp = glance.request("PUT", f"/v2/images/{image['id']}/file", data=os.urandom(65536),
                              headers={"Content-Type": "application/octet-stream"})
        assert resp.status == 415
        assert glance.request("GET", f"/v2/images/{image['id']}").json()["status"] == "queued"
    finally:
        glance.request("DELETE", f"/v2/images/{image['id']}")


def test_endpoint_and_versions(glance):
    assert glance.endpoint == f"http://127.0.0.1:{glance.port}"
    versions = glance.request("GET", "/versions")
    assert versions.status == 200
    assert any(v["status"] == "CURRENT" for v in versions.json()["versions"])
    assert glance.pid and glance.worker_pids()


def test_install_is_reused(glance):
    install = ensure_installed()
    assert install.venv == default_venv() == glance.install.venv
    assert install.install_seconds == 0.0  # found by its marker, pip did not run
    assert install.glance_version and install.template_db.is_file()
    # Other requirements mean another install; nothing is reused wrongly.
    assert find_install(requirements=("glance==1.0",)) is None


def test_install_cli_prints_venv(glance):
    out = subprocess.run([sys.executable, "-P", "-m", "xhost.testing.glance", "--install"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(glance.install.venv)


def test_missing_install_with_installing_forbidden(tmp_path):
    with pytest.raises(ComponentUnavailable, match="python -m xhost.testing.glance --install"):
        ensure_installed(tmp_path / "nothing-here", allow_install=False)
    assert not (tmp_path / "nothing-here").exists()


def test_install_refuses_to_clear_a_directory_that_is_not_a_venv(tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "data.txt").write_text("keep me")
    with pytest.raises(HarnessError, match="is not a virtualenv"):
        ensure_installed(precious, allow_install=True)
    assert (precious / "data.txt").read_text() == "keep me"


def test_stop_removes_processes_files_and_port(glance):
    # A second, private server (the session one keeps serving other tests).
    server = GlanceServer(threads=1).start()
    master, workers = server.pid, server.worker_pids()
    base, port = server.base_dir, server.port
    assert workers and (base / "glance.sqlite").is_file()
    assert server.request("GET", "/v2/images").json()["images"] == []  # own database
    server.stop()
    assert not pid_alive(master)
    assert not any(pid_alive(w) for w in workers)
    assert not base.exists()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2)
    assert not os.path.exists(os.path.expanduser("~/.gunicorn/gunicorn.ctl"))
    server.stop()  # idempotent
    with pytest.raises(HarnessError, match="not started"):
        _ = server.endpoint


def test_failed_start_reports_the_cause_and_leaves_nothing(glance):
    server = GlanceServer(config={"paste_deploy": {"flavor": "nosuchflavor"}})
    with pytest.raises(HarnessError, match="exited with status") as caught:
        server.start()
    assert "glance-api-nosuchflavor" in str(caught.value)  # the log tail names the cause
    assert server.base_dir is None and server.pid is None
