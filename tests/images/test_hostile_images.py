"""Hostile and broken images are refused by every handler with a clear error:
nothing written outside the staging directory, no staging directory and no
VDI left behind."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from hostile import CASES, cases
from imagehost import HANDLERS, MiB, instance, pattern

from xhost import exception
from xhost.images import ImageError
from xhost.xapi.dom0 import Dom0Error


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    return cases(tmp_path_factory.mktemp("hostile"))


def tree(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


@pytest.mark.parametrize("handler", HANDLERS)
def test_hostile_archives_are_refused(hosts, handler, archives, simulator):
    host = hosts(handler)
    sr_dir = host.sr_dir()
    dom0_root = Path(simulator.state_dir) / "dom0"
    for name in CASES:
        data, expected = archives[name]
        image = host.upload(name, data, "vhd", "ovf")
        vdis, files = host.vdi_uuids(), tree(dom0_root)
        with pytest.raises((ImageError, Dom0Error, exception.XapiFailure)) as err:
            host.download(image)
        message = str(err.value)
        assert re.search(expected, message, re.I), (name, message)
        assert host.vdi_uuids() == vdis, name
        assert tree(dom0_root) == files, name
        assert not host.staging_dirs(), name
        assert not (sr_dir / "0.vhd").exists() and not os.path.exists("/tmp/0.vhd")


@pytest.mark.parametrize("handler", HANDLERS)
def test_virtual_size_limit(hosts, handler, tmp_path):
    from xhost.dom0 import xhost_vhd

    host = hosts(handler, extra=f"[image_{handler}]\nmax_virtual_size_gb = 1\n")
    big = tmp_path / "big.vhd"
    xhost_vhd.create_dynamic(str(big), 2 * 1024 ** 3)  # sparse: a few KiB
    image = host.upload("big", big, "vhd", "bare")
    before = host.vdi_uuids()
    with pytest.raises((ImageError, exception.XapiFailure), match="larger than"):
        host.download(image)
    assert host.vdi_uuids() == before and not host.staging_dirs()
    # the flavor's root disk limits it too
    relaxed = hosts(handler)
    with pytest.raises((ImageError, exception.XapiFailure), match="larger than"):
        relaxed.download(image, instance=instance(root_gb=1))


# The strongest hash of the record is verified: os_hash_value when it has one,
# the md5 checksum only when it has not (as glanceclient does).
TAMPERED = {
    "os_hash_value": ({"os_hash_value": "0" * 128}, "(?i)os_hash_value"),
    "md5_fallback": ({"os_hash_algo": None, "os_hash_value": None, "checksum": "0" * 32},
                     "(?i)checksum|md5"),
}


@pytest.mark.parametrize("handler", HANDLERS)
@pytest.mark.parametrize("tampered", sorted(TAMPERED))
def test_checksum_mismatch(hosts, handler, tampered, tmp_path):
    from imagehost import tarball, vhd_chain

    host = hosts(handler)
    files, _ = vhd_chain(tmp_path / "c", 4 * MiB, {0: pattern(MiB)}, {0: pattern(512, 3)})
    image = host.upload("img", tarball(tmp_path / "c.tgz", [("0.vhd", files[0]),
                                                           ("1.vhd", files[1])]), "vhd", "ovf")
    ctx = host.context()
    # the stored record's hash no longer matches the data
    changes, words = TAMPERED[tampered]
    store = host.plugins.plugin("image_service")
    record = store._read(image.id)
    record.update(changes)
    store._write(record)
    before = host.vdi_uuids()
    with pytest.raises((ImageError, exception.XapiFailure), match=words):
        host.download(ctx.plugins.image_service_show(ctx, image.id))
    assert host.vdi_uuids() == before and not host.staging_dirs()
