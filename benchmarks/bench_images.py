#!/usr/bin/env python3
"""Image download throughput and memory of the image handlers.

For each of ``direct_vhd`` and ``vdi_remote_stream`` (and optionally
``vdi_local_dev``) this imports the same image -- a gzipped tarball of a
dynamic VHD, ``--size-gib`` of virtual disk, ``--fill`` of it random data --
from the ``local`` image service into the ``Local storage`` SR of a simulator
running in its own process (``xhost sim serve``), and compares the time with
``curl -o`` of the same bytes from the same server (the local service's
transfer server) to the same filesystem (the SR's directory).

Each import runs in a fresh worker process, which reports its peak resident
memory (``ru_maxrss``) and its resident memory just before the import; for
``direct_vhd`` the dom0 script's peak (``VmHWM`` of the ``xhost_images.py``
process, sampled) is reported too.

Goals (issue 5): throughput >= 0.9x curl's, peak memory <= 64 MiB whatever
the image size. Usage::

    python benchmarks/bench_images.py [--size-gib 2] [--fill 0.5] [--handlers ...]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

MiB = 1024 * 1024
GiB = 1024 * MiB
PASSWORD = "bench-password"


def build_image(work: Path, size: int, fill: float) -> Path:
    """A sparse raw disk with ``fill`` of its 2 MiB blocks random, as a VHD
    in a gzipped tarball (level 1)."""
    from xhost.dom0 import xhost_vhd
    from xhost.imagearchive import tarball

    raw = work / "disk.raw"
    rnd = random.Random(5)
    blocks = size // (2 * MiB)
    with open(raw, "wb") as f:
        f.truncate(size)
        chunk = os.urandom(2 * MiB)
        for index in range(blocks):
            if rnd.random() < fill:
                f.seek(index * 2 * MiB)
                f.write(chunk[index % 7:] + chunk[:index % 7])
    vhd = work / "0.vhd"
    xhost_vhd.raw_to_vhd(str(raw), str(vhd), overwrite=True)
    raw.unlink()
    out = work / "image.tgz"
    with open(vhd, "rb") as source, open(out, "wb") as target:
        length = vhd.stat().st_size
        for piece in tarball([("0.vhd", length, iter(lambda: source.read(MiB), b""))], 1):
            target.write(piece)
    vhd.unlink()
    return out


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Dom0Sampler(threading.Thread):
    """Samples the peak RSS (VmHWM) of running xhost_images.py processes."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak_kib = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        if b"xhost_images.py" not in f.read():
                            continue
                    with open(f"/proc/{pid}/status") as f:
                        for line in f:
                            if line.startswith("VmHWM:"):
                                self.peak_kib = max(self.peak_kib, int(line.split()[1]))
                except OSError:
                    continue
            time.sleep(0.05)


