"""From chunks to records: split at record ends, pick the datatype's processor, keep provenance.

Shared by every demux engine, so the local and Spark engines give the same
records.  Each output record is the processor's fields plus its provenance:
``_source``, ``_stream``, ``_epoch``, ``_offset`` (stream offset of the
record's first byte), ``_datatype``, ``_timestamp`` (ms, when the chunk was
read) and ``_tags``.  A record the processor rejects becomes an error record
(provenance, ``reason``, ``raw``) in the ``_errors`` partition: none is dropped.
A chunk whose metadata cannot be used (:mod:`jobs.setaside`) is set aside whole,
in sink-file format, to ``_errors/_chunks/``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from jobs.layout import partition_name, utc_day, utc_day_hour
from jobs.setaside import ERRORS_DIR, Rejected, SetAsideFile
from logflume.chunk import FLAG_SPLIT, Chunk
from logflume.errors import ConfigError
from logflume.processor import ParseError, Processor, RecordContext, build_processor

try:  # built by pip install from _records.c; without a C compiler Arrow kernels cut the records
    from jobs import _records as _compiled
except ImportError:
    _compiled = None
if os.environ.get("LOGFLUME_PURE_PYTHON") == "1":  # to compare the two ways of cutting
    _compiled = None

ERRORS = ERRORS_DIR
#: Where demux sets aside whole chunks with unusable metadata (never a datatype directory: those never start
#: with "_").
BAD_CHUNKS = f"{ERRORS_DIR}/_chunks"


def default_processor_type(datatype: str) -> str:
    """The built-in used when config names none: by words in the datatype."""
    low = datatype.lower()
    for word, kind in (("syslog", "syslog"), ("access", "access"), ("json", "json")):
        if word in low:
            return kind
    return "raw"


@dataclass(frozen=True)
class ProcessorSpec:
    """Which processor each datatype gets: picklable, so workers build their own."""

    by_datatype: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # datatype -> {type:, ...}
    default: Mapping[str, Any] | None = None  # None: choose by datatype words

    @classmethod
    def from_config(cls, raw: Any, file: str | None = None) -> ProcessorSpec:
        """``{"processors": {DT: TYPE | {type: TYPE, ...settings}}, "default": TYPE | {...}}``."""
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(file, "", "expected a mapping with keys processors, default")
        unknown = set(raw) - {"processors", "default"}
        if unknown:
            raise ConfigError(file, sorted(unknown)[0], "unknown key; expected one of: default, processors")
        procs = raw.get("processors") or {}
        if not isinstance(procs, dict):
            raise ConfigError(file, "processors", "expected a mapping of datatype to processor")
        by = {str(dt): cls._entry(v, file, f"processors.{dt}") for dt, v in procs.items()}
        default = cls._entry(raw["default"], file, "default") if raw.get("default") is not None else None
        spec = cls(by, default)
        spec.validate(file)
        return spec

    @staticmethod
    def _entry(value: Any, file: str | None, path: str) -> dict[str, Any]:
        if isinstance(value, str):
            return {"type": value}
        if isinstance(value, dict) and isinstance(value.get("type"), str):
            return dict(value)
        raise ConfigError(file, path, "expected a processor type name or a mapping with key type")

    def entry(self, datatype: str) -> Mapping[str, Any]:
        if datatype in self.by_datatype:
            return self.by_datatype[datatype]
        return self.default or {"type": default_processor_type(datatype)}

    def validate(self, file: str | None = None) -> None:
        """Build every configured processor once, so bad config fails before any work."""
        for dt, entry in self.by_datatype.items():
            _build(entry, file, f"processors.{dt}")
        if self.default is not None:
            _build(self.default, file, "default")


def _build(entry: Mapping[str, Any], file: str | None = None, path: str = "") -> Processor:
    settings = {k: v for k, v in entry.items() if k != "type"}
    return build_processor(entry["type"], settings, file=file, path=path)


@dataclass
class DemuxStats:
    chunks: int = 0
    records: int = 0
    errors: int = 0
    bytes: int = 0
    bad_chunks: int = 0

    def add(self, other: DemuxStats) -> None:
        self.chunks += other.chunks
        self.records += other.records
        self.errors += other.errors
        self.bytes += other.bytes
        self.bad_chunks += other.bad_chunks


def bad_chunks_file(fs: Any, root: str, index: int) -> SetAsideFile:
    """Task ``index``'s file of set-aside chunks: ``<root>/_errors/_chunks/chunks-NNNNN.seq``."""
    return SetAsideFile(fs, f"{root.rstrip('/')}/{BAD_CHUNKS}/chunks-{index:05d}.seq", "demux")


