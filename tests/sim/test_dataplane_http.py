"""/import_raw_vdi and /export_raw_vdi over plain HTTP: parameters, status
codes, headers, credentials, task tracking, encodings, bounded memory."""
from __future__ import annotations

import base64
import os
import struct
import subprocess
import sys

import pytest
import XenAPI

from xhost.dom0 import xhost_vhd
from xhost.sim import Simulator
from xhost.testing.simstorage import MiB, export, http, put, vdi_record, wait_task


@pytest.fixture
def session(xapi_session):
    return xapi_session._session


@pytest.fixture
def disk(x):
    sr = x.SR.get_by_name_label("Local storage")[0]
    return x.VDI.create(vdi_record(sr, 16 * MiB))


def test_credentials(simulator, x, session, disk):
    sessions = len(simulator.db.all("session"))
    reply = http(simulator.url, "GET", "/export_raw_vdi", {"vdi": disk})
    assert reply.status == 401 and reply.headers["www-authenticate"] == 'Basic realm="xapi"'
    reply = http(simulator.url, "GET", "/export_raw_vdi",
                 {"vdi": disk, "session_id": "OpaqueRef:bogus"})
    assert reply.status == 401
    from xhost.testing.simfixtures import SIM_PASSWORD, SIM_USER

    token = base64.b64encode(f"{SIM_USER}:{SIM_PASSWORD}".encode()).decode()
    reply = http(simulator.url, "GET", "/export_raw_vdi", {"vdi": disk, "format": "raw"},
                 headers={"Authorization": f"Basic {token}"})
    assert reply.status == 200 and len(reply.body) == 16 * MiB
    wrong = base64.b64encode(f"{SIM_USER}:nope".encode()).decode()
    assert http(simulator.url, "GET", "/export_raw_vdi", {"vdi": disk},
                headers={"Authorization": f"Basic {wrong}"}).status == 401
    reply = http(simulator.url, "GET", "/export_raw_vdi", {"vdi": disk},
                 headers={"Cookie": f"session_id={session}"})
    assert reply.status == 200
    assert len(simulator.db.all("session")) == sessions  # basic-auth sessions are gone


def test_read_only_role_is_forbidden(tmp_path):
    with Simulator(tmp_path / "s", users={"root": "pw", "viewer": ("pw2", "read-only")}) as sim:
        client = XenAPI.Session(sim.url)
        client.xenapi.login_with_password("viewer", "pw2")
        vdi = client.xenapi.VDI.get_by_name_label("guest-tools.iso")[0]
        reply = http(sim.url, "GET", "/export_raw_vdi",
                     {"session_id": client._session, "vdi": vdi})
        assert reply.status == 403 and b"RBAC_PERMISSION_DENIED" in reply.body


def test_export_headers_and_task(simulator, x, session, disk):
    task = x.task.create("export", "")
    reply = http(simulator.url, "GET", "/export_raw_vdi",
                 {"session_id": session, "vdi": x.VDI.get_uuid(disk), "format": "vhd",
                  "task_id": task})
    assert reply.status == 200
    assert reply.headers["content-type"] == "application/vhd"
    assert reply.headers["task-id"] == task
    assert reply.headers["content-disposition"] == \
        f'attachment; filename="{x.VDI.get_uuid(disk)}.vhd"'
    assert "content-length" not in reply.headers  # the body ends with the connection
    rec = wait_task(x, task)
    assert rec["status"] == "success" and rec["progress"] == 1.0
    raw = http(simulator.url, "GET", "/export_raw_vdi", {"session_id": session, "vdi": disk})
    assert raw.headers["content-type"] == "application/octet-stream"
    assert raw.body == bytes(16 * MiB)


def test_export_errors(simulator, x, session, disk):
    task = x.task.create("t", "")
    reply = http(simulator.url, "GET", "/export_raw_vdi",
                 {"session_id": session, "vdi": disk, "format": "qcow3", "task_id": task})
    assert reply.status == 404
    assert wait_task(x, task)["error_info"] == ["INTERNAL_ERROR", "Unknown format qcow3"]
    task = x.task.create("t", "")
    reply = http(simulator.url, "GET", "/export_raw_vdi",
                 {"session_id": session, "vdi": "no-such-uuid", "task_id": task})
    assert reply.status == 500
    assert wait_task(x, task)["error_info"] == ["UUID_INVALID", "VDI", "no-such-uuid"]
    task = x.task.create("t", "")
    reply = http(simulator.url, "GET", "/export_raw_vdi", {"session_id": session,
                                                           "task_id": task})
    assert reply.status == 500
    assert wait_task(x, task)["error_info"] == ["INTERNAL_ERROR",
                                                "Missing vdi query parameter"]
    assert http(simulator.url, "GET", "/export_raw_vdi",
                {"session_id": session, "vdi": disk, "task_id": "OpaqueRef:nope"}).status == 400


