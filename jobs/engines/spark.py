"""Spark demux engine: the same processors, as a PySpark job on any cluster (``spark`` extra).

Input is read with Hadoop's own ``SequenceFileInputFormat`` (``sc.sequenceFile``),
so Hadoop does the splitting at sync markers and any filesystem Hadoop knows
(hdfs://, s3a://, file://) works.  Each Spark partition runs
:class:`jobs.records.RecordSplitter` — the code the local engine runs — and
writes its own ``part-NNNNN`` files through fsspec, so the output URL must be
reachable from every executor (shared storage; ``file://`` only for local
masters) and executors need logflume installed (or shipped with ``--py-files``).
"""

from __future__ import annotations

import os
import sys
from functools import partial
from typing import Any

from jobs.outputs import write_partitions
from jobs.records import DemuxStats, ProcessorSpec, RecordSplitter, bad_chunks_file
from jobs.setaside import Rejected
from jobs.sinkfiles import InputFile, hadoop_url, open_fs, parse_record
from logflume.chunk import Chunk

TEXT = "org.apache.hadoop.io.Text"
BYTES_WRITABLE = "org.apache.hadoop.io.BytesWritable"
#: Bytes per Spark partition asked of Hadoop (it never splits between sync markers).
SPLIT_SIZE = 64 * 1024 * 1024


def _to_chunk(key: Any, value: Any, where: str) -> Chunk | Rejected:
    raw = key.encode("utf-8", "surrogateescape") if isinstance(key, str) else bytes(key)
    data = value if isinstance(value, (bytes, bytearray)) else bytes(value)  # PySpark gives bytearray: no copy
    return parse_record(raw, data, where)


def _partition(output_url: str, spec: ProcessorSpec, fmt: str, index: int, pairs: Any) -> Any:
    """Runs on an executor: one Spark partition -> part-<index> files; yields its stats and file names."""
    out_fs, out_root = open_fs(output_url)
    bad = bad_chunks_file(out_fs, out_root, index)
    splitter = RecordSplitter(spec, lambda r: bad.add(r.key(), r.data))
    where = f"spark partition {index}"
    records = (pr for key, value in pairs for pr in splitter.split(_to_chunk(key, value, where)))
    try:
        files = write_partitions(records, out_fs, out_root, index, fmt)
        bad_file = bad.close()
    except BaseException:
        bad.abort()
        raise
    st = splitter.stats
    yield (st.chunks, st.records, st.errors, st.bytes, st.bad_chunks, files + ([bad_file] if bad_file else []))


def spark_context(master: str | None = None, conf: dict[str, str] | None = None) -> Any:
    """A SparkContext: ``master`` if given, else spark-submit's, else ``local[*]`` bound to loopback."""
    try:
        from pyspark import SparkConf, SparkContext
    except ImportError:
        raise ValueError("--engine spark needs pyspark (and Java 17+): pip install 'logflume[spark]'") from None
    if (master or "local").startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # read when the JVM starts, below
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    sconf = SparkConf().setAppName("logflume demux")
    if master:
        sconf.setMaster(master)
    elif not sconf.contains("spark.master"):
        sconf.setMaster("local[*]")
    if sconf.get("spark.master", "").startswith("local"):
        sconf.setIfMissing("spark.driver.host", "127.0.0.1")
        sconf.setIfMissing("spark.driver.bindAddress", "127.0.0.1")
        sconf.setIfMissing("spark.ui.enabled", "false")
    for k, v in (conf or {}).items():
        sconf.set(k, v)
    return SparkContext.getOrCreate(sconf)


def _stop_gateway() -> None:
    """End the JVM pyspark started for us and reap it (it would outlive us as a zombie)."""
    from pyspark import SparkContext

    gateway = SparkContext._gateway
    proc = getattr(gateway, "proc", None)  # None under spark-submit: not ours
    if gateway is None or proc is None:
        return
    try:
        gateway.shutdown()
    finally:
        SparkContext._gateway = None
        SparkContext._jvm = None
        if proc.stdin:
            proc.stdin.close()  # the gateway server exits on EOF
        try:
            proc.wait(timeout=30)
        except Exception:
            proc.kill()
            proc.wait()


def run(files: list[InputFile], in_fs: Any, output_url: str, spec: ProcessorSpec, fmt: str,
        master: str | None = None, conf: dict[str, str] | None = None,
        split_size: int = SPLIT_SIZE, sc: Any = None) -> tuple[DemuxStats, list[str], int]:
    """Demux ``files`` on Spark; returns (stats, output files, Spark partitions)."""
    if not files:
        return DemuxStats(), [], 0
    own = sc is None
    if own:
        sc = spark_context(master, conf)
    try:
        paths = ",".join(hadoop_url(in_fs, f.path) for f in files)
        total = sum(f.size for f in files)
        rdd = sc.sequenceFile(paths, TEXT, BYTES_WRITABLE, minSplits=max(1, total // split_size))
        results = rdd.mapPartitionsWithIndex(partial(_partition, output_url, spec, fmt)).collect()
        partitions = rdd.getNumPartitions()
    finally:
        if own:
            sc.stop()
            _stop_gateway()
    stats = DemuxStats()
    outputs: list[str] = []
    for chunks, records, errors, nbytes, bad_chunks, names in results:
        stats.add(DemuxStats(chunks, records, errors, nbytes, bad_chunks))
        outputs.extend(names)
    return stats, outputs, partitions