class RecordSplitter:
    """Turns chunks into (partition, record) pairs with one processor per datatype, built on first use."""

    def __init__(self, spec: ProcessorSpec, set_aside: Callable[[Rejected], None] | None = None) -> None:
        self.spec = spec
        self.set_aside = set_aside
        self._procs: dict[str, Processor] = {}
        self.stats = DemuxStats()

    def processor(self, datatype: str) -> Processor:
        proc = self._procs.get(datatype)
        if proc is None:
            proc = self._procs[datatype] = _build(self.spec.entry(datatype))
        return proc

    def split(self, chunk: Chunk | Rejected) -> Iterator[tuple[tuple[str, ...], dict[str, Any]]]:
        """``((datatype dir, day), record)`` for good records, ``(("_errors", datatype dir, day), error)`` else.

        A rejected chunk yields nothing: it goes whole to ``set_aside``.
        """
        if isinstance(chunk, Rejected):
            self.stats.bad_chunks += 1
            if self.set_aside is None:
                raise ValueError(f"{chunk.where}: {chunk.reason}")
            self.set_aside(chunk)
            return
        proc = self.processor(chunk.datatype)
        dt_dir, day = partition_name(chunk.datatype), utc_day(chunk.timestamp)
        good, bad = (dt_dir, day), (ERRORS, dt_dir, day)
        st = self.stats
        st.chunks += 1
        st.bytes += len(chunk.data)
        tags = dict(chunk.tags)
        base = chunk.start
        # one context and one provenance template per chunk; only the offset changes per record
        where = RecordContext(chunk.source, chunk.stream, chunk.epoch, base, chunk.datatype, chunk.timestamp, tags)
        prov = {"_source": chunk.source, "_stream": chunk.stream, "_epoch": chunk.epoch, "_offset": base,
                "_datatype": chunk.datatype, "_timestamp": chunk.timestamp, "_tags": tags}
        records = raw_records(chunk)
        split_tail = len(records) - 1 if FLAG_SPLIT in chunk.flags else -1
        process = proc.process
        for i, (offset, raw) in enumerate(records):
            where.offset = base + offset
            try:
                if i == split_tail:
                    raise ParseError("record longer than the agent's chunk_size: split across chunks")
                fields = process(raw, where)
                if not isinstance(fields, dict):
                    raise ParseError(f"processor returned {type(fields).__name__}, expected a dict")
            except ParseError as exc:
                reason = exc.reason
            except Exception as exc:  # a plugin bug must not lose the record either
                reason = f"processor {type(proc).__name__} failed: {exc!r}"
            else:
                st.records += 1
                rec = {**fields, **prov}
                rec["_offset"] = base + offset
                yield good, rec
                continue
            st.errors += 1
            err = {**prov, "reason": reason, "raw": raw.decode("utf-8", "backslashreplace")}
            err["_offset"] = base + offset
            yield bad, err


def raw_records(chunk: Chunk) -> list[tuple[int, bytes]]:
    """(offset in chunk, record bytes without its ``\n`` or ``\r\n``) for each record of a chunk."""
    data = chunk.data
    if chunk.record_ends is None:
        lines = (data if isinstance(data, bytes) else bytes(data)).split(b"\n")
        last = lines.pop()  # after the final newline: empty, or a record without one
        out = []
        off = 0
        for line in lines:
            out.append((off, line[:-1] if line.endswith(b"\r") else line))
            off += len(line) + 1
        if last:
            out.append((off, last))
        return out
    mv = memoryview(data)
    out = []
    for s, e in chunk.record_spans():
        raw = bytes(mv[s:e])
        if raw.endswith(b"\n"):
            raw = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1]
        out.append((s, raw))
    return out


