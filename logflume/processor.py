"""Processor: the demux plugin contract — a chunk's records in, their fields out.

Two ways to implement it, one contract:

* ``process(record, where)`` (one record): returns the record's fields as a
  dict of JSON-able values, or raises :class:`ParseError` with a reason a
  person can act on.  Simple, and what most third-party plugins implement.
* ``process_batch(records, where)`` (a whole chunk): takes the records as an
  Arrow binary array and returns a :class:`ParsedBatch` — an Arrow record batch
  of fields (one row per record) and a reason per record (null: parsed).  The
  built-ins implement it with Arrow compute kernels, which is what makes demux
  run near the speed of reading.  A processor that implements only
  ``process`` gets ``process_batch`` by the base class calling ``process`` per
  record: every processor can be driven through the batch API.

A processor declares its output columns in ``output_schema()`` (None: inferred
from the rows, as for JSON objects whose keys vary).  Both methods of one
processor give the same fields for the same record: the tests hold the
built-ins to that.  Demux never drops a record: what a processor rejects goes to the
``_errors`` partition with that reason and the record's raw text.  A processor
is pure (no outside effects, no state between records), so demux can run it on
any core or Spark executor and in any order, and get the same output.

Plugins subclass :class:`Processor`, declare ``settings`` like every component,
and are named by a built-in name, an entry point in group
``logflume.processors``, or ``package.module:Class``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from logflume.component import Component, Context
from logflume.errors import ConfigError
from logflume.settings import Setting, parse_settings

if TYPE_CHECKING:
    import pyarrow as pa


#: The reason of a record one of whose values fits no column type (the batch decides the types).
NOT_FITTING = "field does not fit its column"
#: How demux writes a field value as JSON text (one encoder for every record: json.dumps builds one per call).
encode_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode


class ParseError(ValueError):
    """A record its processor cannot parse; ``reason`` goes to the ``_errors`` partition."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(slots=True)
class RecordContext:
    """Where a record came from: its chunk's identity and the record's stream offset.

    Demux reuses one context per chunk (only ``offset`` changes), so it is valid
    during the ``process`` call only: copy what you need, do not keep it.
    """

    source: str
    stream: str
    epoch: str
    offset: int
    datatype: str
    timestamp: int  # ms since the epoch when the chunk was read
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class BatchContext:
    """Where each record of a batch came from: records of one datatype, from one or more chunks.

    ``chunks`` holds one context per chunk (its ``offset`` is the chunk's first
    byte); ``chunk`` and ``offsets`` give, per record, the index of its chunk
    and its stream offset.  Arrays keep per-record provenance columnar, so a
    batch processor can use it (e.g. :meth:`timestamps`) without a Python loop.
    """

    datatype: str
    chunks: list[RecordContext]
    chunk: pa.Array  # int32: index into chunks, per record
    offsets: pa.Array  # int64: stream offset of each record's first byte

    @classmethod
    def of_chunk(cls, where: RecordContext, offsets: list[int]) -> BatchContext:
        """A batch of one chunk's records (``where.offset`` unused)."""
        import pyarrow as pa

        return cls(where.datatype, [where], pa.array([0] * len(offsets), pa.int32()), pa.array(offsets, pa.int64()))

    def __len__(self) -> int:
        return len(self.offsets)

    def record(self, i: int) -> RecordContext:
        c = self.chunks[self.chunk[i].as_py()]
        return RecordContext(c.source, c.stream, c.epoch, self.offsets[i].as_py(), c.datatype, c.timestamp, c.tags)

    def records(self) -> Iterator[RecordContext]:
        """A context per record, in order; one object reused (valid until the next)."""
        offsets = self.offsets.to_pylist()
        chunk_of = self.chunk.to_pylist()
        ctx: RecordContext | None = None
        last = -1
        for i, off in enumerate(offsets):
            if chunk_of[i] != last:
                last = chunk_of[i]
                c = self.chunks[last]
                ctx = RecordContext(c.source, c.stream, c.epoch, off, c.datatype, c.timestamp, c.tags)
            ctx.offset = off
            yield ctx

    def timestamps(self) -> pa.Array:
        """Each record's chunk read time (int64 ms since the epoch)."""
        import pyarrow as pa

        return pa.array([c.timestamp for c in self.chunks], pa.int64()).take(self.chunk)

    def take(self, indices: pa.Array) -> BatchContext:
        """The context of the records at ``indices`` (same chunks)."""
        return BatchContext(self.datatype, self.chunks, self.chunk.take(indices), self.offsets.take(indices))


@dataclass(slots=True)
class ParsedBatch:
    """A batch's fields (one row per input record) and why each record did not parse (null: it did).

    The field values of a row whose reason is not null are ignored.
    """

    fields: pa.RecordBatch
    reasons: pa.Array  # string


