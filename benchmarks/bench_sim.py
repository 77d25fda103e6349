#!/usr/bin/env python3
"""Benchmark of the XAPI simulator with the real PyPI ``XenAPI`` client.

Run::

    python benchmarks/bench_sim.py [--calls 5000] [--vms 1000] [--clients 1,2,4]

The simulator runs in its own process (``xhost sim serve``, speed 0), like a
real host, so client and server do not share a GIL.  Figures printed:

* cheap calls/s through one keep-alive ``XenAPI.Session`` (``VM.get_name_label``,
  ``host.get_API_version_major``, ``pool.get_all`` in turn), next to the same
  client against a server that does no work at all (what the machine's client
  and TCP stack allow: the ceiling for any server);
* the same with N client processes in parallel (aggregate calls/s);
* ``VM.get_all_records`` with ``--vms`` VMs: wall time of the whole call as
  the client sees it (request, server encoding, transfer, client parsing),
  over XML-RPC and JSON-RPC, plus the response size.

Targets: >= 3000 cheap calls/s with one client on a 2-core machine;
get_all_records of 1000 VMs comparable to a real host (~0.3-0.5 s for 500).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import XenAPI

PASSWORD = "bench"


def start_server(state_dir: str) -> tuple[subprocess.Popen, str]:
    env = dict(os.environ, XHOST_SIM_PASSWORD=PASSWORD)
    proc = subprocess.Popen(
        [sys.executable, "-P", "-m", "xhost.cli.main", "sim", "serve", "--state-dir", state_dir,
         "--auth-delay", "0", "--flush-interval", "5"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    url = proc.stdout.readline().strip()
    if not url:
        raise SystemExit("the simulator did not start")
    return proc, url


_CANNED = (b'<?xml version="1.0"?><methodResponse><params><param><value><struct><member>'
           b"<name>Status</name><value>Success</value></member><member><name>Value</name>"
           b"<value>OpaqueRef:0</value></member></struct></value></param></params>"
           b"</methodResponse>")


def _floor_server(port_queue: multiprocessing.Queue) -> None:
    """A server that answers every request with a canned XAPI success and no
    work at all: the best rate this machine's client and TCP stack allow."""
    import socket
    import threading

    reply = (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Type: text/xml\r\n\r\n"
             % len(_CANNED)) + _CANNED

    def serve(conn: socket.socket) -> None:
        rfile = conn.makefile("rb")
        while rfile.readline():
            length = 0
            while True:
                header = rfile.readline()
                if header in (b"\r\n", b""):
                    break
                if header.lower().startswith(b"content-length"):
                    length = int(header.split(b":")[1])
            rfile.read(length)
            conn.sendall(reply)

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port_queue.put(sock.getsockname()[1])
    while True:
        conn, _ = sock.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def floor_rate(calls: int) -> float:
    queue: multiprocessing.Queue = multiprocessing.Queue()
    proc = multiprocessing.Process(target=_floor_server, args=(queue,), daemon=True)
    proc.start()
    try:
        session = XenAPI.Session(f"http://127.0.0.1:{queue.get()}")
        session.xenapi.login_with_password("root", PASSWORD)
        for _ in range(200):
            session.xenapi.VM.get_name_label("OpaqueRef:0")
        start = time.perf_counter()
        for _ in range(calls):
            session.xenapi.VM.get_name_label("OpaqueRef:0")
        return calls / (time.perf_counter() - start)
    finally:
        proc.terminate()


def login(url: str) -> XenAPI.Session:
    session = XenAPI.Session(url)
    session.xenapi.login_with_password("root", PASSWORD, "1.0", "bench")
    return session


def cheap_loop(url: str, calls: int) -> float:
    """Calls/s of cheap getters through one keep-alive session."""
    session = login(url)
    x = session.xenapi
    vm = x.VM.get_all()[0]
    host = x.host.get_all()[0]
    for _ in range(200):  # warm up
        x.VM.get_name_label(vm)
    start = time.perf_counter()
    for i in range(calls):
        k = i % 3
        if k == 0:
            x.VM.get_name_label(vm)
        elif k == 1:
            x.host.get_API_version_major(host)
        else:
            x.pool.get_all()
    elapsed = time.perf_counter() - start
    session.xenapi.session.logout()
    return calls / elapsed


