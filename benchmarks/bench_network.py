"""Figures for the network backends (root: real Open vSwitch and bridges).

For each backend and mode, boots servers with 0 and N ports through the
compute layer against a simulator in real-network mode, and reports per VIF:
the XAPI calls and the dom0 script calls (``host.call_plugin``) of a spawn,
of a hot plug and of a hot unplug -- from the simulator's call counters --
and the wall time.  Nova's figure for dom0 calls per VIF is about 24 (its
Mitaka-to-Victoria Open vSwitch driver).

Storage and images are minimal in-process plugins (a blank root VDI), so the
figures isolate the network work.

Run: ``python benchmarks/bench_network.py [--ports N] [--rounds R]``.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from xhost import conf as xconf
from xhost import hookimpl, plugins, registry
from xhost.compute.api import Compute
from xhost.compute.connection import HostConnection
from xhost.objects import Disk, ImageMeta
from xhost.sim import Simulator
from xhost.testing.ovs import PrivateOVS
from xhost.xapi.client import XapiClient

USER, PASSWORD = "root", "bench"


class BlankStorage:
    @hookimpl
    def xhost_storage_choose_sr(self, ctx):
        return next(iter(ctx.xapi.call("pool.get_all_records").values()))["default_SR"]

    @hookimpl
    def xhost_storage_create_root_disk(self, ctx, instance, sr_ref):
        vdi = ctx.xapi.call("VDI.create", {
            "name_label": instance.name, "SR": sr_ref, "virtual_size": str(2**30),
            "type": "system", "sharable": False, "read_only": False,
            "other_config": {"nova_instance_uuid": instance.uuid}})
        ctx.undo.push("destroy root VDI", ctx.xapi.call, "VDI.destroy", vdi)
        return [Disk(vdi_ref=vdi, vdi_uuid="", kind="root", userdevice="0", bootable=True)]

    @hookimpl
    def xhost_storage_create_ephemeral_disks(self):
        return []

    @hookimpl
    def xhost_storage_create_swap_disk(self):
        return []

    @hookimpl
    def xhost_storage_destroy_disks(self, ctx, instance):
        for ref, rec in ctx.xapi.call("VDI.get_all_records").items():
            if rec["other_config"].get("nova_instance_uuid") == instance.uuid:
                ctx.xapi.call("VDI.destroy", ref)
        return True


class OneImage:
    image = ImageMeta(id="bench", name="bench", status="active", disk_format="vhd",
                      container_format="ovf", properties={"os_type": "linux"})

    @hookimpl
    def xhost_image_service_show(self, image_id):
        return self.image


def compute_for(sim: Simulator, state: Path, backend: str, conf_text: str) -> Compute:
    path = state / f"{backend}-{abs(hash(conf_text))}.conf"
    path.write_text(f"[compute]\nstate_dir = {state}/xhost\n{conf_text}")
    conf = xconf.load([str(path)])
    pm = plugins.new_plugin_manager()
    pm.register(BlankStorage(), name="storage_backend:blank")
    pm.register(OneImage(), name="image_service:one")
    role = registry.ROLES_BY_KEY["network_backend"]
    pm.register(plugins.load_role_plugin(role, backend, conf), name=f"network_backend:{backend}")
    host = plugins.PluginHost(pm, conf, {"storage_backend": "blank", "image_service": "one",
                                         "network_backend": backend}, [])
    return Compute(conf, HostConnection(XapiClient(sim.url, USER, PASSWORD)), host)


def total(counters: dict[str, int], dom0: bool) -> int:
    return sum(n for m, n in counters.items() if (m == "host.call_plugin") == dom0)


def measure(sim: Simulator, compute: Compute, network: str, ports: int,
            rounds: int) -> dict[str, Any]:
    controls = sim.controls
    compute.create_server("warm", "bench", "m1.tiny", [network])  # dom0 handshake, logins
    compute.delete_server("warm")
    figures: dict[str, list[float]] = {k: [] for k in (
        "spawn_xapi", "spawn_dom0", "spawn_s", "plug_xapi", "plug_dom0", "plug_s",
        "unplug_xapi", "unplug_dom0", "delete_xapi", "delete_dom0")}
    for i in range(rounds):
        controls.read_counters(reset=True)
        compute.create_server(f"base{i}", "bench", "m1.tiny", [])
        base = controls.read_counters(reset=True)
        t0 = time.perf_counter()
        compute.create_server(f"b{i}", "bench", "m1.tiny", [network] * ports)
        figures["spawn_s"].append(time.perf_counter() - t0)
        spawn = controls.read_counters(reset=True)
        figures["spawn_xapi"].append((total(spawn, False) - total(base, False)) / ports)
        figures["spawn_dom0"].append((total(spawn, True) - total(base, True)) / ports)
        t0 = time.perf_counter()
        port = compute.attach_interface(f"b{i}", network)
        figures["plug_s"].append(time.perf_counter() - t0)
        plug = controls.read_counters(reset=True)
        figures["plug_xapi"].append(total(plug, False))
        figures["plug_dom0"].append(total(plug, True))
        compute.detach_interface(f"b{i}", port["id"])
        unplug = controls.read_counters(reset=True)
        figures["unplug_xapi"].append(total(unplug, False))
        figures["unplug_dom0"].append(total(unplug, True))
        compute.delete_server(f"base{i}")
        controls.read_counters(reset=True)
        compute.delete_server(f"b{i}")
        delete = controls.read_counters(reset=True)
        figures["delete_xapi"].append(total(delete, False))
        figures["delete_dom0"].append(total(delete, True))
    return {k: statistics.median(v) for k, v in figures.items()}


def report(label: str, f: dict[str, Any], ports: int) -> None:
    print(f"{label:32} per VIF in a spawn: {f['spawn_xapi']:4.1f} XAPI, "
          f"{f['spawn_dom0']:3.1f} dom0 | hot plug: {f['plug_xapi']:3.0f} XAPI, "
          f"{f['plug_dom0']:.0f} dom0, {f['plug_s'] * 1000:4.0f} ms | hot unplug: "
          f"{f['unplug_xapi']:3.0f} XAPI, {f['unplug_dom0']:.0f} dom0 | delete "
          f"({ports} ports): {f['delete_xapi']:3.0f} XAPI, {f['delete_dom0']:.0f} dom0 | "
          f"spawn {f['spawn_s'] * 1000:4.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ports", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="xhost-bench-net-") as tmp:
        base = Path(tmp)
        with PrivateOVS() as ovs:
            ovs.vsctl("add-br", "br-int", "--", "set", "Bridge", "br-int",
                      "datapath_type=netdev")
            with Simulator(base / "ovs", users={USER: PASSWORD}, real_network=True,
                           netns=ovs.netns.name, ovsdb=ovs.unix_connection,
                           auth_delay=0.0) as sim:
                for hybrid in (False, True):
                    compute = compute_for(sim, base, "openvswitch",
                                          "[xenserver]\novs_integration_bridge = br-int\n"
                                          f"[network_openvswitch]\novsdb_connection = "
                                          f"{ovs.tcp_connection}\nhybrid_plug = {hybrid}\n")
                    if not hybrid:
                        compute.xapi.call("network.create", {
                            "name_label": "integration", "name_description": "",
                            "MTU": "1500", "bridge": "br-int", "managed": False,
                            "other_config": {}})
                    figures = measure(sim, compute, "tenant", args.ports, args.rounds)
                    report(f"openvswitch{' hybrid' if hybrid else ''}", figures, args.ports)
                    compute.close()
        with Simulator(base / "lb", users={USER: PASSWORD}, real_network=True,
                       network_backend="bridge", auth_delay=0.0) as sim:
            for hybrid in (False, True):
                compute = compute_for(sim, base, "linux_bridge",
                                      f"[network_linux_bridge]\nhybrid_plug = {hybrid}\n")
                figures = measure(sim, compute, "xenbr1", args.ports, args.rounds)
                report(f"linux_bridge{' hybrid' if hybrid else ''}", figures, args.ports)
                compute.close()
    print("Nova (Mitaka-Victoria XenAPIOpenVswitchDriver): ~24 dom0 calls per VIF")


if __name__ == "__main__":
    main()
