"""Test helpers: an image service and an image handler on a simulated host.

Imported by the image tests (``tests/`` has no ``__init__.py``; the tests
directory is on ``sys.path`` through pytest's rootdir-relative import).
"""
from __future__ import annotations

import hashlib
import os
import tarfile
import uuid
from pathlib import Path
from typing import Any

from xhost import plugins
from xhost.compute.connection import HostConnection
from xhost.context import Context
from xhost.dom0 import xhost_vhd
from xhost.objects import Flavor, ImageMeta, Instance
from xhost.testing.simfixtures import SIM_PASSWORD, SIM_USER
from xhost.xapi import datapath
from xhost.xapi.client import XapiClient

MiB = 1024 * 1024
HANDLERS = ("direct_vhd", "vdi_local_dev", "vdi_remote_stream")


def conf_text(sim, tmp_path: Path, handler: str, service: str = "local",
              glance: str | None = None, extra: str = "") -> str:
    text = f"""
[DEFAULT]
use_cow_images = true
[xenserver]
image_handler = {handler}
image_service = {service}
[compute]
state_dir = {tmp_path}/state
[image_local]
path = {tmp_path}/images
transfer_idle_seconds = 1
[image_vdi_local_dev]
device_dir = {sim.state_dir}/compute/dev
vm_uuid_file = {sim.state_dir}/compute/vm-uuid
[glance]
num_retries = 2
retry_interval = 0
"""
    if glance:
        text += f"api_servers = {glance}\n"
    return text + extra


class ImageHost:
    """A context with one handler and one image service on the simulator."""

    def __init__(self, sim, conf, client: XapiClient | None = None) -> None:
        self.sim = sim
        self.conf = conf
        self.client = client or XapiClient(sim.url, SIM_USER, SIM_PASSWORD)
        self.connection = HostConnection(self.client)
        self.plugins = plugins.load(conf, roles=["image_handler", "image_service"])

    def context(self) -> Context:
        ctx = Context(conf=self.conf, plugins=self.plugins, xapi=self.client,
                      host_ref=self.connection.host_ref)
        ctx.extra["dom0"] = self.connection.dom0
        ctx.extra["connection"] = self.connection
        return ctx

    @property
    def x(self) -> XapiClient:
        return self.client

    def sr(self, name: str = "Local storage") -> str:
        return self.x.call("SR.get_by_name_label", name)[0]

    def sr_dir(self, name: str = "Local storage") -> Path:
        uuid_ = self.x.call("SR.get_uuid", self.sr(name))
        return Path(self.sim.state_dir) / "dom0" / "var" / "run" / "sr-mount" / uuid_

    # -- images --------------------------------------------------------------------

    def upload(self, name: str, data: bytes | Path, disk_format: str, container_format: str,
               properties: dict[str, Any] | None = None) -> ImageMeta:
        ctx = self.context()
        image = ctx.plugins.image_service_create(ctx, name, disk_format, container_format,
                                                 properties or {})
        payload = data.read_bytes() if isinstance(data, Path) else data
        return ctx.plugins.image_service_upload(ctx, image.id, [payload], len(payload))

    def download(self, image: ImageMeta, sr: str | None = None, instance: Instance | None = None,
                 ctx: Context | None = None):
        ctx = ctx or self.context()
        return ctx.plugins.image_download(ctx, image, sr or self.sr(), instance)

    # -- disks -----------------------------------------------------------------------

    def raw(self, vdi: str) -> bytes:
        with datapath.export_raw_vdi(self.x, vdi, fmt="raw") as stream:
            return b"".join(stream)

    def new_vdi(self, size: int, sr: str | None = None, data: bytes | None = None) -> str:
        vdi = self.x.call("VDI.create", {
            "name_label": "source", "SR": sr or self.sr(), "virtual_size": str(size),
            "type": "user", "sharable": False, "read_only": False, "other_config": {},
            "xenstore_data": {}, "sm_config": {}, "tags": []})
        if data is not None:
            datapath.import_raw_vdi(self.x, vdi, [data], len(data))
        return vdi

    def vdi_uuids(self) -> set[str]:
        return {r["uuid"] for r in self.x.call("VDI.get_all_records").values()}

    def staging_dirs(self) -> list[str]:
        found = []
        for sr in self.x.call("SR.get_all_records").values():
            path = Path(self.sim.state_dir) / "dom0" / "var" / "run" / "sr-mount" / sr["uuid"]
            if path.is_dir():
                found += [p.name for p in path.iterdir() if p.name.startswith(".xhost-staging")]
        return found


def instance(root_gb: int = 1, image: ImageMeta | None = None, **kw: Any) -> Instance:
    return Instance(uuid=str(uuid.uuid4()), name=kw.pop("name", "vm"),
                    flavor=Flavor("test", 1, 256, root_gb), image=image, **kw)


