"""Spark demux engine: the same tasks, batches and commit as the local engine; parsing as Spark SQL.

:class:`SparkDemux` is :class:`jobs.demux.Demux` with another pool: input is
taken in the same batches, cut into the same tasks (``local.plan_tasks``:
byte ranges of sink files split at sync markers), and committed through the
same manifest, staged names and publish step.  Per batch, one Spark job:

1. ``mapInArrow`` over the tasks (one Spark partition each) reads chunks with
   :func:`jobs.sinkfiles.read_chunks` and cuts them into records with
   :func:`jobs.records.chunk_records` — the local engine's code — giving
   Arrow batches of records with their provenance; chunks with unusable
   metadata are set aside to ``_errors/_chunks`` as the local engine does.
2. ``select``: each datatype's processor, compiled to Spark SQL
   (:mod:`jobs.engines.spark_sql`: ``regexp_extract``, ``rlike``, casts), gives
   the fields and a reason (null: parsed) in the JVM.
3. ``mapInArrow`` writes the rows with the local engine's part-file writer
   (:class:`jobs.outputs.TableFiles`) under the same
   ``datatype=/date=/hour=`` partitions and ``part-<batch>-<task>`` names.
   Processors without a compiler (third-party plugins, ``json``), and the
   records a compiled one leaves to its processor (``slow``: syslog structured
   data, a regex's non-ASCII records, …), run here through ``process_batch``
   on whole Arrow batches: a Python call per batch, never a per-record UDF.

Input and output are opened through fsspec on the executors, so both URLs
must be reachable from every executor (shared storage; a local path only for
a ``local`` master), and executors need logflume installed.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict
from functools import partial
from typing import Any

from jobs.demux import Demux
from jobs.engines.local import MEMORY, Task, TaskResult, part_stem
from jobs.records import (
    BAD_CHUNKS,
    ERRORS,
    PROVENANCE,
    SPLIT_REASON,
    DemuxStats,
    ProcessorSpec,
    TypeStats,
    _build,
    chunk_records,
    hive_partition,
)

#: What step 1 gives per record (``info``: only on the one summary row per task, which has no record).
READ_SCHEMA = ("task int, chunk bigint, datatype string, source string, stream string, epoch string, "
               "offset bigint, timestamp bigint, tags string, raw binary, split boolean, info string")
RESULT_SCHEMA = "task int, info string"
#: Rows per Arrow batch Spark hands the writer step (Spark's default, 10,000, makes the per-batch work show).
ARROW_ROWS = 65536


# ---- session ---------------------------------------------------------------------------------------------------

def spark_session(master: str | None = None, conf: dict[str, str] | None = None) -> Any:
    """A SparkSession: ``master`` if given, else spark-submit's, else ``local[*]`` bound to loopback."""
    try:
        from pyspark import SparkConf
        from pyspark.sql import SparkSession
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
    spark = SparkSession.builder.config(conf=sconf).getOrCreate()
    spark.conf.set("spark.sql.session.timeZone", "UTC")  # time checks round-trip in UTC: no DST gaps
    if "spark.sql.execution.arrow.maxRecordsPerBatch" not in (conf or {}):
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(ARROW_ROWS))
    return spark


def stop_gateway() -> None:
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


# ---- which processor each record gets --------------------------------------------------------------------------

class Plan:
    """The spec's processor entries, numbered: ``kind`` of a record is the index of its datatype's entry."""

    def __init__(self, spec: ProcessorSpec) -> None:
        self.entries: list[dict[str, Any]] = []
        self.by_datatype = {dt: self._add(e) for dt, e in spec.by_datatype.items()}
        self.default = self._add(spec.default) if spec.default is not None else None
        self.by_word = {kind: self._add({"type": kind}) for kind in ("syslog", "access", "json", "raw")}

    def _add(self, entry: Any) -> int:
        entry = dict(entry)
        if entry not in self.entries:
            self.entries.append(entry)
        return self.entries.index(entry)

    def kind_column(self, datatype: Any) -> Any:
        """``ProcessorSpec.entry`` as SQL: configured datatypes, then the default or the datatype's words."""
        from pyspark.sql import functions as F

        out = None
        for dt, k in self.by_datatype.items():
            cond = datatype == F.lit(dt)
            out = F.when(cond, k) if out is None else out.when(cond, k)
        if self.default is not None:
            rest: Any = F.lit(self.default)
        else:
            low = F.lower(datatype)
            rest = F.lit(self.by_word["raw"])
            for word in ("json", "access", "syslog"):  # built inside out: syslog wins, as default_processor_type
                rest = F.when(low.contains(word), self.by_word[word]).otherwise(rest)
        return rest if out is None else out.otherwise(rest)


