"""The Spark engine (local[2]) and the local engine write the same rows: Spark reads both Parquet outputs and compares.

One SparkSession for the module.  The input mixes the sample logs of every
built-in, generated streams, edge records (invalid UTF-8, ``\\r`` inside a
record, a 60k-character quoted field, impossible dates, a record split across
chunks) and a file with unusable chunk metadata; access and raw are parsed by
Spark SQL (regex: its printable-ASCII records), the rest through the processors' batch path in ``mapInArrow``.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import yaml

from jobs.demux import load_spec
from jobs.demux import run as demux_run
from logflume.chunk import FLAG_SPLIT, Chunk
from tests.jobs.conftest import SAMPLE_CONFIG, T0, chunks_of, make_sample_sinks, make_sink_set, write_sink_file
from tests.jobs.test_archive import _poison_file
from tests.jobs.test_processors_batch import ACCESS, RAW, SYSLOG

pytestmark = pytest.mark.spark
pyspark = pytest.importorskip("pyspark")


@pytest.fixture(scope="module")
def spark():
    from jobs.engines.spark import spark_session, stop_gateway

    session = spark_session("local[2]", {"spark.sql.shuffle.partitions": "2"})
    yield session
    session.stop()
    stop_gateway()


EDGE_ACCESS = [
    *ACCESS,
    b'10.0.0.1 - - [24/Nov/2025:16:00:02 +0000] "GET /' + b"a" * 60_000 + b' HTTP/1.1" 200 5 "-" "curl"',
    b'10.0.0.1 - - [24/Nov/2025:16:00:02 +0000] "GET /\\"q\\" HTTP/1.1" 200 5 "r\\"x" "a\\\\"',
    b'10.0.0.1 - - [24/Nov/2025:16:00:02 +0000] "GET /\r HTTP/1.1" 200 5',
    b'10.0.0.1 - - [29/Feb/2024:23:59:59 -1200] "GET / HTTP/2.0" 200 5 "" ""',
    b'10.0.0.1 - - [29/Feb/2025:23:59:59 -1200] "GET / HTTP/2.0" 200 5',
    b'10.0.0.1 - - [24/Nov/2025:24:00:00 +0000] "GET / HTTP/2.0" 200 5',
    b'10.0.0.1 - - [24/Nov/2025:16:00:60 +0000] "GET / HTTP/2.0" 200 5',
    b'10.0.0.1 - - [08/Mar/2026:02:30:00 -0500] "GET / HTTP/2.0" 200 5',
    b'10.0.0.1\xe2\x80\xa8x - - [24/Nov/2025:16:00:02 +0000] "GET / HTTP/1.1" 200 5',
    b'10.0.0.1 - - [24/Nov/2025:16:00:02 +0000] "GET / HTTP/1.1" 200 5 "-" "-" \xed\xa0\x80 tail',
    b'10.0.0.1 - - [24/Nov/2025:16:00:02 +0000] "GET /\xef\xbf\xbf HTTP/1.1" 200 5',  # U+FFFF: the engine's
    b"\xef\xbf\xbf",  # own group separator, so these go to the processor
]
EDGE_APPLOG = [
    b"2025-11-24 16:00:00 INFO [main] started",
    b"2025-11-24 16:00:00 INFO [main] ",
    b"2025-11-24 16:00:00 INFO [m\xc3\xa4in] caf\xc3\xa9",
    b"2025-11-24 16:00:00 INFO [main] a\rb",
    b"2025-11-24 16:00:00 info [main] lower case level",
    b"2025-11-24\t16:00:00 INFO [main] tab",
    b"2025-11-24 16:00:00 WARN [pool-1] " + b"x" * 5000,
]
METRICS = [
    b"cpu_load=0.25 3", b"disk=-1.5e3 12", b"mem=12 99999999999999999999", b"net=1.2.3 4", b"temp=.5 007",
    b"fan=5 -", b"bad line", b"x=1 2 extra", b"\xffx=1 2", b"up=1e999 1",
]
JAN = 1_767_225_600_000  # 2026-01-01T00:00:00Z: a December RFC 3164 line read now is from last year
DEC_3164 = [b"<13>Dec 31 23:59:59 host app[12]: old year", b"<13>Dec 31 23:59:59 host app: \xef\xbf\xbf",
            b"Feb 29 00:00:00 host leap? not in 2026",
            b"Jan  1 00:00:01 host tag:no space", b"Jan  1 00:00:01 host a b: c", b"Jan  1 00:00:01 host x[1:2]: y"]
EDGE_RAW = [*RAW, b"\xe2\x82", b"\xf0\x9f\x98", b"tab\there", b"\x00nul", b"\xc0\xaf", "é\u2028".encode()]


def edge_sinks(root: Path) -> None:
    """Edge records as their own streams, plus a chunk flagged split (its last record goes to _errors)."""
    rng = random.Random(7)
    chunks: list[Chunk] = []
    for name, dt, lines, ts in (("edge-access", "EdgeAccess", EDGE_ACCESS, T0), ("edge-raw", "Misc", EDGE_RAW, T0),
                                ("edge-syslog", "EdgeSyslog", SYSLOG, T0), ("edge-app", "AppLog", EDGE_APPLOG, T0),
                                ("metrics", "Metrics", METRICS, T0),
                                ("syslog-jan", "EdgeSyslog", [*SYSLOG, *DEC_3164], JAN)):
        data = b"".join(line + b"\n" for line in lines)
        chunks += chunks_of(data, ("edge", f"/var/log/{name}", "1"), dt, rng, ts=ts + 7_200_000,
                            explicit=name == "edge-raw")
    split = Chunk("edge", "/var/log/split", "NginxAccess", 30, "1", b"line one\nand a very long recor",
                  timestamp=T0, flags=[FLAG_SPLIT])
    rest = Chunk("edge", "/var/log/split", "NginxAccess", 39, "1", b"d, cont.\n", timestamp=T0 + 1)
    write_sink_file(root / "2025-11-24" / "edge.seq", [*chunks, split, rest])


def parquet_dirs(root: Path) -> set[str]:
    return {str(p.parent.relative_to(root)) for p in root.rglob("part-*.parquet")}


def test_local_and_spark_engines_write_the_same_rows(spark, tmp_path: Path) -> None:
    from jobs.engines.spark import Plan, SparkDemux, parse_columns

    sink = tmp_path / "sink"
    make_sample_sinks(sink)
    make_sink_set(tmp_path / "more", n_streams=4, lines=300, collectors=1, files_per_collector=2)
    for p in (tmp_path / "more").rglob("*.seq"):
        if not p.name.startswith(("_", ".")):
            p.rename(sink / "2025-11-24" / ("more-" + p.name))
    edge_sinks(sink)
    n_bad = _poison_file(sink / "2025-11-24" / "poison.seq",
                         [Chunk("h", "poison", "Raw", 4, "e", b"ok!\n", timestamp=T0)])
    cfg = tmp_path / "demux.yaml"
    metrics = {"type": "regex", "pattern": r"(?P<name>[a-z_]+)=(?P<value>[-+0-9.e]+) (?P<count>[0-9-]+)",
               "types": {"value": "float", "count": "int"}}
    cfg.write_text(yaml.safe_dump({"processors": {**SAMPLE_CONFIG["processors"], "Metrics": metrics}}))
    spec = load_spec(str(cfg), [])

    local = demux_run(str(sink), str(tmp_path / "local"), spec, "parquet", workers=2, split_size=16384)
    got = SparkDemux(str(sink), str(tmp_path / "spark"), spec, "parquet", None, 16384, spark=spark).run()

    # Spark SQL parses access, raw and regex (printable ASCII); the others go through their batch path
    rows = [(line, "Metrics", False, T0) for line in METRICS] + [(line, "AppLog", False, T0) for line in EDGE_APPLOG]
    rows += [(line, "EdgeSyslog", False, JAN) for line in [*SYSLOG, *DEC_3164]]
    df = spark.createDataFrame(rows, "raw binary, datatype string, split boolean, timestamp bigint")
    parsed, compiled = parse_columns(df, Plan(spec))
    kinds = {Plan(spec).entries[i]["type"] for i in compiled}
    assert kinds == {"access", "raw", "regex", "syslog"}
    rows = parsed.collect()
    slow = {bytes(r["raw"]) for r in rows if r["slow"] and r["datatype"] != "EdgeSyslog"}
    assert slow == {b"mem=12 99999999999999999999", b"net=1.2.3 4", b"fan=5 -", b"\xffx=1 2", b"up=1e999 1",
                    EDGE_APPLOG[1], EDGE_APPLOG[2], EDGE_APPLOG[3]}  # no match (tab) is decided in SQL
    syslog_sql = [bytes(r["raw"]) for r in rows if r["datatype"] == "EdgeSyslog" and not r["slow"]]
    assert DEC_3164[0] in syslog_sql and DEC_3164[3] in syslog_sql and len(syslog_sql) >= len(SYSLOG) // 2
    assert DEC_3164[1] not in syslog_sql

    assert got.tasks == local.tasks > 2
    for key in ("chunks", "records", "errors", "bytes", "bad_chunks", "output_files"):
        assert getattr(got, key) == getattr(local, key), key
    assert got.bad_chunks == n_bad
    assert got.by_datatype == local.by_datatype
    assert local.by_datatype["EdgeAccess"]["errors"] >= 8 and local.by_datatype["EdgeAccess"]["records"] >= 8

    dirs = parquet_dirs(tmp_path / "local")
    assert dirs == parquet_dirs(tmp_path / "spark")
    assert any(d.startswith("_errors/datatype=EdgeAccess") for d in dirs)
    assert {p.name for p in (tmp_path / "local" / "_errors" / "_chunks").iterdir()} == \
        {p.name for p in (tmp_path / "spark" / "_errors" / "_chunks").iterdir()}
    compared = 0
    for sub in ("", "_errors"):  # Spark skips _errors under a root: it is read as a root of its own
        want = spark.read.option("mergeSchema", "true").parquet(str(tmp_path / "local" / sub))
        have = spark.read.option("mergeSchema", "true").parquet(str(tmp_path / "spark" / sub))
        assert sorted(have.schema, key=lambda f: f.name) == sorted(want.schema, key=lambda f: f.name), sub
        have = have.select(*sorted(want.columns))
        want = want.select(*sorted(want.columns))
        n = want.count()
        assert have.count() == n > 0, sub
        assert have.exceptAll(want).count() == 0 and want.exceptAll(have).count() == 0, sub
        compared += n
    assert compared == local.records + local.errors


def test_a_failed_spark_batch_leaves_nothing_visible_and_the_rerun_rolls_it_back(spark, tmp_path: Path) -> None:
    """A task that fails (a torn input file) fails the Spark job: nothing is published, and the next run
    rolls the batch back and gives exactly what an uninterrupted run gives."""
    from jobs.engines.spark import SparkDemux

    sink = tmp_path / "sink"
    make_sample_sinks(sink)
    torn = sink / "2025-11-24" / "zz-torn.seq"
    good = (sink / "2025-11-24" / "collector0-1-0.seq").read_bytes()
    torn.write_bytes(good[: len(good) - 7])
    spec = load_spec(None, [])
    out = tmp_path / "spark"
    with pytest.raises(Exception, match="zz-torn.seq"):
        SparkDemux(str(sink), str(out), spec, "parquet", None, 4096, spark=spark).run()
    assert (out / "_manifest" / "pending.json").exists()
    assert not [p for p in out.rglob("part-*") if not p.name.startswith(".")]  # nothing a reader counts
    torn.unlink()
    again = SparkDemux(str(sink), str(out), spec, "parquet", None, 4096, spark=spark).run()
    assert again.recovered_batches == 1 and again.batches == 1
    assert not [p for p in out.rglob(".*") if p.is_file()]  # the failed batch's staged files are gone
    local = demux_run(str(sink), str(tmp_path / "local"), spec, "parquet", workers=1, split_size=4096)
    assert (again.records, again.errors, again.output_files) == (local.records, local.errors, local.output_files)
    want = spark.read.option("mergeSchema", "true").parquet(str(tmp_path / "local"))
    have = spark.read.option("mergeSchema", "true").parquet(str(out))
    assert have.count() == want.count() == local.records
    assert have.exceptAll(want.select(*have.columns)).count() == 0
