"""Figures for a spawn: XAPI calls, dom0 calls per VIF, concurrency, list/show.

Every built-in plugin (the local image service, an image handler, the ``sr``
storage backend, a network backend) runs through the compute layer against
a simulator (:mod:`xhost.testing.spawnbed`; real-network mode -- a network
namespace as dom0 with a private Open vSwitch or Linux bridges -- when run
as root). The figures come from the simulator's call counters:

* XAPI calls per spawn and per delete, image cache miss and hit, for each
  image handler and network backend (goals: miss <= 20, hit <= 15; Nova's
  driver made about 60 and 45);
* dom0 script calls (``host.call_plugin``) per VIF: the difference between
  spawns with 1 and 4 ports, divided by 3 (goal 0; Nova about 24);
* 32 spawns in 32 threads against a simulator (``xhost sim serve``, in its
  own process as a host is another machine) whose every call takes 5 ms,
  next to the same 32 one after another (goal: wall time <= 1.3 x serial
  time / ``connection_concurrent``), in 3 rounds of both (each batch
  deleted before the next) whose median ratio is reported -- one round on a
  busy machine says little;
* the calls of ``server list`` and ``server show`` with 10, 100 and 1000
  instances (goal: the same number whatever the count).

The concurrency figure also gives the CPU time of xhost and of the
simulator in each phase: the simulator (one Python process) spends about
20 ms of CPU per spawn, close to the whole budget (serial time / 5 is about
25 ms a spawn), which bounds how fast concurrent spawns can go whatever xhost
does; the same figure at 20 ms per call is printed beside it.

Run: ``python benchmarks/bench_spawn.py [--quick]`` (``--quick``: the
default handler and backend only, 16 concurrent spawns, 5 ms only).
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from xhost import conf as xconf
from xhost import diskimage
from xhost.compute import vmrecord
from xhost.compute.api import Compute
from xhost.testing import spawnbed

PLUGIN_CALL = "host.call_plugin"
PASSWORD = "bench"
EXTRA_SIM_ARGS: list[str] = []
#: The calls of a session, not of the operation: counted apart.
SESSION = ("session.login_with_password", "session.logout")


def _ops(counters: dict[str, int]) -> int:
    return sum(n for method, n in counters.items() if method not in SESSION)


def _dom0(counters: dict[str, int]) -> int:
    return counters.get(PLUGIN_CALL, 0)


def _bed(root: Path, name: str, handler: str, backend: str) -> spawnbed.SpawnBed:
    return spawnbed.build(root / name, handler, backend,
                          real_network=os.geteuid() == 0 and not os.environ.get("XHOST_BENCH_MODEL"))


def calls_per_spawn(root: Path, handler: str, backend: str) -> dict[str, int]:
    bed = _bed(root, f"calls-{handler}-{backend}", handler, backend)
    try:
        # A long-running xhost: the first spawn (dom0 handshake) is behind it.
        bed.spawn("warm-up")
        bed.compute.delete_server("warm-up")
        bed.drop_cache()
        bed.counters()
        bed.spawn("miss")
        miss = bed.counters()
        bed.spawn("hit")
        hit = bed.counters()
        bed.compute.delete_server("hit")
        delete = bed.counters()
        bed.compute.delete_server("miss")
        ports = {}
        for n in (1, 4):
            bed.counters()
            bed.compute.create_server(f"ports-{n}", bed.image.id, bed.flavor,
                                      [bed.network] * n)
            ports[n] = bed.counters()
            bed.compute.delete_server(f"ports-{n}")
        return {"miss": _ops(miss), "hit": _ops(hit), "delete": _ops(delete),
                "dom0_miss": _dom0(miss), "dom0_hit": _dom0(hit),
                "xapi_per_vif": round((_ops(ports[4]) - _ops(ports[1])) / 3, 1),
                "dom0_per_vif": round((_dom0(ports[4]) - _dom0(ports[1])) / 3, 1),
                "methods_hit": hit}
    finally:
        bed.close()


class ServedHost:
    """``xhost sim serve`` in its own process, as a real host is another
    machine: its work does not compete with xhost's threads for the GIL."""

    def __init__(self, state: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "xhost.cli.main", "sim", "serve", "--state-dir", str(state),
             "--password", PASSWORD, "--auth-delay", "0", "--network-backend", "bridge",
             *EXTRA_SIM_ARGS],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http"):
            self.proc.kill()
            raise RuntimeError("xhost sim serve did not start")

    def control(self, path: str, body: dict) -> None:
        request = urllib.request.Request(
            f"{self.url}/sim/{path}", data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json", "Authorization": "Basic " +
                     base64.b64encode(f"root:{PASSWORD}".encode()).decode()})
        urllib.request.urlopen(request, timeout=30).read()

    def cpu_seconds(self) -> float:
        """CPU time the simulator's process has used (user + system)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def concurrency(root: Path, spawns: int, latency: float, sessions: int = 5,
                rounds: int = 3) -> dict[str, Any]:
    """``rounds`` times: ``spawns`` spawns one after another, then the same
    number at once, each batch deleted (untimed) before the next, so every
    round starts from the same host. The ratio of each round compares two
    batches measured back to back; the median round is reported."""
    root = root / f"concurrency-{latency * 1000:g}ms-{sessions}"
    root.mkdir()
    host = ServedHost(root / "served")
    try:
        conf_path = root / "concurrency.conf"
        conf_path.write_text(
            f"[compute]\nstate_dir = {root}/concurrency-state\n"
            f"[image_local]\npath = {root}/concurrency-images\n"
            f"[xenserver]\nconnection_url = {host.url}\nconnection_password = {PASSWORD}\n"
            f"connection_concurrent = {sessions}\n"
            f"image_handler = direct_vhd\nnetwork_backend = linux_bridge\n")
        compute = Compute.open(xconf.load([str(conf_path)]))
        try:
            ctx = compute.context()
            image = compute.plugins.image_service_create(ctx, "bench", "vhd", "ovf",
                                                         {"os_type": "linux"})
            tarball = diskimage.build_vhd_tarball(root / "bench.tgz", 16 * 2**20, {})
            with open(tarball, "rb") as data:
                compute.plugins.image_service_upload(ctx, image.id, data,
                                                     tarball.stat().st_size)

            def spawn(name: str) -> None:
                compute.create_server(name, image.id, "m1.tiny", [spawnbed.BRIDGE_NETWORK])

            def clean(names: list[str]) -> None:
                host.control("latency", {"method": "*", "seconds": 0})
                with ThreadPoolExecutor(sessions) as pool:
                    list(pool.map(compute.delete_server, names))
                host.control("latency", {"method": "*", "seconds": latency})

            spawn("warm-up")  # the image cached: every spawn below is a hit
            compute.delete_server("warm-up")
            host.control("latency", {"method": "*", "seconds": latency})
            results = []
            for r in range(rounds):
                names = [f"serial-{r}-{i}" for i in range(spawns)]
                started, cpu, host_cpu = time.monotonic(), time.process_time(), host.cpu_seconds()
                for name in names:
                    spawn(name)
                serial = time.monotonic() - started
                serial_cpu = (time.process_time() - cpu, host.cpu_seconds() - host_cpu)
                clean(names)
                names = [f"parallel-{r}-{i}" for i in range(spawns)]
                barrier = threading.Barrier(spawns)

                def one(name: str, barrier: threading.Barrier = barrier) -> None:
                    barrier.wait()
                    spawn(name)

                started, cpu, host_cpu = time.monotonic(), time.process_time(), host.cpu_seconds()
                with ThreadPoolExecutor(spawns) as pool:
                    list(pool.map(one, names))
                parallel = time.monotonic() - started
                parallel_cpu = (time.process_time() - cpu, host.cpu_seconds() - host_cpu)
                clean(names)
                concurrent = compute.xapi.concurrent
                results.append({"serial": serial, "parallel": parallel, "concurrent": concurrent,
                                "ratio": parallel / (serial / concurrent),
                                "serial_cpu": serial_cpu, "parallel_cpu": parallel_cpu})
        finally:
            compute.close()
    finally:
        host.close()
    ratios = sorted(r["ratio"] for r in results)
    median = sorted(results, key=lambda r: r["ratio"])[len(results) // 2]
    return dict(median, ratios=ratios)


def list_and_show(root: Path, counts: tuple[int, ...]) -> list[tuple[int, int, int, float]]:
    bed = _bed(root, "listing", "direct_vhd", "openvswitch")
    rows = []
    try:
        made = bed.spawn("template")
        record = bed.xapi.call("VM.get_record", made.vm_ref)
        fields = ("user_version", "is_a_template", "affinity", "memory_static_max",
                  "memory_dynamic_max", "memory_dynamic_min", "memory_static_min",
                  "VCPUs_params", "VCPUs_max", "VCPUs_at_startup", "actions_after_shutdown",
                  "actions_after_reboot", "actions_after_crash", "PV_bootloader",
                  "PV_kernel", "PV_ramdisk", "PV_args", "PV_bootloader_args",
                  "PV_legacy_args", "HVM_boot_policy", "HVM_boot_params", "platform",
                  "PCI_bus", "recommendations", "name_description")
        present = 1
        for count in counts:
            while present < count:
                other = dict(record["other_config"],
                             **{vmrecord.TAG_UUID: f"00000000-0000-4000-8000-{present:012d}"})
                bed.xapi.call("VM.create", {**{f: record[f] for f in fields},
                                            "name_label": f"bulk-{present}",
                                            "other_config": other})
                present += 1
            bed.counters()
            started = time.monotonic()
            listed = bed.compute.list_servers()
            seconds = time.monotonic() - started
            list_calls = _ops(bed.counters())
            assert len(listed) == count, (len(listed), count)
            bed.compute.show_server("template")
            show_calls = _ops(bed.counters())
            rows.append((count, list_calls, show_calls, seconds))
        return rows
    finally:
        bed.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="The default handler and backend only; 16 concurrent spawns.")
    parser.add_argument("--latency", type=float, default=0.005,
                        help="Seconds every simulated call takes in the concurrency figure.")
    args = parser.parse_args()
    mode = "real-network (root)" if os.geteuid() == 0 else "modelled network (not root)"
    print(f"bench_spawn: simulator in {mode} mode")
    with tempfile.TemporaryDirectory(prefix="xhost-bench-spawn-") as tmp:
        root = Path(tmp)
        handlers = ("direct_vhd",) if args.quick else spawnbed.HANDLERS
        backends = ("openvswitch",) if args.quick else spawnbed.BACKENDS
        print("\nXAPI calls per spawn (goals: miss <= 20, hit <= 15; Nova ~60 / ~45)")
        print(f"{'handler':<18} {'backend':<12} {'miss':>5} {'hit':>5} {'delete':>7} "
              f"{'dom0 miss':>9} {'dom0 hit':>8} {'XAPI/VIF':>8} {'dom0/VIF':>8}")
        hit_methods = None
        for handler in handlers:
            for backend in backends:
                r = calls_per_spawn(root, handler, backend)
                hit_methods = hit_methods or r["methods_hit"]
                print(f"{handler:<18} {backend:<12} {r['miss']:>5} {r['hit']:>5} "
                      f"{r['delete']:>7} {r['dom0_miss']:>9} {r['dom0_hit']:>8} "
                      f"{r['xapi_per_vif']:>8} {r['dom0_per_vif']:>8}")
        print("\nthe calls of a cache-hit spawn (direct_vhd, openvswitch):")
        for method, n in sorted(hit_methods.items()):
            print(f"  {n:>3} {method}")
        spawns = 16 if args.quick else 32
        latencies = [args.latency] if args.quick else [args.latency, 0.02]
        for latency in latencies:
            c = concurrency(root, spawns, latency)
            print(f"\n{spawns} spawns, {latency * 1000:.0f} ms per call, "
                  f"connection_concurrent = {c['concurrent']}:")
            print(f"  serial {c['serial']:.2f}s, concurrent {c['parallel']:.2f}s; concurrent / "
                  f"(serial / {c['concurrent']}) = {c['ratio']:.2f} (goal <= 1.3); median of "
                  f"{len(c['ratios'])} rounds: {', '.join(f'{r:.2f}' for r in c['ratios'])}")
            for phase in ("serial", "parallel"):
                mine, host = c[f"{phase}_cpu"]
                print(f"  {phase}: CPU xhost {mine:.2f}s, simulator {host:.2f}s "
                      f"({host / c[phase]:.0%} of one core)")
        print("\nserver list / show with N instances (goal: constant calls)")
        print(f"{'N':>6} {'list calls':>10} {'show calls':>10} {'list s':>8}")
        for count, list_calls, show_calls, seconds in list_and_show(root, (10, 100, 1000)):
            print(f"{count:>6} {list_calls:>10} {show_calls:>10} {seconds:>8.3f}")


if __name__ == "__main__":
    main()