def parse_columns(df: Any, plan: Plan) -> tuple[Any, dict[int, list[str]]]:
    """``df`` plus ``kind``, ``reason`` and, per compiled entry ``i``, a struct column ``f<i>`` of its fields."""
    from pyspark.sql import functions as F

    from jobs.engines.spark_sql import Let, compile_processor

    kind = plan.kind_column(F.col("datatype"))
    compiled: dict[int, list[str]] = {}
    reason = slow = None
    structs = []
    jvm = getattr(df.sparkSession, "_jvm", None)

    def java_compiles(pattern: str) -> bool:
        try:
            jvm.java.util.regex.Pattern.compile(pattern)
        except Exception:
            return False
        return True

    columns = list(df.columns)
    df = df.withColumn("kind", kind)
    steps: list[tuple[str, Any]] = []
    for i, entry in enumerate(plan.entries):
        c = compile_processor(_build(entry), F.col("raw"), java_compiles if jvm is not None else None,
                              F.col("timestamp"), Let(f"_k{i}_", F.col("kind") == i))
        if c is None:
            continue
        steps += c.steps
        compiled[i] = [name for name, _ in c.fields]
        cond = F.col("kind") == i
        why = c.reason if c.fast is None else F.when(c.fast, c.reason)  # a slow record's reason is the processor's
        reason = F.when(cond, why) if reason is None else reason.when(cond, why)
        is_slow = F.lit(False) if c.fast is None else ~c.fast
        slow = F.when(cond, is_slow) if slow is None else slow.when(cond, is_slow)
        structs.append(F.when(cond, F.struct(*(col.alias(name) for name, col in c.fields))).alias(f"f{i}"))
    # intermediate columns, added a dependency level at a time (one withColumn each would make Spark analyse
    # the plan once per column: seconds per batch)
    level: dict[str, int] = {}
    for name, expr in steps:
        text = str(expr)
        level[name] = 1 + max((level[n] for n in level if n in text), default=0)
    for lv in sorted(set(level.values())):
        df = df.withColumns({name: expr for name, expr in steps if level[name] == lv})
    reason = F.lit(None).cast("string") if reason is None else reason
    slow = F.lit(True) if slow is None else slow.otherwise(F.lit(True))
    reason = F.when(F.col("split"), F.lit(SPLIT_REASON)).otherwise(reason)
    return df.select(*columns, "kind", reason.alias("reason"), slow.alias("slow"), *structs), compiled


# ---- step 1: tasks -> records ----------------------------------------------------------------------------------

def read_tasks(in_fs: Any, out_fs: Any, out_root: str, batch_bytes: int, batches: Iterator[Any]) -> Iterator[Any]:
    """Runs on an executor: each task's chunks as Arrow batches of records, then one summary row."""
    from jobs.outputs import staged_name
    from jobs.setaside import Rejected, SetAsideFile
    from jobs.sinkfiles import read_chunks

    for b in batches:
        for index, path, start, end, batch in zip(*(b.column(i).to_pylist() for i in range(5)), strict=True):
            bad = SetAsideFile(out_fs, staged_name(f"{out_root}/{BAD_CHUNKS}/chunks-{batch:06d}-{index:05d}.seq"),
                               "demux")
            stats, by_type = DemuxStats(), {}
            waiting: list[Any] = []
            size = n_chunks = 0
            try:
                for chunk in read_chunks(in_fs, path, start, end):
                    if isinstance(chunk, Rejected):
                        stats.bad_chunks += 1
                        bad.add(chunk.key(), chunk.data)
                        continue
                    n = len(chunk.data)
                    stats.chunks += 1
                    stats.bytes += n
                    ts = by_type.setdefault(chunk.datatype, TypeStats())
                    ts.chunks += 1
                    ts.bytes += n
                    waiting.append(chunk)
                    size += n
                    if size >= batch_bytes:
                        yield record_batch(index, n_chunks, waiting)
                        n_chunks += len(waiting)
                        waiting, size = [], 0
                if waiting:
                    yield record_batch(index, n_chunks, waiting)
                bad_file = bad.close()
            except BaseException:
                bad.abort()
                raise
            info = {"stats": asdict(stats), "by_type": {k: asdict(v) for k, v in by_type.items()},
                    "files": [bad_file] if bad_file else []}
            yield summary_row(index, json.dumps(info))