def worker(args: argparse.Namespace) -> None:
    """One import, in a fresh process; prints a JSON line."""
    from oslo_config import cfg

    from xhost import conf as xconf
    from xhost import plugins
    from xhost.compute.connection import HostConnection
    from xhost.context import Context
    from xhost.xapi.client import XapiClient

    conf_file = Path(args.work) / f"{args.worker}.conf"
    conf_file.write_text(f"""
[xenserver]
image_handler = {args.worker}
image_service = local
cache_images = none
[image_local]
path = {args.work}/images
[compute]
state_dir = {args.work}/state
[image_vdi_local_dev]
device_dir = {args.state}/compute/dev
vm_uuid_file = {args.state}/compute/vm-uuid
""")
    conf: cfg.ConfigOpts = xconf.load([str(conf_file)])
    client = XapiClient(args.url, "root", PASSWORD)
    connection = HostConnection(client)
    host = plugins.load(conf, roles=["image_handler", "image_service"])
    ctx = Context(conf=conf, plugins=host, xapi=client, host_ref=connection.host_ref)
    ctx.extra.update(dom0=connection.dom0, connection=connection)
    image = host.image_service_show(ctx, args.image)
    sr = client.call("SR.get_by_name_label", "Local storage")[0]
    sr_dir = Path(args.state) / "dom0" / "var" / "run" / "sr-mount" / client.call(
        "SR.get_uuid", sr)

    curl_seconds = None
    if args.curl:
        location = host.image_service_location(ctx, image.id, False)
        target = sr_dir / "curl-baseline"
        header = [f"-H{k}: {v}" for k, v in location.headers.items()]
        started = time.monotonic()
        subprocess.run(["curl", "-sSf", *header, "-o", str(target), location.url], check=True)
        curl_seconds = time.monotonic() - started
        target.unlink()

    sampler = Dom0Sampler()
    sampler.start()
    before = rss_kib()
    started = time.monotonic()
    downloaded = host.image_download(ctx, image, sr, None)
    seconds = time.monotonic() - started
    sampler.stop.set()
    sampler.join()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    client.call("VDI.destroy", downloaded.root.vdi_ref)
    print(json.dumps({"handler": args.worker, "seconds": seconds, "curl_seconds": curl_seconds,
                      "rss_before_kib": before, "peak_kib": peak,
                      "dom0_peak_kib": sampler.peak_kib}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gib", type=float, default=2.0)
    parser.add_argument("--fill", type=float, default=0.5,
                        help="Fraction of the disk's 2 MiB blocks holding data (default 0.5).")
    parser.add_argument("--handlers", nargs="+", default=["direct_vhd", "vdi_remote_stream"])
    parser.add_argument("--work", help="Scratch directory (default: a temporary one).")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--state", help=argparse.SUPPRESS)
    parser.add_argument("--image", help=argparse.SUPPRESS)
    parser.add_argument("--curl", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return 0
    if not shutil.which("curl"):
        print("curl is needed for the baseline (apt-get install curl)", file=sys.stderr)
        return 1
    work = Path(args.work or tempfile.mkdtemp(prefix="xhost-bench-images-"))
    work.mkdir(parents=True, exist_ok=True)
    state = work / "sim"
    xhost = str(Path(sys.executable).parent / "xhost")
    sim = subprocess.Popen([xhost, "sim", "serve", "--state-dir", str(state), "--password",
                            PASSWORD], stdout=subprocess.PIPE, text=True)
    try:
        url = sim.stdout.readline().strip()
        size = int(args.size_gib * GiB) // (2 * MiB) * 2 * MiB
        started = time.monotonic()
        tgz = build_image(work, size, args.fill)
        print(f"image: {size / GiB:.2f} GiB virtual, {args.fill:.0%} filled, tarball "
              f"{tgz.stat().st_size / MiB:.0f} MiB (built in {time.monotonic() - started:.0f} s)")
        from xhost import conf as xconf
        from xhost import plugins
        from xhost.context import Context

        conf_file = work / "upload.conf"
        conf_file.write_text(f"[image_local]\npath = {work}/images\n")
        conf = xconf.load([str(conf_file)])
        host = plugins.load(conf, roles=["image_service"])
        ctx = Context(conf=conf, plugins=host)
        image = host.image_service_create(ctx, "bench", "vhd", "ovf", {})
        with open(tgz, "rb") as data:
            image = host.image_service_upload(ctx, image.id, data, tgz.stat().st_size)
        tgz.unlink()
        rows = []
        for handler in args.handlers:
            out = subprocess.run(
                [sys.executable, __file__, "--worker", handler, "--url", url, "--state",
                 str(state), "--image", image.id, "--work", str(work), "--size-gib", "0"]
                + ["--curl"], check=True, capture_output=True, text=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        mb = image.size / MiB
        print(f"{'handler':<18} {'seconds':>8} {'MiB/s':>8} {'curl s':>7} {'vs curl':>8} "
              f"{'RSS before':>11} {'peak RSS':>9} {'dom0 peak':>10}")
        for row in rows:
            ratio = row["curl_seconds"] / row["seconds"] if row["curl_seconds"] else float("nan")
            dom0 = f"{row['dom0_peak_kib'] / 1024:.0f} MiB" if row["dom0_peak_kib"] else "-"
            print(f"{row['handler']:<18} {row['seconds']:>8.2f} {mb / row['seconds']:>8.0f} "
                  f"{row['curl_seconds']:>7.2f} {ratio:>7.2f}x "
                  f"{row['rss_before_kib'] / 1024:>7.0f} MiB {row['peak_kib'] / 1024:>5.0f} MiB "
                  f"{dom0:>10}")
        print("goals: >= 0.90x curl; peak RSS <= 64 MiB")
        print("command: python " + " ".join([os.path.relpath(__file__)] + sys.argv[1:]))
    finally:
        sim.terminate()
        sim.wait(60)
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
