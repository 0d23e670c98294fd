"""syslog: RFC 5424 and RFC 3164 (BSD) lines, with or without the ``<PRI>`` prefix.

Both formats give the same fields, so one datatype may mix them: ``format``,
``facility``, ``severity``, ``time`` (ISO 8601), ``host``, ``app``, ``pid``,
``msgid``, ``structured_data`` and ``message``.  RFC 3164 carries no year: it
is taken from the chunk's read time (a December line read in January belongs
to the year before).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, ClassVar

from logflume.processor import ParseError, Processor, RecordContext
from logflume.settings import Bool, Setting

_PRI = re.compile(r"<(\d{1,3})>")
_5424 = re.compile(
    r"(?P<version>[1-9]\d{0,2}) (?P<time>\S+) (?P<host>\S+) (?P<app>\S+) (?P<pid>\S+) (?P<msgid>\S+) (?P<rest>.*)",
    re.DOTALL,
)
_3164 = re.compile(
    r"(?P<mon>Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) (?P<day>[ \d]\d) "
    r"(?P<h>\d\d):(?P<m>\d\d):(?P<s>\d\d) (?P<host>\S+)(?: (?P<rest>.*))?",
    re.DOTALL,
)
_TAG = re.compile(r"(?P<app>[^\s\[\]:]{1,48})(?:\[(?P<pid>[^\]\s]{1,32})\])?: ?")
_MONTHS = {m: i for i, m in enumerate("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split(), 1)}
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
