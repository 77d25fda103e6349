#!/usr/bin/env python3
"""Image download throughput and memory of the image handlers, next to curl.

The same VHD image -- ``--size-gib`` of virtual disk, ``--fill`` of its
2 MiB blocks random (incompressible) data, the rest never written -- is
stored twice in the ``local`` image service: as a gzipped tarball
(``vhd``/``ovf``, gzip level ``--level``) and as a bare VHD (``vhd``/
``bare``; curl does not decompress, so this is the like-for-like case).
A simulator runs in its own process (``xhost sim serve``). For every image,
handler and run, a fresh worker process:

1. drops the page cache (``sync; echo 3 > /proc/sys/vm/drop_caches``, as
   root) and reads the image file once, so the server serves it from cache
   and every write lands in memory the kernel has to find afresh -- the
   same state before curl and before the import;
2. times ``curl -o`` of the image's bytes from the local image service's
   transfer server (where ``direct_vhd``'s dom0 fetches them) into the
   SR's directory (where the imports write);
3. does step 1 again, then times the import (``image_download`` into the
   ``Local storage`` SR), then destroys the VDI.  The dom0 scripts' version
   handshake, which a compute service does once per host, is done before
   anything is timed.

Odd runs do the import first. The ratio of each run is curl's time over
the import's, measured back to back; the table gives medians over
``--runs`` (and the range of the ratio). Peak memory: the worker's
``ru_maxrss`` (the xhost process), the dom0 script's ``VmHWM`` (sampled)
and the simulator's ``VmHWM`` during the import (reset through
``/proc/<pid>/clear_refs`` first).

``--limits`` (on by default) also prints what this machine can do at best
on the same bytes: md5 and sha512 (both are verified on every byte),
``gzip -dc`` and zlib inflate, a plain copy to the SR's filesystem.

Goals (issue 5): throughput >= 0.9x curl's, peak memory <= 64 MiB whatever
the image size. Usage::

    python benchmarks/bench_images.py [--size-gib 2] [--fill 0.5] [--runs 3]
        [--containers tgz bare] [--handlers direct_vhd vdi_remote_stream]
        [--work DIR (reuses the images built there)] [--no-limits]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

MiB = 1024 * 1024
GiB = 1024 * MiB
PASSWORD = "bench-password"
BLOCK = 2 * MiB


# -- the images ------------------------------------------------------------------


def build_vhd(path: Path, size: int, fill: float) -> None:
    """A dynamic VHD with ``fill`` of its 2 MiB blocks random data."""
    from xhost.dom0 import xhost_vhd

    xhost_vhd.create_dynamic(str(path), size, overwrite=True)
    rnd = random.Random(5)
    seed = os.urandom(BLOCK + 4096)
    with xhost_vhd.open_vhd(str(path), writable=True) as vhd:
        for index in range(size // BLOCK):
            if rnd.random() < fill:
                shift = rnd.randrange(4096)
                vhd.write(index * BLOCK, seed[shift:shift + BLOCK])


def build_tarball(vhd: Path, out: Path, level: int) -> None:
    """``0.vhd`` in a gzipped tarball, as xhost uploads images."""
    from xhost.imagearchive import tarball

    length = vhd.stat().st_size
    with open(vhd, "rb") as source, open(out, "wb") as target:
        for piece in tarball([("0.vhd", length, iter(lambda: source.read(4 * MiB), b""))],
                             level):
            target.write(piece)


def prepare_images(work: Path, args: argparse.Namespace, host, ctx) -> dict[str, dict]:
    """Build (or reuse) the images and store them in the local service;
    returns ``{container: {"id", "file", "size"}}``."""
    size = int(args.size_gib * GiB) // BLOCK * BLOCK
    key = {"size": size, "fill": args.fill, "level": args.level}
    stamp = work / "images.json"
    if stamp.exists():
        saved = json.loads(stamp.read_text())
        if saved.get("key") == key and all(
                Path(info["file"]).exists() for info in saved["images"].values()):
            print(f"image: reusing the images in {work}")
            return saved["images"]
    started = time.monotonic()
    vhd = work / "0.vhd"
    build_vhd(vhd, size, args.fill)
    tgz = work / "image.tgz"
    build_tarball(vhd, tgz, args.level)
    print(f"image: {size / GiB:.2f} GiB virtual, {args.fill:.0%} filled: VHD "
          f"{vhd.stat().st_size / MiB:.0f} MiB, tarball (gzip -{args.level}) "
          f"{tgz.stat().st_size / MiB:.0f} MiB (built in {time.monotonic() - started:.0f} s)")
    images = {}
    for container, path in (("tgz", tgz), ("bare", vhd)):
        image = host.image_service_create(ctx, f"bench-{container}", "vhd",
                                          "ovf" if container == "tgz" else "bare", {})
        with open(path, "rb") as data:
            image = host.image_service_upload(ctx, image.id, data, path.stat().st_size)
        path.unlink()
        stored = work / "images"
        images[container] = {"id": image.id, "size": image.size,
                             "file": str(stored / f"{image.id}.data")}
    stamp.write_text(json.dumps({"key": key, "images": images}))
    return images


# -- measuring ----------------------------------------------------------------------


def drop_caches(image_file: str, drop: bool) -> None:
    """The page-cache state every timed step starts from (see the docstring)."""
    os.sync()
    if drop:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    with open(image_file, "rb") as f:
        while f.read(8 * MiB):
            pass


def rss_kib(pid: int | str = "self", field: str = "VmRSS:") -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(pid: int) -> list[int]:
    found = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found.extend(int(p) for p in f.read().split())
    except OSError:
        pass
    return found


class Dom0Sampler(threading.Thread):
    """Samples the peak RSS (VmHWM) of the simulator's xhost_images.py processes."""

    def __init__(self, sim_pid: int) -> None:
        super().__init__(daemon=True)
        self.sim_pid = sim_pid
        self.peak_kib = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.1):
            for pid in children(self.sim_pid):
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        if b"xhost_images.py" not in f.read():
                            continue
                except OSError:
                    continue
                self.peak_kib = max(self.peak_kib, rss_kib(pid, "VmHWM:"))


