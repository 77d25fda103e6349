"""xhost's own data-plane helpers (xhost.xapi.datapath) against the simulator."""
from __future__ import annotations

import io
import os

import pytest

from xhost import exception
from xhost.dom0 import xhost_vhd
from xhost.testing.simfixtures import SIM_PASSWORD, SIM_USER
from xhost.testing.simstorage import MiB, vdi_record
from xhost.xapi import datapath
from xhost.xapi.client import XapiClient


@pytest.fixture
def client(simulator):
    c = XapiClient(simulator.url, SIM_USER, SIM_PASSWORD, call_timeout=60)
    yield c
    c.close()


@pytest.fixture
def sr(client):
    return client.call("SR.get_by_name_label", "Local storage")[0]


def new_vdi(client, sr, size=32 * MiB, **extra):
    return client.call("VDI.create", vdi_record(sr, size, **extra))


def read_all(client, vdi, fmt="raw", base=None) -> bytes:
    with datapath.export_raw_vdi(client, vdi, fmt=fmt, base_ref=base) as stream:
        return b"".join(stream)


def test_raw_round_trip_with_progress(client, sr):
    vdi = new_vdi(client, sr)
    data = os.urandom(3 * MiB) + bytes(9 * MiB) + os.urandom(MiB)
    seen = []
    datapath.import_raw_vdi(client, vdi, io.BytesIO(data), len(data), progress=seen.append)
    assert sum(seen) == len(data)
    got = []
    with datapath.export_raw_vdi(client, vdi, progress=got.append) as stream:
        out = b"".join(stream)
        assert stream.size is None  # xapi sends no Content-Length
    assert sum(got) == 32 * MiB
    assert out[:len(data)] == data and out[len(data):] == bytes(32 * MiB - len(data))
    # The zero range was not allocated in the VHD.
    assert int(client.call("VDI.get_physical_utilisation", vdi)) < 7 * MiB  # 3 blocks
    assert client.call("task.get_all") == []  # every task was destroyed


def test_vhd_round_trip_and_incremental(client, sr):
    vdi = new_vdi(client, sr)
    first = os.urandom(4 * MiB)
    datapath.import_raw_vdi(client, vdi, iter([first[:MiB], first[MiB:]]), len(first))
    snap = client.call("VDI.snapshot", vdi, {})
    datapath.import_raw_vdi(client, vdi, io.BytesIO(b"second" * 1000), 6000)
    full = read_all(client, vdi, "vhd")
    delta = read_all(client, vdi, "vhd", base=snap)
    assert len(delta) < len(full) and len(delta) < 3 * MiB
    # Restore: the snapshot's full VHD, then the delta on top of it.
    restored = new_vdi(client, sr)
    datapath.import_raw_vdi(client, restored, io.BytesIO(read_all(client, snap, "vhd")),
                            len(read_all(client, snap, "vhd")), fmt="vhd")
    datapath.import_raw_vdi(client, restored, io.BytesIO(delta), len(delta), fmt="vhd")
    assert read_all(client, restored) == read_all(client, vdi)


def test_failures_surface_as_xapi_failures(client, sr, simulator):
    vdi = new_vdi(client, sr, 4 * MiB)
    with pytest.raises(exception.XapiFailure) as info:
        datapath.import_raw_vdi(client, vdi, io.BytesIO(bytes(8 * MiB)), 8 * MiB)
    assert info.value.details == ["VDI_TOO_SMALL", vdi, str(8 * MiB)]
    client.call("VDI.set_read_only", vdi, True)
    with pytest.raises(exception.XapiFailure) as info:
        datapath.import_raw_vdi(client, vdi, io.BytesIO(b"x" * 512), 512)
    assert info.value.details == ["VDI_READONLY", vdi]
    # A VDI attached to a running VM: the host closes the connection while a
    # large body is still being sent; the task tells what happened.
    vm = [v for v, r in client.call("VM.get_all_records").items()
          if r["other_config"].get("xhost_compute_vm") == "true"][0]
    busy = new_vdi(client, sr, 256 * MiB)
    vbd = client.call("VBD.create", {
        "VM": vm, "VDI": busy, "userdevice": "autodetect", "bootable": False, "mode": "RW",
        "type": "Disk", "empty": False, "other_config": {}, "qos_algorithm_type": "",
        "qos_algorithm_params": {}})
    client.call("VBD.plug", vbd)
    with pytest.raises(exception.XapiFailure) as info:
        datapath.import_raw_vdi(client, busy, io.BytesIO(bytes(256 * MiB)), 256 * MiB)
    assert info.value.details == ["VDI_IN_USE", busy, "plug"]
    client.call("VBD.unplug", vbd)
    with pytest.raises(exception.XapiFailure) as info:
        read_all(client, "OpaqueRef:no-such-vdi")
    assert info.value.details[0] == "UUID_INVALID"
    assert client.call("task.get_all") == []


