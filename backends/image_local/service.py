"""The ``local`` image service: a directory of images and their metadata.

Each image is ``<id>.json`` (its record, Glance v2 attributes plus free-form
properties) and, once uploaded, ``<id>.data``. Records are replaced
atomically, data is written to a temporary file and renamed into place only
once it is complete and hashed, and a lock file serialises writers, so
concurrent xhost processes and a crash mid-upload never leave a half image
marked ``active``.
"""
from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

from oslo_config import cfg

from xhost import hookimpl
from xhost.backends.image_local.transfer import TOKEN_HEADER, TransferServer
from xhost.images import (
    ATTRIBUTES,
    HASH_ALGO,
    Hasher,
    ImageError,
    ImageNotFound,
    verified,
)
from xhost.objects import ImageLocation, ImageMeta

CHUNK = 1024 * 1024

GROUP = cfg.OptGroup("image_local", title="'local' image service options",
                     help="Options of the 'local' image service (images in a directory).")


def _default_dir() -> str:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "xhost", "images")


OPTS = [
    cfg.StrOpt("path", default=_default_dir(), sample_default="$XDG_DATA_HOME/xhost/images",
               help="Directory holding the images (created if missing)."),
    cfg.HostAddressOpt("transfer_bind", default="127.0.0.1",
                       help="Address the short-lived transfer server listens on while dom0 "
                            "fetches or stores an image over HTTP (image handler "
                            "direct_vhd). On a real host, an address of the machine xhost "
                            "runs on that dom0 can reach (e.g. 0.0.0.0, or the compute VM's "
                            "address on the host-internal management network); the embedded "
                            "simulator's dom0 reaches 127.0.0.1."),
    cfg.HostAddressOpt("transfer_address",
                       help="Address put in the transfer URLs given to dom0. Unset: "
                            "transfer_bind (which then must not be 0.0.0.0)."),
    cfg.PortOpt("transfer_port", default=0,
                help="Port of the transfer server; 0 picks a free one each time it starts."),
    cfg.IntOpt("transfer_ttl", default=600, min=1,
               help="Seconds a transfer URL (and its one-request token) stays valid unused."),
    cfg.IntOpt("transfer_idle_seconds", default=30, min=0,
               help="Seconds the transfer server stays up with nothing to serve before it "
                    "stops."),
    cfg.StrOpt("transfer_cert_file",
               help="PEM certificate (chain) for HTTPS transfers; its CA is given to dom0 to "
                    "verify it. Unset: plain HTTP (the token still authenticates each "
                    "transfer)."),
    cfg.StrOpt("transfer_key_file", help="PEM private key of transfer_cert_file."),
]


def list_opts():
    return [(GROUP, OPTS)]


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _to_meta(record: dict[str, Any]) -> ImageMeta:
    fields = {k: record.get(k) for k in ATTRIBUTES}
    properties = {k: v for k, v in record.items() if k not in ATTRIBUTES}
    return ImageMeta(**fields, properties=properties)


