"""VHD streams (produce and consume) and raw <-> VHD conversion.

unittest style, standard library only (Python 3.6 compatible).
"""
import importlib.util
import io
import os
import struct
import sys
import unittest

_spec = importlib.util.spec_from_file_location(
    "vhd_testlib", os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "vhd_testlib.py"))
testlib = sys.modules.get("vhd_testlib") or importlib.util.module_from_spec(
    _spec)
if "vhd_testlib" not in sys.modules:
    sys.modules["vhd_testlib"] = testlib
    _spec.loader.exec_module(testlib)

vhd = testlib.vhd
MIB = testlib.MIB
BLOCK = 2 * MIB
SPAN = 512 + BLOCK


class Trickle:
    """A non-seekable reader returning small, irregular chunks."""

    def __init__(self, data, rnd):
        self._data = data
        self._pos = 0
        self._rnd = rnd
        self.reads = 0

    def read(self, count=-1):
        self.reads += 1
        if count is None or count < 0:
            count = len(self._data)
        count = min(count, self._rnd.randrange(1, 70000))
        chunk = self._data[self._pos:self._pos + count]
        self._pos += len(chunk)
        return chunk


class Recorder:
    """A sink that applies extents to a model and records them."""

    def __init__(self, model):
        self.model = model
        self.calls = []

    def __call__(self, offset, data):
        self.calls.append((offset, len(data)))
        self.model[offset:offset + len(data)] = data


class StreamSizeTest(unittest.TestCase):
    def test_formula(self):
        size = 9 * MIB
        expected = 512 + 1024 + 512 + 2 * SPAN + 512
        self.assertEqual(vhd.dynamic_stream_size(size, 2), expected)
        self.assertEqual(vhd.dynamic_stream_size(size, [0, 4, 4]), expected)
        self.assertEqual(vhd.dynamic_stream_size(size, 0), 2560)
        # 1 GiB with 64 KiB blocks: 16384 entries = 128 sectors of BAT.
        self.assertEqual(
            vhd.dynamic_stream_size(1024 * MIB, 3, block_size=65536),
            512 + 1024 + 65536 + 3 * (512 + 65536) + 512)

    def test_refusals(self):
        self.assertRaises(vhd.VHDError, vhd.dynamic_stream_size, 4 * MIB, 3)
        self.assertRaises(vhd.VHDError, vhd.dynamic_stream_size, 0, 0)
        self.assertRaises(vhd.VHDError, vhd.dynamic_stream_size,
                          2041 * 1024 * MIB, 0)
        self.assertRaises(vhd.VHDError, vhd.dynamic_stream_size, MIB, 0,
                          block_size=3000)


