"""access: Apache and nginx access logs, combined format (common format accepted too).

``%h %l %u [%t] "%r" %>s %b "%{Referer}i" "%{User-agent}i"``; a common-format
line (no referer and user agent) gives ``None`` for those two fields.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, ClassVar

from jobs.processor import ParseError, Processor, RecordContext
from logflume.settings import Setting

_LINE = re.compile(
    r'(?P<remote>\S+) (?P<ident>\S+) (?P<user>\S+) \[(?P<time>[^\]]+)\] "(?P<request>(?:\\.|[^"\\])*)" '
    r'(?P<status>\d{3}) (?P<bytes>\d+|-)'
    r'(?: "(?P<referer>(?:\\.|[^"\\])*)" "(?P<agent>(?:\\.|[^"\\])*)")?(?P<extra> .*)?'
)
_TIME = re.compile(r"(\d{2})/([A-Z][a-z]{2})/(\d{4}):(\d{2}):(\d{2}):(\d{2}) ([+-])(\d{2})(\d{2})")
_MONTHS = {m: i for i, m in enumerate("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split(), 1)}
_REQUEST = re.compile(r"(?P<method>[A-Z][A-Z_-]*) (?P<path>\S+)(?: (?P<protocol>[A-Z]+/[\d.]+))?")


def _dash(value: str | None) -> str | None:
    return None if value in (None, "-") else value


def _iso_time(text: str) -> str:
    """``10/Oct/2000:13:55:36 -0700`` -> ``2000-10-10T13:55:36-07:00`` (strptime is 10x slower)."""
    t = _TIME.fullmatch(text)
    month = _MONTHS.get(t[2]) if t else None
    if not t or month is None:
        raise ParseError(f"bad access log time [{text}]")
    try:
        datetime(int(t[3]), month, int(t[1]), int(t[4]), int(t[5]), int(t[6]))
    except ValueError:
        raise ParseError(f"bad access log time [{text}]") from None
    return f"{t[3]}-{month:02d}-{t[1]}T{t[4]}:{t[5]}:{t[6]}{t[7]}{t[8]}:{t[9]}"


class AccessLogProcessor(Processor):
    settings: ClassVar[dict[str, Setting]] = {}

    def process(self, record: bytes, where: RecordContext) -> dict[str, Any]:
        text = record.decode("utf-8", "replace")
        m = _LINE.fullmatch(text)
        if not m:
            raise ParseError("not an access log line in combined or common format")
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
            "protocol": req["protocol"] if req else None,
            "status": int(m["status"]),
            "bytes": 0 if m["bytes"] == "-" else int(m["bytes"]),
            "referer": _dash(m["referer"]),
            "user_agent": _dash(m["agent"]),
            "extra": (m["extra"] or "").strip() or None,
        }
