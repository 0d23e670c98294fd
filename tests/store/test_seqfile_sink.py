"""SeqFileSink on local disk and on an object-store-like fsspec filesystem (memory://, staged)."""

from __future__ import annotations

import os
import re
import struct
import time
import tracemalloc
from pathlib import Path

import fsspec
import pytest

from logflume.chunk import Chunk
from logflume.component import Context
from logflume.errors import ConfigError, DeliveryError
from logflume.sequencefile import SequenceFileReader, SequenceFileWriter
from sinks.seqfile import FORMAT_KEY, WRITER_KEY, SeqFileSink, good_prefix

from .conftest import ChunkMaker, check_delivery, final_files, make_sink, read_chunks, wait_for

pytestmark = pytest.mark.timeout(60)

NAME = re.compile(r"^coll1-(\d{14})-(\d+)\.seq$")


def test_layout_roll_by_size_and_header(tmp_path: Path, context: Context) -> None:
    root = tmp_path / "store"
    sink = make_sink(SeqFileSink, "s", {"url": str(root), "roll_size": "20KiB"}, context)
    sink.start()
    maker, sent = ChunkMaker(size=3000), []
    try:
        for _ in range(10):
            batch = maker.batch(3)
            sink.deliver(batch)
            sent += batch
            hidden = [p.name for p in root.glob("*/.*")]
            assert all(n.startswith(".coll1-") and n.endswith(".seq.inprogress") for n in hidden)
    finally:
        sink.stop()
    files = final_files(root)
    assert len(files) >= 4  # 90 KB of chunks in 20 KiB files
    assert not list(root.glob("*/.*")), "no in-progress file is left after stop"
    for f in files:
        m = NAME.match(f.name)
        assert m, f.name
        stamp = m.group(1)
        assert f.parent.name == f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:8]}"
        assert f.stat().st_size < 20 * 1024 + 3000 + 512
        with open(f, "rb") as fh:
            header = SequenceFileReader(fh).header
        assert header.key_class == "org.apache.hadoop.io.Text"
        assert header.value_class == "org.apache.hadoop.io.BytesWritable"
        assert header.metadata[WRITER_KEY].startswith("logflume ")
        assert header.metadata[FORMAT_KEY] == "1"
    got = read_chunks(files)
    check_delivery(sent, got, max_duplicates=0)
    assert [(c.stream, c.seq_id) for c in got] == [(c.stream, c.seq_id) for c in sent]
    assert got[0].tags == {"env": "test"} and got[0].source == "host1"
    assert context.metrics.value("seqfile_files_closed_total", kind="sink", component="s") == len(files)


@pytest.mark.parametrize(("compression", "codec"), [
    ("RECORD", "deflate"), ("RECORD", "snappy"), ("BLOCK", None), ("BLOCK", "gzip"), ("BLOCK", "lz4"),
])
def test_compressed_files_read_back(tmp_path: Path, context: Context, compression: str, codec: str | None) -> None:
    root = tmp_path / "store"
    raw = {"url": str(root), "compression": compression, "roll_size": "8KiB"}
    if codec:
        raw["codec"] = codec
    sink = make_sink(SeqFileSink, "s", raw, context)
    sink.start()
    maker, sent = ChunkMaker(size=5000), []
    for _ in range(5):
        batch = maker.batch(4)
        sink.deliver(batch)
        sent += batch
    sink.stop()
    files = final_files(root)
    assert files
    with open(files[0], "rb") as fh:
        header = SequenceFileReader(fh).header
    assert header.compression == compression
    assert header.codec.rsplit(".", 1)[-1] == {"deflate": "DefaultCodec", "gzip": "GzipCodec", "lz4": "Lz4Codec",
                                               "snappy": "SnappyCodec", None: "DefaultCodec"}[codec]
    check_delivery(sent, read_chunks(files), max_duplicates=0)
    assert sum(f.stat().st_size for f in files) < sum(len(c.data) for c in sent) / 3  # repetitive text compresses


def test_roll_interval_closes_an_idle_file(tmp_path: Path, context: Context) -> None:
    root = tmp_path / "store"
    sink = make_sink(SeqFileSink, "s", {"url": str(root), "roll_interval": "300ms"}, context)
    sink.start()
    try:
        batch = ChunkMaker().batch(2)
        sink.deliver(batch)
        assert not final_files(root)
        wait_for(lambda: final_files(root) and not list(root.glob("*/.*")), 5, message="time-based roll")
        check_delivery(batch, read_chunks(final_files(root)), 0)
    finally:
        sink.stop()


@pytest.mark.parametrize(("policy", "expect_on_disk"), [("interval", True), ("none", False)])
def test_sync_policy_interval_and_none(tmp_path: Path, context: Context, policy: str, expect_on_disk: bool) -> None:
    root = tmp_path / "store"
    sink = make_sink(SeqFileSink, "s", {"url": str(root), "sync": policy, "sync_period": "100ms"}, context)
    sink.start()
    try:
        sink.deliver([ChunkMaker(size=100).batch(1)[0]])  # fits the write buffer: not on disk until synced
        inprogress = next(root.glob("*/.*.inprogress"))
        if expect_on_disk:
            wait_for(lambda: inprogress.stat().st_size > 0, 10, message="the periodic sync")
        else:
            time.sleep(0.6)
            assert inprogress.stat().st_size == 0
    finally:
        sink.stop()
    assert len(read_chunks(final_files(root))) == 1


def _write_inprogress(root: Path, name: str, chunks: list[Chunk], tail: bytes) -> Path:
    day = root / "2026-01-02"
    day.mkdir(parents=True, exist_ok=True)
    path = day / f".{name}.inprogress"
    with open(path, "wb") as f:
        w = SequenceFileWriter(f)
        for c in chunks:
            w.append_chunk(c)
        w.close()
        f.write(tail)
    return path


