"""syslog: RFC 5424 and RFC 3164 (BSD) lines, with or without the ``<PRI>`` prefix.

Both formats give the same fields, so one datatype may mix them: ``format``,
``facility``, ``severity``, ``time`` (ISO 8601), ``host``, ``app``, ``pid``,
``msgid``, ``structured_data`` (JSON text) and ``message``.  RFC 3164 carries
no year: it is taken from the chunk's read time (a December line read in
January belongs to the year before).

The patterns below are shared by the per-record path (Python ``re``), the
batch path (Arrow, RE2) and the Spark engine, in the syntax all three read
alike (see :mod:`jobs.processors.columns`).  The batch path takes the common
forms (no structured data, ``Z``/``±hh:mm`` times) with Arrow kernels and hands
every other record to the per-record code.
"""

from __future__ import annotations

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
        """Arrow kernels for lines without structured data; every other line through :meth:`process`."""
        import pyarrow as pa
        import pyarrow.compute as pc

        from jobs.processors.columns import (
            concat_text,
            decode,
            empty_to_null,
            full_match,
            group,
            valid_datetime,
            with_fallback,
        )

        n = len(records)
        text, _ = decode(records)
        # PRI (optional), then one of the two formats; the 5424 rest must be "-" [ message] (no structured data)
        line = full_match(text, rf"(?:{PRI})?(?P<body>(?s:.*))")
        pri_text, body = group(line, "pri"), group(line, "body")
        has_pri = pc.not_equal(pri_text, "")
        pri = pc.cast(pc.if_else(has_pri, pri_text, "0"), pa.int64())
        pri_ok = pc.if_else(has_pri, pc.less_equal(pri, 191),
                            pc.invert(pc.starts_with(text, "<")) if not self.config.require_pri
                            else pa.scalar(False))
        pri_ok = pc.and_(pri_ok, pc.invert(pc.starts_with(text, "\ufeff")))
        facility = pc.if_else(has_pri, pc.divide(pri, 8), pa.scalar(None, pa.int64()))
        severity = pc.if_else(has_pri, pc.subtract(pri, pc.multiply(pc.divide(pri, 8), 8)),
                              pa.scalar(None, pa.int64()))

        m5 = full_match(body, RFC5424)
        rest5 = group(m5, "rest")
        sd_nil = pc.or_(pc.equal(rest5, "-"), pc.starts_with(rest5, "- "))
        msg5 = pc.utf8_slice_codeunits(rest5, 2)
        raw_time = group(m5, "time")
        t = full_match(raw_time, ISO_TIME)
        frac = pc.utf8_rpad(pc.fill_null(group(t, "frac"), ""), 6, "0")
        frac = pc.if_else(pc.equal(frac, "000000"), "", concat_text(".", frac))
        tz = group(t, "tz")
        tz = pc.if_else(pc.or_(pc.equal(tz, "Z"), pc.equal(tz, "-00:00")), "+00:00", tz)
        local5 = concat_text(group(t, "date"), "T", group(t, "hms"))
        time_nil = pc.equal(raw_time, "-")
        time5 = pc.if_else(time_nil, pa.scalar(None, pa.string()), concat_text(local5, frac, tz))
        ok5 = pc.and_(pc.and_(pc.equal(group(m5, "version"), "1"), sd_nil),
                      pc.and_(pc.or_(time_nil, valid_datetime(local5)),
                              pc.invert(pc.starts_with(msg5, "\ufeff"))))
        is5 = pc.and_(pc.is_valid(m5), pc.fill_null(ok5, False))

        m3 = full_match(body, RFC3164)
        read = pc.cast(where.timestamps(), pa.timestamp("ms", tz="UTC"))
        read_year, read_month = pc.year(read), pc.month(read)
        month = pc.add(pc.index_in(group(m3, "mon"), value_set=pa.array(MONTHS)), 1)
        year = pc.if_else(pc.greater(pc.subtract(month, read_month), 6), pc.subtract(read_year, 1), read_year)
        mm = pc.utf8_lpad(pc.cast(month, pa.string()), 2, "0")
        dd = pc.replace_substring(group(m3, "day"), " ", "0")
        hms = concat_text(group(m3, "h"), ":", group(m3, "m"), ":", group(m3, "s"))
        time3 = concat_text(pc.utf8_lpad(pc.cast(year, pa.string()), 4, "0"), "-", mm, "-", dd, "T", hms)
        as_read = concat_text(pc.utf8_lpad(pc.cast(read_year, pa.string()), 4, "0"), "-", mm, "-", dd, "T", hms)
        ok3 = pc.and_(valid_datetime(as_read), valid_datetime(time3))
        is3 = pc.and_(pc.and_(pc.is_valid(m3), pc.invert(pc.fill_null(is5, False))), ok3)
        tag = full_match(pc.fill_null(group(m3, "rest"), ""), rf"(?:{TAG})?(?P<msg>(?s:.*))")

        str_null = pa.scalar(None, pa.string())
        fields = pa.RecordBatch.from_arrays([
            pc.if_else(is5, "rfc5424", "rfc3164"),
            facility,
            severity,
            pc.if_else(is5, time5, time3),
            pc.if_else(is5, empty_to_null(group(m5, "host"), ("-",)), group(m3, "host")),
            pc.if_else(is5, empty_to_null(group(m5, "app"), ("-",)), empty_to_null(group(tag, "app"))),
            pc.if_else(is5, empty_to_null(group(m5, "pid"), ("-",)), empty_to_null(group(tag, "pid"))),
            pc.if_else(is5, empty_to_null(group(m5, "msgid"), ("-",)), str_null),
            pa.nulls(n, pa.string()),
            pc.if_else(is5, msg5, group(tag, "msg")),
        ], schema=self.output_schema())
        fast = pc.and_(pc.fill_null(pri_ok, False), pc.or_(pc.fill_null(is5, False), pc.fill_null(is3, False)))
        return with_fallback(self, records, where, fields, fast)