class Processor(Component):
    kind: ClassVar[str] = "processor"
    settings: ClassVar[dict[str, Setting]] = {}

    def output_schema(self) -> pa.Schema | None:
        """The columns this processor produces (nested values as JSON text); None: inferred from the rows."""
        return None

    def process(self, record: bytes, where: RecordContext) -> dict[str, Any]:
        """Fields of one record (delimiter already removed); raise ParseError if it does not parse."""
        raise NotImplementedError

    def process_batch(self, records: pa.Array, where: BatchContext) -> ParsedBatch:
        """Fields of every record of a batch (binary array, delimiters removed); by default :meth:`process_each`."""
        return self.process_each(records, where)

    def process_each(self, records: pa.Array, where: BatchContext) -> ParsedBatch:
        """Call ``process`` once per record: the batch API for per-record plugins, and the fallback of
        vectorized ones for records their fast path does not take.

        A plugin bug in one record becomes that record's reason, never a lost record.
        """
        import pyarrow as pa

        rows: list[dict[str, Any] | None] = []
        reasons: list[str | None] = []
        process = self.process
        for raw, ctx in zip(records.to_pylist(), where.records(), strict=True):
            try:
                fields = process(raw, ctx)
                if not isinstance(fields, dict):
                    raise ParseError(f"processor returned {type(fields).__name__}, expected a dict")
            except ParseError as exc:
                rows.append(None)
                reasons.append(exc.reason)
            except Exception as exc:  # a plugin bug must not lose the record either
                rows.append(None)
                reasons.append(f"processor {type(self).__name__} failed: {exc!r}")
            else:
                rows.append(fields)
                reasons.append(None)
        schema = self.output_schema()
        try:
            batch = rows_to_batch(rows, schema)
        except (pa.ArrowException, OverflowError, TypeError, ValueError):  # a value that fits no column type
            for i, row in enumerate(rows):
                if row is not None:
                    try:
                        rows_to_batch([row], schema)
                    except (pa.ArrowException, OverflowError, TypeError, ValueError) as exc:
                        rows[i], reasons[i] = None, f"{NOT_FITTING}: {exc}"
            batch = rows_to_batch(rows, schema)
        return ParsedBatch(batch, pa.array(reasons, pa.string()))


def rows_to_batch(rows: list[dict[str, Any] | None], schema: pa.Schema | None) -> pa.RecordBatch:
    """Rows (None for a record that did not parse) as one record batch.

    With a schema, nested values become JSON text in string columns.  Without
    one the columns are the union of the rows' keys in first-seen order;
    nested values, and the values of a column whose rows disagree on a type,
    become JSON text (a Parquet column has one type).
    """
    import pyarrow as pa

    filled = [r if r is not None else {} for r in rows]
    if schema is not None:
        strings = {f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)}
        cols = {f.name: [_as_text(r.get(f.name)) if f.name in strings else r.get(f.name) for r in filled]
                for f in schema}
        return pa.RecordBatch.from_pydict(cols, schema=schema)
    flat = flatten_rows(filled)
    names: dict[str, None] = {}
    for r in flat:
        for k in r:
            names.setdefault(k)
    if not names:  # no record gave a field: still one row per record
        return pa.RecordBatch.from_struct_array(pa.array([{}] * len(rows), pa.struct([])))
    return pa.RecordBatch.from_pydict({k: [r.get(k) for r in flat] for k in names})


def flatten_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """A columnar file needs one type per column: nested values become JSON text, and so does a mixed column."""
    rows = [{k: (encode_json(v) if isinstance(v, (dict, list)) else v) for k, v in r.items()} for r in rows]
    kinds: dict[str, set[type]] = {}
    for r in rows:
        for k, v in r.items():
            if v is not None:
                kinds.setdefault(k, set()).add(bool if isinstance(v, bool) else float if isinstance(v, float)
                                               else type(v))
    mixed = {k for k, ts in kinds.items() if len(ts) > 1 and ts != {int, float}}
    if mixed:
        rows = [{k: (encode_json(v) if k in mixed and v is not None and not isinstance(v, str) else v)
                 for k, v in r.items()} for r in rows]
    floats = {k for k, ts in kinds.items() if ts == {int, float}}
    if floats:  # Arrow refuses an int past 2**53 in a float column: round it as float() does
        rows = [{k: (_as_float(v) if k in floats and type(v) is int else v) for k, v in r.items()} for r in rows]
    return rows


def _as_float(value: int) -> float | int:
    try:
        return float(value)
    except OverflowError:  # past the largest float: stays an int, and its row fails as not fitting its column
        return value


def _as_text(value: Any) -> Any:
    return encode_json(value) if isinstance(value, (dict, list)) else value


def build_processor(type_name: str, raw: Mapping[str, Any] | None = None, name: str | None = None,
                    file: str | None = None, path: str = "") -> Processor:
    """Resolve ``type_name`` (built-in, entry point or ``module:Class``) and configure it from ``raw``."""
    from logflume.registry import resolve

    cls = resolve("processor", type_name, file, path)
    values = parse_settings(cls.schema(), dict(raw or {}), path, file)
    try:
        return cls(name or type_name, values, Context(agent_name="demux"))
    except ConfigError as exc:
        if exc.file is None and file is not None:  # raised by configure(), which knows no file or path
            raise ConfigError(file, ".".join(p for p in (path, exc.path) if p), exc.message) from None
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError(file, path, str(exc)) from None
