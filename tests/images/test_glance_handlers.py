"""Every handler against a real Glance: downloads (dom0 fetching straight from
Glance for direct_vhd), uploads, retries of transient failures, no retry of
permanent ones, a download cut in the middle."""
from __future__ import annotations

import pytest
from imagehost import HANDLERS, FlakyProxy, MiB, pattern, tarball, vhd_chain

from xhost import exception
from xhost.images import ImageError

SIZE = 4 * MiB


@pytest.fixture
def chain_image(tmp_path):
    files, expected = vhd_chain(tmp_path / "c", SIZE, {0: pattern(MiB, 1)},
                                {MiB: pattern(8192, 2)})
    return tarball(tmp_path / "c.tgz", [("0.vhd", files[0]), ("1.vhd", files[1])]), expected


@pytest.fixture
def proxies(glance):
    made = []

    def make(**kw):
        proxy = FlakyProxy(glance.endpoint, **kw)
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        proxy.close()


def delete_later(host, image, request):
    def delete():
        ctx = host.context()
        try:
            ctx.plugins.image_service_delete(ctx, image.id)
        except ImageError:
            pass
    request.addfinalizer(delete)
    return image


@pytest.mark.parametrize("handler", HANDLERS)
def test_download_and_upload_with_glance(hosts, glance, handler, chain_image, request):
    host = hosts(handler, service="glance", glance=glance.endpoint)
    data, expected = chain_image
    image = delete_later(host, host.upload("xhost-chain", data, "vhd", "ovf",
                                           {"os_type": "linux"}), request)
    root = host.download(image).root
    assert host.raw(root.vdi_ref)[:SIZE] == expected
    ctx = host.context()
    target = delete_later(host, ctx.plugins.image_service_create(ctx, "xhost-up", "vhd", "ovf",
                                                                 {}), request)
    uploaded = ctx.plugins.image_upload(ctx, target, [root.vdi_ref], None)
    assert uploaded.status == "active" and uploaded.checksum
    again = host.download(uploaded).root
    assert host.raw(again.vdi_ref)[:SIZE] == expected
    assert not host.staging_dirs()


@pytest.mark.parametrize("handler", ["direct_vhd", "vdi_remote_stream"])
def test_cut_download_is_retried(hosts, glance, proxies, handler, chain_image, request):
    proxy = proxies(cut=1, cut_after=3000)
    host = hosts(handler, service="glance", glance=proxy.url)
    data, expected = chain_image
    image = delete_later(host, host.upload("xhost-cut", data, "vhd", "ovf"), request)
    root = host.download(image).root
    assert host.raw(root.vdi_ref)[:SIZE] == expected
    assert proxy.data_requests == 3  # the upload, the cut download, the retry


@pytest.mark.parametrize("handler", ["direct_vhd", "vdi_remote_stream"])
def test_cut_every_time_gives_up_cleanly(hosts, glance, proxies, handler, chain_image,
                                         request):
    proxy = proxies()
    host = hosts(handler, service="glance", glance=proxy.url)
    image = delete_later(host, host.upload("xhost-cut", chain_image[0], "vhd", "ovf"), request)
    proxy.cut, proxy.cut_after = 100, 3000
    before = host.vdi_uuids()
    with pytest.raises(ImageError, match="cut|gave up"):
        host.download(image)
    assert proxy.data_requests == 1 + 3  # num_retries = 2
    assert host.vdi_uuids() == before and not host.staging_dirs()


def test_transient_status_retried_permanent_not(hosts, glance, proxies, chain_image, request):
    proxy = proxies()
    host = hosts("direct_vhd", service="glance", glance=proxy.url)
    data, expected = chain_image
    image = delete_later(host, host.upload("xhost-flaky", data, "vhd", "ovf"), request)
    proxy.fail, proxy.status, proxy.data_requests = 1, 503, 0
    root = host.download(image).root
    assert host.raw(root.vdi_ref)[:SIZE] == expected and proxy.data_requests == 2
    proxy.fail, proxy.status, proxy.data_requests = 5, 403, 0
    before = host.vdi_uuids()
    with pytest.raises(exception.XapiFailure, match="403"):
        host.download(image)
    assert proxy.data_requests == 1 and host.vdi_uuids() == before
