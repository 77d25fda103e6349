#!/usr/bin/env python3
"""Benchmark of the simulator's HTTP data plane (/import_raw_vdi, /export_raw_vdi).

Run::

    python benchmarks/bench_dataplane.py [--size-mib 512] [--rounds 2]

The simulator runs in its own process (``xhost sim serve``), as a real host
would; the client is plain ``http.client`` sending from / reading into
memory so the client costs little.  Figures printed, best of ``--rounds``:

* import throughput (MB/s) of a raw body of ``--size-mib`` MiB of
  incompressible data into a fresh VDI on the ext SR (VHD file), and of the
  same disk as a VHD stream into another fresh VDI;
* export throughput of that disk as raw and as one dynamic VHD;
* export of an empty (sparse) disk of the same size as raw (holes are
  sent without touching the disk);
* the simulator's peak RSS (VmHWM) before and after, showing that the
  transfers run in bounded memory.

Reference: a real host moves 100-200 MB/s through these handlers.
"""
from __future__ import annotations

import argparse
import http.client
import os
import subprocess
import sys
import tempfile
import time
import urllib.parse

import XenAPI

PASSWORD = "bench"
MiB = 1 << 20


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


def peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def new_vdi(x, sr: str, size: int, name: str) -> str:
    return x.VDI.create({"name_label": name, "name_description": "", "SR": sr,
                         "virtual_size": str(size), "type": "user", "sharable": False,
                         "read_only": False, "other_config": {}})


def put(url: str, session: str, vdi: str, chunks: list[bytes], fmt: str) -> float:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=600)
    started = time.perf_counter()
    conn.putrequest("PUT", "/import_raw_vdi?" + urllib.parse.urlencode(
        {"session_id": session, "vdi": vdi, "format": fmt}))
    conn.putheader("Content-Length", str(sum(len(c) for c in chunks)))
    conn.endheaders()
    for chunk in chunks:
        conn.send(chunk)
    conn.getresponse().read()
    conn.close()
    return time.perf_counter() - started


def get(url: str, session: str, vdi: str, fmt: str, keep: bool = False
        ) -> tuple[float, int, list[bytes]]:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=600)
    started = time.perf_counter()
    conn.request("GET", "/export_raw_vdi?" + urllib.parse.urlencode(
        {"session_id": session, "vdi": vdi, "format": fmt}))
    resp = conn.getresponse()
    total, kept = 0, []
    while True:
        chunk = resp.read(4 * MiB)
        if not chunk:
            break
        total += len(chunk)
        if keep:
            kept.append(chunk)
    conn.close()
    return time.perf_counter() - started, total, kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    size = args.size_mib * MiB
    seed = os.urandom(MiB)
    # Incompressible and never all-zero: every block is stored and sent.
    chunks = [bytes([i & 0xFF, (i >> 8) & 0xFF]) + seed[2:] for i in range(args.size_mib)]
    with tempfile.TemporaryDirectory(prefix="bench-dataplane-") as state:
        proc, url = start_server(state)
        try:
            session = XenAPI.Session(url)
            session.xenapi.login_with_password("root", PASSWORD, "1.0", "bench")
            x = session.xenapi
            ref = session._session
            sr = x.SR.get_by_name_label("Local storage")[0]
            rss_start = peak_rss_mib(proc.pid)
            mb = size / 1e6
            results: dict[str, float] = {}

            def best(name: str, seconds: float) -> None:
                results[name] = max(results.get(name, 0.0), mb / seconds)

            vhd_stream: list[bytes] = []
            for _ in range(args.rounds):
                vdi = new_vdi(x, sr, size, "bench raw")
                # The answer ends when the host closes the connection, after
                # the last byte is written and the task completed.
                best("import raw", put(url, ref, vdi, chunks, "raw"))
                seconds, total, _ = get(url, ref, vdi, "raw")
                assert total == size, total
                best("export raw", seconds)
                seconds, total, vhd_stream = get(url, ref, vdi, "vhd", keep=True)
                best("export vhd", seconds)
                target = new_vdi(x, sr, size, "bench vhd")
                best("import vhd", put(url, ref, target, vhd_stream, "vhd"))
                empty = new_vdi(x, sr, size, "bench empty")
                seconds, total, _ = get(url, ref, empty, "raw")
                best("export raw, sparse disk", seconds)
                for v in (vdi, target, empty):
                    x.VDI.destroy(v)
            rss_end = peak_rss_mib(proc.pid)
            print(f"data plane, {args.size_mib} MiB disk on an ext (VHD file) SR, "
                  f"best of {args.rounds}:")
            for name, rate in results.items():
                print(f"  {name:<26} {rate:8.0f} MB/s")
            print(f"  VHD stream size            {sum(len(c) for c in vhd_stream) / MiB:8.1f} MiB")
            print(f"simulator peak RSS: {rss_start:.0f} MiB at start, {rss_end:.0f} MiB after "
                  f"{2 * args.rounds * args.size_mib} MiB imported and "
                  f"{3 * args.rounds * args.size_mib} MiB exported")
        finally:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
