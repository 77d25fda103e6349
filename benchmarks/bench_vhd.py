#!/usr/bin/env python3
"""Throughput and peak memory of the VHD library's streaming paths.

Run (any Python >= 3.6, standard library only):

    python3 benchmarks/bench_vhd.py                       # 128 and 512 MiB
    python3 benchmarks/bench_vhd.py --sizes 256 --dir /var/tmp

For each size a sparse raw image is made (every other 2 MiB block random,
the rest holes), then, in a fresh child process per size so that peak RSS
(``resource.getrusage``, which only grows) is per run:

* raw -> dynamic VHD stream, consumed and discarded (what
  ``/export_raw_vdi?format=vhd`` does), MB/s of virtual disk and of stream;
* raw -> dynamic VHD file (``raw_to_vhd``);
* VHD stream -> raw, read from a pipe (non-seekable, like an HTTP body or a
  tar member) by ``consume_stream`` into a sparse raw file;
* VHD -> raw (``vhd_to_raw``).

Results are checked (sha256 of the round trip) outside the timings.  Peak
RSS staying flat while the size grows shows memory is bounded.
"""
import argparse
import hashlib
import importlib.util
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIB = 1024 * 1024


def load_vhd():
    path = os.path.join(ROOT, "dom0", "xhost_vhd.py")
    spec = importlib.util.spec_from_file_location("xhost_vhd", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["xhost_vhd"] = module
    spec.loader.exec_module(module)
    return module


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(4 * MIB), b""):
            digest.update(chunk)
    return digest.hexdigest()


def make_raw(path, size_mib):
    with open(path, "wb") as handle:
        handle.truncate(size_mib * MIB)
        for block in range(0, size_mib // 2, 2):
            handle.seek(block * 2 * MIB)
            handle.write(os.urandom(2 * MIB))


def timed(func):
    start = time.perf_counter()
    result = func()
    return result, time.perf_counter() - start


def run_one(size_mib, directory):
    vhd = load_vhd()
    work = tempfile.mkdtemp(prefix="bench-vhd-", dir=directory)
    try:
        raw = os.path.join(work, "disk.raw")
        make_raw(raw, size_mib)
        results = {"size_mib": size_mib, "rss_after_setup_mib": peak_rss_mib()}

        def stream_discard():
            total = 0
            with vhd.RawSource(raw) as source:
                stream = vhd.DynamicStream(source)
                for chunk in stream:
                    total += len(chunk)
                assert total == stream.size
            return total

        stream_bytes, seconds = timed(stream_discard)
        results["raw_to_stream_MBps"] = size_mib * MIB / seconds / 1e6
        results["stream_MBps"] = stream_bytes / seconds / 1e6
        results["stream_bytes"] = stream_bytes

        image = os.path.join(work, "disk.vhd")
        _, seconds = timed(lambda: vhd.raw_to_vhd(raw, image))
        results["raw_to_vhd_file_MBps"] = size_mib * MIB / seconds / 1e6

        out = os.path.join(work, "back.raw")

        def consume_from_pipe():
            with subprocess.Popen(["cat", image], stdout=subprocess.PIPE,
                                  bufsize=0) as cat, \
                    vhd.RawFileSink(out, size=size_mib * MIB) as sink:
                return vhd.consume_stream(cat.stdout, sink)

        info, seconds = timed(consume_from_pipe)
        results["stream_to_raw_MBps"] = size_mib * MIB / seconds / 1e6
        results["stream_blocks"] = info["blocks"]

        flat = os.path.join(work, "flat.raw")
        _, seconds = timed(lambda: vhd.vhd_to_raw(image, flat))
        results["vhd_to_raw_MBps"] = size_mib * MIB / seconds / 1e6

        expected = sha256_of(raw)
        results["round_trip_ok"] = (sha256_of(out) == expected ==
                                    sha256_of(flat))
        results["peak_rss_mib"] = peak_rss_mib()
        return results
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="128,512",
                        help="raw image sizes in MiB, comma separated")
    parser.add_argument("--dir", default=None,
                        help="scratch directory (default: the system's)")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.dir)))
        return 0
    columns = ("MiB", "raw>strm", "strm B/s", "raw>vhd", "pipe>raw",
               "vhd>raw", "RSS setup", "RSS peak", "ok")
    units = ("", "MB/s", "MB/s", "MB/s", "MB/s", "MB/s", "MiB", "MiB", "")
    for row in (columns, units):
        print(f"{row[0]:<6} " + " ".join(f"{c:>10}" for c in row[1:6]) +
              f" {row[6]:>9} {row[7]:>9} {row[8]:>4}")
    failed = False
    for size in [int(s) for s in args.sizes.split(",") if s.strip()]:
        command = [sys.executable, os.path.abspath(__file__), "--one",
                   str(size)]
        if args.dir:
            command += ["--dir", args.dir]
        output = subprocess.check_output(command, universal_newlines=True)
        r = json.loads(output)
        failed = failed or not r["round_trip_ok"]
        rates = (r["raw_to_stream_MBps"], r["stream_MBps"],
                 r["raw_to_vhd_file_MBps"], r["stream_to_raw_MBps"],
                 r["vhd_to_raw_MBps"])
        ok = "yes" if r["round_trip_ok"] else "NO"
        print(f"{size:<6} " + " ".join(f"{rate:>10.0f}" for rate in rates) +
              f" {r['rss_after_setup_mib']:>9.1f} {r['peak_rss_mib']:>9.1f}"
              f" {ok:>4}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
