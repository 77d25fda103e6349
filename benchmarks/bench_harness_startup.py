"""Start-up cost of the real-component test harnesses (prints figures).

    python benchmarks/bench_harness_startup.py [--rounds 5] [--fresh-glance-install]

Measures: a network-namespace cycle, a private Open vSwitch cold start (and
its first ovsdbapp transaction, which initialises the netdev datapath), its
stop, the Glance install (reused, or fresh into a temporary venv with
``--fresh-glance-install``; about a minute) and a Glance start until
``/versions`` answers.  Needs root.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from xhost.testing.glance import GlanceServer, ensure_installed
from xhost.testing.netns import NetNamespace
from xhost.testing.ovs import PrivateOVS


def _summary(label: str, samples: list[float]) -> None:
    if len(samples) == 1:
        print(f"{label:<44} {samples[0]:8.3f} s")
        return
    print(f"{label:<44} median {statistics.median(samples):7.3f} s   "
          f"min {min(samples):.3f}   max {max(samples):.3f}   (n={len(samples)})")


def _timed(fn: Callable[[], object]) -> float:
    start = time.monotonic()
    fn()
    return time.monotonic() - start


def bench_netns(rounds: int) -> None:
    def cycle() -> None:
        with NetNamespace() as ns:
            ns.add_bridge("xenbr0")
            ns.add_veth("vif1.0", "vif1.0-p")
            ns.attach("vif1.0", "xenbr0")
    _summary("netns create + bridge + veth + destroy", [_timed(cycle) for _ in range(rounds)])


def bench_ovs(rounds: int) -> None:
    starts, first_txn, stops = [], [], []
    for _ in range(rounds):
        ovs = PrivateOVS()
        starts.append(_timed(ovs.start))
        api = ovs.ovsdbapp_api()

        def plug(api=api) -> None:
            with api.transaction(check_error=True) as txn:
                txn.add(api.add_br("br-int", datapath_type="netdev"))
                txn.add(api.add_port("br-int", "vif1.0"))
                txn.add(api.db_set("Interface", "vif1.0", ("type", "internal")))
        first_txn.append(_timed(plug))
        stops.append(_timed(ovs.stop))
    _summary("OVS cold start (netns+ovsdb+vswitchd ready)", starts)
    _summary("OVS ovsdbapp connect + first br/port txn", first_txn)
    _summary("OVS stop + cleanup", stops)


def bench_glance(rounds: int, fresh: bool) -> None:
    if fresh:
        with tempfile.TemporaryDirectory(prefix="xhost-glance-bench-") as tmp:
            venv = Path(tmp) / "venv"
            install = ensure_installed(venv, allow_install=True)
            _summary(f"Glance fresh install (glance {install.glance_version})",
                     [install.install_seconds])
    install = ensure_installed()
    _summary("Glance install check (reused)", [_timed(ensure_installed)])
    readies, stops = [], []
    for _ in range(rounds):
        server = GlanceServer()
        server.start()
        readies.append(server.times.total)
        stops.append(_timed(server.stop))
    _summary(f"Glance start until /versions (glance {install.glance_version})", readies)
    _summary("Glance stop + cleanup", stops)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--fresh-glance-install", action="store_true",
                        help="also time a fresh Glance install into a temporary venv")
    args = parser.parse_args()
    bench_netns(args.rounds)
    bench_ovs(args.rounds)
    bench_glance(max(1, min(args.rounds, 3)), args.fresh_glance_install)
    return 0


if __name__ == "__main__":
    sys.exit(main())
