"""Codec units in Hadoop's framing, including forms only Hadoop's own writer produces."""

from __future__ import annotations

import os
import struct
import zlib

import cramjam
import lz4.block
import pytest

from logflume.sequencefile.codecs import CodecError, codec_by_class, codec_by_name

NAMES = ["deflate", "gzip", "lz4", "snappy"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", [0, 1, 1000, 261_100, 261_101, 700_000])
def test_round_trip(name: str, size: int) -> None:
    codec = codec_by_name(name)
    data = os.urandom(size // 2) + bytes(size - size // 2)
    pieces = [memoryview(data)[:3], memoryview(data)[3:]]
    unit = b"".join(codec.compress(pieces))
    assert codec.decompress(memoryview(unit), size) == data
    assert codec_by_class(codec.class_name).name == name


def test_block_framing_segments_at_hadoops_limits() -> None:
    for name, max_input in (("lz4", 262144 - (262144 // 255 + 16)), ("snappy", 262144 - (262144 // 6 + 32))):
        unit = b"".join(codec_by_name(name).compress([bytes(2 * max_input + 5)]))
        (total,) = struct.unpack_from(">i", unit, 0)
        assert total == 2 * max_input + 5
        segs, pos = [], 4
        while pos < len(unit):
            (clen,) = struct.unpack_from(">i", unit, pos)
            seg = unit[pos + 4 : pos + 4 + clen]
            if name == "lz4":
                segs.append(len(lz4.block.decompress(seg, uncompressed_size=max_input)))
            else:
                segs.append(len(cramjam.snappy.decompress_raw(seg)))
            pos += 4 + clen
        assert segs == [max_input, max_input, 5]


def test_hadoop_record_style_multi_frame_unit() -> None:
    """Hadoop writes a big BytesWritable as two frames: its 4-byte length, then the data."""
    data = os.urandom(300_000)
    prefix = struct.pack(">i", len(data))
    c1 = lz4.block.compress(prefix, store_size=False)
    frames = [struct.pack(">ii", 4, len(c1)), c1, struct.pack(">i", len(data))]
    for off in range(0, len(data), 261_100):
        c = lz4.block.compress(data[off : off + 261_100], store_size=False)
        frames += [struct.pack(">i", len(c)), c]
    assert codec_by_name("lz4").decompress(memoryview(b"".join(frames)), 1 << 20) == prefix + data


def test_empty_unit_is_a_bare_zero_length() -> None:
    assert b"".join(codec_by_name("lz4").compress([])) == b"\x00\x00\x00\x00"
    assert codec_by_name("snappy").decompress(memoryview(b"\x00\x00\x00\x00"), 0) == b""


@pytest.mark.parametrize(
    ("name", "unit", "words"),
    [
        ("deflate", zlib.compress(b"abc")[:-2], "incomplete"),
        ("deflate", zlib.compress(b"abc") + b"x", "stray"),
        ("deflate", b"\x1f\x8b garbage", "does not decode"),
        ("gzip", zlib.compress(b"abc"), "does not decode"),
        ("lz4", struct.pack(">ii", 10, 50) + b"short", "impossible"),
        ("lz4", struct.pack(">ii", 10, 3) + b"\xff\xff\xff", "does not decode"),
        ("snappy", struct.pack(">i", -1), "impossible"),
        ("snappy", struct.pack(">ii", 5, 2) + b"\x05a", "does not decode"),
        ("snappy", struct.pack(">i", 5), "ends inside a length"),
    ],
)
def test_bad_units(name: str, unit: bytes, words: str) -> None:
    with pytest.raises(CodecError, match=words):
        codec_by_name(name).decompress(memoryview(unit), 1000)


def test_limit_is_enforced() -> None:
    for name in NAMES:
        codec = codec_by_name(name)
        unit = b"".join(codec.compress([bytes(100_000)]))
        with pytest.raises(CodecError):
            codec.decompress(memoryview(unit), 99_999)
        assert len(codec.decompress(memoryview(unit), 100_000)) == 100_000


def test_gzip_header_is_hadoops() -> None:
    unit = b"".join(codec_by_name("gzip").compress([b"hello"]))
    assert unit.startswith(bytes.fromhex("1f8b0800000000000000"))
    import gzip

    assert gzip.decompress(unit) == b"hello"