def record_batch(task: int, first_chunk: int, chunks: list[Any]) -> Any:
    """Chunks' records (cut as the local engine cuts them) with their provenance, one row each."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from logflume.chunk import FLAG_SPLIT
    from logflume.processor import encode_json

    records, chunk_of, offsets = chunk_records(chunks)
    n = len(records)

    def per_chunk(values: list[Any], kind: Any) -> Any:
        return pa.array(values, kind).take(chunk_of)

    split = [i for i, c in enumerate(chunks) if FLAG_SPLIT in c.flags]
    if split and n:
        nxt = pa.concat_arrays([chunk_of.slice(1), pa.array([-1], pa.int32())])
        tail = pc.and_(pc.not_equal(chunk_of, nxt), pc.is_in(chunk_of, value_set=pa.array(split, pa.int32())))
    else:
        tail = pa.repeat(pa.scalar(False), n)
    return pa.RecordBatch.from_arrays([
        pa.repeat(pa.scalar(task, pa.int32()), n),
        pc.add(chunk_of.cast(pa.int64()), first_chunk),
        per_chunk([c.datatype for c in chunks], pa.string()),
        per_chunk([c.source for c in chunks], pa.string()),
        per_chunk([c.stream for c in chunks], pa.string()),
        per_chunk([c.epoch for c in chunks], pa.string()),
        offsets,
        per_chunk([c.timestamp for c in chunks], pa.int64()),
        per_chunk([encode_json(dict(c.tags)) for c in chunks], pa.string()),
        records,
        tail,
        pa.nulls(n, pa.string()),
    ], names=[f.split()[0] for f in READ_SCHEMA.split(", ")])


def summary_row(task: int, info: str) -> Any:
    import pyarrow as pa

    names = [f.split()[0] for f in READ_SCHEMA.split(", ")]
    types = {"int": pa.int32(), "bigint": pa.int64(), "string": pa.string(), "binary": pa.binary(),
             "boolean": pa.bool_()}
    cols = [pa.nulls(1, types[f.split()[1]]) for f in READ_SCHEMA.split(", ")]
    cols[0] = pa.array([task], pa.int32())
    cols[names.index("split")] = pa.array([False])
    cols[-1] = pa.array([info], pa.string())
    return pa.RecordBatch.from_arrays(cols, names=names)


# ---- step 3: rows -> part files --------------------------------------------------------------------------------

class _TaskWriter:
    """One task's part files and counts."""

    def __init__(self, out_fs: Any, out_root: str, stem: str, fmt: str, memory: int) -> None:
        from jobs.outputs import TableFiles

        self.files = TableFiles(out_fs, out_root, stem, fmt, max(1 << 16, memory // 4))
        self.records: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.info: dict[str, Any] | None = None


def write_rows(out_fs: Any, out_root: str, spec: ProcessorSpec, fmt: str, memory: int, batch: int,
               entries: list[dict[str, Any]], compiled: dict[int, list[str]], batches: Iterator[Any]) -> Iterator[Any]:
    """Runs on an executor: parsed rows into staged part files; yields one result row per task."""
    import pyarrow as pa
    import pyarrow.compute as pc

    writers: dict[int, _TaskWriter] = {}
    procs: dict[int, Any] = {}
    try:
        for b in batches:
            table = pa.Table.from_batches([b])
            info = table.column("info")
            if info.null_count < len(info):
                for task, text in zip(table.column("task").to_pylist(), info.to_pylist(), strict=True):
                    if text is not None:
                        _writer(writers, task, out_fs, out_root, batch, fmt, memory).info = json.loads(text)
                table = table.filter(pc.is_null(info))
            if not table.num_rows:
                continue
            keys = table.group_by(["task", "kind", "datatype", "slow"]).aggregate([]).to_pylist()
            for key in keys:
                mask = pc.and_(pc.and_(pc.equal(table["task"], key["task"]), pc.equal(table["kind"], key["kind"])),
                               pc.and_(pc.equal(table["datatype"], key["datatype"]),
                                       pc.equal(table["slow"], key["slow"])))
                part = table.filter(mask) if len(keys) > 1 else table
                k = key["kind"]
                if k not in procs:
                    procs[k] = _build(entries[k])
                w = _writer(writers, key["task"], out_fs, out_root, batch, fmt, memory)
                _write_part(w, procs[k], key["datatype"], part, None if key["slow"] else compiled.get(k))
        for task, w in sorted(writers.items()):
            staged = w.files.close()
            info = w.info or {"stats": asdict(DemuxStats()), "by_type": {}, "files": []}
            info["files"] = staged + info["files"]
            info["records"], info["errors"] = w.records, w.errors
            yield pa.RecordBatch.from_arrays([pa.array([task], pa.int32()), pa.array([json.dumps(info)])],
                                             names=["task", "info"])
    except BaseException:
        for w in writers.values():
            w.files.abort()
        raise


def _writer(writers: dict[int, _TaskWriter], task: int, out_fs: Any, out_root: str, batch: int, fmt: str,
            memory: int) -> _TaskWriter:
    w = writers.get(task)
    if w is None:
        w = writers[task] = _TaskWriter(out_fs, out_root, part_stem(batch, task), fmt, memory)
    return w


def _write_part(w: _TaskWriter, proc: Any, datatype: str, rows: Any, fields: list[str] | None) -> None:
    """One datatype's rows of one task: good rows and ``_errors`` rows, by UTC hour, as parse_chunks lays them out."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from jobs.layout import utc_day_hour
    from logflume.processor import BatchContext, RecordContext

    records = rows["raw"].combine_chunks().cast(pa.binary())
    reasons = rows["reason"].combine_chunks().cast(pa.string())
    if fields is not None:  # parsed by Spark SQL
        struct = rows[f"f{rows['kind'][0].as_py()}"].combine_chunks()
        schema = proc.output_schema()
        cols = {name: struct.field(name).cast(schema.field(name).type) for name in fields}
        parsed_fields = pa.RecordBatch.from_arrays(list(cols.values()), schema=schema)
    else:  # the fallback: the processor's own batch path, a call per batch
        chunks = rows["chunk"].combine_chunks()
        firsts = pc.unique(chunks)
        idx = pc.index_in(chunks, value_set=firsts).cast(pa.int32())
        at = pc.index_in(firsts, value_set=chunks)  # first row of each chunk
        take = rows.take(at)
        contexts = [RecordContext(s, st, e, 0, datatype, t, json.loads(tags)) for s, st, e, t, tags in zip(
            take["source"].to_pylist(), take["stream"].to_pylist(), take["epoch"].to_pylist(),
            take["timestamp"].to_pylist(), take["tags"].to_pylist(), strict=True)]
        where = BatchContext(datatype, contexts, idx, rows["offset"].combine_chunks().cast(pa.int64()))
        parsed = proc.process_batch(records, where)
        parsed_fields = parsed.fields
        reasons = pc.coalesce(reasons, parsed.reasons.cast(pa.string()))  # the split-tail reason comes first
    n = len(records)
    prov = {
        "_source": rows["source"], "_stream": rows["stream"], "_epoch": rows["epoch"], "_offset": rows["offset"],
        "_timestamp": rows["timestamp"], "_datatype": pa.repeat(pa.scalar(datatype, pa.string()), n),
        "_tags": rows["tags"],
    }
    types = {"_offset": pa.int64(), "_timestamp": pa.int64()}
    prov = {k: pa.chunked_array([v]) if isinstance(v, pa.Array) else v for k, v in prov.items()}
    prov = {k: v.cast(types.get(k, pa.string())) for k, v in prov.items()}
    assert tuple(prov) == PROVENANCE
    own = [name for name in parsed_fields.schema.names if name not in prov]
    good = pa.table([*(parsed_fields.column(name) for name in own), *prov.values()], names=[*own, *prov])
    ok = pc.is_null(reasons)
    errors_at = pc.indices_nonzero(pc.invert(ok))
    sides = [((), good.filter(ok))]
    if len(errors_at):
        raw = records.take(errors_at)
        try:
            text = raw.cast(pa.string())
        except pa.ArrowInvalid:
            text = pa.array([r.decode("utf-8", "backslashreplace") for r in raw.to_pylist()], pa.string())
        bad = pa.table([*(prov[k].take(errors_at) for k in prov), reasons.take(errors_at), text],
                       names=[*prov, "reason", "raw"])
        sides.append(((ERRORS,), bad))
    w.records[datatype] = w.records.get(datatype, 0) + n - len(errors_at)
    w.errors[datatype] = w.errors.get(datatype, 0) + len(errors_at)
    for prefix, table in sides:
        stamps = table["_timestamp"]
        hours = {ts: utc_day_hour(ts) for ts in pc.unique(stamps).to_pylist()}
        for day_hour in sorted(set(hours.values())):
            members = pa.array([ts for ts, h in hours.items() if h == day_hour], pa.int64())
            sub = table.filter(pc.is_in(stamps, value_set=members)) if len(hours) > 1 else table
            if sub.num_rows:
                w.files.add((*prefix, *hive_partition(datatype, *day_hour)), sub)


# ---- the pool the demux commit drives --------------------------------------------------------------------------

class SparkPool:
    """Runs a batch's tasks as one Spark job (``run``), in the shape the demux commit expects of a pool."""

    def __init__(self, in_fs: Any, out_fs: Any, out_root: str, spec: ProcessorSpec, fmt: str, memory: int,
                 master: str | None = None, conf: dict[str, str] | None = None, spark: Any = None) -> None:
        self.args = (in_fs, out_fs, out_root.rstrip("/"), spec, fmt, memory)
        self.plan = Plan(spec)
        self.master, self.conf = master, conf
        self.own = spark is None
        self.spark = spark  # started on the first batch: a run with nothing new starts no JVM
        self._done = 0
        self.partitions = 0

    def bytes_done(self) -> int:
        return self._done

    def run(self, tasks: list[Task], poll: Callable[[], None] | None = None) -> list[TaskResult]:
        if not tasks:
            return []
        in_fs, out_fs, out_root, spec, fmt, memory = self.args
        batch = tasks[0].batch
        if self.spark is None:
            self.spark = spark_session(self.master, self.conf)
        self.spark.conf.set("spark.sql.session.timeZone", "UTC")
        sc = self.spark.sparkContext
        if (sc.getConf().get("spark.speculation") or "false").lower() == "true":
            from jobs.errors import JobError

            raise JobError("spark.speculation is on: two attempts of a task would write the same staged part "
                           "file at once; run demux with spark.speculation=false")
        rows = [(t.index, t.path, t.start, t.end, t.batch) for t in tasks]
        df = self.spark.createDataFrame(sc.parallelize(rows, len(rows)),
                                        "index int, path string, start bigint, end bigint, batch int")
        records = df.mapInArrow(partial(read_tasks, in_fs, out_fs, out_root, max(1 << 16, memory // 8)),
                                READ_SCHEMA)
        parsed, compiled = parse_columns(records, self.plan)
        out = parsed.mapInArrow(partial(write_rows, out_fs, out_root, spec, fmt, memory, batch, self.plan.entries,
                                        compiled), RESULT_SCHEMA)
        results = []
        for row in out.collect():
            info = json.loads(row["info"])
            stats = DemuxStats(**info["stats"])
            stats.records, stats.errors = sum(info["records"].values()), sum(info["errors"].values())
            by_type = {dt: TypeStats(**v) for dt, v in info["by_type"].items()}
            for dt, ts in by_type.items():
                ts.records, ts.errors = info["records"].get(dt, 0), info["errors"].get(dt, 0)
            results.append(TaskResult(row["task"], stats, info["files"], by_type))
            self._done += stats.bytes
        self.partitions += len(rows)
        if poll:
            poll()
        return sorted(results, key=lambda r: r.index)

    def close(self) -> None:
        if self.own and self.spark is not None:
            self.spark.stop()
            stop_gateway()
        self.spark = None


class SparkDemux(Demux):
    """``logflume demux --engine spark``: :class:`~jobs.demux.Demux` (batches, manifest, publish) on Spark."""

    engine = "spark"

    def __init__(self, *args: Any, master: str | None = None, conf: dict[str, str] | None = None,
                 spark: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.master, self.conf, self.spark = master, conf, spark

    def pool(self) -> SparkPool:
        return SparkPool(self.in_fs, self.out_fs, self.out_root, self.spec, self.fmt, self.memory or MEMORY,
                         self.master, self.conf, self.spark)