class LocalImageService:
    """Images in a local directory, with Glance's attributes and checksums."""

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        conf.register_group(GROUP)
        conf.register_opts(OPTS, group=GROUP)
        self.path = os.path.abspath(os.path.expanduser(conf.image_local.path))
        self.options = conf.image_local
        self._transfers = None

    # -- storage -----------------------------------------------------------

    def _ensure_dir(self) -> None:
        os.makedirs(self.path, mode=0o750, exist_ok=True)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self._ensure_dir()
        with open(os.path.join(self.path, ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _record_path(self, image_id: str) -> str:
        if not image_id or "/" in image_id or image_id.startswith("."):
            raise ImageNotFound(image=image_id, hint="")
        return os.path.join(self.path, f"{image_id}.json")

    def _data_path(self, image_id: str) -> str:
        return os.path.join(self.path, f"{image_id}.data")

    def _read(self, image_id: str) -> dict[str, Any]:
        try:
            with open(self._record_path(image_id), encoding="utf-8") as f:
                return json.load(f)
        except FileNotFoundError:
            raise ImageNotFound(image=image_id, hint="") from None

    def _write(self, record: dict[str, Any]) -> None:
        self._ensure_dir()
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=".rec-")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(record, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._record_path(record["id"]))

    # -- hooks ---------------------------------------------------------------

    @hookimpl
    def xhost_image_service_create(self, name, disk_format, container_format, properties):
        record = {**(properties or {}), "id": str(uuid.uuid4()), "name": name, "status": "queued",
                  "disk_format": disk_format, "container_format": container_format,
                  "size": None, "virtual_size": None, "checksum": None,
                  "os_hash_algo": None, "os_hash_value": None,
                  "created_at": _now(), "updated_at": _now()}
        with self._locked():
            self._write(record)
        return _to_meta(record)

    @hookimpl
    def xhost_image_service_show(self, image_id):
        return _to_meta(self._read(image_id))

    @hookimpl
    def xhost_image_service_list(self, filters):
        images = []
        if not os.path.isdir(self.path):
            return images
        for entry in sorted(os.listdir(self.path)):
            if entry.endswith(".json") and not entry.startswith("."):
                with contextlib.suppress(ImageNotFound, ValueError):
                    image = _to_meta(self._read(entry[:-5]))
                    if all(str(getattr(image, k, image.properties.get(k))) == str(v)
                           for k, v in (filters or {}).items()):
                        images.append(image)
        return sorted(images, key=lambda i: (i.created_at or "", i.id))

    @hookimpl
    def xhost_image_service_update(self, image_id, changes, remove):
        readonly = {"id", "status", "size", "checksum", "os_hash_algo", "os_hash_value",
                    "created_at", "updated_at", "virtual_size"}
        bad = sorted(set(changes) & readonly)
        if bad:
            raise ImageError(reason=f"cannot change {', '.join(bad)} of image {image_id}")
        with self._locked():
            record = self._read(image_id)
            record.update(changes)
            for key in remove or []:
                if key in ATTRIBUTES:
                    raise ImageError(reason=f"cannot remove attribute {key!r}")
                record.pop(key, None)
            record["updated_at"] = _now()
            self._write(record)
        return _to_meta(record)

    @hookimpl
    def xhost_image_service_delete(self, image_id):
        with self._locked():
            self._read(image_id)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._data_path(image_id))
            os.unlink(self._record_path(image_id))
        return True

    @hookimpl
    def xhost_image_service_upload(self, image_id, data, size):
        with self._locked():
            record = self._read(image_id)
            if record["status"] not in ("queued",):
                raise ImageError(reason=f"image {image_id} is {record['status']}; only a queued "
                                        f"image accepts data")
            record["status"] = "saving"
            self._write(record)
        hasher = Hasher(HASH_ALGO, parallel=True)
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=f".{image_id}-")
        try:
            try:
                with os.fdopen(fd, "wb") as out:
                    for chunk in _chunks(data):
                        hasher.update(chunk)
                        out.write(chunk)
                    out.flush()
                    os.fsync(out.fileno())
            finally:
                hasher.close()
            if size is not None and hasher.size != size:
                raise ImageError(reason=f"upload of image {image_id} got {hasher.size} bytes, "
                                        f"{size} were announced")
            with self._locked():
                os.replace(tmp, self._data_path(image_id))
                record = self._read(image_id)
                record.update(status="active", size=hasher.size, checksum=hasher.checksum,
                              os_hash_algo=hasher.algo, os_hash_value=hasher.os_hash_value,
                              updated_at=_now())
                self._write(record)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            with self._locked(), contextlib.suppress(ImageNotFound):
                record = self._read(image_id)
                if record["status"] == "saving":
                    record["status"] = "queued"
                    self._write(record)
            raise
        return _to_meta(record)

    @hookimpl
    def xhost_image_service_location(self, image_id, for_upload):
        record = self._read(image_id)
        if for_upload and record["status"] != "queued":
            raise ImageError(reason=f"image {image_id} is {record['status']}; only a queued "
                                    f"image accepts data")
        if not for_upload and record["status"] != "active":
            raise ImageError(reason=f"image {image_id} is {record['status']}, it has no data "
                                    f"yet")
        server = self._transfer_server()
        url, token = server.grant(image_id, for_upload)
        cert = self.options.transfer_cert_file
        return ImageLocation(url=url, headers={TOKEN_HEADER: token}, verify_tls=True,
                             ca_file=cert or None, revoke=lambda: server.revoke(token))

    def _transfer_server(self) -> TransferServer:
        if self._transfers is None:
            o = self.options
            advertise = o.transfer_address or o.transfer_bind
            if advertise in ("0.0.0.0", "::"):
                raise ImageError(reason="[image_local] transfer_bind is a wildcard address; set "
                                        "transfer_address to the address dom0 should use")
            self._transfers = TransferServer(
                o.transfer_bind, o.transfer_port, advertise, self._open_data,
                lambda image_id, body, size: self.xhost_image_service_upload(image_id, body,
                                                                             size),
                ttl=o.transfer_ttl, idle_seconds=o.transfer_idle_seconds,
                cert_file=o.transfer_cert_file, key_file=o.transfer_key_file)
        return self._transfers

    def _open_data(self, image_id: str) -> tuple[int, BinaryIO]:
        image = _to_meta(self._read(image_id))
        if image.status != "active":
            raise ImageError(reason=f"image {image_id} is {image.status}")
        data = open(self._data_path(image_id), "rb")  # the transfer server closes it
        return os.fstat(data.fileno()).st_size, data

    @hookimpl
    def xhost_image_service_download(self, image_id):
        image = _to_meta(self._read(image_id))
        if image.status != "active":
            raise ImageError(reason=f"image {image_id} is {image.status}, it has no data yet")
        return verified(_read_file(self._data_path(image_id)), image)


def _chunks(data: Iterable[bytes] | BinaryIO) -> Iterator[bytes]:
    if hasattr(data, "read"):
        while True:
            chunk = data.read(CHUNK)  # type: ignore[union-attr]
            if not chunk:
                return
            yield chunk
    else:
        for chunk in data:  # type: ignore[union-attr]
            if chunk:
                yield bytes(chunk)


def _read_file(path: str) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while True:
            chunk = f.read(CHUNK)
            if not chunk:
                return
            yield chunk
