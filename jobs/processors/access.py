"""access: Apache and nginx access logs, combined format (common format accepted too).

``%h %l %u [%t] "%r" %>s %b "%{Referer}i" "%{User-agent}i"``; a common-format
line (no referer and user agent) gives ``None`` for those two fields.  The
patterns are shared by the per-record path (Python ``re``), the batch path
(Arrow, RE2) and the Spark engine, so all three accept the same lines.
"""

from __future__ import annotations

import os
import re
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from logflume.processor import BatchContext, ParsedBatch, ParseError, Processor, RecordContext
from logflume.settings import Setting

if TYPE_CHECKING:
    import pyarrow as pa

_NS = r"[^ \t\n\x0b\f\r]"  # jobs.processors.columns.NOT_SPACE, without importing Arrow for per-record use
_QUOTED = r'(?:\\.|[^"\\])*'
LINE = (
    rf'(?P<remote>{_NS}+) (?P<ident>{_NS}+) (?P<user>{_NS}+) \[(?P<time>[^\]]+)\] "(?P<request>{_QUOTED})" '
    r"(?P<status>[0-9]{3}) (?P<bytes>[0-9]{1,18}|-)"
    rf'(?P<client> "(?P<referer>{_QUOTED})" "(?P<agent>{_QUOTED})")?(?P<extra> .*)?'
)
TIME = (r"(?P<d>[0-9]{2})/(?P<mon>[A-Z][a-z]{2})/(?P<y>[0-9]{4}):(?P<H>[0-9]{2}):(?P<M>[0-9]{2}):(?P<S>[0-9]{2}) "
        r"(?P<sign>[+-])(?P<zh>[0-9]{2})(?P<zm>[0-9]{2})")
REQUEST = rf"(?P<method>[A-Z][A-Z_-]*) (?P<path>{_NS}+)(?: (?P<protocol>[A-Z]+/[0-9.]+))?"
MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()
NOT_ACCESS = "not an access log line in combined or common format"

try:  # built by pip install from _columns.c; without a C compiler the Arrow kernels do the batch path
    from jobs.processors import _columns as _compiled
except ImportError:
    _compiled = None
if os.environ.get("LOGFLUME_PURE_PYTHON") == "1":  # to compare the two batch paths
    _compiled = None

_LINE, _TIME, _REQUEST = re.compile(LINE), re.compile(TIME), re.compile(REQUEST)
_MONTHS = {m: i for i, m in enumerate(MONTHS, 1)}


def _dash(value: str | None) -> str | None:
    return None if value in (None, "-", "") else value


def _iso_time(text: str) -> str:
    """``10/Oct/2000:13:55:36 -0700`` -> ``2000-10-10T13:55:36-07:00`` (strptime is 10x slower)."""
    t = _TIME.fullmatch(text)
    month = _MONTHS.get(t["mon"]) if t else None
    if not t or month is None:
        raise ParseError(f"bad access log time [{text}]")
    try:
        datetime(int(t["y"]), month, int(t["d"]), int(t["H"]), int(t["M"]), int(t["S"]))
    except ValueError:
        raise ParseError(f"bad access log time [{text}]") from None
    return f"{t['y']}-{month:02d}-{t['d']}T{t['H']}:{t['M']}:{t['S']}{t['sign']}{t['zh']}:{t['zm']}"


