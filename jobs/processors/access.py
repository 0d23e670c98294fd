"""access: Apache and nginx access logs, combined format (common format accepted too).

``%h %l %u [%t] "%r" %>s %b "%{Referer}i" "%{User-agent}i"``; a common-format
line (no referer and user agent) gives ``None`` for those two fields.  The
patterns are shared by the per-record path (Python ``re``), the batch path
(Arrow, RE2) and the Spark engine, so all three accept the same lines.
"""

from __future__ import annotations

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
        import pyarrow as pa
        import pyarrow.compute as pc

        from jobs.processors.columns import (
            concat_text,
            decode,
            empty_to_null,
            first_reason,
            full_match,
            group,
            valid_datetime,
        )

        text, _ = decode(records)
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
        reasons = first_reason(len(records), (line_ok, NOT_ACCESS),
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
        return ParsedBatch(fields, reasons)