def _worker(args: tuple[str, int, multiprocessing.Queue]) -> None:
    url, calls, queue = args
    queue.put(cheap_loop(url, calls))


def parallel(url: str, calls: int, clients: int) -> float:
    queue: multiprocessing.Queue = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=_worker, args=((url, calls, queue),))
             for _ in range(clients)]
    start = time.perf_counter()
    for p in procs:
        p.start()
    rates = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    elapsed = time.perf_counter() - start
    del rates
    return clients * calls / elapsed


def make_vms(url: str, count: int) -> None:
    x = login(url).xenapi
    tpl = x.VM.get_by_name_label("Other install media")[0]
    have = len(x.VM.get_all())
    for i in range(max(0, count - have)):
        vm = x.VM.clone(tpl, f"bench-vm-{i}")
        x.VM.set_is_a_template(vm, False)


def raw_xml_get_all_records(url: str) -> tuple[float, int]:
    """Request to last byte, no client-side parsing: the server's share."""
    import http.client
    import urllib.parse
    import xmlrpc.client

    session = login(url)._session
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port)
    body = xmlrpc.client.dumps((session,), "VM.get_all_records").encode()
    start = time.perf_counter()
    conn.request("POST", "/", body=body, headers={"Content-Type": "text/xml"})
    data = conn.getresponse().read()
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed, len(data)


def jsonrpc_get_all_records(url: str) -> tuple[float, int]:
    def call(method: str, params: list) -> bytes:
        body = json.dumps({"jsonrpc": "2.0", "method": method, "params": params,
                           "id": 1}).encode()
        req = urllib.request.Request(url + "/jsonrpc", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req) as resp:
            return resp.read()
    session = json.loads(call("session.login_with_password", ["root", PASSWORD]))["result"]
    start = time.perf_counter()
    raw = call("VM.get_all_records", [session])
    records = json.loads(raw)["result"]
    return time.perf_counter() - start, len(records)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000, help="cheap calls per client")
    parser.add_argument("--vms", type=int, default=1000, help="VMs for get_all_records")
    parser.add_argument("--clients", default="1,2,4", help="parallel client counts")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as state:
        proc, url = start_server(state)
        try:
            print(f"simulator at {url} (own process); client: XenAPI "
                  f"{getattr(XenAPI, '__version__', 'PyPI')}, Python {sys.version.split()[0]}, "
                  f"{os.cpu_count()} CPUs")
            rates, floors = [], []
            for _ in range(3):
                rates.append(cheap_loop(url, args.calls))
                floors.append(floor_rate(args.calls))
            print(f"cheap calls, 1 client, keep-alive: {statistics.median(rates):8.0f} calls/s "
                  f"(runs: {', '.join(f'{r:.0f}' for r in rates)})")
            print(f"  same client against a canned-reply server (machine floor): "
                  f"{statistics.median(floors):8.0f} calls/s")
            for n in [int(c) for c in args.clients.split(",") if int(c) > 1]:
                rate = parallel(url, args.calls, n)
                print(f"cheap calls, {n} clients in parallel: {rate:8.0f} calls/s aggregate")
            t0 = time.perf_counter()
            make_vms(url, args.vms)
            print(f"created VMs up to {args.vms} through the API in "
                  f"{time.perf_counter() - t0:.1f} s")
            x = login(url).xenapi
            times = []
            for _ in range(3):
                start = time.perf_counter()
                records = x.VM.get_all_records()
                times.append(time.perf_counter() - start)
            print(f"VM.get_all_records, {len(records)} VMs, XML-RPC (XenAPI client): "
                  f"{min(times):.3f} s best, {statistics.median(times):.3f} s median")
            raw = [raw_xml_get_all_records(url) for _ in range(3)]
            print(f"  of which server + transfer (no client parsing): "
                  f"{min(t for t, _ in raw):.3f} s for {raw[0][1] / 1e6:.1f} MB of XML")
            jtimes = [jsonrpc_get_all_records(url) for _ in range(3)]
            print(f"VM.get_all_records, {jtimes[0][1]} VMs, JSON-RPC: "
                  f"{min(t for t, _ in jtimes):.3f} s best")
        finally:
            proc.terminate()
            proc.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