def test_import_errors_before_any_byte(simulator, x, session, disk):
    def attempt(params, body=b"abc", headers=None):
        task = x.task.create("t", "")
        query = {"session_id": session, "task_id": task}
        query.update(params)
        reply = http(simulator.url, "PUT", "/import_raw_vdi", query, body=body, headers=headers)
        return reply.status, wait_task(x, task)["error_info"]

    assert attempt({"vdi": disk, "format": "qcow3"}) == \
        (404, ["INTERNAL_ERROR", "Unknown format qcow3"])
    assert attempt({"vdi": disk, "format": "vhd", "chunked": ""}) == \
        (404, ["INTERNAL_ERROR", "Cannot handle chunked VHD"])
    assert attempt({"vdi": disk}, body=b"3\r\nabc\r\n0\r\n\r\n",
                   headers={"Transfer-Encoding": "chunked"}) == \
        (404, ["INTERNAL_ERROR", "Cannot handle encoding: chunked"])
    sr = x.SR.get_by_name_label("Local storage")[0]
    assert attempt({"sr_id": sr, "format": "vhd"}) == \
        (400, ["INTERNAL_ERROR", "Importing a VHD directly into an SR not yet supported"])
    assert attempt({}) == (400, ["VDI_MISSING"])
    assert attempt({"vdi": "OpaqueRef:gone"}) == (400, ["UUID_INVALID", "VDI",
                                                        "OpaqueRef:gone"])


def test_unplugged_sr(simulator, x, session):
    sr = x.SR.get_by_name_label("NFS virtual disk storage")[0]
    vdi = x.VDI.create(vdi_record(sr, 4 * MiB))
    x.PBD.unplug(x.SR.get_PBDs(sr)[0])
    for method, path, status in (("PUT", "/import_raw_vdi", 400),
                                 ("GET", "/export_raw_vdi", 500)):
        task = x.task.create("t", "")
        reply = http(simulator.url, method, path,
                     {"session_id": session, "vdi": vdi, "task_id": task},
                     body=b"x" * 512 if method == "PUT" else None)
        assert reply.status == status
        assert wait_task(x, task)["error_info"] == ["SR_NO_PBDS", sr]


def test_import_creates_a_vdi_from_raw_with_sr(simulator, x, session):
    sr = x.SR.get_by_name_label("Local storage")[0]
    payload = os.urandom(3 * MiB)
    task = x.task.create("new", "")
    reply = http(simulator.url, "PUT", "/import_raw_vdi",
                 {"session_id": session, "sr_uuid": x.SR.get_uuid(sr), "task_id": task},
                 body=payload)
    assert reply.status == 200 and reply.headers["task-id"] == task
    rec = wait_task(x, task)
    assert rec["status"] == "success"
    vdi = rec["result"].removeprefix("<value>").removesuffix("</value>")
    assert x.VDI.get_name_label(vdi) == "Imported VDI" and x.VDI.get_SR(vdi) == sr
    assert export(simulator.url, session, vdi)[:3 * MiB] == payload


def test_import_refused_for_attached_and_read_only_disks(simulator, x, session, new_vm):
    vm = new_vm("running", nic=False)
    root = x.VBD.get_VDI(x.VM.get_VBDs(vm)[0])
    x.VM.start(vm, False, False)
    task = x.task.create("t", "")
    reply = put(simulator.url, session, root, os.urandom(MiB), task_id=task)
    assert reply.status == 200  # xapi answers before it attaches the disk
    assert wait_task(x, task)["error_info"] == ["VDI_IN_USE", root, "plug"]
    x.VM.hard_shutdown(vm)
    x.VDI.set_read_only(root, True)
    task = x.task.create("t", "")
    put(simulator.url, session, root, b"x" * 4096, task_id=task)
    assert wait_task(x, task)["error_info"] == ["VDI_READONLY", root]


def test_raw_chunked_sparse_encoding(simulator, x, session, disk):
    pieces = [(MiB, b"one" * 100), (9 * MiB + 7, b"two" * 1000), (15 * MiB, b"end")]
    body = b"".join(struct.pack("<QI", off, len(data)) + data for off, data in pieces)
    body += struct.pack("<QI", 0, 0)
    task = x.task.create("chunked", "")
    reply = http(simulator.url, "PUT", "/import_raw_vdi",
                 {"session_id": session, "vdi": disk, "chunked": "true", "task_id": task},
                 body=body)
    assert reply.status == 200 and wait_task(x, task)["status"] == "success"
    data = export(simulator.url, session, disk)
    expected = bytearray(16 * MiB)
    for off, piece in pieces:
        expected[off:off + len(piece)] = piece
    assert data == bytes(expected)


