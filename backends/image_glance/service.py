"""The ``glance`` image service: OpenStack Glance's image API v2.

Options live in Nova's ``[glance]`` group (``api_servers``, ``num_retries``,
plus keystoneauth's session and auth options), so a ``nova.conf`` works. With
no ``auth_type`` requests are unauthenticated (a Glance without Keystone);
``auth_type = admin_token`` sends a fixed token; any keystoneauth plugin
(``password``, ``v3applicationcredential``...) works, and without
``api_servers`` the image endpoint comes from the service catalog.

Every request is retried ``num_retries`` times across the API servers on
connection failures and on transient HTTP statuses (408, 500, 502, 503, 504,
507 and statuses Glance does not define); other errors fail at once.
Uploads and downloads stream; downloads are verified against the image's
``checksum`` and ``os_hash_value`` as they arrive.
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

from keystoneauth1 import exceptions as ks_exc
from keystoneauth1 import loading
from oslo_config import cfg

from xhost import hookimpl
from xhost.images import (
    ATTRIBUTES,
    ImageDataError,
    ImageError,
    ImageNotFound,
    TransientImageError,
    verified,
)
from xhost.objects import ImageLocation, ImageMeta

LOG = logging.getLogger(__name__)
CHUNK = 1024 * 1024
GROUP = cfg.OptGroup("glance", title="Glance image service options",
                     help="How the 'glance' image service reaches Glance (Nova's [glance] "
                          "group).")
OPTS = [
    cfg.ListOpt("api_servers", default=None,
                help="Glance API endpoints (e.g. http://192.0.2.1:9292), used in turn, "
                     "failing over on errors. Unset: the image endpoint from the Keystone "
                     "service catalog."),
    cfg.IntOpt("num_retries", default=3, min=0,
               help="Retries of a Glance request after a transient failure (connection "
                    "errors, 408, 5xx), moving to the next API server each time."),
    cfg.FloatOpt("retry_interval", default=1.0, min=0,
                 help="Seconds before the first retry; doubled for each further retry."),
]
#: HTTP statuses worth retrying (Nova's list); Glance defines the others.
PERMANENT = {400, 401, 403, 404, 405, 406, 409, 410, 411, 412, 413, 415, 416, 417, 422, 501,
             505, 510}
SYSTEM_KEYS = {"visibility", "protected", "owner", "tags", "self", "file", "schema", "min_disk",
               "min_ram", "os_hidden", "stores", "direct_url", "locations", "member_status"}


def list_opts():
    return [(GROUP, OPTS + loading.get_session_conf_options()
             + loading.get_auth_common_conf_options()
             + loading.get_auth_plugin_conf_options("admin_token"))]


def _to_meta(record: dict[str, Any]) -> ImageMeta:
    fields = {k: record.get(k) for k in ATTRIBUTES}
    properties = {k: v for k, v in record.items() if k not in ATTRIBUTES and k not in SYSTEM_KEYS}
    return ImageMeta(**fields, properties=properties)


class _Replayable:
    """A body that can be sent again on retry (a seekable file)."""

    def __init__(self, data: Iterable[bytes] | BinaryIO) -> None:
        self.data = data
        self.start = data.tell() if hasattr(data, "seek") and hasattr(data, "tell") else None
        self.sent = 0

    def rewind(self) -> bool:
        if self.start is None:
            return self.sent == 0
        self.data.seek(self.start)  # type: ignore[union-attr]
        self.sent = 0
        return True

    def __iter__(self) -> Iterator[bytes]:
        if hasattr(self.data, "read"):
            while True:
                chunk = self.data.read(CHUNK)  # type: ignore[union-attr]
                if not chunk:
                    return
                self.sent += len(chunk)
                yield chunk
        else:
            for chunk in self.data:  # type: ignore[union-attr]
                if chunk:
                    self.sent += len(chunk)
                    yield bytes(chunk)


class GlanceImageService:
    """Images in OpenStack Glance (API v2)."""

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        conf.register_group(GROUP)
        conf.register_opts(OPTS, group=GROUP)
        loading.register_session_conf_options(conf, GROUP.name)
        loading.register_auth_conf_options(conf, GROUP.name)
        self._root = conf
        self.conf = conf.glance
        self._lock = threading.Lock()
        self._session = None
        self._auth = None
        self._rotation: Iterator[str] | None = None

    # -- transport -----------------------------------------------------------

    def _ks(self):
        with self._lock:
            if self._session is None:
                if self.conf.auth_type:
                    self._auth = loading.load_auth_from_conf_options(self._root, GROUP.name)
                self._session = loading.load_session_from_conf_options(self._root, GROUP.name,
                                                                       auth=self._auth)
            return self._session

    def _endpoints(self) -> list[str]:
        if self.conf.api_servers:
            return [s.rstrip("/") for s in self.conf.api_servers]
        session = self._ks()
        if self._auth is None:
            raise ImageError(reason="[glance] api_servers is not set and there is no auth_type "
                                    "to find Glance in a service catalog; set one of them")
        endpoint = session.get_endpoint(service_type="image", interface="public")
        if not endpoint:
            raise ImageError(reason="no image endpoint in the service catalog; set [glance] "
                                    "api_servers")
        return [endpoint.rstrip("/")]

    def _next_endpoint(self) -> str:
        if self._rotation is None:
            servers = self._endpoints()
            with self._lock:
                if self._rotation is None:
                    self._rotation = itertools.cycle(servers)
        with self._lock:
            return next(self._rotation)

    def _request(self, method: str, path: str, *, image_id: str | None = None,
                 json: Any = None, body: _Replayable | None = None,
                 headers: dict[str, str] | None = None, stream: bool = False,
                 ok: tuple[int, ...] = (200,)):
        session = self._ks()
        attempts = self.conf.num_retries + 1
        delay = self.conf.retry_interval
        last: str = ""
        for attempt in range(attempts):
            endpoint = self._next_endpoint()
            url = endpoint + path
            if body is not None and not body.rewind():
                raise ImageError(reason=f"{method} {path}: the upload failed after "
                                        f"{body.sent} bytes ({last}) and its data stream cannot "
                                        f"be replayed")
            try:
                resp = session.request(url, method, json=json,
                                       data=iter(body) if body is not None else None,
                                       headers=headers or {}, stream=stream, raise_exc=False,
                                       authenticated=self._auth is not None,
                                       connect_retries=0)
            except (ks_exc.ConnectFailure, ks_exc.ConnectionError, ks_exc.RetriableConnectionFailure,
                    ks_exc.SSLError) as exc:
                last = f"{type(exc).__name__}: {exc}"
                if isinstance(exc, ks_exc.SSLError):
                    raise ImageError(reason=f"{method} {url}: TLS error: {exc}; check [glance] "
                                            f"cafile / insecure") from exc
            else:
                if resp.status_code in ok:
                    return resp
                text = resp.text[:300] if not stream else ""
                if resp.status_code == 404 and image_id is not None:
                    raise ImageNotFound(image=image_id, hint=" in Glance")
                if resp.status_code in PERMANENT or 300 <= resp.status_code < 400:
                    raise ImageError(reason=f"Glance refused {method} {path}: HTTP "
                                            f"{resp.status_code} {text.strip()}")
                last = f"HTTP {resp.status_code}"
            if attempt + 1 < attempts:
                LOG.warning("Glance %s %s failed (%s); retry %d of %d", method, path, last,
                            attempt + 1, attempts - 1)
                time.sleep(delay)
                delay *= 2
        raise ImageError(reason=f"Glance {method} {path} failed after {attempts} attempt(s): "
                                f"{last}")

    # -- hooks -----------------------------------------------------------------

    @hookimpl
    def xhost_image_service_create(self, name, disk_format, container_format, properties):
        record = {**{k: str(v) for k, v in (properties or {}).items()}, "name": name,
                  "disk_format": disk_format, "container_format": container_format}
        return _to_meta(self._request("POST", "/v2/images", json=record, ok=(201,)).json())

    @hookimpl
    def xhost_image_service_show(self, image_id):
        return _to_meta(self._request("GET", f"/v2/images/{image_id}", image_id=image_id).json())

    @hookimpl
    def xhost_image_service_list(self, filters):
        from urllib.parse import urlencode

        query = {"limit": "200", **{k: str(v) for k, v in (filters or {}).items()}}
        path = "/v2/images?" + urlencode(query)
        images = []
        while path:
            page = self._request("GET", path).json()
            images.extend(_to_meta(r) for r in page.get("images", []))
            path = page.get("next")
        return images

    @hookimpl
    def xhost_image_service_update(self, image_id, changes, remove):
        current = self._request("GET", f"/v2/images/{image_id}", image_id=image_id).json()
        patch = [{"op": "replace" if key in current else "add", "path": f"/{key}",
                  "value": value if key in ATTRIBUTES else str(value)}
                 for key, value in changes.items()]
        patch += [{"op": "remove", "path": f"/{key}"} for key in remove or [] if key in current]
        if not patch:
            return _to_meta(current)
        resp = self._request("PATCH", f"/v2/images/{image_id}", image_id=image_id, json=patch,
                             headers={"Content-Type":
                                      "application/openstack-images-v2.1-json-patch"})
        return _to_meta(resp.json())

    @hookimpl
    def xhost_image_service_delete(self, image_id):
        self._request("DELETE", f"/v2/images/{image_id}", image_id=image_id, ok=(204,))
        return True

    @hookimpl
    def xhost_image_service_upload(self, image_id, data, size):
        body = _Replayable(data)
        self._request("PUT", f"/v2/images/{image_id}/file", image_id=image_id, body=body,
                      headers={"Content-Type": "application/octet-stream"}, ok=(204,))
        image = self.xhost_image_service_show(image_id)
        if size is not None and image.size != size:
            raise ImageDataError(image=image_id, reason=f"Glance stored {image.size} bytes, "
                                                        f"{size} were sent")
        return image

    @hookimpl
    def xhost_image_service_download(self, image_id):
        image = self.xhost_image_service_show(image_id)
        if image.status != "active":
            raise ImageError(reason=f"image {image_id} is {image.status} in Glance; it has no "
                                    f"data to download")
        resp = self._request("GET", f"/v2/images/{image_id}/file", image_id=image_id,
                             stream=True, ok=(200, 204))
        if resp.status_code == 204:
            raise ImageError(reason=f"image {image_id} has no data in Glance")
        header_md5 = resp.headers.get("Content-MD5")
        if header_md5 and image.checksum and header_md5 != image.checksum:
            resp.close()
            raise ImageDataError(image=image_id, reason=f"Glance sent Content-MD5 {header_md5}, "
                                                        f"the image's checksum is {image.checksum}")
        return verified(_stream(resp, image_id), image)

    @hookimpl
    def xhost_image_service_location(self, image_id, for_upload):
        endpoint = self._next_endpoint()
        headers = {}
        session = self._ks()
        if self._auth is not None:
            headers["X-Auth-Token"] = session.get_token()
        verify = session.verify
        return ImageLocation(url=f"{endpoint}/v2/images/{image_id}/file", headers=headers,
                             verify_tls=verify is not False,
                             ca_file=verify if isinstance(verify, str) else None)


def _stream(resp, image_id: str) -> Iterator[bytes]:
    received = 0
    try:
        for chunk in resp.iter_content(CHUNK):
            if chunk:
                received += len(chunk)
                yield chunk
    except Exception as exc:  # requests/urllib3 stream errors
        raise TransientImageError(image=image_id, reason=f"the download from Glance was cut after "
                                                    f"{received} bytes: {exc}") from exc
    finally:
        resp.close()
