"""The ``sr`` storage backend against the simulator.

The backend is loaded through its entry point into a plugin host; the image
cache (``xhost.imagecache``, written separately) is replaced by a double
that keeps its documented contract: ``image_disks`` returns the instance's
root disk, a clone of the cached ``Glance Image <id>`` VDI tagged
``nova_instance_uuid``/``nova_disk_type=root`` and registered in
``ctx.undo``; ``remove_instance_files`` removes the dom0 kernel files of an
instance. Disks are checked on the bytes exported through
``/export_raw_vdi`` with independent tools (sfdisk, blkid, dumpe2fs,
debugfs, e2fsck, isoinfo).
"""
from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import types
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from xhost import diskimage, hookimpl, plugins, registry
from xhost.backends.storage_sr.configdrive import write_iso
from xhost.compute.api import Compute
from xhost.compute.connection import HostConnection
from xhost.compute.vmrecord import VDI_TAG_INSTANCE, VDI_TAG_KIND
from xhost.context import Context
from xhost.objects import Disk, Flavor, ImageMeta, Instance
from xhost.testing.simfixtures import SIM_PASSWORD, SIM_USER
from xhost.xapi import datapath
from xhost.xapi.client import XapiClient

MiB = 1024 ** 2
GiB = 1024 ** 3
IMAGE_SIZE = 64 * MiB
PART = diskimage.PARTITION_START


def run(argv: list[str], **kwargs: Any) -> str:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, check=True,
                          **kwargs).stdout


class ImageCacheDouble(types.ModuleType):
    """Stands for ``xhost.imagecache`` (see the module docstring)."""

    def __init__(self, raw_images: dict[str, Path]) -> None:
        super().__init__("xhost.imagecache")
        self.raw_images = raw_images
        #: image id -> virtual size of its cached VDI, when larger than the raw file.
        self.virtual_sizes = {"big": 1536 * MiB}
        self.file_calls: list[tuple[str, str | None]] = []

    def _cached(self, ctx: Context, sr_ref: str, image: ImageMeta) -> str:
        label = f"Glance Image {image.id}"
        found = ctx.xapi.call("VDI.get_all_records_where",
                              f'field "name__label"="{label}" and field "SR"="{sr_ref}"')
        if found:
            return next(iter(found))
        raw = self.raw_images[image.id]
        size = raw.stat().st_size
        vdi = ctx.xapi.call("VDI.create", {
            "name_label": label, "name_description": "root", "SR": sr_ref,
            "virtual_size": str(self.virtual_sizes.get(image.id, size)), "type": "user",
            "sharable": False, "read_only": False, "other_config": {}, "sm_config": {},
            "xenstore_data": {}, "tags": []})
        try:
            with open(raw, "rb") as f:
                datapath.import_raw_vdi(ctx.xapi, vdi, f, size)
        except BaseException:
            ctx.xapi.call("VDI.destroy", vdi)
            raise
        ctx.xapi.call("VDI.set_other_config", vdi, {
            "image-id": image.id, "cached-time": datetime.datetime.now().isoformat()})
        return vdi

    def image_disks(self, ctx: Context, instance: Instance, sr_ref: str,
                    image: ImageMeta) -> list[Disk]:
        if image.disk_format == "iso":  # never cached: a disk of the instance
            raw = self.raw_images[image.id]
            vdi = ctx.xapi.call("VDI.create", {
                "name_label": image.name, "SR": sr_ref, "virtual_size": str(raw.stat().st_size),
                "type": "user", "sharable": False, "read_only": False,
                "other_config": {VDI_TAG_INSTANCE: instance.uuid, VDI_TAG_KIND: "iso"}})
            ctx.undo.push("destroy ISO disk", _destroy_quietly, ctx, vdi)
            with open(raw, "rb") as f:
                datapath.import_raw_vdi(ctx.xapi, vdi, f, raw.stat().st_size)
            return [Disk(vdi_ref=vdi, vdi_uuid=ctx.xapi.call("VDI.get_uuid", vdi), kind="iso")]
        cached = self._cached(ctx, sr_ref, image)
        clone = ctx.xapi.call("VDI.clone", cached, {})
        ctx.undo.push("destroy root clone", _destroy_quietly, ctx, clone)
        ctx.xapi.call("VDI.set_other_config", clone, {VDI_TAG_INSTANCE: instance.uuid,
                                                       VDI_TAG_KIND: "root"})
        ctx.xapi.call("VDI.set_name_label", clone, instance.name)
        return [Disk(vdi_ref=clone, vdi_uuid=ctx.xapi.call("VDI.get_uuid", clone), kind="root",
                     userdevice="0", bootable=True)]

    def remove_instance_files(self, ctx: Context, instance: Instance) -> list[str]:
        self.file_calls.append((instance.uuid, instance.vm_ref))
        return []


