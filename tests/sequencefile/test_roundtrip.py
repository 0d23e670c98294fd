"""Our writer -> our reader for every class x compression x codec, plus sink-file chunks."""

from __future__ import annotations

import io
import os
import random

import pytest

from logflume.chunk import Chunk
from logflume.sequencefile import (
    BYTES_WRITABLE,
    LONG_WRITABLE,
    NULL_WRITABLE,
    TEXT,
    SequenceFileReader,
    SequenceFileWriter,
)

from .conftest import block_counts

MODES = [("NONE", None)] + [(c, k) for c in ("RECORD", "BLOCK") for k in ("deflate", "gzip", "lz4", "snappy")]


def _value(cls: str, i: int, rng: random.Random) -> object:
    size = rng.choice([0, 1, 7, 100, 1000])
    if cls == TEXT:
        return "".join(rng.choice("aé😀\x00z\t") for _ in range(size))
    if cls == BYTES_WRITABLE:
        return rng.randbytes(size)
    if cls == LONG_WRITABLE:
        return rng.choice([0, -1, 2**63 - 1, -(2**63), i * 7919])
    return None


def _records(key_cls: str, value_cls: str, n: int, seed: int = 1) -> list[tuple[object, object]]:
    rng = random.Random(seed)
    return [(_value(key_cls, i, rng), _value(value_cls, i, rng)) for i in range(n)]


def _write(records: list[tuple[object, object]], **kw: object) -> bytes:
    buf = io.BytesIO()
    w = SequenceFileWriter(buf, **kw)  # type: ignore[arg-type]
    for k, v in records:
        w.append(k, v)
    w.close()
    assert w.position == len(buf.getvalue())
    return buf.getvalue()


CLASSES = [TEXT, BYTES_WRITABLE, LONG_WRITABLE, NULL_WRITABLE]


@pytest.mark.parametrize(("compression", "codec"), MODES)
@pytest.mark.parametrize("key_cls", CLASSES)
@pytest.mark.parametrize("value_cls", CLASSES)
def test_round_trip_every_combination(
    compression: str, codec: str | None, key_cls: str, value_cls: str
) -> None:
    records = _records(key_cls, value_cls, 60)
    data = _write(
        records,
        key_class=key_cls,
        value_class=value_cls,
        compression=compression,
        codec=codec,
        block_size=2000,
        sync_interval=1000,
    )
    r = SequenceFileReader(io.BytesIO(data))
    assert (r.header.key_class, r.header.value_class, r.header.compression) == (
        key_cls,
        value_cls,
        compression,
    )
    assert list(r) == records
    assert r.last_record_end == len(data)


@pytest.mark.parametrize(("compression", "codec"), MODES)
def test_empty_file(compression: str, codec: str | None) -> None:
    data = _write([], compression=compression, codec=codec)
    r = SequenceFileReader(io.BytesIO(data))
    assert list(r) == []
    assert r.header.header_length == len(data)


@pytest.mark.parametrize(("compression", "codec"), MODES)
def test_big_values_many_records_and_metadata(compression: str, codec: str | None) -> None:
    rng = random.Random(7)
    records: list[tuple[object, object]] = [
        (f"rec-{i:05d}", rng.randbytes(rng.choice([0, 10, 300]))) for i in range(3000)
    ]
    # bigger than the sync interval, the block size and Hadoop's 256 KiB lz4/snappy buffer
    records[10] = ("big-random", os.urandom(700_000))
    records[20] = ("big-text", b"log line of text\n" * 40_000)
    meta = {"zeta": "z", "Upper": "U", "writer": "logflume", "unicode": "Grüße 😀", "empty": ""}
    data = _write(records, compression=compression, codec=codec, metadata=meta, block_size=65536)
    r = SequenceFileReader(io.BytesIO(data))
    assert list(r.header.metadata) == ["Upper", "empty", "unicode", "writer", "zeta"]
    assert r.header.metadata == meta
    assert [(k, v) for k, v in r] == records


def test_sync_escape_rule_none() -> None:
    """A marker precedes a record exactly when position >= last marker end + interval."""
    records = _records(TEXT, BYTES_WRITABLE, 500, seed=3)
    marker = bytes(range(16))
    data = _write(records, sync_interval=4096, sync_marker=marker)
    escape = b"\xff\xff\xff\xff" + marker
    pos = SequenceFileReader(io.BytesIO(data)).header.header_length
    assert data[pos - 16 : pos] == marker  # header ends with the marker
    last_sync, seen = 0, 0
    while pos < len(data):
        if pos >= last_sync + 4096:
            assert data[pos : pos + 20] == escape
            pos += 20
            last_sync = pos
            seen += 1
        assert data[pos : pos + 4] != b"\xff\xff\xff\xff"
        pos += 8 + int.from_bytes(data[pos : pos + 4], "big")
    assert seen == data.count(escape) > 5


def test_block_rule() -> None:
    """A block closes once serialized keys + values reach block_size."""
    records = [(f"k{i}", b"x" * (i % 50)) for i in range(2000)]
    data = _write(records, compression="BLOCK", codec="deflate", block_size=5000)
    counts = block_counts(data, SequenceFileReader(io.BytesIO(data)).header.header_length)
    expected, size, n = [], 0, 0
    for k, v in records:
        size += 1 + len(k) + 4 + len(v)
        n += 1
        if size >= 5000:
            expected.append(n)
            size, n = 0, 0
    if n:
        expected.append(n)
    assert counts == expected


