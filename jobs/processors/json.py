"""json: JSON Lines, one object per record; its keys become the record's fields.

The batch path parses every record that is one flat JSON object in one
compiled pass (``_columns.c``), or where that is not built with Arrow's JSON
reader in one call; records it cannot take (nested values, big integers,
duplicate keys, text that is not an object) go through the per-record code.
Columns are inferred per batch: a column whose values are of different JSON
types becomes JSON text, as in the per-record path.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any, ClassVar

from logflume.processor import NOT_FITTING, BatchContext, ParsedBatch, ParseError, Processor, RecordContext
from logflume.settings import Setting, Str

if TYPE_CHECKING:
    import pyarrow as pa

try:  # built by pip install from _columns.c; without a C compiler Arrow's JSON reader does the batch path
    from jobs.processors import _columns as _compiled
except ImportError:
    _compiled = None
if os.environ.get("LOGFLUME_PURE_PYTHON") == "1":  # to compare the two batch paths
    _compiled = None

#: Records the reader is given: one object on one line.
_CANDIDATE = r"^[ \t\r]*\{[^\n]*\}[ \t\r]*\z"
#: Left to the per-record code: numbers the reader may round to a float, and -0 (the reader's -0.0, Python's 0).
_READER_DIFFERS = r"[0-9]{19}|-0[ \t\r,}]"
#: Below this many records a failed parse goes per record instead of being halved again.
_BISECT_MIN = 64


class JsonProcessor(Processor):
    settings: ClassVar[dict[str, Setting]] = {
        "field": Setting(Str(), "", "Put the parsed object under this one field instead of spreading its keys "
                         "(keeps the output schema fixed)"),
    }

    def output_schema(self) -> pa.Schema | None:
        if not self.config.field:
            return None
        import pyarrow as pa

        return pa.schema([(self.config.field, pa.string())])

    def process(self, record: bytes, where: RecordContext) -> dict[str, Any]:
        try:
            obj = json.loads(record)
        except UnicodeDecodeError as exc:
            raise ParseError(f"not UTF-8: {exc.reason} at byte {exc.start}") from None
        except json.JSONDecodeError as exc:
            raise ParseError(f"not JSON: {exc.msg} at column {exc.colno}") from None
        if not isinstance(obj, dict):
            raise ParseError(f"JSON {type(obj).__name__}, expected an object")
        if self.config.field:
            return {self.config.field: obj}
        return obj

    def process_batch(self, records: pa.Array, where: BatchContext) -> ParsedBatch:
        if self.config.field:
            return self.process_each(records, where)
        if _compiled is not None:
            return self._compiled_batch(records, where)
        return self._reader_batch(records, where)

    def _reader_batch(self, records: pa.Array, where: BatchContext) -> ParsedBatch:
        """Flat objects through Arrow's JSON reader, halving on refusal; the other records per record."""
        import pyarrow as pa
        import pyarrow.compute as pc

        from jobs.processors.columns import decode

        n = len(records)
        text, bad = decode(records)
        cand = pc.and_(pc.match_substring_regex(text, _CANDIDATE),
                       pc.invert(pc.match_substring_regex(text, _READER_DIFFERS)))
        if bad is not None:
            cand = pc.and_(cand, pc.invert(bad))
        cand = pc.fill_null(cand, False)
        tables: list[pa.Table] = []
        fast_idx: list[pa.Array] = []
        self._parse(text, pc.indices_nonzero(cand), tables, fast_idx)
        if not tables:
            return self.process_each(records, where)
        fast_rows = pa.concat_arrays(fast_idx) if len(fast_idx) > 1 else fast_idx[0]
        fast = pc.is_in(pa.array(range(n), pa.uint64()), value_set=fast_rows) if len(fast_rows) < n else None
        table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
        if len(fast_idx) > 1:  # halves were parsed out of order of rows: put them back in order
            table = table.take(pc.sort_indices(fast_rows))
            fast_rows = pc.take(fast_rows, pc.sort_indices(fast_rows))
        return _merge(self, records, where, table, fast)

    def _compiled_batch(self, records: pa.Array, where: BatchContext) -> ParsedBatch:
        """Flat objects in one pass over the bytes (``_columns.json``), the other records per record."""
        import pyarrow as pa

        n = len(records)
        validity, offsets, data = records.buffers()[:3]
        try:
            taken, columns = _compiled.json(validity, offsets, data if data is not None else b"", records.offset, n)
        except OverflowError:  # a column of over 2 GiB of text: the reader's path makes several arrays
            return self._reader_batch(records, where)
        types = {"null": pa.null(), "int64": pa.int64(), "double": pa.float64(), "bool": pa.bool_(),
                 "string": pa.string()}
        table = pa.table({name.decode(): pa.Array.from_buffers(types[kind], n, [pa.py_buffer(b) for b in buffers]
                                                               or [None])
                          for name, kind, buffers in columns})
        fast = pa.Array.from_buffers(pa.uint8(), n, [None, pa.py_buffer(taken)]).cast(pa.bool_())
        return _merge(self, records, where, table, None if fast.true_count == n else fast)

    def _parse(self, text: pa.Array, idx: pa.Array, tables: list[pa.Table], taken: list[pa.Array]) -> None:
        """Parse ``text[idx]`` in one reader call; on failure halve it, down to :data:`_BISECT_MIN` records."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if len(idx) == 0:
            return
        table = _read(pc.take(text, idx))
        if table is not None:
            keep = _flat_rows(table)
            if keep is not None:
                table, idx = table.filter(keep), pc.filter(idx, keep)
            if table.num_rows:
                tables.append(table)
                taken.append(idx.cast(pa.uint64()))
            return
        if len(idx) <= _BISECT_MIN:
            return
        half = len(idx) // 2
        self._parse(text, idx.slice(0, half), tables, taken)
        self._parse(text, idx.slice(half), tables, taken)


def _read(text: pa.Array) -> pa.Table | None:
    """One object per line -> a table with one row per line, or None if the reader refuses any line."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.json as pj

    joined = pc.binary_join(pa.ListArray.from_arrays(pa.array([0, len(text)], pa.int32()), text), "\n")
    body = joined[0].as_buffer()
    try:
        opts = pj.ReadOptions(use_threads=False, block_size=max(1 << 20, body.size + 1))
        table = pj.read_json(pa.BufferReader(body), read_options=opts)
        times = [f.name for f in table.schema if pa.types.is_temporal(f.type)]
        if times:  # the reader turns ISO-looking strings into timestamps: read them as the strings they are
            schema = pa.schema([pa.field(f.name, pa.string() if f.name in times else f.type) for f in table.schema])
            table = pj.read_json(pa.BufferReader(body), read_options=opts,
                                 parse_options=pj.ParseOptions(explicit_schema=schema))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    return table if table.num_rows == len(text) else None


