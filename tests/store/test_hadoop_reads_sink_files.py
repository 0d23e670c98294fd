"""Hadoop's own reader (through Spark's sequenceFile) reads a store written by SeqFileSink.

A recovered (truncated) file reads cleanly, and a file still in progress,
torn mid-record, is skipped by its hidden name.  Needs the ``spark`` extra and Java.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pyspark")

from logflume.component import Context  # noqa: E402
from logflume.sequencefile import SequenceFileWriter  # noqa: E402
from sinks.seqfile import SeqFileSink  # noqa: E402

from .conftest import ChunkMaker, make_sink  # noqa: E402

pytestmark = [pytest.mark.spark, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def sc() -> Iterator[Any]:
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        pytest.skip("no Java runtime")
    from pyspark import SparkConf, SparkContext

    conf = (SparkConf().setMaster("local[2]").setAppName("logflume-store-interop")
            .set("spark.ui.enabled", "false").set("spark.driver.host", "127.0.0.1")
            .set("spark.driver.bindAddress", "127.0.0.1"))
    context = SparkContext(conf=conf)
    context.setLogLevel("ERROR")
    yield context
    context.stop()


@pytest.mark.parametrize(("compression", "codec"), [("NONE", None), ("BLOCK", "deflate"), ("RECORD", "gzip"),
                                                    ("BLOCK", "lz4"), ("BLOCK", "snappy")])
def test_spark_reads_every_finished_sink_file_and_skips_in_progress(sc: Any, tmp_path: Path, compression: str,
                                                                   codec: str | None) -> None:
    root = tmp_path / "store"
    ctx = Context(agent_name="coll1", data_dir=tmp_path / "state")
    raw = {"url": str(root), "roll_size": "30KiB", "compression": compression}
    if codec:
        raw["codec"] = codec
    maker, sent = ChunkMaker(size=2500), []
    sink = make_sink(SeqFileSink, "s", raw, ctx)
    sink.start()
    for _ in range(12):
        batch = maker.batch(3)
        sink.deliver(batch)
        sent.extend(batch)
    sink.stop()

    # a crash left a torn file of ours (recovered at start) and a torn one of another, live collector
    day = next(root.iterdir())
    torn = maker.batch(4)
    for name in ("coll1-20260101000000-0.seq", "other-20260101000000-0.seq"):
        with open(day / f".{name}.inprogress", "wb") as f:
            w = SequenceFileWriter(f, compression=compression, codec=codec)
            for c in torn:
                w.append_chunk(c)
            w.close()
            f.write(b"\x00\x00\x10\x00\x00\x00\x00\x20partial")
    sink = make_sink(SeqFileSink, "s", raw, ctx)
    sink.start()
    sink.stop()
    sent.extend(torn)

    rdd = sc.sequenceFile(str(root / "*"), "org.apache.hadoop.io.Text", "org.apache.hadoop.io.BytesWritable")
    got = [(json.loads(k), bytes(v)) for k, v in rdd.collect()]
    assert sorted((m["stream"], m["seq_id"]) for m, _ in got) == sorted((c.stream, c.seq_id) for c in sent)
    by_id = {(c.stream, c.seq_id): bytes(c.data) for c in sent}
    for meta, data in got:
        assert by_id[(meta["stream"], meta["seq_id"])] == data
        assert meta["length"] == len(data) and meta["source"] == "host1"
