"""Figures for the simulator's pools and real-network mode.

* live migrations per second in a 3-host pool (real XenAPI client, HTTP);
* pool.join of a standalone host, in one process;
* with ``--real-network`` (root): VM start + hard shutdown round trips with
  real dom0 interfaces, for Linux bridges and for Open vSwitch.

Run: ``python benchmarks/bench_sim_pool_network.py [--real-network] [--rounds N]``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import XenAPI

from xhost.sim import Simulator

USER, PASSWORD = "root", "bench"


def login(url: str) -> XenAPI.Session:
    session = XenAPI.Session(url)
    session.xenapi.login_with_password(USER, PASSWORD, "1.0", "bench")
    return session


def vm_on_shared_storage(x, name: str, nic: bool = True) -> str:
    vm = x.VM.clone(x.VM.get_by_name_label("Debian Bookworm 12")[0], name)
    x.VM.provision(vm)
    x.VM.set_is_a_template(vm, False)
    if nic:
        net = x.network.get_by_name_label("Pool-wide network associated with eth0")[0]
        x.VIF.create({"device": "0", "network": net, "VM": vm, "MAC": "", "MTU": "0",
                      "other_config": {}, "qos_algorithm_type": "", "qos_algorithm_params": {}})
    return vm


def bench_migrations(base: Path, rounds: int) -> None:
    with Simulator(base / "pool", users={USER: PASSWORD}, hosts=3) as sim:
        x = login(sim.url).xenapi
        hosts = x.host.get_all()
        vm = vm_on_shared_storage(x, "bench")
        x.VM.start(vm, False, False)
        t0 = time.perf_counter()
        for i in range(rounds):
            x.VM.pool_migrate(vm, hosts[(i + 1) % 3], {"live": "true"})
        elapsed = time.perf_counter() - t0
        print(f"VM.pool_migrate: {rounds / elapsed:8.1f} migrations/s "
              f"({elapsed / rounds * 1000:.2f} ms each)")


def bench_join(base: Path) -> None:
    with Simulator(base / "joinpool", users={USER: PASSWORD}, hosts=2) as pool, \
            Simulator(base / "joiner", users={USER: PASSWORD}, host_name="new") as joiner:
        x = login(joiner.url).xenapi
        t0 = time.perf_counter()
        x.pool.join(pool.url.removeprefix("http://"), USER, PASSWORD)
        print(f"pool.join (in one process): {(time.perf_counter() - t0) * 1000:8.1f} ms")


def bench_real_network(base: Path, rounds: int) -> None:
    for backend in ("bridge", "openvswitch"):
        t0 = time.perf_counter()
        sim = Simulator(base / f"net-{backend}", users={USER: PASSWORD}, real_network=True,
                        network_backend=backend).start()
        started = time.perf_counter() - t0
        try:
            x = login(sim.url).xenapi
            vm = vm_on_shared_storage(x, "net")
            times = []
            for _ in range(rounds):
                t1 = time.perf_counter()
                x.VM.start(vm, False, False)
                x.VM.hard_shutdown(vm)
                times.append(time.perf_counter() - t1)
            print(f"real network, {backend:11s}: simulator start {started * 1000:6.0f} ms; "
                  f"VM start+shutdown with one vif {statistics.median(times) * 1000:6.1f} ms "
                  f"(median of {rounds})")
        finally:
            sim.stop()
    sim = Simulator(base / "net-records", users={USER: PASSWORD}).start()
    try:
        x = login(sim.url).xenapi
        vm = vm_on_shared_storage(x, "records")
        t1 = time.perf_counter()
        for _ in range(rounds):
            x.VM.start(vm, False, False)
            x.VM.hard_shutdown(vm)
        print(f"records only              : VM start+shutdown "
              f"{(time.perf_counter() - t1) / rounds * 1000:6.1f} ms")
    finally:
        sim.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--real-network", action="store_true",
                        help="also measure real-network mode (root)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        bench_migrations(base, args.rounds * 4)
        bench_join(base)
        if args.real_network:
            if os.geteuid() != 0:
                raise SystemExit("--real-network needs root")
            bench_real_network(base, args.rounds)


if __name__ == "__main__":
    main()