def _destroy_quietly(ctx: Context, vdi: str) -> None:
    from xhost import exception

    try:
        ctx.xapi.call("VDI.destroy", vdi)
    except exception.HandleInvalid:
        pass


class StaticImages:
    """Image service answering for the test images."""

    def __init__(self, images: dict[str, ImageMeta]) -> None:
        self.images = images

    @hookimpl
    def xhost_image_service_show(self, image_id):
        from xhost.images import ImageNotFound

        if image_id not in self.images:
            raise ImageNotFound(image=image_id, hint="")
        return self.images[image_id]

    @hookimpl
    def xhost_image_service_list(self, filters):
        return [i for i in self.images.values() if i.name == filters.get("name", i.name)]


class NoNetwork:
    @hookimpl
    def xhost_network_cleanup(self):
        return True


def _image(image_id: str, **properties: Any) -> ImageMeta:
    return ImageMeta(id=image_id, name=image_id, status="active", disk_format="vhd",
                     container_format="ovf", properties={"os_type": "linux", **properties})


@pytest.fixture(scope="session")
def raw_images(tmp_path_factory) -> dict[str, Path]:
    """``plain``: one ext4 partition holding /etc/hostname; ``twoparts``: two
    partitions; ``ext2``: one ext2 partition."""
    root = tmp_path_factory.mktemp("images")
    plain = diskimage.build_raw(root / "plain.raw", IMAGE_SIZE, {"etc/hostname": b"image-host\n"})
    two = root / "twoparts.raw"
    two.write_bytes(b"")
    os.truncate(two, IMAGE_SIZE)
    run(["sfdisk", "-q", "--no-reread", "--no-tell-kernel", two],
        input="start=2048, size=40960, type=83\nstart=43008, type=83\n")
    run(["mke2fs", "-q", "-F", "-t", "ext4", "-E", f"offset={PART}", two, "20480k"])
    ext2 = root / "ext2.raw"
    ext2.write_bytes(b"")
    os.truncate(ext2, IMAGE_SIZE)
    run(["sfdisk", "-q", "--no-reread", "--no-tell-kernel", ext2], input="start=2048, type=83\n")
    run(["mke2fs", "-q", "-F", "-t", "ext2", "-E", f"offset={PART}", ext2,
         f"{(IMAGE_SIZE - PART) // 1024}k"])
    iso = root / "installer.iso"
    with open(iso, "wb") as out:
        write_iso({"README.txt": b"an installer\n"}, out)
    return {"plain": plain, "adc": plain, "big": plain, "twoparts": two, "ext2": ext2,
            "installer": iso}


IMAGES = {
    "plain": _image("plain"),
    "adc": _image("adc", hw_auto_disk_config="true"),
    "twoparts": _image("twoparts", auto_disk_config="True"),
    "ext2": _image("ext2", auto_disk_config="true"),
    "big": _image("big"),
    "installer": ImageMeta(id="installer", name="installer", status="active", disk_format="iso",
                           container_format="bare", properties={"hw_vm_mode": "hvm"}),
}


@dataclass
class Leftovers:
    vdis: set[str]
    vbds: set[str]
    dom0_devices: list[str]
    loops: list[str]
    tasks: list[str]