def test_unauthorised_does_not_hang(client, sr, simulator):
    vdi = new_vdi(client, sr, 4 * MiB)
    simulator.sessions.expire()  # the session the helper passes is stale
    original = client.session_ref

    def stale_ref():
        return "OpaqueRef:expired-session"
    client.session_ref = stale_ref
    try:
        with pytest.raises(exception.XapiError) as info:
            datapath.import_raw_vdi(client, vdi, io.BytesIO(b"x" * 512), 512, timeout=5)
        assert "HTTP 401" in str(info.value)
        with pytest.raises(exception.XapiError) as info:
            read_all(client, vdi)
        assert "HTTP 401" in str(info.value)
    finally:
        client.session_ref = original


def test_closing_an_export_early_cancels_it(client, sr):
    vdi = new_vdi(client, sr, 256 * MiB)
    stream = datapath.export_raw_vdi(client, vdi)
    first = next(iter(stream))
    assert len(first) == MiB
    stream.close()
    assert client.call("task.get_all") == []


def test_qemu_made_vhd_imports(client, sr, tmp_path):
    from xhost.testing.diskoracles import qemu_make_vhd, require_oracles

    require_oracles()
    raw = tmp_path / "disk.raw"
    payload = os.urandom(5 * MiB + 4096)
    raw.write_bytes(payload + bytes(16 * MiB - len(payload)))
    for subformat in ("dynamic", "fixed"):
        image = tmp_path / f"{subformat}.vhd"
        qemu_make_vhd(raw, image, subformat)
        vdi = new_vdi(client, sr, 16 * MiB)
        with open(image, "rb") as handle:
            datapath.import_raw_vdi(client, vdi, handle, image.stat().st_size, fmt="vhd")
        assert read_all(client, vdi) == raw.read_bytes(), subformat
    assert xhost_vhd.SECTOR_SIZE == 512


def test_a_host_without_the_sr_redirects_to_one_with_it(client, simulator):
    """xapi's 302 to the host that has the SR plugged; the helper follows it."""
    from xhost.sim import dataplane
    from xhost.sim.http_server import HttpServer
    from xhost.sim.simulator import SimHost

    spec = simulator.schema.classes["host"]
    other = simulator.db.add("host", spec.new_record({
        "name_label": "second host", "address": "127.0.0.1", "enabled": True}))
    server = HttpServer("127.0.0.1", 0)
    second = SimHost(simulator, other, server, "http", "127.0.0.1")
    dataplane.install(second)
    server.start()
    simulator.hosts.append(second)  # stopped with the simulator
    sr = client.call("SR.create", other, {"device": "/dev/sdz"}, "0", "on the second host", "",
                     "ext", "user", False, {})
    vdi = new_vdi(client, sr, 8 * MiB)
    from xhost.testing.simstorage import http

    reply = http(simulator.url, "GET", "/export_raw_vdi",
                 {"session_id": client.session_ref(), "vdi": vdi})
    assert reply.status == 302
    assert reply.headers["location"].startswith(f"{second.url}/export_raw_vdi?")
    payload = os.urandom(3 * MiB)
    datapath.import_raw_vdi(client, vdi, io.BytesIO(payload), len(payload))
    assert read_all(client, vdi)[:len(payload)] == payload
