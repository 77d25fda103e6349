"""Network backends against the real thing: a simulator in real-network mode
whose dom0 is a network namespace (with a private Open vSwitch for
``openvswitch``), driven through the compute layer.

Storage and images come from minimal in-test plugins (explicitly selected),
so these tests exercise the network backends, not the storage ones.
"""
from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from xhost import exception, hookimpl, plugins, registry
from xhost.compute.api import Compute
from xhost.compute.connection import HostConnection
from xhost.objects import Disk, ImageMeta
from xhost.sim import Simulator
from xhost.testing.netns import NetNamespace
from xhost.testing.ovs import PrivateOVS
from xhost.testing.realfixtures import component_guard, require_root_or_skip
from xhost.testing.simfixtures import SIM_PASSWORD, SIM_USER
from xhost.xapi.client import XapiClient

TAG = "nova_instance_uuid"
PLUGIN_CALL = "host.call_plugin"


class BlankStorage:
    """Root disk: a blank VDI on the default SR."""

    @hookimpl
    def xhost_storage_choose_sr(self, ctx):
        pool = next(iter(ctx.xapi.call("pool.get_all_records").values()))
        return pool["default_SR"]

    @hookimpl
    def xhost_storage_create_root_disk(self, ctx, instance, sr_ref):
        vdi = ctx.xapi.call("VDI.create", {
            "name_label": instance.name, "SR": sr_ref, "virtual_size": str(2**30),
            "type": "system", "sharable": False, "read_only": False,
            "other_config": {TAG: instance.uuid, "nova_disk_type": "root"}})
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
            if rec["other_config"].get(TAG) == instance.uuid:
                ctx.xapi.call("VDI.destroy", ref)
        return True


class StaticImages:
    image = ImageMeta(id="img-1", name="tiny", status="active", disk_format="vhd",
                      container_format="ovf", properties={"os_type": "linux"})

    @hookimpl
    def xhost_image_service_show(self, image_id):
        from xhost.images import ImageNotFound

        if image_id != self.image.id:
            raise ImageNotFound(image=image_id, hint="")
        return self.image

    @hookimpl
    def xhost_image_service_list(self, filters):
        return [self.image] if filters.get("name", "tiny") == "tiny" else []


def make_compute(sim: Simulator, conf: Any, backend: str) -> Compute:
    """A Compute whose network backend is the installed plugin ``backend``
    (loaded through its entry point) and whose storage/images are in-test."""
    pm = plugins.new_plugin_manager()
    pm.register(BlankStorage(), name="storage_backend:blank")
    pm.register(StaticImages(), name="image_service:static")
    role = registry.ROLES_BY_KEY["network_backend"]
    pm.register(plugins.load_role_plugin(role, backend, conf), name=f"network_backend:{backend}")
    host = plugins.PluginHost(pm, conf, {"storage_backend": "blank", "image_service": "static",
                                         "network_backend": backend}, [])
    client = XapiClient(sim.url, SIM_USER, SIM_PASSWORD)
    return Compute(conf, HostConnection(client), host)


@pytest.fixture
def embedded_compute() -> Iterator[Callable[..., Compute]]:
    """Computes connected the way xhost's embedded simulator is (the
    connection knows the simulator), which the test still owns."""
    made: list[Compute] = []

    def make(sim: Simulator, conf: Any, backend: str) -> Compute:
        compute = make_compute(sim, conf, backend)
        compute.connection.simulator = sim
        made.append(compute)
        return compute

    yield make
    for compute in made:
        compute.connection.simulator = None  # the test's fixture stops it
        compute.close()


@dataclass
class Snapshot:
    """What exists on the host: compared before and after to find leftovers."""

    vms: set[str]
    vdis: set[str]
    vifs: set[str]
    networks: set[str]
    vlans: set[str]
    links: set[str]
    ovs: dict[str, list[str]] = field(default_factory=dict)
    journal: list[Any] = field(default_factory=list)

    def differences(self, other: Snapshot) -> dict[str, Any]:
        out = {}
        for name in ("vms", "vdis", "vifs", "networks", "vlans", "links"):
            a, b = getattr(self, name), getattr(other, name)
            if a != b:
                out[name] = {"added": sorted(b - a), "removed": sorted(a - b)}
        if self.ovs != other.ovs:
            out["ovs"] = {"before": self.ovs, "after": other.ovs}
        if other.journal:
            out["journal"] = other.journal
        return out