def worker(args: argparse.Namespace) -> None:
    """One curl and one import, in a fresh process; prints a JSON line."""
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
    # A compute service checks its dom0 scripts' version once per host, not
    # once per image: done here, that handshake (a plugin process of its
    # own) is not counted as part of the first import's throughput.
    connection.dom0.check_version(connection.host_ref)
    image = host.image_service_show(ctx, args.image)
    sr = client.call("SR.get_by_name_label", "Local storage")[0]
    sr_dir = Path(args.state) / "dom0" / "var" / "run" / "sr-mount" / client.call(
        "SR.get_uuid", sr)
    drop = not args.no_drop

    def curl() -> float:
        location = host.image_service_location(ctx, image.id, False)
        target = sr_dir / "curl-baseline"
        header = [f"-H{k}: {v}" for k, v in location.headers.items()]
        drop_caches(args.image_file, drop)
        started = time.monotonic()
        subprocess.run(["curl", "-sSf", *header, "-o", str(target), location.url], check=True)
        seconds = time.monotonic() - started
        target.unlink()
        return seconds

    result = {"handler": args.worker, "rss_before_kib": rss_kib()}

    def download() -> float:
        drop_caches(args.image_file, drop)
        sampler = Dom0Sampler(args.sim_pid)
        sampler.start()
        with open(f"/proc/{args.sim_pid}/clear_refs", "w") as f:
            f.write("5\n")  # resets the simulator's VmHWM
        started = time.monotonic()
        downloaded = host.image_download(ctx, image, sr, None)
        seconds = time.monotonic() - started
        sampler.stop.set()
        sampler.join()
        result["sim_peak_kib"] = rss_kib(args.sim_pid, "VmHWM:")
        result["dom0_peak_kib"] = sampler.peak_kib
        result["peak_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        client.call("VDI.destroy", downloaded.root.vdi_ref)
        return seconds

    if args.import_first:
        result["seconds"] = download()
        result["curl_seconds"] = curl()
    else:
        result["curl_seconds"] = curl()
        result["seconds"] = download()
    print(json.dumps(result))


# -- the machine's limits ------------------------------------------------------------


def limits(images: dict[str, dict], sr_dir: Path, drop: bool) -> None:
    """What the hardware allows on these bytes, one core each."""
    def rate(nbytes: int, seconds: float) -> str:
        return f"{nbytes / MiB / seconds:6.0f} MiB/s"

    bare = images["bare"]["file"] if "bare" in images else None
    tgz = images["tgz"]["file"] if "tgz" in images else None
    sample = bare or tgz
    size = os.path.getsize(sample)
    drop_caches(sample, drop)
    for algo in ("md5", "sha512"):
        digest = hashlib.new(algo)
        started = time.monotonic()
        with open(sample, "rb") as f:
            while data := f.read(4 * MiB):
                digest.update(data)
        print(f"  {algo:<34} {rate(size, time.monotonic() - started)}  (of the image, one core)")
    if tgz:
        tsize = os.path.getsize(tgz)
        started = time.monotonic()
        out = subprocess.run(f"gzip -dc '{tgz}' | wc -c", shell=True, check=True,
                             capture_output=True, text=True).stdout
        seconds = time.monotonic() - started
        print(f"  {'gzip -dc | wc -c':<34} {rate(tsize, seconds)}  (compressed in, "
              f"{rate(int(out), seconds)} out)")
        z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        produced = 0
        started = time.monotonic()
        with open(tgz, "rb") as f:
            while data := f.read(4 * MiB):
                produced += len(z.decompress(data))
        seconds = time.monotonic() - started
        print(f"  {'zlib inflate (Python)':<34} {rate(tsize, seconds)}  (compressed in)")
    for path in filter(None, (bare, tgz)):
        drop_caches(path, drop)
        target = sr_dir / "limits-copy"
        started = time.monotonic()
        subprocess.run(["cp", path, str(target)], check=True)
        seconds = time.monotonic() - started
        target.unlink()
        print(f"  {'cp to the SR directory':<34} {rate(os.path.getsize(path), seconds)}  "
              f"({os.path.basename(path)})")


# -- main -----------------------------------------------------------------------------


def summary(rows: list[dict], size: int) -> str:
    seconds = statistics.median(r["seconds"] for r in rows)
    curl = statistics.median(r["curl_seconds"] for r in rows)
    ratios = sorted(r["curl_seconds"] / r["seconds"] for r in rows)
    kib = max(r["peak_kib"] for r in rows)
    dom0 = max(r["dom0_peak_kib"] for r in rows)
    sim = max(r["sim_peak_kib"] for r in rows)
    spread = f"{ratios[0]:.2f}-{ratios[-1]:.2f}" if len(ratios) > 1 else ""
    return (f"{seconds:7.2f} {size / MiB / seconds:6.0f} {curl:7.2f} {size / MiB / curl:6.0f} "
            f"{statistics.median(ratios):6.2f}x {spread:>9} {kib / 1024:6.0f} "
            f"{(f'{dom0 / 1024:.0f}' if dom0 else '-'):>6} {sim / 1024:6.0f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gib", type=float, default=2.0)
    parser.add_argument("--fill", type=float, default=0.5,
                        help="Fraction of the disk's 2 MiB blocks holding data (default 0.5).")
    parser.add_argument("--level", type=int, default=1, help="gzip level of the tarball.")
    parser.add_argument("--runs", type=int, default=3, help="Runs per image and handler.")
    parser.add_argument("--handlers", nargs="+", default=["direct_vhd", "vdi_remote_stream"])
    parser.add_argument("--containers", nargs="+", default=["tgz", "bare"],
                        choices=["tgz", "bare"])
    parser.add_argument("--work", help="Scratch directory (default: a temporary one); the "
                        "images built there are reused by later runs.")
    parser.add_argument("--no-drop", action="store_true",
                        help="Do not drop the page cache before each step (it needs root).")
    parser.add_argument("--no-limits", action="store_true")
    parser.add_argument("--dom0-python", help="Python running the dom0 scripts.")
    for hidden in ("--worker", "--url", "--state", "--image", "--image-file", "--sim-pid"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    parser.add_argument("--import-first", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.sim_pid = int(args.sim_pid)
        worker(args)
        return 0
    if not shutil.which("curl"):
        print("curl is needed for the baseline (apt-get install curl)", file=sys.stderr)
        return 1
    if not args.no_drop and os.geteuid() != 0:
        print("not root: the page cache is not dropped between steps (--no-drop)")
        args.no_drop = True
    work = Path(args.work or tempfile.mkdtemp(prefix="xhost-bench-images-")).absolute()
    work.mkdir(parents=True, exist_ok=True)
    state = work / "sim"
    shutil.rmtree(state, ignore_errors=True)
    shutil.rmtree(work / "state", ignore_errors=True)
    xhost = str(Path(sys.executable).parent / "xhost")
    extra = ["--dom0-python", args.dom0_python] if args.dom0_python else []
    sim = subprocess.Popen([xhost, "sim", "serve", "--state-dir", str(state), "--password",
                            PASSWORD, "--auth-delay", "0", *extra],
                           stdout=subprocess.PIPE, text=True)
    try:
        url = sim.stdout.readline().strip()
        from xhost import conf as xconf
        from xhost import plugins
        from xhost.context import Context

        conf_file = work / "upload.conf"
        conf_file.write_text(f"[image_local]\npath = {work}/images\n")
        conf = xconf.load([str(conf_file)])
        host = plugins.load(conf, roles=["image_service"])
        ctx = Context(conf=conf, plugins=host)
        images = prepare_images(work, args, host, ctx)
        drop = "page cache dropped and the image read back before each step" \
            if not args.no_drop else "page cache not dropped (warm)"
        print(f"{args.runs} run(s) per row, medians; {drop}")
        table = []
        for container in args.containers:
            info = images[container]
            for handler in args.handlers:
                rows = []
                for run in range(args.runs):
                    cmd = [sys.executable, __file__, "--worker", handler, "--url", url,
                           "--state", str(state), "--image", info["id"], "--work", str(work),
                           "--image-file", info["file"], "--sim-pid", str(sim.pid)]
                    if run % 2:
                        cmd.append("--import-first")
                    if args.no_drop:
                        cmd.append("--no-drop")
                    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
                    rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
                table.append((container, handler, rows, info["size"]))
        print(f"{'image':<5} {'handler':<18} {'import':>7} {'MiB/s':>6} {'curl':>7} "
              f"{'MiB/s':>6} {'ratio':>7} {'range':>9} {'xhost':>6} {'dom0':>6} {'sim':>6}")
        print(f"{'':<5} {'':<18} {'s':>7} {'':>6} {'s':>7} {'':>6} {'':>7} {'':>9} "
              f"{'MiB':>6} {'MiB':>6} {'MiB':>6}")
        for container, handler, rows, size in table:
            print(f"{container:<5} {handler:<18} {summary(rows, size)}")
        print("MiB/s: image bytes (as stored) per second; xhost: the importing process's "
              "peak RSS; dom0: the dom0 script's; sim: the simulator's during the import")
        print("goals: ratio >= 0.90x; xhost peak RSS <= 64 MiB")
        if not args.no_limits:
            print("this machine's limits on the same bytes:")
            sr_dirs = list((state / "dom0" / "var" / "run" / "sr-mount").iterdir())
            limits(images, sr_dirs[0], not args.no_drop)
        print("command: python " + " ".join([os.path.relpath(__file__)] + sys.argv[1:]))
    finally:
        sim.terminate()
        sim.wait(60)
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