def _flat_rows(table: pa.Table) -> pa.Array | None:
    """Rows with no nested value (struct, list), or None when no column is nested; nested columns dropped."""
    import pyarrow as pa
    import pyarrow.compute as pc

    nested = [f.name for f in table.schema if pa.types.is_nested(f.type)]
    if not nested:
        return None
    keep = None
    for name in nested:
        flat = pc.is_null(table.column(name))
        keep = flat if keep is None else pc.and_(keep, flat)
    table_keep = pc.fill_null(keep, False)
    return table_keep


def _merge(proc: JsonProcessor, records: pa.Array, where: BatchContext, table: pa.Table,
           fast: pa.Array | None) -> ParsedBatch:
    """Rows the reader parsed (``fast``) and the others through ``process_each``, in one record batch.

    Columns are those of the reader (minus nested ones) then new ones from the
    per-record rows; a column typed differently on the two sides becomes a
    float column (int and float) or JSON text.  ``table`` has a row per
    record of ``fast`` or one per record.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    from jobs.processors.columns import scatter

    n = len(records)
    nested = {f.name for f in table.schema if pa.types.is_nested(f.type)}
    table = table.drop_columns(list(nested)) if nested else table
    fast_cols = {name: table.column(name).combine_chunks() for name in table.column_names}
    if fast is None:
        if not fast_cols:
            return ParsedBatch(pa.RecordBatch.from_struct_array(pa.array([{}] * n, pa.struct([]))),
                               pa.nulls(n, pa.string()))
        return ParsedBatch(pa.RecordBatch.from_pydict(fast_cols), pa.nulls(n, pa.string()))
    slow_mask = pc.invert(fast)
    idx = pc.indices_nonzero(slow_mask)
    slow_records, slow_where = records.take(idx), where.take(idx)
    part = proc.process_each(slow_records, slow_where)
    if _fits_only_in_a_mixed_column(proc, slow_records, slow_where, part.reasons):
        return proc.process_each(records, where)  # whether it fits depends on the whole batch's columns
    slow_cols = {name: part.fields.column(name) for name in part.fields.schema.names}
    names = list(dict.fromkeys([*fast_cols, *slow_cols]))
    reasons = pc.replace_with_mask(pa.nulls(n, pa.string()), slow_mask, part.reasons)
    cols = []
    rows: list[dict[str, Any] | None] = []
    for name in names:
        f, s = fast_cols.get(name), slow_cols.get(name)
        if f is None:
            f = pa.nulls(n - len(idx), s.type)
        if s is None:
            s = pa.nulls(len(idx), f.type)
        common = _common_type(f.type, s.type)
        if common is None:  # the two sides disagree: JSON text, from each row's own value
            if not rows:
                rows = _rows(proc, records, where, reasons)
            cols.append(pa.array([_json_text(r.get(name)) if r else None for r in rows], pa.string()))
        else:
            f, s = f.cast(common, safe=False), s.cast(common, safe=False)  # an int as float() rounds it
            cols.append(pc.replace_with_mask(scatter(f, fast, n), slow_mask, s))
    if not cols:
        return ParsedBatch(pa.RecordBatch.from_struct_array(pa.array([{}] * n, pa.struct([]))), reasons)
    return ParsedBatch(pa.RecordBatch.from_arrays(cols, names=names), reasons)


def _fits_only_in_a_mixed_column(proc: JsonProcessor, records: pa.Array, where: BatchContext,
                                 reasons: pa.Array) -> bool:
    """Whether a record that did not fit its column holds an integer past int64: a mixed column (JSON
    text) takes it, so the column's other rows, parsed apart from it, decide."""
    import pyarrow.compute as pc

    if not pc.any(pc.starts_with(reasons, NOT_FITTING)).as_py():
        return False
    for raw, ctx, why in zip(records.to_pylist(), where.records(), reasons.to_pylist(), strict=True):
        if why is not None and why.startswith(NOT_FITTING):
            if any(type(v) is int and not -(2 ** 63) <= v < 2 ** 63 for v in proc.process(raw, ctx).values()):
                return True
    return False


def _common_type(a: pa.DataType, b: pa.DataType) -> pa.DataType | None:
    """The type both sides of a column fit (null fits any; int and float fit float), or None."""
    import pyarrow as pa

    if a == b or pa.types.is_null(b):
        return a
    if pa.types.is_null(a):
        return b
    numeric = (pa.int64(), pa.float64())
    return pa.float64() if a in numeric and b in numeric else None


def _rows(proc: JsonProcessor, records: pa.Array, where: BatchContext, reasons: pa.Array) -> list[dict | None]:
    """Each record's fields as ``process`` gives them (None where it has a reason): for the rare mixed
    column, whose text needs each value's own JSON type (``1`` against ``1.0``), which columns lost."""
    return [proc.process(raw, ctx) if why is None else None
            for raw, ctx, why in zip(records.to_pylist(), where.records(), reasons.to_pylist(), strict=True)]


def _json_text(value: Any) -> str | None:
    """A value of a mixed column as the per-record path writes it: strings as they are, the rest as JSON."""
    from logflume.processor import encode_json

    return value if value is None or isinstance(value, str) else encode_json(value)