def test_random_markers_differ() -> None:
    a = SequenceFileReader(io.BytesIO(_write([]))).header.sync_marker
    b = SequenceFileReader(io.BytesIO(_write([]))).header.sync_marker
    assert a != b and len(a) == 16


class _WriteOnly:
    """A sink that records every write; no tell(), no seek()."""

    def __init__(self) -> None:
        self.writes: list[object] = []

    def write(self, data: object) -> int:
        self.writes.append(data)
        return len(data)  # type: ignore[arg-type]

    def flush(self) -> None:
        pass


def test_append_chunk_is_zero_copy() -> None:
    payload = bytearray(b"line one\nline two\n" * 1000)
    view = memoryview(payload)
    chunk = Chunk(
        source="h1", stream="/var/log/x", datatype="SysLog", seq_id=len(payload), epoch="e1", data=view
    )
    sink = _WriteOnly()
    w = SequenceFileWriter(sink)
    w.append_chunk(chunk)
    w.close()
    assert any(piece is view for piece in sink.writes)
    assert max(len(p) for p in sink.writes if p is not view) < 200  # type: ignore[arg-type]
    data = b"".join(bytes(p) for p in sink.writes)  # type: ignore[arg-type]
    assert w.position == len(data)
    chunks = list(SequenceFileReader(io.BytesIO(data)).iter_chunks())
    assert len(chunks) == 1
    assert bytes(chunks[0].data) == bytes(payload)
    assert chunks[0].metadata() == chunk.metadata()


@pytest.mark.parametrize(("compression", "codec"), MODES)
def test_chunks_round_trip(compression: str, codec: str | None) -> None:
    chunks = [
        Chunk(
            source="h",
            stream=f"s{i}",
            datatype="JSON",
            seq_id=100 * (i + 1),
            epoch="e",
            tags={"env": "prod"},
            data=(b'{"n": %d}\n' % i) * 10,
            record_ends=None if i % 2 else [10 * j for j in range(1, 11)],
        )
        for i in range(50)
    ]
    buf = io.BytesIO()
    with SequenceFileWriter(buf, compression=compression, codec=codec, block_size=3000) as w:
        for c in chunks:
            w.append_chunk(c)
    got = list(SequenceFileReader(io.BytesIO(buf.getvalue())).iter_chunks())
    assert [(g.metadata(), bytes(g.data)) for g in got] == [(c.metadata(), bytes(c.data)) for c in chunks]


def test_block_buffer_is_immune_to_caller_mutation() -> None:
    buf = io.BytesIO()
    w = SequenceFileWriter(buf, compression="BLOCK", codec="deflate")
    value = bytearray(b"original")
    w.append("k", value)
    value[:] = b"mutated!"
    w.close()
    assert list(SequenceFileReader(io.BytesIO(buf.getvalue()))) == [("k", b"original")]


def test_flush_makes_whole_blocks_readable() -> None:
    buf = io.BytesIO()
    w = SequenceFileWriter(buf, compression="BLOCK", codec="gzip")
    w.append("a", b"1")
    w.flush()
    assert list(SequenceFileReader(io.BytesIO(buf.getvalue()))) == [("a", b"1")]
    w.append("b", b"2")
    w.close()
    assert list(SequenceFileReader(io.BytesIO(buf.getvalue()))) == [("a", b"1"), ("b", b"2")]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="compression"):
        SequenceFileWriter(io.BytesIO(), compression="ZIP")
    with pytest.raises(ValueError, match="codec"):
        SequenceFileWriter(io.BytesIO(), compression="BLOCK", codec="brotli")
    with pytest.raises(ValueError, match="codec"):
        SequenceFileWriter(io.BytesIO(), codec="gzip")
    with pytest.raises(ValueError, match="unsupported Writable"):
        SequenceFileWriter(io.BytesIO(), key_class="org.example.Foo")
    with pytest.raises(ValueError, match="16 bytes"):
        SequenceFileWriter(io.BytesIO(), sync_marker=b"short")
    w = SequenceFileWriter(io.BytesIO(), key_class=LONG_WRITABLE)
    with pytest.raises(TypeError):
        w.append("not a number", b"")


def test_close_file_flag(tmp_path: object) -> None:
    f = io.BytesIO()
    SequenceFileWriter(f).close()
    assert not f.closed
    SequenceFileWriter(f, close_file=True).close()
    assert f.closed


def test_64_mib_chunk_is_written_without_copies() -> None:
    import tracemalloc

    data = os.urandom(64 << 20)
    chunk = Chunk(source="h", stream="s", datatype="Raw", seq_id=len(data), epoch="e", data=data)
    sink = _WriteOnly()
    w = SequenceFileWriter(sink)
    tracemalloc.start()
    try:
        w.append_chunk(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    assert sink.writes[-1] is data
    assert sum(len(p) for p in sink.writes[:-1]) < 300  # type: ignore[arg-type]