class AccessLogProcessor(Processor):
    settings: ClassVar[dict[str, Setting]] = {}

    def output_schema(self) -> pa.Schema:
        import pyarrow as pa

        s = pa.string()
        return pa.schema([("remote_addr", s), ("ident", s), ("user", s), ("time", s), ("request", s),
                          ("method", s), ("path", s), ("protocol", s), ("status", pa.int64()),
                          ("bytes", pa.int64()), ("referer", s), ("user_agent", s), ("extra", s)])

    def process(self, record: bytes, where: RecordContext) -> dict[str, Any]:
        text = record.decode("utf-8", "replace")
        m = _LINE.fullmatch(text)
        if not m:
            raise ParseError(NOT_ACCESS)
        time = _iso_time(m["time"])
        request = m["request"]
        req = _REQUEST.fullmatch(request)
        return {
            "remote_addr": m["remote"],
            "ident": _dash(m["ident"]),
            "user": _dash(m["user"]),
            "time": time,
            "request": request,
            "method": req["method"] if req else None,
            "path": req["path"] if req else None,
            "protocol": (req["protocol"] or None) if req else None,
            "status": int(m["status"]),
            "bytes": 0 if m["bytes"] == "-" else int(m["bytes"]),
            "referer": _dash(m["referer"]) if m["client"] else None,
            "user_agent": _dash(m["agent"]) if m["client"] else None,
            "extra": (m["extra"] or "")[1:] or None,
        }

    def process_batch(self, records: pa.Array, where: BatchContext) -> ParsedBatch:
        """Lines without backslashes, in the usual shapes, in one compiled pass (``_columns.c``) where it is
        built, else with Arrow kernels; every other line through the capturing patterns."""
        if _compiled is None:
            return self._kernel_batch(records, where)
        import pyarrow as pa

        n = len(records)
        validity, offsets, data = records.buffers()[:3]
        kind, *columns = _compiled.access(validity, offsets, data if data is not None else b"", records.offset, n)
        schema = self.output_schema()
        fields = pa.RecordBatch.from_arrays(
            [pa.Array.from_buffers(f.type, n, [pa.py_buffer(b) for b in bufs]) for f, bufs in zip(schema, columns,
                                                                                                 strict=True)],
            schema=schema)
        fast = pa.Array.from_buffers(pa.uint8(), n, [None, pa.py_buffer(kind)]).cast(pa.bool_())
        return self._others_by_regex(records, None, fields, fast)

    def _others_by_regex(self, records: pa.Array, text: pa.Array | None, fields: pa.RecordBatch,
                         fast: pa.Array) -> ParsedBatch:
        """``fields`` where ``fast`` holds; the other lines through the capturing patterns, in their place."""
        import pyarrow as pa
        import pyarrow.compute as pc

        from jobs.processors.columns import decode

        n = len(records)
        slow = pc.invert(fast)
        idx = pc.indices_nonzero(slow)
        if len(idx) == 0:
            return ParsedBatch(fields, pa.nulls(n, pa.string()))
        other, why = self._regex_batch(text.take(idx) if text is not None else decode(records.take(idx))[0])
        if len(idx) == n:
            return ParsedBatch(other, why)
        cols = [pc.replace_with_mask(fields.column(k), slow, other.column(k)) for k in range(fields.num_columns)]
        reasons = pc.replace_with_mask(pa.nulls(n, pa.string()), slow, why)
        return ParsedBatch(pa.RecordBatch.from_arrays(cols, schema=fields.schema), reasons)

    def _kernel_batch(self, records: pa.Array, where: BatchContext) -> ParsedBatch:
        """Lines without backslashes, in the usual shapes: checked whole by RE2's DFA, cut by splits on quotes
        and spaces and fixed-width slices; every other line through the capturing patterns."""
        import pyarrow as pa
        import pyarrow.compute as pc

        from jobs.processors.columns import concat_text, decode, empty_to_null, valid_datetime

        def matches(values: pa.Array, pattern: str) -> pa.Array:
            return pc.fill_null(pc.match_substring_regex(values, f"^(?:{pattern})\\z"), False)

        def part(lists: pa.Array, i: int) -> pa.Array:
            return pc.list_element(lists, i)

        str_null = pa.scalar(None, pa.string())
        n = len(records)
        text, _ = decode(records)
        dummy = '- - - [01/Jan/2000:00:00:00 +0000] "x" 200 0'
        shape = pc.and_(matches(text, LINE), pc.invert(pc.match_substring(text, "\\")))
        q = pc.split_pattern(pc.if_else(shape, text, dummy), '"')  # a LINE has at least 3 pieces
        nq = pc.list_value_length(q)
        shape = pc.and_(shape, pc.or_(pc.equal(nq, 3), pc.equal(nq, 7)))  # common, or combined without quotes after
        head, request, mid = part(q, 0), part(q, 1), part(q, 2)
        head_ok = matches(head, rf"{_NS}+ {_NS}+ {_NS}+ \[[0-9]{{2}}/[A-Z][a-z]{{2}}/[0-9]{{4}}:[0-9]{{2}}:[0-9]{{2}}:"
                                r"[0-9]{2} [+-][0-9]{4}\] ")
        client = pc.and_(shape, pc.equal(nq, 7))
        q7 = pc.if_else(client, q, pc.split_pattern(pa.repeat(pa.scalar('"x" "y" "z"'), n), '"'))
        tail = part(q7, 6)
        client_ok = pc.and_(pc.and_(matches(mid, r" [0-9]{3} (?:[0-9]{1,18}|-) "), pc.equal(part(q7, 4), " ")),
                            pc.or_(pc.equal(tail, ""), pc.starts_with(tail, " ")))
        fast = pc.and_(shape, pc.and_(head_ok, pc.or_(pc.invert(client), client_ok)))
        h = pc.split_pattern(pc.if_else(fast, head, "- - - [01/Jan/2000:00:00:00 +0000] "), " ", max_splits=3)
        t = pc.utf8_slice_codeunits(part(h, 3), 1, 27)
        month = pc.add(pc.index_in(pc.utf8_slice_codeunits(t, 3, 6), value_set=pa.array(MONTHS)), 1)
        local = concat_text(pc.utf8_slice_codeunits(t, 7, 11), "-", pc.utf8_lpad(pc.cast(month, pa.string()), 2, "0"),
                            "-", pc.utf8_slice_codeunits(t, 0, 2), "T", pc.utf8_slice_codeunits(t, 12, 20))
        fast = pc.and_(fast, pc.and_(pc.is_valid(month), valid_datetime(local)))
        iso = concat_text(local, pc.utf8_slice_codeunits(t, 21, 24), ":", pc.utf8_slice_codeunits(t, 24, 26))
        sb = pc.split_pattern(pc.if_else(fast, concat_text(mid, " "), " 0 0 "), " ", max_splits=3)
        extra = pc.if_else(client, pc.utf8_slice_codeunits(tail, 1),  # sb: "", status, bytes, extra + " "
                           pc.utf8_slice_codeunits(part(sb, 3), 0, -1))
        req3 = matches(request, rf"[A-Z][A-Z_-]* {_NS}+ [A-Z]+/[0-9.]+")
        req2 = matches(request, rf"[A-Z][A-Z_-]* {_NS}+")
        rq = pc.split_pattern(pc.if_else(req3, request, pc.if_else(req2, concat_text(request, " x"), "x x x")), " ",
                              max_splits=2)
        req_ok = pc.or_(req2, req3)
        size = part(sb, 2)
        fields = pa.RecordBatch.from_arrays([
            part(h, 0),
            empty_to_null(part(h, 1), ("-",)),
            empty_to_null(part(h, 2), ("-",)),
            iso,
            request,
            pc.if_else(req_ok, part(rq, 0), str_null),
            pc.if_else(req_ok, part(rq, 1), str_null),
            pc.if_else(req3, part(rq, 2), str_null),
            pc.cast(pc.if_else(fast, part(sb, 1), "0"), pa.int64()),
            pc.cast(pc.if_else(pc.or_(pc.invert(fast), pc.equal(size, "-")), "0", size), pa.int64()),
            pc.if_else(client, empty_to_null(part(q7, 3), ("-",)), str_null),
            pc.if_else(client, empty_to_null(part(q7, 5), ("-",)), str_null),
            empty_to_null(extra),
        ], schema=self.output_schema())
        return self._others_by_regex(records, text, fields, fast)

    def _regex_batch(self, text: pa.Array) -> tuple[pa.RecordBatch, pa.Array]:
        """Every line through the capturing patterns (RE2's backtracker: slow, but takes any line)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        from jobs.processors.columns import (
            concat_text,
            empty_to_null,
            first_reason,
            full_match,
            group,
            valid_datetime,
        )

        m = full_match(text, LINE)
        line_ok = pc.is_valid(m)
        raw_time = group(m, "time")
        t = full_match(raw_time, TIME)
        month = pc.add(pc.index_in(group(t, "mon"), value_set=pa.array(MONTHS)), 1)
        mm = pc.utf8_lpad(pc.cast(month, pa.string()), 2, "0")
        local = concat_text(group(t, "y"), "-", mm, "-", group(t, "d"), "T", group(t, "H"), ":", group(t, "M"),
                            ":", group(t, "S"))
        time_ok = valid_datetime(local)
        iso = concat_text(local, group(t, "sign"), group(t, "zh"), ":", group(t, "zm"))
        reasons = first_reason(len(text), (line_ok, NOT_ACCESS),
                               (time_ok, concat_text("bad access log time [", raw_time, "]")))
        request = group(m, "request")
        req = full_match(request, REQUEST)
        client = pc.not_equal(group(m, "client"), "")
        size = group(m, "bytes")
        extra = pc.utf8_slice_codeunits(group(m, "extra"), 1)
        fields = pa.RecordBatch.from_arrays([
            group(m, "remote"),
            empty_to_null(group(m, "ident"), ("-",)),
            empty_to_null(group(m, "user"), ("-",)),
            iso,
            request,
            group(req, "method"),
            group(req, "path"),
            empty_to_null(group(req, "protocol")),
            pc.cast(pc.fill_null(group(m, "status"), "0"), pa.int64()),
            pc.cast(pc.if_else(pc.equal(size, "-"), "0", pc.fill_null(size, "0")), pa.int64()),
            pc.if_else(client, empty_to_null(group(m, "referer"), ("-",)), pa.scalar(None, pa.string())),
            pc.if_else(client, empty_to_null(group(m, "agent"), ("-",)), pa.scalar(None, pa.string())),
            empty_to_null(extra),
        ], schema=self.output_schema())
        return fields, reasons