# ---- the batch path: many chunks of one datatype -> one Arrow record batch -------------------------------------

#: Provenance columns on every output row, after the processor's fields (which never override them).
PROVENANCE = ("_source", "_stream", "_epoch", "_offset", "_timestamp", "_datatype", "_tags")
SPLIT_REASON = "record longer than the agent's chunk_size: split across chunks"


def hive_partition(datatype: str, day: str, hour: str) -> tuple[str, str, str]:
    """``datatype=…/date=…/hour=…``: the directories Spark, DuckDB and pandas read as columns."""
    return (f"datatype={partition_name(datatype)}", f"date={day}", f"hour={hour}")


@dataclass
class TypeStats:
    """One datatype's counts in a demux run."""

    chunks: int = 0
    records: int = 0
    errors: int = 0
    bytes: int = 0

    def add(self, other: TypeStats) -> None:
        self.chunks += other.chunks
        self.records += other.records
        self.errors += other.errors
        self.bytes += other.bytes


def chunk_records(chunks: list[Chunk]) -> tuple[Any, Any, Any]:
    """Every record of ``chunks`` without its ``\\n``/``\\r\\n``, as ``raw_records`` cuts them, columnar.

    Returns (records: binary array, chunk: int32 index of each record's chunk,
    offsets: int64 stream offset of each record), in chunk order.  One
    compiled pass (``_records.c``) where it is built, else Arrow kernels.
    """
    import pyarrow as pa

    if _compiled is not None:
        try:
            offsets, data, chunk, offset = _compiled.cut([c.data for c in chunks], [c.record_ends for c in chunks],
                                                         [c.start for c in chunks])
        except OverflowError:  # over 2 GiB of records in one batch: the kernels make several arrays
            return _kernel_chunk_records(chunks)
        n = len(chunk) // 4
        return (pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)]),
                pa.Array.from_buffers(pa.int32(), n, [None, pa.py_buffer(chunk)]),
                pa.Array.from_buffers(pa.int64(), n, [None, pa.py_buffer(offset)]))
    return _kernel_chunk_records(chunks)


def _kernel_chunk_records(chunks: list[Chunk]) -> tuple[Any, Any, Any]:
    """:func:`chunk_records` by Arrow kernels: chunks without record ends that end in a newline (nearly
    all) are split by one kernel, the others by their record spans; records in chunk order."""
    import pyarrow as pa
    import pyarrow.compute as pc

    by_lines = [i for i, c in enumerate(chunks) if c.record_ends is None and bytes(c.data[-1:]) in (b"\n", b"")]
    parts: list[tuple[Any, Any, Any]] = []
    if by_lines:
        datas = pa.array([bytes(chunks[i].data) for i in by_lines], pa.binary())
        lists = pc.split_pattern(datas, pattern=b"\n")
        parent = pc.list_parent_indices(lists)
        flat = lists.flatten()
        step = pc.add(pc.binary_length(flat).cast(pa.int64()), 1)
        before = pc.subtract(pc.cumulative_sum(step), step)  # bytes before each piece, over all chunks
        sizes = [len(chunks[i].data) + 1 for i in by_lines]
        base = pa.array([0, *_running(sizes)[:-1]], pa.int64())  # each chunk's first piece in ``before``
        starts = pa.array([chunks[i].start for i in by_lines], pa.int64())
        offsets = pc.add(pc.take(starts, parent), pc.subtract(before, pc.take(base, parent)))
        nxt = pa.concat_arrays([parent.slice(1), pa.array([-1], parent.type)])
        keep = pc.equal(parent, nxt)  # the piece after each chunk's final newline is not a record
        flat, parent, offsets = flat.filter(keep), parent.filter(keep), offsets.filter(keep)
        cr = pc.ends_with(flat, "\r")
        if pc.any(cr).as_py():
            flat = pc.if_else(cr, pc.binary_slice(flat, 0, -1), flat)
        parts.append((flat, pc.take(pa.array(by_lines, pa.int32()), parent), offsets))
    lined = set(by_lines)
    for i, c in enumerate(chunks):
        if i in lined:
            continue
        spans = list(c.record_spans())
        if not spans:
            continue
        bounds = pa.array([0] + [e for _, e in spans], pa.int32())
        recs = pa.Array.from_buffers(pa.binary(), len(spans), [None, bounds.buffers()[1], pa.py_buffer(bytes(c.data))])
        nl = pc.ends_with(recs, "\n")
        recs = pc.if_else(nl, pc.binary_slice(recs, 0, -1), recs)
        crlf = pc.and_(nl, pc.ends_with(recs, "\r"))
        recs = pc.if_else(crlf, pc.binary_slice(recs, 0, -1), recs)
        parts.append((recs, pa.array([i] * len(spans), pa.int32()),
                      pa.array([c.start + s for s, _ in spans], pa.int64())))
    if not parts:
        return pa.array([], pa.binary()), pa.array([], pa.int32()), pa.array([], pa.int64())
    if len(parts) == 1:
        return parts[0]
    records, chunk_of, offsets = (pa.concat_arrays([p[k] for p in parts]) for k in range(3))
    order = pc.sort_indices(pa.table({"c": chunk_of, "o": offsets}), [("c", "ascending"), ("o", "ascending")])
    return records.take(order), chunk_of.take(order), offsets.take(order)


