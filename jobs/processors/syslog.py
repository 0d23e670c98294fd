"""syslog: RFC 5424 and RFC 3164 (BSD) lines, with or without the ``<PRI>`` prefix.

Both formats give the same fields, so one datatype may mix them: ``format``,
``facility``, ``severity``, ``time`` (ISO 8601), ``host``, ``app``, ``pid``,
``msgid``, ``structured_data`` (JSON text) and ``message``.  RFC 3164 carries
no year: it is taken from the chunk's read time (a December line read in
January belongs to the year before).

The patterns below are shared by the per-record path (Python ``re``), the
batch path (Arrow, RE2) and the Spark engine, in the syntax all three read
alike (see :mod:`jobs.processors.columns`).  The batch path takes the common
forms (no structured data, ``Z``/``±hh:mm`` times) in one compiled pass over the
bytes (``_columns.c``), or with Arrow kernels where that is not built,
and hands every other record to the per-record code.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

from logflume.processor import BatchContext, ParsedBatch, ParseError, Processor, RecordContext
from logflume.settings import Bool, Setting

if TYPE_CHECKING:
    import pyarrow as pa

_NS = r"[^ \t\n\x0b\f\r]"  # jobs.processors.columns.NOT_SPACE
MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()
#: ``<PRI>`` at the start of a line.
PRI = r"<(?P<pri>[0-9]{1,3})>"
#: RFC 5424 after ``<PRI>``: VERSION TIMESTAMP HOSTNAME APP-NAME PROCID MSGID rest (STRUCTURED-DATA [MSG]).
RFC5424 = (rf"(?P<version>[1-9][0-9]{{0,2}}) (?P<time>{_NS}+) (?P<host>{_NS}+) (?P<app>{_NS}+) "
           rf"(?P<pid>{_NS}+) (?P<msgid>{_NS}+) (?P<rest>(?s:.*))")
#: RFC 3164 after ``<PRI>``: ``Mmm dd hh:mm:ss HOST[ rest]``.
RFC3164 = (rf"(?P<mon>{'|'.join(MONTHS)}) (?P<day>[ 0-9][0-9]) "
           rf"(?P<h>[0-9]{{2}}):(?P<m>[0-9]{{2}}):(?P<s>[0-9]{{2}}) (?P<host>{_NS}+)(?: (?P<rest>(?s:.*)))?")
#: The RFC 3164 TAG at the start of its rest: ``app[pid]: ``.
TAG = r"(?P<app>[^ \t\n\x0b\f\r\[\]:]{1,48})(?:\[(?P<pid>[^\] \t\n\x0b\f\r]{1,32})\])?: ?"
#: RFC 5424 timestamps the batch path formats itself (others go to ``datetime.fromisoformat``).
ISO_TIME = (r"(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})T(?P<hms>[0-9]{2}:[0-9]{2}:[0-9]{2})"
            r"(?:\.(?P<frac>[0-9]{1,6}))?(?P<tz>Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])")

try:  # built by pip install from _columns.c; without a C compiler the Arrow kernels do the batch path
    from jobs.processors import _columns as _compiled
except ImportError:
    _compiled = None
if os.environ.get("LOGFLUME_PURE_PYTHON") == "1":  # to compare the two batch paths
    _compiled = None

_PRI = re.compile(PRI)
_5424 = re.compile(RFC5424)
_3164 = re.compile(RFC3164)
_TAG = re.compile(TAG)
_MONTHS = {m: i for i, m in enumerate(MONTHS, 1)}
_SD_ELEMENT = re.compile(r'\[(?P<id>[^\s\]="]{1,32})(?P<params>(?: [^\s\]="]{1,32}="(?:\\.|[^"\\])*")*)\]')
_SD_PARAM = re.compile(r' ([^\s\]="]{1,32})="((?:\\.|[^"\\])*)"')
_SD_UNESCAPE = re.compile(r"\\([\"\\\]])")


def _nil(value: str) -> str | None:
    return None if value == "-" else value


def _structured_data(rest: str) -> tuple[dict[str, dict[str, str]] | None, str]:
    """Parse RFC 5424 STRUCTURED-DATA at the start of ``rest``; return it and the message after it."""
    if rest.startswith("-"):
        if len(rest) > 1 and rest[1] != " ":
            raise ParseError("structured data: expected '-' or '[' followed by a space")
        return None, rest[2:]
    if not rest.startswith("["):
        raise ParseError("structured data: expected '-' or '['")
    sd: dict[str, dict[str, str]] = {}
    pos = 0
    while pos < len(rest) and rest[pos] == "[":
        m = _SD_ELEMENT.match(rest, pos)
        if not m:
            raise ParseError(f"structured data: malformed element at column {pos + 1}")
        sd[m["id"]] = {k: _SD_UNESCAPE.sub(r"\1", v) for k, v in _SD_PARAM.findall(m["params"])}
        pos = m.end()
    if pos < len(rest) and rest[pos] != " ":
        raise ParseError("structured data: expected a space before the message")
    return sd, rest[pos + 1:]


class SyslogProcessor(Processor):
    settings: ClassVar[dict[str, Setting]] = {
        "require_pri": Setting(Bool(), False, "Reject lines without a <PRI> prefix (files written by syslogd "
                               "have none; network syslog always has one)"),
    }

    def output_schema(self) -> pa.Schema:
        import pyarrow as pa

        s, i = pa.string(), pa.int64()
        return pa.schema([("format", s), ("facility", i), ("severity", i), ("time", s), ("host", s), ("app", s),
                          ("pid", s), ("msgid", s), ("structured_data", s), ("message", s)])

    def process(self, record: bytes, where: RecordContext) -> dict[str, Any]:
        text = record.decode("utf-8", "replace")
        if text.startswith("\ufeff"):
            text = text[1:]
        facility = severity = None
        m = _PRI.match(text)
        if m:
            pri = int(m[1])
            if pri > 191:
                raise ParseError(f"PRI {pri} out of range 0-191")
            facility, severity = divmod(pri, 8)
            text = text[m.end():]
        elif self.config.require_pri or text.startswith("<"):
            raise ParseError("no valid <PRI> prefix")
        if text[:1].isdigit() and (m5 := _5424.fullmatch(text)):
            return self._rfc5424(m5, facility, severity)
        m3 = _3164.fullmatch(text)
        if m3:
            return self._rfc3164(m3, facility, severity, where)
        raise ParseError("neither RFC 5424 nor RFC 3164 syslog")

    @staticmethod
    def _rfc5424(m: re.Match[str], facility: int | None, severity: int | None) -> dict[str, Any]:
        if m["version"] != "1":
            raise ParseError(f"unsupported RFC 5424 version {m['version']}")
        time = _nil(m["time"])
        if time is not None:
            try:
                time = datetime.fromisoformat(time).isoformat()
            except ValueError:
                raise ParseError(f"bad RFC 5424 timestamp {m['time']!r}") from None
        sd, message = _structured_data(m["rest"])
        if message.startswith("\ufeff"):
            message = message[1:]
        return {
            "format": "rfc5424", "facility": facility, "severity": severity, "time": time,
            "host": _nil(m["host"]), "app": _nil(m["app"]), "pid": _nil(m["pid"]), "msgid": _nil(m["msgid"]),
            "structured_data": sd, "message": message,
        }

    @staticmethod
    def _rfc3164(m: re.Match[str], facility: int | None, severity: int | None,
                 where: RecordContext) -> dict[str, Any]:
        read = datetime.fromtimestamp(where.timestamp / 1000, tz=UTC)
        month, day = _MONTHS[m["mon"]], int(m["day"])
        try:
            ts = datetime(read.year, month, day, int(m["h"]), int(m["m"]), int(m["s"]))
            if ts.month - read.month > 6:  # a December line read in January
                ts = ts.replace(year=read.year - 1)
        except ValueError:
            raise ParseError(f"bad RFC 3164 timestamp {m['mon']} {m['day']} {m['h']}:{m['m']}:{m['s']}") from None
        rest = m["rest"] or ""
        app = pid = None
        tag = _TAG.match(rest)
        if tag:
            app, pid = tag["app"], tag["pid"]
            rest = rest[tag.end():]
        return {
            "format": "rfc3164", "facility": facility, "severity": severity, "time": ts.isoformat(),
            "host": m["host"], "app": app, "pid": pid, "msgid": None, "structured_data": None, "message": rest,
        }

    def process_batch(self, records: pa.Array, where: BatchContext) -> ParsedBatch:
        """The common forms in one compiled pass (``_columns.c``) where it is built, else with Arrow
        kernels; every other line through :meth:`process`."""
        if _compiled is None:
            return self._kernel_batch(records, where)
        import pyarrow as pa

        from jobs.processors.columns import with_fallback

        n = len(records)
        validity, offsets, data = records.buffers()[:3]
        read = where.timestamps()
        kind, *columns = _compiled.syslog(validity, offsets, data if data is not None else b"", records.offset, n,
                                         read.buffers()[1], read.offset, self.config.require_pri)

        def column(field: pa.Field, bufs: tuple[bytes, ...]) -> pa.Array:
            return pa.Array.from_buffers(field.type, n, [pa.py_buffer(b) for b in bufs])

        schema = self.output_schema()
        by_name = dict(zip(["format", "facility", "severity", "time", "host", "app", "pid", "msgid", "message"],
                           columns, strict=True))
        fields = pa.RecordBatch.from_arrays(
            [column(f, by_name[f.name]) if f.name in by_name else pa.nulls(n, f.type) for f in schema],
            schema=schema)
        fast = pa.Array.from_buffers(pa.uint8(), n, [None, pa.py_buffer(kind)]).cast(pa.bool_())
        return with_fallback(self, records, where, fields, fast)

    def _kernel_batch(self, records: pa.Array, where: BatchContext) -> ParsedBatch:
        """Arrow kernels for lines without structured data; every other line through :meth:`process`.

        Lines are checked whole against the patterns (RE2's DFA: fast) and cut
        by splits and fixed-width slices; capturing groups (RE2's backtracker:
        ~15x slower) are not used.
        """
        import pyarrow as pa
        import pyarrow.compute as pc

        from jobs.processors.columns import concat_text, decode, empty_to_null, valid_datetime, with_fallback

        def matches(values: pa.Array, pattern: str) -> pa.Array:
            return pc.fill_null(pc.match_substring_regex(values, f"^(?:{pattern})\\z"), False)

        def part(lists: pa.Array, i: int) -> pa.Array:
            return pc.list_element(lists, i)

        str_null = pa.scalar(None, pa.string())
        n = len(records)
        text, _ = decode(records)
        has_pri = pc.fill_null(pc.match_substring_regex(text, r"^<[0-9]{1,3}>"), False)
        halves = pc.split_pattern(pc.if_else(has_pri, text, concat_text("<0>", text)), ">", max_splits=1)
        pri = pc.cast(pc.utf8_slice_codeunits(part(halves, 0), 1), pa.int64())
        body = part(halves, 1)
        if self.config.require_pri:
            pri_ok = pc.and_(has_pri, pc.less_equal(pri, 191))
        else:
            pri_ok = pc.if_else(has_pri, pc.less_equal(pri, 191), pc.invert(pc.starts_with(text, "<")))
        pri_ok = pc.and_(pri_ok, pc.invert(pc.starts_with(text, "\ufeff")))
        eight = pc.divide(pri, 8)
        facility = pc.if_else(has_pri, eight, pa.scalar(None, pa.int64()))
        severity = pc.if_else(has_pri, pc.subtract(pri, pc.multiply(eight, 8)), pa.scalar(None, pa.int64()))

        # RFC 5424 with no structured data: 1 TIME HOST APP PID MSGID -[ MSG]
        is5 = matches(body, rf"1 {_NS}+ {_NS}+ {_NS}+ {_NS}+ {_NS}+ -(?: (?s:.*))?")
        f5 = pc.split_pattern(pc.if_else(is5, body, "1 - - - - - -"), " ", max_splits=6)
        raw_time = part(f5, 1)
        msg5 = pc.utf8_slice_codeunits(part(f5, 6), 2)
        iso = matches(raw_time, ISO_TIME)
        t = pc.if_else(iso, raw_time, "0001-01-01T00:00:00Z")
        local5 = pc.utf8_slice_codeunits(t, 0, 19)
        after = pc.utf8_slice_codeunits(t, 19)  # [.frac](Z|±hh:mm)
        frac_tz = pc.split_pattern(pc.replace_substring_regex(after, r"^\.?([0-9]*)(.*)$", r"\1|\2"), "|",
                                   max_splits=1)
        frac = pc.utf8_rpad(part(frac_tz, 0), 6, "0")
        frac = pc.if_else(pc.equal(frac, "000000"), "", concat_text(".", frac))
        tz = part(frac_tz, 1)
        tz = pc.if_else(pc.or_(pc.equal(tz, "Z"), pc.equal(tz, "-00:00")), "+00:00", tz)
        time_nil = pc.equal(raw_time, "-")
        time5 = pc.if_else(time_nil, str_null, concat_text(local5, frac, tz))
        is5 = pc.and_(is5, pc.and_(pc.or_(time_nil, pc.and_(iso, valid_datetime(local5))),
                                   pc.invert(pc.starts_with(msg5, "\ufeff"))))

        # RFC 3164: Mmm dd hh:mm:ss HOST[ REST], the year from each record's chunk
        is3 = matches(body, RFC3164)
        b3 = pc.if_else(is3, body, "Jan  1 00:00:00 h")
        host_rest = pc.utf8_slice_codeunits(b3, 16)
        host_rest = pc.if_else(pc.match_substring(host_rest, " "), host_rest, concat_text(host_rest, " "))
        hr = pc.split_pattern(host_rest, " ", max_splits=1)
        rest = part(hr, 1)
        read = pc.cast(where.timestamps(), pa.timestamp("ms", tz="UTC"))
        read_year, read_month = pc.year(read), pc.month(read)
        month = pc.add(pc.index_in(pc.utf8_slice_codeunits(b3, 0, 3), value_set=pa.array(MONTHS)), 1)
        year = pc.if_else(pc.greater(pc.subtract(month, read_month), 6), pc.subtract(read_year, 1), read_year)
        mm = pc.utf8_lpad(pc.cast(month, pa.string()), 2, "0")
        dd = pc.replace_substring(pc.utf8_slice_codeunits(b3, 4, 6), " ", "0")
        hms = pc.utf8_slice_codeunits(b3, 7, 15)
        time3 = concat_text(pc.utf8_lpad(pc.cast(year, pa.string()), 4, "0"), "-", mm, "-", dd, "T", hms)
        as_read = concat_text(pc.utf8_lpad(pc.cast(read_year, pa.string()), 4, "0"), "-", mm, "-", dd, "T", hms)
        is3 = pc.and_(pc.and_(is3, pc.invert(is5)), pc.and_(valid_datetime(as_read), valid_datetime(time3)))
        # TAG: the text before the first ':' is app[pid] (a tag), or cannot be one (no tag), or is left to re
        colon = pc.match_substring(rest, ":")
        ct = pc.split_pattern(pc.if_else(colon, rest, ":"), ":", max_splits=1)
        cand, after_tag = part(ct, 0), part(ct, 1)
        tag = pc.and_(colon, matches(cand, r"[^ \t\n\x0b\f\r\[\]:]{1,48}(?:\[[^\] \t\n\x0b\f\r]{1,32}\])?"))
        bracket = pc.match_substring(cand, "[")
        tag_known = pc.or_(tag, pc.or_(pc.invert(colon), pc.invert(bracket)))
        app_pid = pc.split_pattern(pc.if_else(tag, pc.if_else(bracket, cand, concat_text(cand, "[]")), "x[]"),
                                   "[", max_splits=1)
        app3 = pc.if_else(tag, part(app_pid, 0), str_null)
        pid3 = empty_to_null(pc.if_else(tag, pc.utf8_slice_codeunits(part(app_pid, 1), 0, -1), str_null))
        msg3 = pc.if_else(tag, pc.if_else(pc.starts_with(after_tag, " "), pc.utf8_slice_codeunits(after_tag, 1),
                                          after_tag), rest)
        is3 = pc.and_(is3, tag_known)

        fields = pa.RecordBatch.from_arrays([
            pc.if_else(is5, "rfc5424", "rfc3164"),
            facility,
            severity,
            pc.if_else(is5, time5, time3),
            pc.if_else(is5, empty_to_null(part(f5, 2), ("-",)), part(hr, 0)),
            pc.if_else(is5, empty_to_null(part(f5, 3), ("-",)), app3),
            pc.if_else(is5, empty_to_null(part(f5, 4), ("-",)), pid3),
            pc.if_else(is5, empty_to_null(part(f5, 5), ("-",)), str_null),
            pa.nulls(n, pa.string()),
            pc.if_else(is5, msg5, msg3),
        ], schema=self.output_schema())
        fast = pc.and_(pc.fill_null(pri_ok, False), pc.or_(pc.fill_null(is5, False), pc.fill_null(is3, False)))
        return with_fallback(self, records, where, fields, fast)
