#!/usr/bin/env python3
"""Benchmark of the simulator's dom0 and guests, through the real PyPI ``XenAPI`` client.

Run::

    python benchmarks/bench_dom0.py [--calls 30] [--vms 50] [--dom0-python PATH]

Figures printed (median and 90th percentile, milliseconds):

* ``host.call_plugin`` of ``xhost_version.get_version`` (one process per
  call, as xapi does) under the simulator's Python and, if given, another
  dom0 interpreter (e.g. Python 3.6);
* one ``xenstore-read`` run as a dom0 process;
* ``VM.start`` + ``VM.hard_shutdown`` of a VM whose guest builds its XenStore
  tree and publishes guest metrics (speed 0), against the same VM without
  tools, i.e. the cost of the guest simulation per boot.

A real host answers ``host.call_plugin`` in ~100-300 ms (xapi forks the
plugin's interpreter too); the point is to stay in that range.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import XenAPI

from xhost.sim import Simulator

PASSWORD = "bench"


def stats(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p90 = ms[min(len(ms) - 1, int(len(ms) * 0.9))]
    return f"median {statistics.median(ms):7.1f} ms   p90 {p90:7.1f} ms   (n={len(ms)})"


def timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--vms", type=int, default=50)
    parser.add_argument("--dom0-python", help="also time plugins under this interpreter")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, \
            Simulator(f"{tmp}/state", users={"root": PASSWORD}) as sim:
        session = XenAPI.Session(sim.url)
        session.xenapi.login_with_password("root", PASSWORD)
        x = session.xenapi
        host = x.host.get_all()[0]

        def plugin() -> None:
            x.host.call_plugin(host, "xhost_version.py", "get_version", {"args": "{}"})

        plugin()
        print(f"call_plugin (this Python)     {stats(timed(plugin, args.calls))}")
        if args.dom0_python:
            default = sim.dom0.interpreter
            sim.dom0.interpreter = args.dom0_python
            plugin()
            print(f"call_plugin ({args.dom0_python.rsplit('/', 1)[-1]:<16}) "
                  f"{stats(timed(plugin, args.calls))}")
            sim.dom0.interpreter = default
        read = ["xenstore-read", "/local/domain/0/name"]
        print(f"xenstore-read                 "
              f"{stats(timed(lambda: sim.dom0.run(read, check=True), args.calls))}")

        tpl = x.VM.get_by_name_label("Debian Bookworm 12")[0]
        net = x.network.get_by_name_label("Pool-wide network associated with eth0")[0]

        def make(name: str, tools: bool) -> str:
            vm = x.VM.clone(tpl, name)
            x.VM.provision(vm)
            x.VM.set_is_a_template(vm, False)
            x.VIF.create({"device": "0", "network": net, "VM": vm, "MAC": "", "MTU": "1500",
                          "other_config": {}, "qos_algorithm_type": "",
                          "qos_algorithm_params": {}})
            if not tools:
                x.VM.add_to_other_config(vm, "xhost_sim_tools", "false")
            return vm

        for tools in (True, False):
            vms = [make(f"bench-{tools}-{i}", tools) for i in range(args.vms)]
            samples = []
            for vm in vms:
                started = time.perf_counter()
                x.VM.start(vm, False, False)
                x.VM.hard_shutdown(vm)
                samples.append(time.perf_counter() - started)
            label = "start+stop, guest with tools" if tools else "start+stop, no tools        "
            print(f"{label}  {stats(samples)}")


if __name__ == "__main__":
    main()