def test_truncated_vhd_and_oversized_disks_fail_the_task(simulator, x, session, disk):
    sr = x.SR.get_by_name_label("Local storage")[0]
    big = x.VDI.create(vdi_record(sr, 32 * MiB))
    stream = export(simulator.url, session, big, fmt="vhd")
    task = x.task.create("t", "")
    put(simulator.url, session, disk, stream, fmt="vhd", task_id=task)
    assert wait_task(x, task)["error_info"] == ["VDI_TOO_SMALL", disk, str(32 * MiB)]
    small = export(simulator.url, session, disk, fmt="vhd")
    task = x.task.create("t", "")
    reply = http(simulator.url, "PUT", "/import_raw_vdi",
                 {"session_id": session, "vdi": disk, "format": "vhd", "task_id": task},
                 body=small[:-512] + b"\0" * 512)
    assert reply.status == 200
    rec = wait_task(x, task)
    assert rec["status"] == "failure" and rec["error_info"][0] == "INTERNAL_ERROR"
    assert "footer" in rec["error_info"][1]


def test_cancelling_the_task_stops_an_export(simulator, x, session):
    import http.client
    import urllib.parse

    sr = x.SR.get_by_name_label("Local storage")[0]
    vdi = x.VDI.create(vdi_record(sr, 512 * MiB))
    task = x.task.create("long", "")
    parts = urllib.parse.urlsplit(simulator.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    conn.request("GET", "/export_raw_vdi?" + urllib.parse.urlencode(
        {"session_id": session, "vdi": vdi, "task_id": task}))
    resp = conn.getresponse()
    resp.read(MiB)
    assert x.task.get_allowed_operations(task) == ["cancel"]
    x.task.cancel(task)
    got = MiB + len(resp.read())
    rec = wait_task(x, task)
    assert rec["status"] == "cancelled" and got < 512 * MiB
    resp.close()
    conn.close()


RSS_SCRIPT = r"""
import os, sys, XenAPI, http.client, urllib.parse
url = sys.stdin.readline().strip()
s = XenAPI.Session(url); s.xenapi.login_with_password("root", "pw")
x = s.xenapi
sr = x.SR.get_by_name_label("Local storage")[0]
size = int(sys.argv[1])
vdi = x.VDI.create({"name_label": "big", "name_description": "", "SR": sr,
                    "virtual_size": str(size), "type": "user", "sharable": False,
                    "read_only": False, "other_config": {}})
p = urllib.parse.urlsplit(url)
block = os.urandom(1 << 20)
conn = http.client.HTTPConnection(p.hostname, p.port)
conn.putrequest("PUT", "/import_raw_vdi?" + urllib.parse.urlencode(
    {"session_id": s._session, "vdi": vdi}))
conn.putheader("Content-Length", str(size)); conn.endheaders()
for i in range(size >> 20):
    conn.send(bytes([i & 255]) + block[1:])
r = conn.getresponse(); r.read(); conn.close()
conn = http.client.HTTPConnection(p.hostname, p.port)
for fmt in ("raw", "vhd"):
    conn = http.client.HTTPConnection(p.hostname, p.port)
    conn.request("GET", "/export_raw_vdi?" + urllib.parse.urlencode(
        {"session_id": s._session, "vdi": vdi, "format": fmt}))
    r = conn.getresponse(); n = 0
    while True:
        c = r.read(1 << 20)
        if not c: break
        if fmt == "raw": assert c[1:] == block[1:len(c)], n
        n += len(c)
    print(fmt, n, flush=True)
    conn.close()
"""


def _vm_hwm_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_transfers_run_in_bounded_memory(tmp_path):
    """A 256 MiB disk through import and both exports: the simulator's peak
    RSS grows by far less than the data (buffers are 2 MiB)."""
    size = 256 * MiB
    server = subprocess.Popen(
        [sys.executable, "-P", "-m", "xhost.cli.main", "sim", "serve", "--state-dir",
         str(tmp_path / "state"), "--password", "pw"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = server.stdout.readline().strip()
        assert url.startswith("http://")
        before = _vm_hwm_kib(server.pid)
        client = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(size)], input=url + "\n",
                                capture_output=True, text=True, timeout=300)
        assert client.returncode == 0, client.stderr
        vhd_size = xhost_vhd.dynamic_stream_size(size, size // (2 * MiB))
        assert client.stdout.split() == ["raw", str(size), "vhd", str(vhd_size)]
        grown = _vm_hwm_kib(server.pid) - before
        assert grown < 32 * 1024, f"peak RSS grew by {grown} KiB for {size >> 20} MiB"
    finally:
        server.terminate()
        server.wait(timeout=30)