class ProduceTest(testlib.VHDTestCase):
    def make_raw(self):
        """10 MiB + 1000 bytes: data in blocks 0, 3 and the partial last
        block; block 1 explicitly zero-filled, block 2 a hole."""
        path = self.path("disk.raw")
        size = 10 * MIB + 1000
        model = bytearray(size)
        with open(path, "wb") as handle:
            handle.truncate(size)
            for offset, length in ((100, 5000), (3 * BLOCK + 7, 300000),
                                   (size - 600, 600)):
                data = testlib.rand_bytes(self.rnd, length)
                handle.seek(offset)
                handle.write(data)
                model[offset:offset + length] = data
            handle.seek(BLOCK)
            handle.write(bytes(BLOCK))
        model.extend(bytes(512 - size % 512))  # virtual size rounds up
        return path, model

    def test_raw_source_skips_zero_blocks(self):
        path, model = self.make_raw()
        with vhd.RawSource(path) as source:
            self.assertEqual(source.virtual_size, len(model))
            stream = vhd.DynamicStream(source)
            self.assertEqual(stream.blocks, [0, 3, 5])
            data = b"".join(stream)
        self.assertEqual(len(data), stream.size)
        self.assertEqual(stream.size,
                         vhd.dynamic_stream_size(len(model), 3))
        result = bytearray(len(model))
        info = vhd.consume_stream(io.BytesIO(data), Recorder(result))
        self.assertEqual(result, model)
        self.assertEqual(info["blocks"], 3)
        self.assertEqual(info["virtual_size"], len(model))
        self.assertEqual(info["stream_length"], len(data))
        # The stream is a valid dynamic VHD file as it stands.
        saved = self.path("saved.vhd")
        with open(saved, "wb") as handle:
            handle.write(data)
        vhd.check(saved)
        self.assertReads(saved, model)
        self.assertEqual(data[:512], data[-512:])

    def test_layout_and_bitmaps(self):
        path, _ = self.make_raw()
        with vhd.RawSource(path) as source:
            stream = vhd.DynamicStream(source)
            chunks = list(stream)
        head = chunks[0]
        self.assertEqual(len(head), 512 + 1024 + 512)
        bat = struct.unpack(">6I", head[1536:1560])
        first = (512 + 1024 + 512) // 512
        step = SPAN // 512
        self.assertEqual(bat, (first, 0xFFFFFFFF, 0xFFFFFFFF, first + step,
                               0xFFFFFFFF, first + 2 * step))
        self.assertEqual(head[1560:2048], b"\xff" * (2048 - 1560))
        self.assertEqual(chunks[1], b"\xff" * 512)  # full block bitmap
        # The last block holds 1024 bytes = 2 sectors.
        self.assertEqual(chunks[-3], b"\xc0" + bytes(511))
        self.assertTrue(all(len(c) <= BLOCK for c in chunks))

    def test_skip_zero_blocks_off(self):
        path, _ = self.make_raw()
        with vhd.RawSource(path) as source:
            stream = vhd.DynamicStream(source, skip_zero_blocks=False)
            self.assertEqual(stream.blocks, [0, 1, 3, 5])

    def test_flattened_chain(self):
        base, child = self.path("b.vhd"), self.path("c.vhd")
        size = 7 * MIB
        model = bytearray(size)
        vhd.create_dynamic(base, size, block_size=512 * 1024)
        with vhd.open_vhd(base, writable=True) as disk:
            self.random_writes(disk, model, 10, max_length=100000)
        vhd.create_differencing(child, base)
        with vhd.open_chain(child, writable=True) as disk:
            self.random_writes(disk, model, 10, max_length=100000)
        with vhd.open_chain(child) as disk:
            stream = vhd.DynamicStream(disk, block_size=1024 * 1024)
            data = b"".join(stream)
            self.assertEqual(len(data), stream.size)
        result = bytearray(size)
        vhd.consume_stream(io.BytesIO(data), Recorder(result))
        self.assertEqual(result, model)

    def test_differential_against_an_ancestor(self):
        base, leaf = self.path("base.vhd"), self.path("leaf.vhd")
        size = 10 * MIB
        base_model = bytearray(size)
        vhd.create_dynamic(base, size)
        with vhd.open_vhd(base, writable=True) as disk:
            for index in range(5):
                data = testlib.rand_bytes(self.rnd, 4096)
                disk.write(index * BLOCK, data)
                base_model[index * BLOCK:index * BLOCK + 4096] = data
        vhd.create_differencing(leaf, base)
        leaf_model = bytearray(base_model)
        with vhd.open_chain(leaf, writable=True) as disk:
            disk.write(BLOCK + 10, b"changed")
            # Rewriting block 3 with what the base holds: allocated, same.
            disk.write(3 * BLOCK, bytes(base_model[3 * BLOCK:
                                                   3 * BLOCK + 4096]))
        leaf_model[BLOCK + 10:BLOCK + 17] = b"changed"
        with vhd.open_chain(leaf) as disk:
            stream = vhd.DynamicStream(disk, base=disk.parent)
            self.assertEqual(stream.blocks, [1])
            data = b"".join(stream)
        target = bytearray(base_model)
        vhd.consume_stream(io.BytesIO(data), Recorder(target))
        self.assertEqual(target, leaf_model)

    def test_differential_against_an_unrelated_base(self):
        size = 8 * MIB
        source_path, base_path = self.path("src.raw"), self.path("base.raw")
        source_model = bytearray(size)
        base_model = bytearray(size)
        source_model[10:20] = b"s" * 10            # block 0 differs
        base_model[BLOCK + 5:BLOCK + 9] = b"bbbb"  # block 1: base only
        source_model[2 * BLOCK:2 * BLOCK + 3] = b"eq"[:1] * 3
        base_model[2 * BLOCK:2 * BLOCK + 3] = b"eq"[:1] * 3  # block 2 same
        for path, model in ((source_path, source_model),
                            (base_path, base_model)):
            with open(path, "wb") as handle:
                handle.write(model)
        with vhd.RawSource(source_path) as source, \
                vhd.RawSource(base_path) as base:
            stream = vhd.DynamicStream(source, base=base)
            self.assertEqual(stream.blocks, [0, 1])
            data = b"".join(stream)
        target = bytearray(base_model)
        vhd.consume_stream(io.BytesIO(data), Recorder(target))
        self.assertEqual(target, source_model)

    def test_save_is_sparse_and_valid(self):
        path, model = self.make_raw()
        target = self.path("out.vhd")
        with vhd.RawSource(path) as source:
            stream = vhd.DynamicStream(source)
            self.assertEqual(stream.save(target), stream.size)
        self.assertEqual(os.path.getsize(target), stream.size)
        self.assertReads(target, model)
        vhd.check(target)
        self.assertVHDError(lambda: stream.save(target), "already exists")

    def test_refusals(self):
        path, _ = self.make_raw()
        with vhd.RawSource(path) as source:
            self.assertVHDError(
                lambda: vhd.DynamicStream(source, block_size=12345),
                "invalid block size")
        self.assertVHDError(lambda: vhd.RawSource(self.path("none")),
                            "cannot open")
        empty = self.path("empty.raw")
        open(empty, "wb").close()
        with vhd.RawSource(empty) as source:
            self.assertEqual(source.virtual_size, 512)


