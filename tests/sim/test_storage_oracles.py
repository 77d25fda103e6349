"""qemu-img and libvhdi agree with every VHD the simulator writes.

A disk goes through writes, snapshots, clones, a copy, imports and
exports; after each step every file in the SR passes ``xhost_vhd.check``,
every VDI's chain read by libvhdi equals a byte model kept by the test,
every non-differencing file read by qemu-img does too, and exports (full
and differential, raw and VHD) read back right through both oracles.
Writes are 4 KiB aligned (a libvhdi quirk, see xhost.testing.diskoracles).
"""
from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest

from xhost.dom0 import xhost_vhd
from xhost.testing import diskoracles
from xhost.testing.simstorage import MiB, export, http, sr_path, vdi_record, wait_task

SIZE = 8 * MiB
BLOCK = 2 * MiB


@pytest.fixture(scope="module", autouse=True)
def oracles():
    diskoracles.require_oracles()


class World:
    def __init__(self, simulator, xapi_session, tmp_path: Path) -> None:
        self.sim = simulator
        self.x = xapi_session.xenapi
        self.session = xapi_session._session
        self.tmp = tmp_path
        self.sr = self.x.SR.get_by_name_label("Local storage")[0]
        self.dir = sr_path(simulator, self.x.SR.get_uuid(self.sr))
        self.models: dict[str, bytearray] = {}
        self.rnd = random.Random(20260901)

    def create(self, name: str) -> str:
        vdi = self.x.VDI.create(vdi_record(self.sr, SIZE, name))
        self.models[vdi] = bytearray(SIZE)
        return vdi

    def write(self, vdi: str, count: int) -> None:
        """Random 4 KiB-aligned writes through the chunked sparse encoding."""
        model = self.models[vdi]
        body = b""
        for _ in range(count):
            length = self.rnd.randrange(1, 160) * 4096
            offset = self.rnd.randrange(0, (SIZE - length) // 4096) * 4096
            data = self.rnd.randbytes(length)
            model[offset:offset + length] = data
            body += struct.pack("<QI", offset, length) + data
        body += struct.pack("<QI", 0, 0)
        task = self.x.task.create("w", "")
        reply = http(self.sim.url, "PUT", "/import_raw_vdi",
                     {"session_id": self.session, "vdi": vdi, "chunked": "", "task_id": task},
                     body=body)
        assert reply.status == 200 and wait_task(self.x, task)["status"] == "success"

    def snapshot(self, vdi: str, clone: bool = False) -> str:
        new = self.x.VDI.clone(vdi, {}) if clone else self.x.VDI.snapshot(vdi, {})
        self.models[new] = bytearray(self.models[vdi])
        return new

    def chain(self, vdi: str) -> list[Path]:
        leaf = self.dir / f"{self.x.VDI.get_location(vdi)}.vhd"
        with xhost_vhd.open_chain(leaf, search_dirs=[self.dir]) as vhd:
            return [Path(layer.path) for layer in vhd.chain()]

    def verify(self, *vdis: str) -> None:
        """Check every file of the SR, and the bytes of ``vdis`` (default: all)."""
        files = sorted(self.dir.glob("*.vhd"))
        for path in files:
            xhost_vhd.check(path, parents=True, search_dirs=[self.dir])
            info = xhost_vhd.info(path)
            if info["disk_type"] != "differencing":
                assert diskoracles.qemu_info(path)["virtual-size"] == info["virtual_size"]
        for vdi in vdis or list(self.models):
            model = self.models[vdi]
            chain = self.chain(vdi)
            with diskoracles.LibvhdiChain() as libvhdi:
                assert libvhdi.read(*chain) == model, f"libvhdi disagrees on {vdi}"
            if len(chain) == 1:
                assert diskoracles.qemu_raw(chain[0], self.tmp) == model
            # Every file of a chain on its own: the bytes its layers add up to.
            records = {self.x.VDI.get_location(v): v for v in self.x.SR.get_VDIs(self.sr)}
            for depth, layer in enumerate(chain):
                assert layer.name[:-4] in records, f"{layer.name} has no VDI record"
                expected_parent = chain[depth + 1].name[:-4] if depth + 1 < len(chain) else None
                sm = self.x.VDI.get_sm_config(records[layer.name[:-4]])
                assert sm.get("vhd-parent") == expected_parent

    def check_exports(self, vdi: str, base: str | None = None) -> None:
        model = bytes(self.models[vdi])
        raw = export(self.sim.url, self.session, vdi)
        assert raw == model
        image = self.tmp / "export.vhd"
        image.write_bytes(export(self.sim.url, self.session, vdi, fmt="vhd"))
        xhost_vhd.check(image)
        assert diskoracles.qemu_info(image)["virtual-size"] == SIZE
        assert diskoracles.qemu_raw(image, self.tmp) == model
        (self.tmp / "model.raw").write_bytes(model)
        assert diskoracles.qemu_identical(self.tmp / "model.raw", image)
        with diskoracles.LibvhdiChain() as libvhdi:
            assert libvhdi.read(image) == model
        if base is None:
            return
        old = bytes(self.models[base])
        delta = bytearray(SIZE)
        for offset in range(0, SIZE, BLOCK):
            if model[offset:offset + BLOCK] != old[offset:offset + BLOCK]:
                delta[offset:offset + BLOCK] = model[offset:offset + BLOCK]
        image.write_bytes(export(self.sim.url, self.session, vdi, fmt="vhd", base=base))
        xhost_vhd.check(image)
        assert diskoracles.qemu_raw(image, self.tmp) == delta
        assert export(self.sim.url, self.session, vdi, base=base) == delta
        # Applying the differential VHD over a copy of the base gives the disk.
        restored = self.x.VDI.copy(base, self.sr)
        task = self.x.task.create("apply", "")
        reply = http(self.sim.url, "PUT", "/import_raw_vdi",
                     {"session_id": self.session, "vdi": restored, "format": "vhd",
                      "task_id": task}, body=image.read_bytes())
        assert reply.status == 200 and wait_task(self.x, task)["status"] == "success"
        self.models[restored] = bytearray(model)
        assert export(self.sim.url, self.session, restored) == model
        self.verify(restored)


def test_chains_snapshots_clones_copies_and_exports(simulator, xapi_session, tmp_path):
    w = World(simulator, xapi_session, tmp_path)
    disk = w.create("disk")
    w.write(disk, 12)
    w.verify()
    w.check_exports(disk)
    snap1 = w.snapshot(disk)
    w.write(disk, 8)
    w.verify(disk, snap1)
    w.check_exports(disk, base=snap1)
    clone = w.snapshot(disk, clone=True)
    w.write(clone, 6)
    w.write(disk, 3)
    snap2 = w.snapshot(clone)
    w.write(clone, 4)
    w.verify(disk, clone, snap2)
    w.check_exports(clone, base=snap2)
    w.check_exports(clone, base=snap1)  # base is not the parent: blocks are compared
    copy = w.x.VDI.copy(clone, w.sr)
    w.models[copy] = bytearray(w.models[clone])
    w.verify(copy)
    # Garbage collection rewrites chains; the bytes stay.
    w.x.VDI.destroy(snap1)
    del w.models[snap1]
    w.x.SR.scan(w.sr)
    w.verify(disk, clone, snap2)
    w.x.VDI.destroy(snap2)
    del w.models[snap2]
    w.x.SR.scan(w.sr)
    w.verify(disk, clone)
    w.check_exports(clone)