def test_start_recovers_torn_inprogress_files_of_its_own_collector_only(tmp_path: Path, context: Context) -> None:
    root = tmp_path / "store"
    maker = ChunkMaker()
    kept = maker.batch(5)
    torn_record = struct.pack(">ii", 5000, 100) + b"\x00" * 60  # a record cut off mid-key
    torn = _write_inprogress(root, "coll1-20260102030405-0.seq", kept, torn_record)
    zeros = _write_inprogress(root, "coll1-20260102030406-0.seq", kept[:2], b"\x00" * 4096)  # unwritten blocks
    header_only = root / "2026-01-02" / ".coll1-20260102030407-0.seq.inprogress"
    header_only.write_bytes(b"SEQ\x06\x19org.apache")  # crash while writing the header: nothing acked
    other = _write_inprogress(root, "coll10-20260102030405-0.seq", kept, torn_record)  # another collector's
    sink = make_sink(SeqFileSink, "s", {"url": str(root)}, context)
    sink.start()
    sink.stop()
    assert not torn.exists() and not zeros.exists() and not header_only.exists()
    assert other.exists() and other.stat().st_size > 0
    recovered = root / "2026-01-02" / "coll1-20260102030405-0.seq"
    check_delivery(kept, read_chunks([recovered]), 0)
    with open(recovered, "rb") as f:
        assert good_prefix(f) == (recovered.stat().st_size, 5)
    check_delivery(kept[:2], read_chunks([root / "2026-01-02" / "coll1-20260102030406-0.seq"]), 0)
    assert context.metrics.value("seqfile_files_recovered_total", kind="sink", component="s") == 2


def test_a_64mib_chunk_is_not_copied(tmp_path: Path, context: Context) -> None:
    sink = make_sink(SeqFileSink, "s", {"url": str(tmp_path / "store")}, context)
    sink.start()
    data = bytearray(64 << 20)
    chunk = Chunk("h", "big", "Raw", len(data), "e", memoryview(data))
    tracemalloc.start()
    try:
        sink.deliver([chunk])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        sink.stop()
    assert peak < 4 << 20, f"delivering 64 MiB allocated {peak} bytes"
    (f,) = final_files(tmp_path / "store")
    assert f.stat().st_size > 64 << 20


def test_staged_store_uploads_on_roll_and_keeps_nothing_local(tmp_path: Path, context: Context) -> None:
    url = f"memory://bucket{os.getpid()}/{tmp_path.name}/logs"
    staging = tmp_path / "staging"
    sink = make_sink(SeqFileSink, "s", {"url": url, "roll_size": "10KiB", "staging_dir": str(staging)}, context)
    assert sink.staged
    fs = fsspec.filesystem("memory")
    root = url[len("memory://"):]
    sink.start()
    maker, sent = ChunkMaker(size=4000), []
    try:
        for _ in range(6):
            batch = maker.batch(2)
            sink.deliver(batch)
            sent += batch
            # only the file being written is local; finished ones are uploaded, none half-written remotely
            local = [p.name for p in staging.rglob("*") if p.is_file()]
            assert len(local) <= 1 and all(n.endswith(".inprogress") for n in local), local
            assert not [p for p in fs.find(root) if p.endswith(".inprogress")]
        assert fs.find(root)
    finally:
        sink.stop()
    assert not [p for p in staging.rglob("*") if p.is_file()]
    remote = sorted(fs.find(root), key=lambda p: NAME.match(p.rsplit("/", 1)[-1]).group(1, 2))
    assert all(NAME.match(p.rsplit("/", 1)[-1]) for p in remote)
    check_delivery(sent, read_chunks(remote, opener=fs.open), 0)
    assert sink.writes() == [url]
    fs.rm(root, recursive=True)


def test_writes_names_the_local_root(tmp_path: Path, context: Context) -> None:
    sink = make_sink(SeqFileSink, "s", {"url": str(tmp_path / "x")}, context)
    assert sink.writes() == [f"file:{tmp_path / 'x'}/**"]


def test_deliver_before_start_is_an_error(tmp_path: Path, context: Context) -> None:
    sink = make_sink(SeqFileSink, "s", {"url": str(tmp_path / "x")}, context)
    with pytest.raises(DeliveryError, match="not started"):
        sink.deliver(ChunkMaker().batch(1))


@pytest.mark.parametrize(("raw", "path", "message"), [
    ({"url": "/x", "codec": "gzip"}, "s.codec", "needs compression RECORD or BLOCK"),
    ({"url": "/x", "collector_name": "_hidden"}, "s.collector_name", "not starting with"),
    ({"url": "/x", "collector_name": "a/b"}, "s.collector_name", "letters, digits"),
    ({"url": "/x", "sync": "always"}, "s.sync", "one of every_batch, interval, none"),
    ({"url": "/x", "compression": "BLOCK", "codec": "zstd"}, "s.codec", "deflate, gzip, lz4, snappy"),
    ({"url": "/x", "roll_size": "big"}, "s.roll_size", "a size"),
    ({}, "s.url", "missing required key"),
    ({"url": "/x", "rol_size": "1MiB"}, "s.rol_size", "did you mean 'roll_size'"),
])
def test_config_errors_name_the_key(context: Context, raw: dict, path: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        make_sink(SeqFileSink, "s", raw, context)
    assert err.value.path == path
    assert message in err.value.message


def test_default_collector_name_is_made_safe(tmp_path: Path) -> None:
    ctx = Context(agent_name=".web/01 eu", data_dir=tmp_path / "state")
    sink = make_sink(SeqFileSink, "s", {"url": str(tmp_path / "x")}, ctx)
    assert sink.collector == "web_01_eu"
