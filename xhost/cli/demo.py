"""``xhost demo``: boot a real disk image on the embedded simulated host, show
it, and clean up -- with zero configuration."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import textwrap
import time

from cliff import command

from xhost import conf as xconf
from xhost import diskimage
from xhost.cli import progress
from xhost.compute.api import Compute
from xhost.compute.connection import real_network_possible
from xhost.context import Context

MiB = 1024 * 1024
NETWORK = "Pool-wide network associated with eth0"


def _table(rows: list[tuple], headers: tuple[str, ...]) -> str:
    cells = [tuple(str(c) for c in headers)] + [tuple(str(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    out = [line, "| " + " | ".join(h.ljust(w) for h, w in zip(cells[0], widths)) + " |", line]
    out += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in cells[1:]]
    out.append(line)
    return "\n".join(out)


class Demo(command.Command):
    """Build a small real disk image (partition table and ext4), register it,
    boot a server from it on the embedded simulated host with a progress bar,
    show the server, its disks and ports, and clean everything up.

    Uses its own temporary state (simulated host, images, journal): it does
    not read or change your configuration or servers.
    """

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("--real-network", choices=("auto", "on", "off"), default="auto",
                            help="Give the simulated dom0 real bridges and an Open vSwitch in a "
                                 "network namespace (root only). Default: when possible.")
        parser.add_argument("--keep", metavar="DIR",
                            help="Keep the demo's state in DIR instead of a temporary directory "
                                 "(and do not delete the server).")
        parser.add_argument("--image-size", type=int, default=64, metavar="MiB",
                            help="Size of the demo image (default 64 MiB).")
        return parser

    def say(self, text: str) -> None:
        print(text, file=self.app.stdout, flush=True)

    def take_action(self, args):
        started = time.monotonic()
        real = args.real_network == "on" or (args.real_network == "auto"
                                             and real_network_possible())
        workdir = args.keep or tempfile.mkdtemp(prefix="xhost-demo-")
        os.makedirs(workdir, exist_ok=True)
        try:
            self._run(workdir, real, args.image_size, keep=bool(args.keep))
        finally:
            if not args.keep:
                shutil.rmtree(workdir, ignore_errors=True)
        self.say(f"\ndemo finished in {time.monotonic() - started:.1f} s")

    def _run(self, workdir: str, real: bool, size_mib: int, keep: bool) -> None:
        conf_path = os.path.join(workdir, "xhost.conf")
        with open(conf_path, "w") as f:
            f.write(textwrap.dedent(f"""\
                # written by `xhost demo`: xhost's defaults, with private state
                [simulator]
                state_dir = {workdir}/sim
                real_network = {"on" if real else "off"}
                [compute]
                state_dir = {workdir}/state
                [image_local]
                path = {workdir}/images
            """))
        conf = xconf.load([conf_path])

        self.say(f"[1/6] building a {size_mib} MiB disk image: MBR partition table, ext4 "
                 f"(real sfdisk and mkfs.ext4), packed as a XenServer VHD tarball")
        image_file = os.path.join(workdir, "demo-image.tgz")
        diskimage.build_vhd_tarball(image_file, size_mib * MiB, {
            "etc/hostname": b"xhost-demo\n",
            "etc/motd": b"Booted by xhost from a real ext4 image.\n"})

        self.say("[2/6] starting the embedded simulated XCP-ng host"
                 + (" with a real dom0 network (namespace + Open vSwitch)" if real else ""))
        compute = Compute.open(conf, notice=lambda m: self.say("      " + m))
        try:
            ctx = Context(conf=conf, plugins=compute.plugins)
            self.say("[3/6] registering the image with the local image service")
            size = os.path.getsize(image_file)
            image = compute.plugins.image_service_create(
                ctx, "xhost-demo", "vhd", "ovf", {"os_type": "linux", "auto_disk_config": "true"})
            with open(image_file, "rb") as data:
                chunks = progress.track(iter(lambda: data.read(MiB), b""), "      upload", size,
                                        stream=self.app.stderr)
                image = compute.plugins.image_service_upload(ctx, image.id, chunks, size)
            self.say(f"      image {image.id}: {image.size} bytes, md5 {image.checksum}")

            self.say("[4/6] booting server demo-1 (m1.tiny, one port on the management "
                     "network)")
            compute.progress = progress.steps("      boot", 100, stream=self.app.stderr)
            server = compute.create_server("demo-1", image.id, "m1.tiny", [NETWORK])
            compute.progress = None

            self.say("[5/6] the server")
            self.say(_table([(server.id, server.name, server.status, server.power_state,
                              server.image, server.flavor)],
                            ("id", "name", "status", "power_state", "image", "flavor")))
            self.say("      its disks")
            self.say(_table([(d.get("userdevice"), d.get("device"), d.get("kind"),
                              d.get("type"), d.get("mode"), d.get("size", ""), d.get("vdi", ""))
                             for d in server.disks],
                            ("userdevice", "device", "kind", "type", "mode", "bytes", "vdi")))
            self.say("      its ports")
            self.say(_table([(p["id"], p["mac"], p["network"], p.get("device", ""))
                             for p in server.ports], ("port", "mac", "network", "device")))
            if real and compute.connection.simulator is not None:
                self._show_ovs(compute, server)
            if keep:
                self.say(f"[6/6] keeping everything in {os.path.dirname(conf_path)} (--keep)")
                return
            self.say("[6/6] deleting the server and the image")
            compute.delete_server("demo-1")
            compute.plugins.image_service_delete(ctx, image.id)
            left = [s.name for s in compute.list_servers()]
            self.say("      nothing left" if not left else f"      left over: {left}")
        finally:
            compute.close()

    def _show_ovs(self, compute: Compute, server) -> None:
        import subprocess

        sim = compute.connection.simulator
        ovsdb = sim.network.ovsdb_connection()
        if not ovsdb:
            return
        with contextlib.suppress(Exception):
            out = subprocess.run(
                ["ovs-vsctl", f"--db={ovsdb}", "--format=list", "--columns=name,external_ids",
                 "find", "Interface", f'external_ids:iface-id="{server.ports[0]["id"]}"'],
                capture_output=True, text=True, timeout=10, check=True).stdout
            self.say("      its Open vSwitch port in the simulated dom0")
            self.say(textwrap.indent(out.rstrip(), "      "))
