"""The VHD library against independent implementations.

Oracles: ``qemu-img``/``qemu-io`` (apt ``qemu-utils``; always ``-f vpc``;
qemu ignores differencing parents) and libvhdi (PyPI ``libvhdi-python``,
``import pyvhdi``; reads differencing chains through ``set_parent``).
Both are required: a missing oracle fails the tests, it does not skip them.
"""
from __future__ import annotations

import importlib.util
import itertools
import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import pyvhdi
except ImportError:  # reported by the libvhdi fixture
    pyvhdi = None

ROOT = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024


def _load_vhd():
    path = ROOT / "dom0" / "xhost_vhd.py"
    module = sys.modules.get("xhost_vhd")
    if module is not None and Path(module.__file__).resolve() == path:
        return module
    spec = importlib.util.spec_from_file_location("xhost_vhd", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["xhost_vhd"] = module
    spec.loader.exec_module(module)
    return module


vhd = _load_vhd()


@pytest.fixture(scope="session", autouse=True)
def oracles():
    missing = [tool for tool in ("qemu-img", "qemu-io") if not shutil.which(tool)]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: apt-get install qemu-utils")
    if pyvhdi is None:
        pytest.fail("libvhdi is missing: pip install libvhdi-python")


@pytest.fixture
def rnd(request):
    return random.Random(request.node.nodeid)


def run(*argv: str) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{argv}: {result.stderr or result.stdout}"
    return result.stdout


def qemu_info(path: Path) -> dict:
    return json.loads(run("qemu-img", "info", "--output=json", "-f", "vpc", str(path)))


def qemu_bytes(path: Path, tmp_path: Path) -> bytes:
    out = tmp_path / f"{path.name}.qemu.raw"
    run("qemu-img", "convert", "-f", "vpc", "-O", "raw", str(path), str(out))
    data = out.read_bytes()
    out.unlink()
    return data


def qemu_identical(raw: Path, image: Path) -> bool:
    result = subprocess.run(
        ["qemu-img", "compare", "-f", "raw", "-F", "vpc", str(raw), str(image)],
        capture_output=True, text=True, check=False)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode == 0 and "Images are identical" in result.stdout


class Libvhdi:
    """Open files with libvhdi, linking parents like a chain reader.

    libvhdi (20260901) has three quirks the tests work around:

    * ``libvhdi_block_descriptor_read_sector_bitmap_data`` takes a bitmap
      bit as ``byte >> (7 - bit)`` without ``& 1``, so after a set bit the
      rest of that byte counts as set: a differencing layer whose writes
      end inside a bitmap byte (not 4 KiB aligned) reads zeros instead of
      the parent there.  Layers read through libvhdi get 4 KiB-aligned
      writes; unaligned differencing writes are checked through coalesce.
    * It builds sector ranges over the whole padded 512-byte bitmap, past
      the end of blocks smaller than 2 MiB, so a read crossing such a block
      boundary can return another block's bytes.  Reads go in aligned
      64 KiB pieces, which never cross a block.
    * It takes the footer's "original size" (offset 40) as the media size,
      where blktap and qemu use "current size" (offset 48), so it does not
      see a resize.
    """

    PIECE = 64 * 1024

    def __init__(self):
        self.handles = []

    def open(self, *paths: Path):
        """``paths`` leaf first; returns the leaf handle."""
        handles = []
        for path in paths:
            handle = pyvhdi.file()
            handle.open(str(path))
            handles.append(handle)
        for child, parent in itertools.pairwise(handles):
            child.set_parent(parent)
        self.handles.extend(handles)
        return handles[0]

    def read(self, *paths: Path) -> bytes:
        leaf = self.open(*paths)
        size = leaf.get_media_size()
        return b"".join(leaf.read_buffer_at_offset(min(self.PIECE, size - offset), offset)
                        for offset in range(0, size, self.PIECE))

    def close(self):
        for handle in reversed(self.handles):
            handle.close()


@pytest.fixture
def libvhdi():
    reader = Libvhdi()
    yield reader
    reader.close()


def random_writes(rnd, disk, model: bytearray, count: int, max_length: int = 300_000,
                  align: int = 1):
    for _ in range(count):
        length = rnd.randrange(1, max_length // align + 1) * align
        offset = rnd.randrange(0, (len(model) - length) // align + 1) * align
        data = rnd.randbytes(length)
        disk.write(offset, data)
        model[offset:offset + length] = data


def test_oracles_see_differences(tmp_path, libvhdi):
    """The comparisons below can fail: one changed byte is noticed."""
    image = tmp_path / "d.vhd"
    vhd.create_dynamic(image, 2 * MIB)
    with vhd.open_vhd(image, writable=True) as disk:
        disk.write(4096, b"\x01")
    raw = tmp_path / "d.raw"
    raw.write_bytes(bytes(2 * MIB))
    assert not qemu_identical(raw, image)
    assert libvhdi.read(image) != raw.read_bytes()
    assert qemu_bytes(image, tmp_path) != raw.read_bytes()


@pytest.mark.parametrize("chs_round", [False, True])
@pytest.mark.parametrize("block_size", [2 * MIB, 512 * 1024])
def test_library_dynamic_disks_read_by_qemu_and_libvhdi(tmp_path, rnd, libvhdi,
                                                        chs_round, block_size):
    image = tmp_path / "lib.vhd"
    vhd.create_dynamic(image, 7 * MIB + 512, block_size=block_size, chs_round=chs_round)
    with vhd.open_vhd(image, writable=True) as disk:
        model = bytearray(disk.virtual_size)
        random_writes(rnd, disk, model, 30)
    info = qemu_info(image)
    assert info["format"] == "vpc"
    assert info["virtual-size"] == len(model)
    assert info["cluster-size"] == block_size
    assert qemu_bytes(image, tmp_path) == model
    raw = tmp_path / "model.raw"
    raw.write_bytes(model)
    assert qemu_identical(raw, image)
    assert libvhdi.open(image).get_media_size() == len(model)
    assert libvhdi.read(image) == model


@pytest.mark.parametrize("chs_round", [False, True])
def test_library_fixed_disks_read_by_qemu_and_libvhdi(tmp_path, rnd, libvhdi, chs_round):
    image = tmp_path / "fixed.vhd"
    vhd.create_fixed(image, 5 * MIB, chs_round=chs_round)
    with vhd.open_vhd(image, writable=True) as disk:
        model = bytearray(disk.virtual_size)
        random_writes(rnd, disk, model, 20)
    assert qemu_info(image)["virtual-size"] == len(model)
    assert qemu_bytes(image, tmp_path) == model
    assert libvhdi.read(image) == model


QEMU_KINDS = {
    "dynamic-chs": ("-o", "subformat=dynamic"),
    "dynamic-exact": ("-o", "subformat=dynamic,force_size=on"),
    "fixed-chs": ("-o", "subformat=fixed"),
    "fixed-exact": ("-o", "subformat=fixed,force_size=on"),
}


@pytest.mark.parametrize("kind", sorted(QEMU_KINDS))
def test_qemu_files_read_by_the_library(tmp_path, rnd, kind):
    image = tmp_path / "qemu.vhd"
    run("qemu-img", "create", "-q", "-f", "vpc", *QEMU_KINDS[kind], str(image), "9M")
    size = qemu_info(image)["virtual-size"]
    commands = []
    for _ in range(12):
        length = rnd.randrange(1, 600) * 512
        offset = rnd.randrange(0, size - length)
        commands += ["-c", f"write -P {rnd.randrange(1, 256)} {offset} {length}"]
    run("qemu-io", "-f", "vpc", *commands, str(image))
    expected = qemu_bytes(image, tmp_path)
    with vhd.open_vhd(image) as disk:
        assert disk.virtual_size == size
        assert disk.read(0, size) == expected
    if kind.endswith("-exact"):
        # force_size stores the maximum CHS geometry, which blktap's
        # vhd-util check rejects; so does ours.
        with pytest.raises(vhd.VHDError, match="geometry 65535/16/255"):
            vhd.check(image)
    else:
        vhd.check(image, ignore_timestamps=True)
    # The library can keep writing into qemu's file.
    with vhd.open_vhd(image, writable=True) as disk:
        model = bytearray(expected)
        random_writes(rnd, disk, model, 10)
    assert qemu_bytes(image, tmp_path) == model


@pytest.mark.parametrize("depth", [3, 5])
def test_differencing_chains_read_through_libvhdi(tmp_path, rnd, libvhdi, depth):
    size = 6 * MIB
    layers = [tmp_path / f"layer{i}.vhd" for i in range(depth)]
    model = bytearray(size)
    vhd.create_dynamic(layers[0], size)
    with vhd.open_vhd(layers[0], writable=True) as disk:
        random_writes(rnd, disk, model, 15)
    block_sizes = [2 * MIB, 512 * 1024, 64 * 1024, 1 * MIB]
    for index in range(1, depth):
        vhd.create_differencing(layers[index], layers[index - 1],
                                block_size=block_sizes[index % 4])
        with vhd.open_chain(layers[index], writable=True) as disk:
            random_writes(rnd, disk, model, 15, align=4096)
            assert disk.read(0, size) == model
    leaf_first = list(reversed(layers))
    assert libvhdi.read(*leaf_first) == model
    leaf = libvhdi.open(*leaf_first)
    with vhd.open_vhd(layers[-1]) as disk:
        assert leaf.get_parent_identifier() == str(disk.parent_uuid)
        assert leaf.get_parent_filename() == layers[-2].name
        assert leaf.get_disk_type() == pyvhdi.disk_types.DIFFERENTIAL
    assert len(vhd.check(layers[-1], parents=True)) == depth


def test_reparented_chain_reads_through_libvhdi(tmp_path, rnd, libvhdi):
    base, child = tmp_path / "base.vhd", tmp_path / "child.vhd"
    model = bytearray(4 * MIB)
    vhd.create_dynamic(base, len(model))
    with vhd.open_vhd(base, writable=True) as disk:
        random_writes(rnd, disk, model, 10)
    vhd.create_differencing(child, base)
    with vhd.open_chain(child, writable=True) as disk:
        random_writes(rnd, disk, model, 10, align=4096)
    other = tmp_path / ("p" * 200 + ".vhd")  # longer locators: blocks move
    with vhd.open_vhd(base) as disk:
        vhd.DynamicStream(disk).save(other)
    vhd.set_parent(child, other, absolute_locator=True)
    base.unlink()
    assert libvhdi.read(child, other) == model
    assert libvhdi.open(child).get_parent_filename() == other.name


def test_streams_parse_in_qemu_and_libvhdi(tmp_path, rnd, libvhdi):
    raw = tmp_path / "source.raw"
    size = 11 * MIB
    model = bytearray(size)
    for offset in (0, 3 * MIB + 11, 9 * MIB - 100):
        data = rnd.randbytes(200_000)
        model[offset:offset + len(data)] = data
    raw.write_bytes(model)
    with vhd.RawSource(raw) as source:
        stream = vhd.DynamicStream(source)
        image = tmp_path / "stream.vhd"
        with open(image, "wb") as handle:
            handle.writelines(stream)
    assert image.stat().st_size == stream.size
    assert stream.blocks == [0, 1, 4]
    assert qemu_info(image)["virtual-size"] == size
    assert qemu_identical(raw, image)
    assert libvhdi.read(image) == model


def test_flattened_and_differential_streams(tmp_path, rnd, libvhdi):
    base, leaf = tmp_path / "base.vhd", tmp_path / "leaf.vhd"
    size = 8 * MIB
    base_model = bytearray(size)
    vhd.create_dynamic(base, size)
    with vhd.open_vhd(base, writable=True) as disk:
        random_writes(rnd, disk, base_model, 10)
    vhd.create_differencing(leaf, base)
    leaf_model = bytearray(base_model)
    with vhd.open_chain(leaf, writable=True) as disk:
        disk.write(5 * MIB, b"leaf" * 1000)
        leaf_model[5 * MIB:5 * MIB + 4000] = b"leaf" * 1000
    with vhd.open_chain(leaf) as disk:
        flat = tmp_path / "flat.vhd"
        vhd.DynamicStream(disk).save(flat)
        delta = tmp_path / "delta.vhd"
        vhd.DynamicStream(disk, base=disk.parent).save(delta)
    assert qemu_bytes(flat, tmp_path) == leaf_model
    assert libvhdi.read(flat) == leaf_model
    # The differential stream holds only block 2, as qemu's map shows.
    extents = json.loads(run("qemu-img", "map", "--output=json", "-f", "vpc", str(delta)))
    assert [(e["start"], e["length"]) for e in extents if e["data"]] == [(4 * MIB, 2 * MIB)]
    delta_bytes = qemu_bytes(delta, tmp_path)
    assert delta_bytes[4 * MIB:6 * MIB] == leaf_model[4 * MIB:6 * MIB]


def test_qemu_stream_consumed_from_a_pipe(tmp_path, rnd):
    raw = tmp_path / "source.raw"
    model = bytearray(10 * MIB)
    for _ in range(6):
        offset = rnd.randrange(0, len(model) - 70_000)
        model[offset:offset + 70_000] = rnd.randbytes(70_000)
    raw.write_bytes(model)
    image = tmp_path / "qemu.vhd"
    run("qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o", "force_size=on", str(raw), str(image))
    target = tmp_path / "out.raw"
    with subprocess.Popen(["cat", str(image)], stdout=subprocess.PIPE) as cat, \
            vhd.RawFileSink(target, size=len(model)) as sink:
        info = vhd.consume_stream(cat.stdout, sink)
    assert info["virtual_size"] == len(model)
    assert target.read_bytes() == model
    assert qemu_identical(target, image)


def test_coalesce_verified_by_oracles(tmp_path, rnd, libvhdi):
    base, child = tmp_path / "base.vhd", tmp_path / "child.vhd"
    model = bytearray(9 * MIB)
    vhd.create_dynamic(base, len(model))
    with vhd.open_vhd(base, writable=True) as disk:
        random_writes(rnd, disk, model, 10)
    vhd.create_differencing(child, base, block_size=256 * 1024)
    with vhd.open_chain(child, writable=True) as disk:
        # Unaligned: partial sectors are completed from the parent and
        # bitmap bytes end up partly set; the coalesced parent shows both.
        random_writes(rnd, disk, model, 25)
    vhd.coalesce(child)
    assert qemu_bytes(base, tmp_path) == model
    assert libvhdi.read(base) == model


def test_raw_vhd_conversions_compared_by_qemu(tmp_path, rnd):
    raw = tmp_path / "in.raw"
    with open(raw, "wb") as handle:
        handle.truncate(13 * MIB)
        for _ in range(5):
            handle.seek(rnd.randrange(0, 13 * MIB - 10_000))
            handle.write(rnd.randbytes(10_000))
    for kind in ("dynamic", "fixed"):
        image = tmp_path / f"{kind}.vhd"
        vhd.raw_to_vhd(raw, image, disk_type=kind)
        assert qemu_identical(raw, image), kind
        assert qemu_info(image)["virtual-size"] == 13 * MIB
    qemu_image = tmp_path / "qemu.vhd"
    run("qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o", "subformat=dynamic", str(raw),
        str(qemu_image))
    back = tmp_path / "back.raw"
    size = vhd.vhd_to_raw(qemu_image, back)
    assert size == qemu_info(qemu_image)["virtual-size"]
    assert qemu_identical(back, qemu_image)
    assert back.read_bytes()[:13 * MIB] == raw.read_bytes()


def test_resized_disks_read_by_oracles(tmp_path, rnd, libvhdi):
    image = tmp_path / "grow.vhd"
    vhd.create_dynamic(image, 3 * MIB, block_size=64 * 1024)
    with vhd.open_vhd(image, writable=True) as disk:
        model = bytearray(disk.virtual_size)
        random_writes(rnd, disk, model, 20, max_length=100_000)
    vhd.resize(image, 40 * MIB)  # the BAT outgrows its sector: blocks move
    model.extend(bytes(37 * MIB))
    assert qemu_info(image)["virtual-size"] == 40 * MIB
    assert qemu_bytes(image, tmp_path) == model
    assert libvhdi.open(image).get_media_size() == 3 * MIB  # original size
    assert libvhdi.read(image) == model[:3 * MIB]