@dataclass
class StorageEnv:
    sim: Any
    conf: Any
    xapi: XapiClient
    connection: HostConnection
    plugins: plugins.PluginHost
    imagecache: ImageCacheDouble
    state_dir: Path
    extra_conf: str = ""
    _computes: list[Compute] = field(default_factory=list)

    @property
    def backend(self):
        return self.plugins.plugin("storage_backend")

    def ctx(self) -> Context:
        ctx = Context(conf=self.conf, plugins=self.plugins, xapi=self.xapi,
                      host_ref=self.connection.host_ref)
        ctx.extra["dom0"] = self.connection.dom0
        return ctx

    def instance(self, image: str = "plain", name: str = "vm1", root_gb: int = 1,
                 ephemeral_gb: int = 0, swap_mb: int = 0, **kwargs: Any) -> Instance:
        meta = IMAGES[image]
        props = meta.properties
        auto = str(props.get("hw_auto_disk_config") or props.get("auto_disk_config") or "")
        kwargs.setdefault("auto_disk_config", auto.lower() == "true")
        return Instance(uuid=str(uuid.uuid4()), name=name,
                        flavor=Flavor("test", 1, 256, root_gb, ephemeral_gb, swap_mb),
                        image=meta, os_type="linux", **kwargs)

    def compute(self) -> Compute:
        c = Compute(self.conf, self.connection, self.plugins)
        self._computes.append(c)
        return c

    def sr(self, name: str) -> str:
        return self.xapi.call("SR.get_by_name_label", name)[0]

    def vdi(self, uuid_: str) -> dict[str, Any]:
        return self.xapi.call("VDI.get_record", self.xapi.call("VDI.get_by_uuid", uuid_))

    def leftovers(self) -> Leftovers:
        vdis = {rec["uuid"] for rec in self.xapi.call("VDI.get_all_records").values()
                if rec["managed"] and "image-id" not in rec["other_config"]}
        dev = Path(self.sim.dom0.root) / "dev"
        # Plugged disks are files there (LVM volumes live in VG_* directories).
        devices = sorted(p.name for p in dev.iterdir() if p.is_file()) if dev.exists() else []
        loops = [line for line in run(["losetup", "-a"]).splitlines()
                 if str(self.state_dir) in line]
        tasks = [rec["name_label"] for rec in self.xapi.call("task.get_all_records").values()
                 if rec["name_label"].startswith("xhost")]
        return Leftovers(vdis, set(self.xapi.call("VBD.get_all")), devices, loops, tasks)

    def export(self, vdi_ref: str, path: Path) -> Path:
        """The VDI's bytes, exported through /export_raw_vdi (as a VHD, which
        carries only the written blocks) and made a sparse raw file by
        qemu-img."""
        vhd = path.with_suffix(".vhd")
        with open(vhd, "wb") as out, datapath.export_raw_vdi(self.xapi, vdi_ref, "vhd") as stream:
            for chunk in stream:
                out.write(chunk)
        run(["qemu-img", "convert", "-f", "vpc", "-O", "raw", vhd, path])
        vhd.unlink()
        assert path.stat().st_size == int(self.xapi.call("VDI.get_virtual_size", vdi_ref))
        return path


def sfdisk_table(path: Path) -> dict[str, Any]:
    return json.loads(run(["sfdisk", "--json", path]))["partitiontable"]


def blkid(path: Path, offset: int) -> dict[str, str]:
    out = subprocess.run(["blkid", "-p", "-O", str(offset), "-o", "export", str(path)],
                         capture_output=True, text=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def dumpe2fs(path: Path, offset: int) -> dict[str, str]:
    fields = {}
    for line in run(["dumpe2fs", "-h", f"{path}?offset={offset}"]).splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


@pytest.fixture
def make_env(simulator, make_conf, tmp_path, raw_images, monkeypatch):
    """Build a :class:`StorageEnv` with extra configuration text."""
    made: list[StorageEnv] = []
    double = ImageCacheDouble(raw_images)
    monkeypatch.setitem(sys.modules, "xhost.imagecache", double)

    def make(extra: str = "", image_handler: Any = None) -> StorageEnv:
        # The SR is chosen afresh every time: tests change SRs between choices.
        conf = make_conf(f"[compute]\nstate_dir = {tmp_path}/xhost-state\n"
                         f"[storage_sr]\nsr_choice_cache_seconds = 0\n{extra}")
        storage = plugins.load_role_plugin(registry.ROLES_BY_KEY["storage_backend"], "sr", conf)
        pm = plugins.new_plugin_manager()
        pm.register(storage, name="storage_backend:sr")
        pm.register(StaticImages(IMAGES), name="image_service:static")
        pm.register(NoNetwork(), name="network_backend:none")
        selected = {"storage_backend": "sr", "image_service": "static",
                    "network_backend": "none"}
        if image_handler is not None:
            pm.register(image_handler, name="image_handler:direct_vhd")
            selected["image_handler"] = "direct_vhd"
        host = plugins.PluginHost(pm, conf, selected, [])
        client = XapiClient(simulator.url, SIM_USER, SIM_PASSWORD)
        env = StorageEnv(simulator, conf, client, HostConnection(client), host, double,
                         Path(simulator.dom0.root).parent, extra)
        made.append(env)
        return env

    yield make
    for env in made:
        env.xapi.close()


@pytest.fixture
def env(make_env) -> StorageEnv:
    return make_env()


@pytest.fixture
def tools() -> types.SimpleNamespace:
    """Independent disk tools and sizes, for the tests' checks."""
    return types.SimpleNamespace(run=run, sfdisk_table=sfdisk_table, blkid=blkid,
                                 dumpe2fs=dumpe2fs, MiB=MiB, GiB=GiB, IMAGE_SIZE=IMAGE_SIZE,
                                 PART=PART)