def pattern(size: int, seed: int = 1) -> bytes:
    """Deterministic, poorly compressible bytes."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(b"%d-%d" % (seed, counter)).digest()
        counter += 1
    return bytes(out[:size])


def sparse_disk(size: int, writes: dict[int, bytes]) -> bytes:
    disk = bytearray(size)
    for offset, data in writes.items():
        disk[offset:offset + len(data)] = data
    return bytes(disk)


def vhd_chain(tmp: Path, size: int, base_writes: dict[int, bytes],
              child_writes: dict[int, bytes]) -> tuple[list[Path], bytes]:
    """A two-file chain (child, base) and the disk it reads as."""
    tmp.mkdir(parents=True, exist_ok=True)
    base = tmp / "base.vhd"
    child = tmp / "child.vhd"
    xhost_vhd.create_dynamic(str(base), size)
    with xhost_vhd.open_vhd(str(base), writable=True) as vhd:
        for offset, data in base_writes.items():
            vhd.write(offset, data)
    xhost_vhd.create_differencing(str(child), str(base))
    with xhost_vhd.open_chain(str(child), writable=True) as vhd:
        for offset, data in child_writes.items():
            vhd.write(offset, data)
    expected = bytearray(sparse_disk(size, base_writes))
    for offset, data in child_writes.items():
        expected[offset:offset + len(data)] = data
    return [child, base], bytes(expected)


def tarball(path: Path, members: list[tuple[str, Path | bytes]], gz: bool = True) -> Path:
    with tarfile.open(path, "w:gz" if gz else "w") as tar:
        for name, source in members:
            if isinstance(source, Path):
                tar.add(str(source), arcname=name)
            else:
                info = tarfile.TarInfo(name)
                info.size = len(source)
                import io

                tar.addfile(info, io.BytesIO(source))
    return path


def file_bytes(path: str | os.PathLike) -> bytes:
    with open(path, "rb") as f:
        return f.read()


class FlakyProxy:
    """An HTTP proxy to ``upstream`` that misbehaves on image data requests
    (paths ending in ``/file``): the first ``cut`` GETs are cut after
    ``cut_after`` bytes, the first ``fail`` ones answer ``status``."""

    def __init__(self, upstream: str, cut: int = 0, cut_after: int = 4096, fail: int = 0,
                 status: int = 503) -> None:
        import http.client
        import threading
        import urllib.parse
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.cut, self.cut_after, self.fail, self.status = cut, cut_after, fail, status
        self.data_requests = 0
        target = urllib.parse.urlsplit(upstream)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _forward(self):
                is_data = self.path.split("?")[0].endswith("/file")
                if is_data:
                    proxy.data_requests += 1
                    if proxy.fail > 0:
                        proxy.fail -= 1
                        self.send_response(proxy.status)
                        self.send_header("Content-Length", "0")
                        self.send_header("Connection", "close")
                        self.end_headers()
                        self.close_connection = True
                        if self.command == "PUT":
                            return
                        return
                length = self.headers.get("Content-Length")
                chunked = "chunked" in self.headers.get("Transfer-Encoding", "")
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
                conn.putrequest(self.command, self.path, skip_host=True,
                                skip_accept_encoding=True)
                for key, value in self.headers.items():
                    if key.lower() not in ("connection",):
                        conn.putheader(key, value)
                conn.endheaders()
                if length:
                    left = int(length)
                    while left:
                        piece = self.rfile.read(min(left, 1 << 20))
                        conn.send(piece)
                        left -= len(piece)
                elif chunked:
                    while True:
                        line = self.rfile.readline()
                        conn.send(line)
                        size = int(line.split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            conn.send(self.rfile.readline())
                            break
                        conn.send(self.rfile.read(size + 2))
                resp = conn.getresponse()
                cut = is_data and self.command == "GET" and proxy.cut > 0 and resp.status == 200
                if cut:
                    proxy.cut -= 1
                self.send_response(resp.status)
                for key, value in resp.getheaders():
                    if key.lower() not in ("connection", "transfer-encoding"):
                        self.send_header(key, value)
                body_len = resp.getheader("Content-Length")
                if body_len is None:
                    data = resp.read()
                    self.send_header("Content-Length", str(len(data)))
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(data)
                    self.close_connection = True
                    conn.close()
                    return
                self.send_header("Connection", "close")
                self.end_headers()
                sent = 0
                while True:
                    data = resp.read(65536)
                    if not data:
                        break
                    if cut and sent + len(data) > proxy.cut_after:
                        self.wfile.write(data[:proxy.cut_after - sent])
                        self.wfile.flush()
                        self.connection.shutdown(2)
                        break
                    self.wfile.write(data)
                    sent += len(data)
                self.close_connection = True
                conn.close()

            do_GET = do_PUT = do_POST = do_PATCH = do_DELETE = do_HEAD = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