class ConsumeTest(testlib.VHDTestCase):
    def make_stream(self, size=9 * MIB, writes=8):
        """Stream bytes of a dynamic disk with random content, + model."""
        path = self.path("src.vhd")
        model = bytearray(size)
        vhd.create_dynamic(path, size)
        with vhd.open_vhd(path, writable=True) as disk:
            self.random_writes(disk, model, writes, max_length=300000)
            data = b"".join(vhd.DynamicStream(disk))
        os.unlink(path)
        return bytearray(data), model

    def consume(self, data, **kwargs):
        result = Recorder(bytearray(kwargs.pop("size", 9 * MIB)))
        info = vhd.consume_stream(io.BytesIO(bytes(data)), result, **kwargs)
        return info, result

    def test_non_seekable_trickle(self):
        data, model = self.make_stream()
        result = Recorder(bytearray(len(model)))
        reader = Trickle(bytes(data), self.rnd)
        vhd.consume_stream(reader, result, stream_length=len(data))
        self.assertEqual(result.model, model)
        self.assertGreater(reader.reads, 100)
        self.assertTrue(all(count <= 4 * MIB for _, count in result.calls))

    def test_blocks_in_any_order(self):
        data, model = self.make_stream()
        bat_at = 1536
        entries = struct.unpack_from(">5I", data, bat_at)
        used = [i for i, e in enumerate(entries) if e != 0xFFFFFFFF]
        self.assertGreater(len(used), 2)
        first = min(entries[i] for i in used)
        blocks = {i: bytes(data[entries[i] * 512:entries[i] * 512 + SPAN])
                  for i in used}
        # Store the blocks in reverse order, with a gap before each one.
        out = bytearray(data[:first * 512])
        new_entries = list(entries)
        for index in reversed(used):
            out += b"\x00" * 512
            new_entries[index] = len(out) // 512
            out += blocks[index]
        out += data[-512:]
        struct.pack_into(">5I", out, bat_at, *new_entries)
        info, result = self.consume(out)
        self.assertEqual(result.model, model)
        self.assertEqual(info["blocks"], len(used))
        offsets = [offset for offset, _ in result.calls]
        self.assertGreater(offsets[0], offsets[-1])  # file order, reversed
        # The reordered stream is also a valid file.
        saved = self.path("reordered.vhd")
        with open(saved, "wb") as handle:
            handle.write(out)
        vhd.check(saved)
        self.assertReads(saved, model)

    def test_partial_bitmaps_deliver_only_marked_sectors(self):
        path = self.path("sparse.vhd")
        vhd.create_dynamic(path, 4 * MIB)
        with vhd.open_vhd(path, writable=True) as disk:
            disk.write(1024, b"a" * 512)
            disk.write(3 * MIB, b"b" * 1536)
        with open(path, "rb") as handle:
            info, result = self.consume(handle.read(), size=4 * MIB)
        self.assertEqual(result.calls, [(1024, 512), (3 * MIB, 1536)])
        self.assertEqual(info["bytes_delivered"], 2048)

    def expect_refusal(self, data, words, sink_calls=None, **kwargs):
        result = Recorder(bytearray(64 * MIB))
        with self.assertRaises(vhd.VHDError) as caught:
            vhd.consume_stream(io.BytesIO(bytes(data)), result,
                               name="upload.vhd", **kwargs)
        message = str(caught.exception)
        self.assertIn("upload.vhd", message)
        for word in words:
            self.assertIn(word, message)
        if sink_calls is not None:
            self.assertEqual(len(result.calls), sink_calls)
        return caught.exception

    def test_refuses_bad_metadata_before_any_data(self):
        data, _ = self.make_stream()
        junk = bytearray(4096)
        self.expect_refusal(junk, ["not a dynamic VHD"], 0)
        bad = bytearray(data)
        bad[30] ^= 1
        self.expect_refusal(bad, ["footer copy checksum"], 0)
        bad = bytearray(data)
        bad[512:520] = b"cxsparsX"
        self.expect_refusal(bad, ["header cookie"], 0)
        bad = bytearray(data)
        bad[512 + 40] ^= 1
        self.expect_refusal(bad, ["header checksum"], 0)
        error = self.expect_refusal(data, ["exceeds the limit"], 0,
                                    max_virtual_size=8 * MIB)
        self.assertIn("larger disk", error.fix)

    def set_bat(self, data, index, sector):
        bad = bytearray(data)
        struct.pack_into(">I", bad, 1536 + 4 * index, sector)
        return bad

    def used(self, data):
        entries = struct.unpack_from(">5I", data, 1536)
        return [(i, e) for i, e in enumerate(entries) if e != 0xFFFFFFFF]

    def test_bat_past_the_end(self):
        data, _ = self.make_stream()
        bad = self.set_bat(data, self.used(data)[-1][0], 0x00FFFFFF)
        self.expect_refusal(bad, ["points past the end"], 0,
                            stream_length=len(bad))
        self.expect_refusal(bad, ["truncated"])

    def test_overlapping_blocks_and_metadata(self):
        data, _ = self.make_stream()
        (first, sector), (second, _) = self.used(data)[:2]
        self.expect_refusal(self.set_bat(data, second, sector + 1),
                            ["overlaps block"], 0)
        self.expect_refusal(self.set_bat(data, second, sector),
                            ["overlaps block"], 0)
        self.expect_refusal(self.set_bat(data, first, 3),
                            ["points into the metadata"], 0)

    def test_truncated_streams(self):
        data, _ = self.make_stream()
        self.expect_refusal(data[:len(data) // 2], ["truncated stream"])
        self.expect_refusal(data[:-100], ["truncated"])
        self.expect_refusal(data[:1000], ["truncated stream", "header"], 0)
        self.expect_refusal(data[:1540], ["truncated stream", "BAT"], 0)
        self.expect_refusal(data[:len(data) // 2], ["truncated stream"],
                            stream_length=len(data))
        self.expect_refusal(data, ["header", "announced stream length 1000"],
                            0, stream_length=1000)
        self.expect_refusal(data, ["points past the end"], 0,
                            stream_length=len(data) - 512)

    def test_trailing_footer_must_match(self):
        data, _ = self.make_stream()
        bad = bytearray(data)
        bad[-512 + 68:-512 + 84] = b"u" * 16
        struct.pack_into(">I", bad, len(bad) - 512 + 64,
                         testlib.ones_complement_checksum(bad[-512:], 64))
        self.expect_refusal(bad, ["does not match"])
        bad = bytearray(data)
        bad[-1] = 1
        self.expect_refusal(bad, ["trailing footer is invalid"])

    def test_differencing_streams(self):
        base, child = self.path("b.vhd"), self.path("c.vhd")
        vhd.create_dynamic(base, 4 * MIB)
        vhd.create_differencing(child, base)
        with vhd.open_chain(child, writable=True) as disk:
            disk.write(512, b"d" * 512)
        with open(child, "rb") as handle:
            data = handle.read()
        error = self.expect_refusal(data, ["need their parent"], 0)
        self.assertIn("flattened", error.fix)
        info, result = self.consume(data, size=4 * MIB,
                                    allow_differencing=True)
        self.assertEqual(result.calls, [(512, 512)])
        self.assertEqual(info["disk_type"], "differencing")

    def test_fixed_streams(self):
        path = self.path("f.vhd")
        vhd.create_fixed(path, 2 * MIB)
        with vhd.open_vhd(path, writable=True) as disk:
            disk.write(1000, b"fixed")
        with open(path, "rb") as handle:
            data = handle.read()
        self.expect_refusal(data, ["not a dynamic VHD", "allow_fixed"], 0)
        self.expect_refusal(data, ["allow_fixed"], 0, allow_fixed=True)
        info, result = self.consume(data, size=2 * MIB, allow_fixed=True,
                                    stream_length=len(data))
        self.assertEqual(result.model[1000:1005], b"fixed")
        self.assertEqual(info["disk_type"], "fixed")
        self.assertEqual(info["virtual_size"], 2 * MIB)
        self.expect_refusal(data, ["exceeds the limit"], 0, allow_fixed=True,
                            stream_length=len(data), max_virtual_size=MIB)
        bad = bytearray(data)
        bad[-1] = 7
        self.expect_refusal(bad, ["fixed VHD footer is invalid"],
                            allow_fixed=True, stream_length=len(bad))

    def test_into_a_vhd_file_and_a_raw_sink(self):
        data, model = self.make_stream()
        target = self.path("target.vhd")
        vhd.create_dynamic(target, len(model))
        with vhd.open_vhd(target, writable=True) as disk:
            vhd.consume_stream(io.BytesIO(bytes(data)), disk.write)
        self.assertReads(target, model)
        raw = self.path("target.raw")
        with vhd.RawFileSink(raw, size=len(model)) as sink:
            vhd.consume_stream(io.BytesIO(bytes(data)), sink)
        with open(raw, "rb") as handle:
            self.assertEqual(handle.read(), bytes(model))


class ConvertTest(testlib.VHDTestCase):
    def make_raw(self, size=7 * MIB + 100):
        path = self.path("in.raw")
        model = bytearray(size)
        with open(path, "wb") as handle:
            handle.truncate(size)
            for offset in (0, 3 * MIB + 5, size - 50):
                data = testlib.rand_bytes(self.rnd, 50)
                handle.seek(offset)
                handle.write(data)
                model[offset:offset + 50] = data
        return path, model

    def test_raw_to_dynamic_and_back(self):
        raw, model = self.make_raw()
        target = self.path("out.vhd")
        vhd.raw_to_vhd(raw, target)
        facts = vhd.info(target)
        self.assertEqual(facts["virtual_size"], 7 * MIB + 512)
        self.assertEqual(facts["allocated_blocks"], 3)
        vhd.check(target)
        back = self.path("back.raw")
        self.assertEqual(vhd.vhd_to_raw(target, back), 7 * MIB + 512)
        with open(back, "rb") as handle:
            self.assertEqual(handle.read(), bytes(model) + bytes(412))
        self.assertLess(os.stat(back).st_blocks * 512, 512 * 1024)

    def test_raw_to_fixed(self):
        raw, model = self.make_raw()
        target = self.path("out.vhd")
        vhd.raw_to_vhd(raw, target, disk_type="fixed")
        self.assertEqual(os.path.getsize(target), 7 * MIB + 512 + 512)
        self.assertLess(os.stat(target).st_blocks * 512, 1 * MIB)
        vhd.check(target)
        with vhd.open_vhd(target) as disk:
            self.assertEqual(disk.read(0, len(model)), bytes(model))

    def test_chs_rounded_conversion(self):
        raw, _ = self.make_raw(size=64 * MIB)
        target = self.path("out.vhd")
        vhd.raw_to_vhd(raw, target, chs_round=True)
        self.assertEqual(vhd.info(target)["virtual_size"], 67125248)

    def test_chain_to_raw(self):
        base, child = self.path("b.vhd"), self.path("c.vhd")
        model = bytearray(5 * MIB)
        vhd.create_dynamic(base, len(model))
        with vhd.open_vhd(base, writable=True) as disk:
            self.random_writes(disk, model, 10)
        vhd.create_differencing(child, base)
        with vhd.open_chain(child, writable=True) as disk:
            self.random_writes(disk, model, 10)
        out = self.path("flat.raw")
        vhd.vhd_to_raw(child, out)
        with open(out, "rb") as handle:
            self.assertEqual(handle.read(), bytes(model))

    def test_refusals(self):
        raw, _ = self.make_raw()
        self.assertVHDError(
            lambda: vhd.raw_to_vhd(raw, self.path("x.vhd"), disk_type="qcow"),
            "unknown disk type")
        target = self.path("x.raw")
        open(target, "wb").close()
        vhd.raw_to_vhd(raw, self.path("y.vhd"))
        self.assertVHDError(lambda: vhd.vhd_to_raw(self.path("y.vhd"),
                                                   target), "already exists")
        self.assertEqual(os.path.getsize(target), 0)


if __name__ == "__main__":
    unittest.main()
