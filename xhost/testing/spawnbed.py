"""A realistic spawn bed: every built-in plugin (the local image service,
an image handler, the ``sr`` storage backend, a network backend) on a
simulator -- in real-network mode its dom0 a network namespace with a
private Open vSwitch (``openvswitch``) or Linux bridges (``linux_bridge``)
-- with a registered image, for the rollback sweep, the crash tests and the
spawn benchmark."""
from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xhost import conf as xconf
from xhost import diskimage, imagecache, plugins
from xhost.compute.api import Compute
from xhost.compute.connection import HostConnection
from xhost.context import Context
from xhost.objects import ImageMeta
from xhost.sim import Simulator
from xhost.testing import leftovers
from xhost.testing.simfixtures import SIM_PASSWORD, SIM_USER
from xhost.xapi.client import XapiClient

MiB = 1024 * 1024
INTEGRATION_NETWORK = "integration"
BRIDGE_NETWORK = "Pool-wide network associated with eth1"
HANDLERS = ("direct_vhd", "vdi_local_dev", "vdi_remote_stream")
BACKENDS = ("openvswitch", "linux_bridge")


@dataclass
class SpawnBed:
    """One simulator, one Compute with the chosen plugins, one image."""

    sim: Simulator
    compute: Compute
    image: ImageMeta
    network: str
    handler: str
    backend: str
    tmp_path: Path
    spawn_options: dict[str, Any] = field(default_factory=dict)
    flavor: str = "m1.tiny"
    #: The configuration of ``compute`` (without the connection: embedded).
    conf_text: str = ""

    def conf_file(self, name: str = "xhost.conf") -> Path:
        """``conf_text`` connected to the simulator over HTTP: what another
        xhost process (the CLI) uses to reach this host."""
        path = self.tmp_path / name
        text = self.conf_text.replace(
            "[xenserver]\n", f"[xenserver]\nconnection_url = {self.sim.url}\n"
                             f"connection_username = {SIM_USER}\n"
                             f"connection_password = {SIM_PASSWORD}\n", 1)
        if self.backend == "openvswitch" and self.sim.network.real:
            # In-process, the simulator tells where its dom0's switch is.
            text = text.replace("[network_openvswitch]\n", "[network_openvswitch]\n"
                                f"ovsdb_connection = {self.sim.network.ovsdb_connection()}\n")
        path.write_text(text)
        return path

    @property
    def xapi(self) -> XapiClient:
        return self.compute.xapi

    def ctx(self) -> Context:
        return self.compute.context()

    def capture(self) -> leftovers.HostState:
        # A scan garbage-collects the SR (and would bring orphan VHD files
        # into view as VDIs); the transfer server stops once idle.
        for sr in self._srs():
            self.xapi.call("SR.scan", sr)
        leftovers.settle(lambda: not leftovers.transfer_threads())
        return leftovers.capture(self.sim, self.xapi, journal=self.compute.journal)

    def _srs(self) -> list[str]:
        pool = next(iter(self.xapi.call("pool.get_all_records").values()))
        return [pool["default_SR"]]

    def spawn(self, name: str) -> Any:
        return self.compute.create_server(name, self.image.id, self.flavor, [self.network],
                                          **self.spawn_options)

    def drop_cache(self) -> None:
        """Remove the cached image (the next spawn is a cache miss)."""
        imagecache.clean(self.ctx(), include_used=True)

    def counters(self) -> dict[str, int]:
        return self.sim.controls.read_counters(reset=True)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.compute.close()  # stops the simulator with the connection
        with contextlib.suppress(Exception):
            self.sim.stop()


def _vsctl(connection: str, *args: str) -> None:
    subprocess.run(["ovs-vsctl", f"--db={connection}", "--timeout=10", *args], check=True,
                   capture_output=True)


def _loader(workdir: Path) -> Callable[[str], Any]:
    def load(text: str) -> Any:
        path = workdir / "xhost-bed.conf"
        path.write_text(text)
        return xconf.load([str(path)])
    return load


def build(workdir: Path, handler: str = "direct_vhd", backend: str = "openvswitch",
          extras: bool = False, real_network: bool = True,
          load_conf: Callable[[str], Any] | None = None) -> SpawnBed:
    """A :class:`SpawnBed` in ``workdir``, its simulator started (stop it
    with :meth:`SpawnBed.close`).

    ``extras``: an m1.tiny-like flavor with an ephemeral disk and swap, a
    config drive with user data, an auto-disk-config image and Nova's hybrid
    plumbing (a dom0 call to build it, an interim network, a ``qbr``
    bridge and veth pairs). ``real_network`` needs root (a network namespace
    as dom0, a private Open vSwitch); without it the simulator's switch is
    its own model. ``load_conf`` parses the configuration text (default:
    written to ``workdir/xhost-bed.conf`` and loaded).
    """
    sim_backend = "openvswitch" if backend == "openvswitch" else "bridge"
    sim = Simulator(workdir / "sim", users={SIM_USER: SIM_PASSWORD}, real_network=real_network,
                    network_backend=sim_backend, auth_delay=0.0)
    sim.start()
    compute = None
    try:
        client = XapiClient(sim.url, SIM_USER, SIM_PASSWORD)
        network = BRIDGE_NETWORK
        text = (f"[compute]\nstate_dir = {workdir}/state\n"
                f"flavor = sweep:1:256:1:1:16\n"
                f"[image_local]\npath = {workdir}/images\ntransfer_idle_seconds = 0\n"
                f"[xenserver]\nimage_handler = {handler}\nnetwork_backend = {backend}\n")
        if backend == "openvswitch":
            # Neutron's integration bridge: made on Open vSwitch, unmanaged in XAPI.
            if real_network:
                _vsctl(sim.network.ovsdb_connection(), "add-br", "br-int", "--", "set",
                       "Bridge", "br-int", "datapath_type=netdev")
            client.call("network.create", {
                "name_label": INTEGRATION_NETWORK, "name_description": "", "MTU": "1500",
                "bridge": "br-int", "managed": False, "other_config": {}})
            network = INTEGRATION_NETWORK
            text += (f"ovs_integration_bridge = br-int\n[network_openvswitch]\n"
                     f"vif_timeout = 10\nhybrid_plug = {extras}\n")
        else:
            text += f"[network_linux_bridge]\nhybrid_plug = {extras}\n"
        conf = (load_conf or _loader(workdir))(text)
        compute = Compute(conf, HostConnection(client, sim), plugins.load(conf))
        properties = {"os_type": "linux"}
        if extras:
            properties["auto_disk_config"] = "true"
        path = diskimage.build_vhd_tarball(workdir / "image.tgz", 16 * MiB,
                                           {"etc/hostname": b"sweep\n"})
        ctx = compute.context()
        image = compute.plugins.image_service_create(ctx, "sweep-image", "vhd", "ovf",
                                                     properties)
        with open(path, "rb") as data:
            image = compute.plugins.image_service_upload(ctx, image.id, data,
                                                         path.stat().st_size)
    except BaseException:
        if compute is not None:
            compute.close()
        sim.stop()
        raise
    bed = SpawnBed(sim, compute, image, network, handler, backend, workdir,
                   conf_text=text)
    if extras:
        bed.flavor = "sweep"
        bed.spawn_options = {"config_drive": True, "user_data": b"#cloud-config\n"}
    return bed