@dataclass
class NetworkBed:
    """A simulated host whose dom0 network is real, and how to look at it."""

    sim: Simulator
    ns: NetNamespace
    ovs: PrivateOVS | None
    make_conf: Callable[..., Any]
    tmp_path: Path
    computes: list[Compute] = field(default_factory=list)

    def compute(self, backend: str, conf_text: str = "") -> Compute:
        conf = self.make_conf(f"[compute]\nstate_dir = {self.tmp_path}/xhost-state\n"
                              + conf_text)
        c = make_compute(self.sim, conf, backend)
        self.computes.append(c)
        return c

    @property
    def x(self) -> Any:
        if not self.computes:
            self.compute("linux_bridge")
        return self.computes[0].xapi

    def call(self, method: str, *args: Any) -> Any:
        return self.x.call(method, *args)

    def counters(self, reset: bool = True) -> dict[str, int]:
        return self.sim.controls.read_counters(reset=reset)

    def snapshot(self, compute: Compute | None = None) -> Snapshot:
        recs = {cls: self.call(f"{cls}.get_all_records")
                for cls in ("VM", "VDI", "VIF", "network", "VLAN")}
        ovs: dict[str, list[str]] = {}
        if self.ovs is not None:
            ovs = {br: self.ovs.ports(br) for br in self.ovs.bridges()}
        return Snapshot(
            vms={r["uuid"] for r in recs["VM"].values() if not r["is_a_template"]},
            vdis={r["uuid"] for r in recs["VDI"].values()},
            vifs={r["uuid"] for r in recs["VIF"].values()},
            networks={r["uuid"] for r in recs["network"].values()},
            vlans={r["uuid"] for r in recs["VLAN"].values()},
            links=self.ns.link_names(), ovs=ovs,
            journal=(compute or self.computes[0]).journal.entries() if self.computes else [])

    def vm_of(self, server: Any) -> dict[str, Any]:
        return self.call("VM.get_record", server.vm_ref)

    def vif_name(self, server: Any, device: str = "0") -> str:
        return f"vif{self.vm_of(server)['domid']}.{device}"

    def ports_tag(self, server: Any) -> list[dict[str, Any]]:
        return json.loads(self.vm_of(server)["other_config"]["xhost_ports"])

    def plug_nics(self) -> None:
        """Bring every physical NIC up, as on a host whose NICs are configured
        (xapi otherwise brings a NIC's bridge up with the first VIF on it)."""
        for ref, rec in self.call("PIF.get_all_records").items():
            if rec["physical"] and not rec["currently_attached"]:
                self.call("PIF.plug", ref)

    def sweep(self, operation: Callable[[], Any], reset: Callable[[], Any],
              failure: type[Exception], compute: Compute) -> list[str]:
        """Fail the 1st, 2nd, 3rd... XAPI or dom0 call ``operation`` makes, one
        per attempt, until it makes no more calls; after every failed attempt
        nothing may be left (compared with before).  Returns the errors seen."""
        before = self.snapshot(compute)
        errors: list[str] = []
        for n in itertools.count(1):
            marker = f"injected failure #{n}"
            rule = self.sim.controls.add_fault("*", ["INTERNAL_ERROR", marker], nth=n)
            try:
                operation()
            except failure as exc:
                self.sim.controls.clear_faults()
                left = before.differences(self.snapshot(compute))
                assert not left, f"failing call #{n} left {left}; the error was: {exc}"
                assert marker in str(exc), f"call #{n}: the error does not say why: {exc}"
                errors.append(str(exc))
                continue
            except exception.XapiFailure as exc:
                # A call made after the operation completed (reading the result).
                assert marker in str(exc)
            finally:
                self.sim.controls.clear_faults()
            reset()
            if rule.fired == 0:
                return errors
            assert not before.differences(self.snapshot(compute))
        raise AssertionError("unreachable")

    def ovs_compute(self, hybrid: bool = False, extra: str = "") -> Compute:
        """A Compute with the openvswitch backend on this bed's Open vSwitch."""
        assert self.ovs is not None
        return self.compute("openvswitch", ovs_conf(self.ovs, hybrid, extra))

    def close(self) -> None:
        for c in self.computes:
            c.close()


@pytest.fixture
def ovs_bed(tmp_path: Path, make_conf) -> Iterator[NetworkBed]:
    """Open vSwitch in a namespace, Neutron's br-int on it, and a simulator
    whose dom0 is that namespace and OVSDB; br-int is a XAPI network too."""
    require_root_or_skip("real-network mode")
    with component_guard():
        ovs = PrivateOVS().start()
    sim = None
    bed = None
    try:
        # br-int belongs to the Neutron agent: made on Open vSwitch, unmanaged in XAPI.
        ovs.vsctl("add-br", "br-int", "--", "set", "Bridge", "br-int", "datapath_type=netdev")
        sim = Simulator(tmp_path / "sim", users={SIM_USER: SIM_PASSWORD}, real_network=True,
                        network_backend="openvswitch", netns=ovs.netns.name,
                        ovsdb=ovs.unix_connection, auth_delay=0.0).start()
        bed = NetworkBed(sim, ovs.netns, ovs, make_conf, tmp_path)
        bed.ovs_compute()
        bed.call("network.create", {"name_label": "integration", "name_description": "",
                                    "MTU": "1500", "bridge": "br-int", "managed": False,
                                    "other_config": {}})
        bed.plug_nics()
        yield bed
    finally:
        if bed is not None:
            bed.close()
        if sim is not None:
            sim.stop()
        from xhost.backends.network_openvswitch import ovsdb

        ovsdb.forget(ovs.tcp_connection)
        ovs.stop()


def ovs_conf(ovs: PrivateOVS, hybrid: bool = False, extra: str = "") -> str:
    return (f"[xenserver]\novs_integration_bridge = br-int\n"
            f"[network_openvswitch]\novsdb_connection = {ovs.tcp_connection}\n"
            f"vif_timeout = 10\nhybrid_plug = {hybrid}\n{extra}")


@pytest.fixture
def bridge_bed(tmp_path: Path, make_conf) -> Iterator[NetworkBed]:
    """A simulator with Linux bridges (network backend 'bridge') in a private namespace."""
    require_root_or_skip("real-network mode")
    sim = Simulator(tmp_path / "sim", users={SIM_USER: SIM_PASSWORD}, real_network=True,
                    network_backend="bridge", auth_delay=0.0)
    with component_guard():
        sim.start()
    bed = NetworkBed(sim, NetNamespace(sim.network.namespace()), None, make_conf, tmp_path)
    try:
        bed.plug_nics()
        yield bed
    finally:
        bed.close()
        sim.stop()
