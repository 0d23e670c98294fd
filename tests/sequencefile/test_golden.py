"""Every Hadoop-written golden file reads exactly as its sidecar says."""

from __future__ import annotations

import hashlib
import io
import struct
from pathlib import Path
from typing import Any

import pytest

from logflume.sequencefile import SequenceFileReader, SequenceFileWriter
from logflume.sequencefile.codecs import codec_by_class
from logflume.sequencefile.writables import decode_vint

from .conftest import DATA, GOLDEN, block_counts, sidecar, sidecar_records


def test_all_goldens_present() -> None:
    assert len(GOLDEN) == 18


def test_header(golden: tuple[Path, dict[str, Any]]) -> None:
    path, side = golden
    assert hashlib.sha256(path.read_bytes()).hexdigest() == side["sha256"]
    with path.open("rb") as f:
        h = SequenceFileReader(f).header
    assert h.version == side["version"]
    assert h.key_class == side["key_class"]
    assert h.value_class == side["value_class"]
    assert h.compression == side["compression"]
    assert h.codec == side["codec"]
    assert list(h.metadata.items()) == list(side["metadata"].items())
    assert h.sync_marker.hex() == side["sync_marker_hex"]
    assert h.header_length == side["header_length"]


def test_records_raw(golden: tuple[Path, dict[str, Any]]) -> None:
    path, side = golden
    with path.open("rb") as f:
        r = SequenceFileReader(f)
        got = [(bytes(k), bytes(v)) for k, v in r.iter_raw()]
        assert r.last_record_end == side["file_length"]
    assert len(got) == side["record_count"]
    assert got == sidecar_records(side)


def test_records_decoded(golden: tuple[Path, dict[str, Any]]) -> None:
    path, side = golden
    with path.open("rb") as f:
        got = list(SequenceFileReader(f))
    for (k, v), rec, (kb, vb) in zip(got, side["records"], sidecar_records(side), strict=True):
        assert k == rec.get("key", kb)
        assert v == rec.get("value", vb)


def test_sync_offsets_are_where_the_sidecar_says(golden: tuple[Path, dict[str, Any]]) -> None:
    path, side = golden
    data = path.read_bytes()
    escape = b"\xff\xff\xff\xff" + bytes.fromhex(side["sync_marker_hex"])
    found, pos = [], data.find(escape, side["header_length"] - 4 + 1)
    while pos >= 0:
        found.append(pos)
        pos = data.find(escape, pos + 1)
    assert found == side["sync_offsets"]


def _rewrite(side: dict[str, Any], **overrides: Any) -> bytes:
    """Our writer fed the golden's records with the golden's settings and marker."""
    buf = io.BytesIO()
    codec = codec_by_class(side["codec"]).name if side["codec"] else None
    kwargs = dict(
        key_class=side["key_class"],
        value_class=side["value_class"],
        compression=side["compression"],
        codec=codec,
        metadata=side["metadata"],
        sync_interval=side["sync_interval"] or 102400,
        block_size=side["compress_block_size"] or 1_000_000,
        sync_marker=bytes.fromhex(side["sync_marker_hex"]),
    )
    kwargs.update(overrides)
    w = SequenceFileWriter(buf, **kwargs)
    with (DATA / side["file"]).open("rb") as f:
        for key, value in SequenceFileReader(f):
            w.append(key, value)
    w.close()
    assert w.position == len(buf.getvalue())
    return buf.getvalue()


@pytest.mark.parametrize("name", [n for n in GOLDEN if sidecar(n)["compression"] == "NONE"])
def test_writer_none_is_byte_identical_to_hadoop(name: str) -> None:
    side = sidecar(name)
    assert hashlib.sha256(_rewrite(side)).hexdigest() == side["sha256"]


@pytest.mark.parametrize("name", [n for n in GOLDEN if sidecar(n)["compression"] != "NONE"])
def test_writer_compressed_matches_hadoop_structure(name: str) -> None:
    """Same header bytes, same sync offsets (RECORD) or block record counts (BLOCK), same records.

    Compressed bytes depend on the compressor build, so content is compared decoded.
    """
    side = sidecar(name)
    ours = _rewrite(side)
    golden = (DATA / side["file"]).read_bytes()
    hl = side["header_length"]
    assert ours[:hl] == golden[:hl]
    reader = SequenceFileReader(io.BytesIO(ours))
    assert [(bytes(k), bytes(v)) for k, v in reader.iter_raw()] == sidecar_records(side)
    if side["compression"] == "BLOCK":
        assert block_counts(ours, hl) == block_counts(golden, hl)
    if side["compression"] == "RECORD" and "Lz4" not in side["codec"]:
        assert len(ours) == len(golden)  # same record lengths => same sync escape offsets
    escape = b"\xff\xff\xff\xff" + bytes.fromhex(side["sync_marker_hex"])
    assert ours.count(escape) == len(side["sync_offsets"])


def test_g2_block_record_counts() -> None:
    side = sidecar("g2_many_records_block_deflate")
    ours = _rewrite(side)
    assert block_counts(ours, side["header_length"]) == [701, 900, 900, 499]


def test_record_sync_offsets_match_hadoop_rule() -> None:
    side = sidecar("g3_sync_interval_4k_record_deflate")
    ours = _rewrite(side)
    escape = b"\xff\xff\xff\xff" + bytes.fromhex(side["sync_marker_hex"])
    offsets, pos = [], ours.find(escape, side["header_length"])
    while pos >= 0:
        offsets.append(pos)
        pos = ours.find(escape, pos + 1)
    assert offsets == side["sync_offsets"]


def test_lz4_and_snappy_framing_matches_hadoop() -> None:
    """Hadoop's block framing: per unit 4-byte length, then (4-byte clen, segment) pairs."""
    for name in ("k_text_bytes_block_lz4", "l_text_bytes_block_snappy", "m_text_bytes_record_lz4"):
        side = sidecar(name)
        ours = _rewrite(side)
        golden = (DATA / side["file"]).read_bytes()
        assert _framing(ours, side) == _framing(golden, side), name


def _framing(data: bytes, side: dict[str, Any]) -> list[tuple[int, int]]:
    """(uncompressed length, segment count) of every compressed unit in file order."""
    units: list[bytes] = []
    pos = side["header_length"]
    if side["compression"] == "BLOCK":
        while pos < len(data):
            pos += 20
            _, pos = decode_vint(data, pos)
            for _ in range(4):
                size, pos = decode_vint(data, pos)
                units.append(data[pos : pos + size])
                pos += size
    else:
        while pos < len(data):
            rec_len, key_len = struct.unpack_from(">ii", data, pos)
            if rec_len == -1:
                pos += 20
                continue
            units.append(data[pos + 8 + key_len : pos + 8 + rec_len])
            pos += 8 + rec_len
    out = []
    for unit in units:
        (total,) = struct.unpack_from(">i", unit, 0)
        p, segs = 4, 0
        while p < len(unit):
            (clen,) = struct.unpack_from(">i", unit, p)
            p += 4 + clen
            segs += 1
        assert p == len(unit)
        out.append((total, segs))
    return out