def _running(sizes: list[int]) -> list[int]:
    out, total = [], 0
    for s in sizes:
        total += s
        out.append(total)
    return out


def _per_chunk(values: list[str], chunk_of: Any) -> Any:
    """A provenance text column: each chunk's value for each of its rows, as a dictionary array.

    Not a string per row: the Parquet writer writes a dictionary array's
    indices without hashing each value (its provenance columns cost 30 % less
    to write) and no row's copy is made; readers get strings (see TableFile).
    """
    import pyarrow as pa

    index: dict[str, int] = {}
    codes = pa.array([index.setdefault(v, len(index)) for v in values], pa.int32())
    return pa.DictionaryArray.from_arrays(codes.take(chunk_of), pa.array(list(index), pa.string()))


def parse_chunks(proc: Processor, datatype: str, chunks: list[Chunk]) -> list[tuple[tuple[str, ...], Any]]:
    """One datatype's chunks -> (partition, Arrow table) pairs: rows that parsed, and ``_errors`` rows.

    Good rows are the processor's fields then the provenance columns; error
    rows are provenance, ``reason`` and ``raw`` (the record's text, undecodable
    bytes backslash-escaped).  Partitions are by the UTC hour of each chunk's
    read time.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    from logflume.processor import BatchContext, ParsedBatch, encode_json

    records, chunk_of, offsets = chunk_records(chunks)
    n = len(records)
    contexts = [RecordContext(c.source, c.stream, c.epoch, c.start, c.datatype, c.timestamp, c.tags) for c in chunks]
    where = BatchContext(datatype, contexts, chunk_of, offsets)
    parsed: ParsedBatch = proc.process_batch(records, where)
    if parsed.fields.num_rows != n or len(parsed.reasons) != n:
        raise ValueError(f"processor {type(proc).__name__} returned {parsed.fields.num_rows} rows and "
                         f"{len(parsed.reasons)} reasons for {n} records")
    reasons = parsed.reasons
    split = [i for i, c in enumerate(chunks) if FLAG_SPLIT in c.flags]
    if split and n:
        nxt = pa.concat_arrays([chunk_of.slice(1), pa.array([-1], pa.int32())])
        tail = pc.and_(pc.not_equal(chunk_of, nxt), pc.is_in(chunk_of, value_set=pa.array(split, pa.int32())))
        reasons = pc.if_else(tail, SPLIT_REASON, reasons)
    prov = {
        "_source": _per_chunk([c.source for c in chunks], chunk_of),
        "_stream": _per_chunk([c.stream for c in chunks], chunk_of),
        "_epoch": _per_chunk([c.epoch for c in chunks], chunk_of),
        "_offset": offsets,
        "_timestamp": pa.array([c.timestamp for c in chunks], pa.int64()).take(chunk_of),
        "_datatype": _per_chunk([datatype], pa.repeat(pa.scalar(0, pa.int32()), n)),
        "_tags": _per_chunk([encode_json(dict(c.tags)) for c in chunks], chunk_of),
    }
    fields = parsed.fields
    own = [name for name in fields.schema.names if name not in prov]
    good = pa.table([*(fields.column(name) for name in own), *prov.values()], names=[*own, *prov])
    ok = pc.is_null(reasons)
    errors_at = pc.indices_nonzero(pc.invert(ok))
    out: list[tuple[tuple[str, ...], Any]] = []
    hours = [utc_day_hour(c.timestamp) for c in chunks]
    groups: dict[tuple[str, str], list[int]] = {}
    for i, h in enumerate(hours):
        groups.setdefault(h, []).append(i)
    if len(errors_at) == 0:
        sides = [((), good, chunk_of)]
    else:
        raw = records.take(errors_at)
        try:
            text = raw.cast(pa.string())
        except pa.ArrowInvalid:
            text = pa.array([r.decode("utf-8", "backslashreplace") for r in raw.to_pylist()], pa.string())
        bad = pa.table([*(prov[k].take(errors_at) for k in prov), reasons.take(errors_at), text],
                       names=[*prov, "reason", "raw"])
        sides = [((), good.filter(ok), chunk_of.filter(ok)), ((ERRORS,), bad, chunk_of.take(errors_at))]
    for (day, hour), members in sorted(groups.items()):
        part = hive_partition(datatype, day, hour)
        for prefix, table, chunk_col in sides:
            if len(groups) > 1:
                table = table.filter(pc.is_in(chunk_col, value_set=pa.array(members, pa.int32())))
            if table.num_rows:
                out.append(((*prefix, *part), table))
    return out


class ChunkBatcher:
    """Gathers a task's chunks per datatype and parses them a batch at a time (``batch_bytes`` of input).

    Bounds memory: at most ``batch_bytes`` of chunk data wait, over all
    datatypes; when more arrive the largest datatype's batch is parsed.
    """

    def __init__(self, spec: ProcessorSpec, batch_bytes: int, set_aside: Callable[[Rejected], None]) -> None:
        self.spec = spec
        self.batch_bytes = batch_bytes
        self.set_aside = set_aside
        self._procs: dict[str, Processor] = {}
        self._waiting: dict[str, list[Chunk]] = {}
        self._sizes: dict[str, int] = {}
        self.stats = DemuxStats()
        self.by_type: dict[str, TypeStats] = {}

    def add(self, chunk: Chunk | Rejected) -> list[tuple[tuple[str, ...], Any]]:
        """Take a chunk; returns the tables of any batch this filled (else nothing)."""
        if isinstance(chunk, Rejected):
            self.stats.bad_chunks += 1
            self.set_aside(chunk)
            return []
        dt = chunk.datatype
        self._waiting.setdefault(dt, []).append(chunk)
        self._sizes[dt] = self._sizes.get(dt, 0) + len(chunk.data)
        if sum(self._sizes.values()) < self.batch_bytes:
            return []
        return self._parse(max(self._sizes, key=self._sizes.__getitem__))

    def finish(self) -> list[tuple[tuple[str, ...], Any]]:
        out = []
        for dt in sorted(self._waiting):
            out += self._parse(dt)
        return out

    def _parse(self, datatype: str) -> list[tuple[tuple[str, ...], Any]]:
        chunks = self._waiting.pop(datatype)
        size = self._sizes.pop(datatype)
        proc = self._procs.get(datatype)
        if proc is None:
            proc = self._procs[datatype] = _build(self.spec.entry(datatype))
        tables = parse_chunks(proc, datatype, chunks)
        errors = sum(t.num_rows for p, t in tables if p[0] == ERRORS)
        records = sum(t.num_rows for p, t in tables if p[0] != ERRORS)
        ts = TypeStats(len(chunks), records, errors, size)
        self.by_type.setdefault(datatype, TypeStats()).add(ts)
        self.stats.add(DemuxStats(len(chunks), records, errors, size))
        return tables
