#!/usr/bin/env python3
"""Benchmark of the guest agent path on the simulator: host side, dom0 script
and simulated agent together.

Run::

    python benchmarks/bench_agent.py [--calls 10] [--dom0-python PATH]

Figures printed (median and 90th percentile, milliseconds):

* one ``xhost_agent`` request (``version``) through ``host.call_plugin``;
* a password change (``keyinit`` + ``password``: two requests, the
  Diffie-Hellman exchange and the encryption) through the xenstore plugin;
* a file injection (``features`` + ``file_inject``) and, once the agent's
  features are known, a second one;
* the guest-agent part of a first boot (version, SSH key, one file, password,
  resetnetwork).

Each request costs a dom0 process plus four ``xenstore-*`` processes (read
the domain, write the request, read the answer, remove both); on a real host
those commands are C programs taking ~1 ms, in the simulator they are Python
processes, which dominates these figures.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from oslo_config import cfg

from xhost.backends.agent_xenstore.boot import configure_instance
from xhost.backends.agent_xenstore.client import AgentClient
from xhost.backends.agent_xenstore.plugin import XenstoreAgent
from xhost.compute.connection import HostConnection
from xhost.conf import compute, xenserver
from xhost.context import Context
from xhost.objects import Flavor, ImageMeta, Instance
from xhost.sim import Simulator
from xhost.xapi.client import XapiClient

PASSWORD = "bench"


def stats(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p90 = ms[min(len(ms) - 1, int(len(ms) * 0.9))]
    return f"median {statistics.median(ms):7.1f} ms   p90 {p90:7.1f} ms   (n={len(ms)})"


def timed(fn, calls: int) -> list[float]:
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--dom0-python", help="interpreter of dom0 processes (e.g. Python 3.6)")
    args = parser.parse_args()
    conf = cfg.ConfigOpts()
    conf.register_opts(xenserver.list_opts()[0][1], group=xenserver.GROUP)
    for group, opts in compute.list_opts():
        conf.register_opts(opts, group=group)
    conf([])
    XenstoreAgent(conf)
    with tempfile.TemporaryDirectory() as state:
        sim = Simulator(state, users={"root": PASSWORD}, dom0_python=args.dom0_python).start()
        try:
            client = XapiClient(sim.url, "root", PASSWORD)
            connection = HostConnection(client)
            template = client.call("VM.get_by_name_label", "Debian Bookworm 12")[0]
            vm = client.call("VM.clone", template, "bench")
            client.call("VM.provision", vm)
            client.call("VM.set_is_a_template", vm, False)
            client.call("VM.add_to_other_config", vm, "xhost_sim_agent", "yes")
            client.call("VM.start", vm, False, False)
            ctx = Context(conf=conf, plugins=None, xapi=client, host_ref=connection.host_ref)
            ctx.extra["dom0"] = connection.dom0
            instance = Instance(uuid="bench", name="bench", flavor=Flavor("b", 1, 512, 1),
                                image=ImageMeta(id="i", properties={"img_use_agent": "true"}),
                                key_data="ssh-ed25519 AAAA bench", files={"/etc/motd": b"hi"})
            agent = AgentClient(ctx, instance, vm)
            agent.version()  # the dom0 version handshake, once
            print("one request (version)     ", stats(timed(agent.version, args.calls)))
            print("password (keyinit+password)",
                  stats(timed(lambda: agent.set_password("Bench-Pass-1"), args.calls)))
            print("file injection, first      ", stats(timed(
                lambda: AgentClient(ctx, instance, vm).inject_file("/etc/a", b"x"), args.calls)))
            print("file injection, next       ",
                  stats(timed(lambda: agent.inject_file("/etc/a", b"x"), args.calls)))
            print("first-boot sequence        ", stats(timed(
                lambda: configure_instance(ctx, instance, vm), max(1, args.calls // 2))))
        finally:
            sim.stop()


if __name__ == "__main__":
    main()
