"""The ``glance`` image service against a real Glance (started by the tests)."""
from __future__ import annotations

import hashlib
import os
import socketserver
import subprocess
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from xhost import images, plugins
from xhost.context import Context


def vhd_bytes(tmp_path, size="4M") -> bytes:
    path = tmp_path / "disk.vhd"
    subprocess.run(["qemu-img", "create", "-q", "-f", "vpc", "-o", "subformat=dynamic",
                    str(path), size], check=True)
    subprocess.run(["qemu-io", "-f", "vpc", "-c", "write -P 0x5a 0 1M", str(path)], check=True,
                   capture_output=True)
    return path.read_bytes()


def service(make_conf, *servers, retries=3):
    conf = make_conf(f"""
        [xenserver]
        image_service = glance
        [glance]
        api_servers = {','.join(servers)}
        num_retries = {retries}
        retry_interval = 0
    """)
    return Context(conf=conf, plugins=plugins.load(conf, roles=["image_service"]))


@pytest.fixture
def ctx(glance, make_conf):
    ctx = service(make_conf, glance.endpoint)
    made = []
    yield ctx, made
    for image_id in made:
        try:
            ctx.plugins.image_service_delete(ctx, image_id)
        except images.ImageNotFound:
            pass


def test_round_trip_with_checksums(ctx, tmp_path, glance):
    ctx, made = ctx
    data = vhd_bytes(tmp_path)
    image = ctx.plugins.image_service_create(ctx, "xhost-test", "vhd", "bare",
                                             {"os_type": "linux", "auto_disk_config": True})
    made.append(image.id)
    assert image.status == "queued" and image.properties["os_type"] == "linux"
    image = ctx.plugins.image_service_upload(ctx, image.id, iter([data]), len(data))
    assert image.status == "active" and image.size == len(data)
    assert image.checksum == hashlib.md5(data).hexdigest()
    assert image.os_hash_algo == "sha512"
    assert image.os_hash_value == hashlib.sha512(data).hexdigest()
    assert b"".join(ctx.plugins.image_service_download(ctx, image.id)) == data
    updated = ctx.plugins.image_service_update(ctx, image.id, {"vm_mode": "xen"}, ["os_type"])
    assert updated.properties.get("vm_mode") == "xen" and "os_type" not in updated.properties
    assert image.id in [i.id for i in ctx.plugins.image_service_list(ctx, {"name": "xhost-test"})]
    ctx.plugins.image_service_delete(ctx, image.id)
    with pytest.raises(images.ImageNotFound):
        ctx.plugins.image_service_show(ctx, image.id)


def test_upload_from_file_object(ctx, tmp_path):
    ctx, made = ctx
    data = vhd_bytes(tmp_path)
    image = ctx.plugins.image_service_create(ctx, "from-file", "vhd", "bare", {})
    made.append(image.id)
    with open(tmp_path / "disk.vhd", "rb") as f:
        image = ctx.plugins.image_service_upload(ctx, image.id, f, len(data))
    assert image.checksum == hashlib.md5(data).hexdigest()


def test_corrupted_store_is_detected_on_download(ctx, tmp_path, glance):
    ctx, made = ctx
    data = vhd_bytes(tmp_path)
    image = ctx.plugins.image_service_create(ctx, "corrupt", "vhd", "bare", {})
    made.append(image.id)
    ctx.plugins.image_service_upload(ctx, image.id, [data], len(data))
    stored = glance.image_dir / image.id
    with open(stored, "r+b") as f:
        f.seek(len(data) // 2)
        f.write(b"\xff" * 16)
    with pytest.raises(images.ImageDataError, match="corrupt"):
        b"".join(ctx.plugins.image_service_download(ctx, image.id))


class FlakyProxy:
    """Forwards to Glance; fails the first ``fail`` requests with ``status``,
    or cuts image downloads after ``cut_after`` bytes."""

    def __init__(self, upstream: str, fail: int = 0, status: int = 503, cut_after: int | None = None):
        self.upstream, self.fail, self.status, self.cut_after = upstream, fail, status, cut_after
        self.requests = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _any(self):
                proxy.requests += 1
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if proxy.fail > 0:
                    proxy.fail -= 1
                    self.send_response(proxy.status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                req = urllib.request.Request(proxy.upstream + self.path, data=body,
                                             method=self.command,
                                             headers={k: v for k, v in self.headers.items()
                                                      if k.lower() not in ("host", "content-length")})
                try:
                    resp = urllib.request.urlopen(req)
                except urllib.error.HTTPError as err:
                    resp = err
                payload = resp.read()
                self.send_response(resp.status)
                for k, v in resp.headers.items():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                cut = proxy.cut_after is not None and self.path.endswith("/file") and \
                    self.command == "GET"
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload[:proxy.cut_after] if cut else payload)
                if cut:
                    self.close_connection = True

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

        class Server(socketserver.ThreadingMixIn, HTTPServer):
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_transient_errors_are_retried_then_succeed(glance, make_conf):
    proxy = FlakyProxy(glance.endpoint, fail=2, status=503)
    try:
        ctx = service(make_conf, proxy.url, retries=3)
        image = ctx.plugins.image_service_create(ctx, "retry", "raw", "bare", {})
        ctx.plugins.image_service_delete(ctx, image.id)
        assert proxy.requests == 4  # 2 failures, the create, the delete
    finally:
        proxy.close()


def test_retries_give_up_after_num_retries(glance, make_conf):
    proxy = FlakyProxy(glance.endpoint, fail=10, status=502)
    try:
        ctx = service(make_conf, proxy.url, retries=2)
        with pytest.raises(images.ImageError, match="after 3 attempt"):
            ctx.plugins.image_service_create(ctx, "never", "raw", "bare", {})
        assert proxy.requests == 3
    finally:
        proxy.close()


def test_permanent_errors_are_not_retried(glance, make_conf):
    proxy = FlakyProxy(glance.endpoint, fail=1, status=403)
    try:
        ctx = service(make_conf, proxy.url, retries=3)
        with pytest.raises(images.ImageError, match="HTTP 403"):
            ctx.plugins.image_service_create(ctx, "nope", "raw", "bare", {})
        assert proxy.requests == 1
    finally:
        proxy.close()


def test_failover_to_the_next_api_server(glance, make_conf):
    ctx = service(make_conf, "http://127.0.0.1:9", glance.endpoint, retries=1)
    image = ctx.plugins.image_service_create(ctx, "failover", "raw", "bare", {})
    ctx.plugins.image_service_delete(ctx, image.id)


def test_stream_cut_in_the_middle_is_a_clear_error(glance, make_conf, tmp_path):
    direct = service(make_conf, glance.endpoint)
    data = os.urandom(3 * 1024 * 1024)
    image = direct.plugins.image_service_create(direct, "cut", "raw", "bare", {})
    try:
        direct.plugins.image_service_upload(direct, image.id, [data], len(data))
        proxy = FlakyProxy(glance.endpoint, cut_after=1024 * 1024)
        try:
            ctx = service(make_conf, proxy.url)
            with pytest.raises(images.ImageDataError, match="cut after|corrupt"):
                b"".join(ctx.plugins.image_service_download(ctx, image.id))
        finally:
            proxy.close()
    finally:
        direct.plugins.image_service_delete(direct, image.id)


def test_location_for_dom0(ctx):
    ctx, _ = ctx
    location = ctx.plugins.image_service_location(ctx, "abc", for_upload=False)
    assert location.url.endswith("/v2/images/abc/file") and location.headers == {}
