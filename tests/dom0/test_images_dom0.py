"""dom0/xhost_images.py on its own (standard library, Python 3.6): downloads
from a local HTTP server into a directory standing for a file SR, uploads to
one, and the error codes transient and permanent failures get."""
import gzip
import hashlib
import importlib.util
import io
import os
import shutil
import sys
import tarfile
import tempfile
import threading
import time
import unittest
import uuid
from http.server import BaseHTTPRequestHandler, HTTPServer

_spec = importlib.util.spec_from_file_location(
    "vhd_testlib", os.path.join(os.path.dirname(os.path.abspath(__file__)), "vhd_testlib.py"))
testlib = sys.modules.get("vhd_testlib") or importlib.util.module_from_spec(_spec)
if "vhd_testlib" not in sys.modules:
    sys.modules["vhd_testlib"] = testlib
    _spec.loader.exec_module(testlib)

vhd = testlib.vhd
MIB = testlib.MIB


def _load(name):
    if testlib.DOM0 not in sys.path:
        sys.path.insert(0, testlib.DOM0)
    spec = importlib.util.spec_from_file_location(name, os.path.join(testlib.DOM0,
                                                                     name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


images = _load("xhost_images")
dom0lib = sys.modules["xhost_dom0lib"]


class Server(object):
    """Serves ``body`` (cut after ``cut`` bytes, or answering ``status``) and
    records what is PUT."""

    def __init__(self, body=b"", status=200, cut=None, trickle=None):
        self.body, self.status, self.cut = body, status, cut
        self.trickle = trickle  # sizes of the first writes, flushed one by one
        self.received = b""
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                self.send_response(owner.status)
                self.send_header("Content-Length", str(len(owner.body)))
                self.send_header("Connection", "close")
                self.end_headers()
                if owner.status == 200:
                    data = owner.body if owner.cut is None else owner.body[:owner.cut]
                    for size in owner.trickle or ():
                        self.wfile.write(data[:size])
                        self.wfile.flush()
                        time.sleep(0.002)
                        data = data[size:]
                    self.wfile.write(data)
                self.close_connection = True

            def do_PUT(self):
                data = b""
                while True:
                    size = int(self.rfile.readline().strip(), 16)
                    if not size:
                        self.rfile.readline()
                        break
                    data += self.rfile.read(size)
                    self.rfile.readline()
                owner.received = data
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d/v1/images/x/file" % self.httpd.server_address[1]
        thread = threading.Thread(target=self.httpd.serve_forever)
        thread.daemon = True
        thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _tarball(members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(buf.getvalue())


class ImagesDom0Test(unittest.TestCase):
    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="xhost-dom0-images-")
        self.addCleanup(shutil.rmtree, self.root, True)
        os.environ[dom0lib.ROOT_ENV] = self.root
        self.addCleanup(os.environ.pop, dom0lib.ROOT_ENV, None)
        self.sr = "/var/run/sr-mount/%s" % uuid.uuid4()
        self.sr_dir = os.path.join(self.root, self.sr.lstrip("/"))
        os.makedirs(self.sr_dir)
        self.work = tempfile.mkdtemp(dir=self.root)

    def _chain(self):
        base = os.path.join(self.work, "base.vhd")
        child = os.path.join(self.work, "child.vhd")
        vhd.create_dynamic(base, 4 * MIB)
        with vhd.open_vhd(base, writable=True) as disk:
            disk.write(0, b"\x11" * MIB)
        vhd.create_differencing(child, base)
        with vhd.open_chain(child, writable=True) as disk:
            disk.write(512, b"\x22" * 1024)
        with open(child, "rb") as c, open(base, "rb") as b:
            return c.read(), b.read()

    def _download(self, server, body, **kw):
        uuids = [str(uuid.uuid4()) for _ in range(4)]
        args = dict(url=server.url, sr_path=self.sr, uuids=uuids,
                    checksum=hashlib.md5(body).hexdigest(), size=len(body))
        args.update(kw)
        return images.download_vhd(None, **args)

    def _code(self, fn):
        with self.assertRaises(dom0lib.Dom0Error) as caught:
            fn()
        return caught.exception.code, " ".join(caught.exception.params)

    def test_chain_is_imported_with_fresh_uuids_and_staging_removed(self):
        child, base = self._chain()
        body = _tarball([("0.vhd", child), ("1.vhd", base)])
        server = Server(body)
        self.addCleanup(server.close)
        result = self._download(server, body)
        leaf, parent = result["uuids"]
        self.assertEqual(sorted(os.listdir(self.sr_dir)),
                         sorted(["%s.vhd" % leaf, "%s.vhd" % parent]))
        path = os.path.join(self.sr_dir, "%s.vhd" % leaf)
        vhd.check(path, parents=True)
        with vhd.open_chain(path) as disk:
            self.assertEqual(str(disk.uuid), leaf)
            self.assertEqual(disk.read(0, 2048), b"\x11" * 512 + b"\x22" * 1024 + b"\x11" * 512)
            self.assertTrue(disk.parent.hidden)

    def test_pooled_buffers_keep_every_byte_in_order(self):
        """The reader's buffers go round between it and the digest thread:
        the bytes handed out and the bytes hashed must both be the body,
        whatever the sizes the socket delivers, over many rounds of reuse."""
        body = os.urandom(images.POOL_BUFFERS * 3 * images.READ_SIZE + 12345)

        class Response(object):
            """Delivers short, uneven pieces, like a socket does."""

            def __init__(self):
                self.at, self.turn = 0, 0

            def readinto(self, view):
                self.turn += 1
                size = min(len(view), (1, 7, 4096, 65536, len(view))[self.turn % 5])
                piece = body[self.at:self.at + size]
                view[:len(piece)] = piece
                self.at += len(piece)
                return len(piece)

        reader = images._HashingReader(Response(), "http://x/", "sha512", len(body))
        received = []
        try:
            while True:
                view = reader.read_view(images.READ_SIZE)
                if not view:
                    break
                received.append(bytes(view))  # used before the next read only
        finally:
            reader.close()
        self.assertEqual(b"".join(received), body)
        self.assertEqual(reader.digest.hexdigest(), hashlib.sha512(body).hexdigest())
        self.assertEqual(reader.count, len(body))

    def test_trickled_multi_member_gzip_is_imported_intact(self):
        """A tarball gzipped as two members, sent a few bytes at a time at
        first, then in large pieces: gunzip's 1-byte leftovers and views of
        pooled buffers must not mix up data."""
        child, base = self._chain()
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w") as tar:
            for name, data in (("0.vhd", child), ("1.vhd", base)):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        raw = raw.getvalue()
        body = gzip.compress(raw[:777]) + gzip.compress(raw[777:]) + bytes(1024)
        server = Server(body, trickle=(1, 1, 2, 3, 5, 8, 13, 4096))
        self.addCleanup(server.close)
        result = self._download(server, body, os_hash_algo="sha512",
                                os_hash_value=hashlib.sha512(body).hexdigest())
        path = os.path.join(self.sr_dir, "%s.vhd" % result["uuids"][0])
        with vhd.open_chain(path) as disk:
            self.assertEqual(disk.read(0, 2048), b"\x11" * 512 + b"\x22" * 1024 + b"\x11" * 512)
            self.assertEqual(disk.read(MIB - 512, 1024), b"\x11" * 512 + bytes(512))

    def test_refusals_and_transient_failures(self):
        child, base = self._chain()
        good = _tarball([("0.vhd", child), ("1.vhd", base)])
        cases = [
            (Server(good), dict(checksum="0" * 32), "XHOST_IMAGE_INVALID", "checksum"),
            # the os_hash_value, when given, is the hash verified
            (Server(good), dict(checksum=hashlib.md5(good).hexdigest(), os_hash_algo="sha512",
                                os_hash_value="0" * 128), "XHOST_IMAGE_INVALID", "os_hash_value"),
            (Server(good, status=404), {}, "XHOST_IMAGE_NOT_FOUND", "404"),
            (Server(good, status=403), {}, "XHOST_IMAGE_HTTP", "403"),
            (Server(good, status=503), {}, "XHOST_IMAGE_RETRY", "503"),
            (Server(good, cut=len(good) // 2), {}, "XHOST_IMAGE_RETRY", "cut|ended"),
        ]
        for server, extra, code, words in cases:
            self.addCleanup(server.close)
            got, message = self._code(lambda s=server, e=extra: self._download(s, good, **e))
            self.assertEqual(got, code, message)
            self.assertRegex(message, words)
            self.assertEqual(os.listdir(self.sr_dir), [])
        link = io.BytesIO()
        with tarfile.open(fileobj=link, mode="w") as tar:
            info = tarfile.TarInfo("0.vhd")
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/shadow"
            tar.addfile(info)
        body = gzip.compress(link.getvalue())
        server = Server(body)
        self.addCleanup(server.close)
        got, message = self._code(lambda: self._download(server, body))
        self.assertEqual(got, "XHOST_IMAGE_INVALID")
        self.assertIn("symbolic link", message)
        self.assertEqual(os.listdir(self.sr_dir), [])

    def test_upload_streams_the_chain_as_a_tarball(self):
        child, base = self._chain()
        body = _tarball([("0.vhd", child), ("1.vhd", base)])
        server = Server(body)
        self.addCleanup(server.close)
        leaf = self._download(server, body)["uuids"][0]
        result = images.upload_vhd(None, url=server.url, sr_path=self.sr, leaf_uuid=leaf,
                                   compression_level=1)
        self.assertEqual(result["files"], 2)
        self.assertEqual(hashlib.md5(server.received).hexdigest(), result["checksum"])
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(server.received))) as tar:
            self.assertEqual(tar.getnames(), ["0.vhd", "1.vhd"])
        self.assertEqual(len(os.listdir(self.sr_dir)), 2)  # staging gone


if __name__ == "__main__":
    unittest.main()
