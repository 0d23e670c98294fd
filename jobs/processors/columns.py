"""Arrow compute pieces the built-in batch processors share: text, anchored patterns, reasons.

Patterns are written once, in the syntax Python ``re``, RE2 (Arrow) and Java
(Spark) read alike: character classes spelled out (``[0-9]``,
:data:`NOT_SPACE`) instead of ``\\d``/``\\S``, whose meaning differs between
the three (Unicode in Python, ASCII in RE2).  So a processor's per-record and
batch paths accept exactly the same records.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

#: One non-space character, the same in Python, RE2 and Java (``\\S`` is not).
NOT_SPACE = r"[^ \t\n\x0b\f\r]"


def decode(records: pa.Array) -> tuple[pa.Array, pa.Array | None]:
    """Records as text, invalid UTF-8 replaced by U+FFFD (as ``bytes.decode(errors="replace")``).

    Returns the text and, when some record was not UTF-8, a boolean array
    marking those records (else None).  Valid input is converted without a copy.
    """
    try:
        return records.cast(pa.string()), None
    except pa.ArrowInvalid:
        pass
    texts, bad = [], []
    for raw in records.to_pylist():
        try:
            texts.append(raw.decode("utf-8"))
            bad.append(False)
        except UnicodeDecodeError:
            texts.append(raw.decode("utf-8", "replace"))
            bad.append(True)
    return pa.array(texts, pa.string()), pa.array(bad, pa.bool_())


def full_match(text: pa.Array, pattern: str) -> pa.StructArray:
    """Named groups of ``pattern`` matched against the whole of each text; null where it does not match.

    An optional group that did not take part reads as ``""`` (Arrow cannot tell
    it from an empty match): patterns make a group that may be absent
    non-empty when present, or wrap it in a group that is.
    """
    return pc.extract_regex(text, f"^(?:{pattern})\\z")


def group(match: pa.StructArray, name: str) -> pa.Array:
    """One group of :func:`full_match`, null where the pattern did not match."""
    return pc.struct_field(match, name)


def null_if(values: pa.Array, condition: pa.Array) -> pa.Array:
    """``values`` with null where ``condition`` holds (or is null)."""
    return pc.if_else(pc.fill_null(condition, True), pa.scalar(None, values.type), values)


def empty_to_null(values: pa.Array, also: tuple[str, ...] = ()) -> pa.Array:
    """Null for ``""`` and for each value in ``also`` (e.g. ``"-"``, the nil value of many log formats)."""
    nil = pc.equal(values, "")
    for v in also:
        nil = pc.or_(nil, pc.equal(values, v))
    return null_if(values, nil)


def first_reason(n: int, *checks: tuple[pa.Array, Any]) -> pa.Array:
    """Per record, the reason of the first check that failed, or null.

    Each check is (ok: boolean array, null counting as failed; reason: a
    string or a string array).  Checks are given in the order the per-record
    path makes them, so both name the same reason.
    """
    reasons = pa.nulls(n, pa.string())
    for ok, reason in reversed(checks):
        reasons = pc.if_else(pc.fill_null(ok, False), reasons, reason)
    return reasons


def concat_text(*parts: Any) -> pa.Array:
    """Element-wise concatenation of string arrays and literals."""
    return pc.binary_join_element_wise(*parts, "")


def scatter(values: pa.Array, mask: pa.Array, n: int) -> pa.Array:
    """A length-``n`` array holding ``values`` in order where ``mask`` is true, null elsewhere."""
    if len(values) == n:
        return values
    return pc.replace_with_mask(pa.nulls(n, values.type), mask, values)


def with_fallback(proc: Any, records: pa.Array, where: Any, fields: pa.RecordBatch, fast: pa.Array) -> Any:
    """The fast path's rows where ``fast`` holds; the others parsed by ``proc.process_each``, in their place.

    A vectorized processor takes only the records it fully validates and leaves
    the rest (errors, rare forms) to its per-record code, so both paths give
    the same fields and reasons by construction.
    """
    from logflume.processor import ParsedBatch

    slow = pc.invert(pc.fill_null(fast, False))
    idx = pc.indices_nonzero(slow)
    n = len(records)
    if len(idx) == 0:
        return ParsedBatch(fields, pa.nulls(n, pa.string()))
    part = proc.process_each(records.take(idx), where.take(idx))
    if len(idx) == n:
        return part
    cols = [pc.replace_with_mask(fields.column(i), slow, part.fields.column(i).cast(fields.schema.field(i).type))
            for i in range(fields.num_columns)]
    reasons = pc.replace_with_mask(pa.nulls(n, pa.string()), slow, part.reasons)
    return ParsedBatch(pa.RecordBatch.from_arrays(cols, schema=fields.schema), reasons)


_DAYS = pa.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], pa.int64())


def valid_datetime(text: pa.Array) -> pa.Array:
    """Whether each ``YYYY-MM-DDTHH:MM:SS`` is a real calendar time (as Python's datetime accepts it).

    Integer checks on fixed-width slices: formatting times back to compare
    (strftime) costs more than all the parsing around it.
    """
    shape = pc.match_substring_regex(text, r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\z")
    shape = pc.fill_null(shape, False)
    safe = pc.if_else(shape, text, "0001-01-01T00:00:00")

    def num(a: int, b: int) -> pa.Array:
        return pc.cast(pc.utf8_slice_codeunits(safe, a, b), pa.int64())

    y, mo, d, hh, mm, ss = num(0, 4), num(5, 7), num(8, 10), num(11, 13), num(14, 16), num(17, 19)
    mo_ok = pc.and_(pc.greater_equal(mo, 1), pc.less_equal(mo, 12))
    leap = pc.and_(pc.equal(pc.bit_wise_and(y, 3), 0),
                   pc.or_(pc.not_equal(pc.remainder(y, 100), 0), pc.equal(pc.remainder(y, 400), 0)))
    dim = pc.add(pc.take(_DAYS, pc.subtract(pc.if_else(mo_ok, mo, 1), 1)),
                 pc.cast(pc.and_(leap, pc.equal(mo, 2)), pa.int64()))
    ok = pc.and_(shape, pc.and_(pc.greater_equal(y, 1), mo_ok))
    ok = pc.and_(ok, pc.and_(pc.greater_equal(d, 1), pc.less_equal(d, dim)))
    ok = pc.and_(ok, pc.and_(pc.less(hh, 24), pc.and_(pc.less(mm, 60), pc.less(ss, 60))))
    return ok
