"""Hadoop interop: files from our writer, read by Spark's SparkContext.sequenceFile (Hadoop's reader).

Needs the ``spark`` extra (pyspark, ~400 MB) and a Java runtime; skipped otherwise.
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pyspark")

from logflume.sequencefile import LONG_WRITABLE, NULL_WRITABLE, TEXT, SequenceFileReader, SequenceFileWriter  # noqa: E402

pytestmark = pytest.mark.spark

MODES = [("NONE", None)] + [(c, k) for c in ("RECORD", "BLOCK") for k in ("deflate", "gzip", "lz4", "snappy")]


@pytest.fixture(scope="module")
def sc() -> Iterator[Any]:
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        pytest.skip("no Java runtime")
    from pyspark import SparkConf, SparkContext

    conf = (
        SparkConf()
        .setMaster("local[2]")
        .setAppName("logflume-seqfile-interop")
        .set("spark.ui.enabled", "false")
        .set("spark.driver.host", "127.0.0.1")
        .set("spark.driver.bindAddress", "127.0.0.1")
        .set("spark.hadoop.fs.file.impl.disable.cache", "true")
    )
    context = SparkContext(conf=conf)
    context.setLogLevel("ERROR")
    yield context
    context.stop()


def _records(n: int, seed: int) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        size = rng.choice([0, 1, 30, 200, 3000])
        value = (
            rng.randbytes(size) if i % 3 else (f"line {i} level=INFO msg=hello\n" * (size // 30 + 1)).encode()
        )
        out.append((f"key-{i:06d}-é😀", value))
    # bigger than the sync interval, the default block size, and Hadoop's 256 KiB lz4/snappy buffer
    out[5] = ("big-random", os.urandom(1_200_000))
    out[6] = ("big-text", b"2026-01-01 12:00:00 INFO something happened\n" * 30_000)
    out[7] = ("", b"")
    return out


def _write(path: Path, records: list[tuple[Any, Any]], **kw: Any) -> None:
    with path.open("wb") as f, SequenceFileWriter(f, **kw) as w:
        for k, v in records:
            w.append(k, v)


def _spark_read(sc: Any, path: Path, parts: int = 1) -> list[tuple[Any, Any]]:
    rdd = sc.sequenceFile(str(path), minSplits=parts)
    return rdd.collect()


@pytest.mark.parametrize(("compression", "codec"), MODES)
def test_spark_reads_our_files(sc: Any, tmp_path: Path, compression: str, codec: str | None) -> None:
    records = _records(400, seed=1)
    path = tmp_path / f"ours-{compression}-{codec}.seq"
    _write(
        path,
        records,
        compression=compression,
        codec=codec,
        metadata={"writer": "logflume"},
        block_size=200_000,
    )
    got = _spark_read(sc, path)
    assert [(k, bytes(v)) for k, v in got] == records


@pytest.mark.parametrize(
    ("compression", "codec"), [("NONE", None), ("RECORD", "snappy"), ("BLOCK", "deflate"), ("BLOCK", "lz4")]
)
def test_spark_reads_in_several_splits(sc: Any, tmp_path: Path, compression: str, codec: str | None) -> None:
    rng = random.Random(2)
    records = [(f"r{i:06d}", rng.randbytes(rng.choice([10, 100, 1000, 5000]))) for i in range(6000)]
    path = tmp_path / "split.seq"
    _write(path, records, compression=compression, codec=codec, block_size=100_000)
    assert path.stat().st_size > 4 * 102_400
    rdd = sc.sequenceFile(str(path), minSplits=5)
    assert rdd.getNumPartitions() >= 4
    per_part = rdd.glom().map(len).collect()
    assert sum(1 for n in per_part if n) >= 3  # really read in pieces
    got = rdd.collect()
    assert [(k, bytes(v)) for k, v in got] == records
    # our reader agrees with Hadoop on the split boundaries' semantics: same total, each once
    size = path.stat().st_size
    ours = []
    for i in range(5):
        with path.open("rb") as f:
            ours.extend(SequenceFileReader(f, start=size * i // 5, end=size * (i + 1) // 5))
    assert ours == records


def test_spark_reads_long_and_null_writables(sc: Any, tmp_path: Path) -> None:
    longs = [(v, f"value {v}") for v in (0, -1, 2**63 - 1, -(2**63), 42)]
    path = tmp_path / "long.seq"
    _write(path, longs, key_class=LONG_WRITABLE, value_class=TEXT, compression="BLOCK", codec="gzip")
    assert _spark_read(sc, path) == longs
    nulls = [(f"k{i}", None) for i in range(10)]
    path = tmp_path / "null.seq"
    _write(path, nulls, key_class=TEXT, value_class=NULL_WRITABLE, compression="RECORD", codec="lz4")
    assert _spark_read(sc, path) == nulls
