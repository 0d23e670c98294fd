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

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from jobs.layout import partition_name, utc_day
from jobs.setaside import ERRORS_DIR, Rejected, SetAsideFile
from logflume.chunk import FLAG_SPLIT, Chunk
from logflume.errors import ConfigError
from logflume.processor import ParseError, Processor, RecordContext, build_processor

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
