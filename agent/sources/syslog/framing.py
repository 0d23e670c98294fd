"""Syslog over TCP framing (RFC 6587) and just enough header parsing to name a stream.

:class:`FrameDecoder` splits a TCP byte stream into messages, choosing per
frame between octet counting (``LEN SP MSG``, a frame that starts with a
digit) and non-transparent framing (``MSG LF``).  Memory stays bounded by
``max_message_size`` whatever the sender does: longer messages are cut and
reported as truncated, the rest of them skipped; digits that cannot be a
length (more than 10, or not followed by a space) are read as LF-framed text.

:func:`parse_header` reads the priority, host and app name of an RFC 5424 or
RFC 3164 message (only the first few hundred bytes are looked at).

:data:`scan_tcp` is the compiled fast path (``_scan.c``): it frames, parses and groups a whole
receive buffer's messages by their stream fields at once, with the same results as the two above;
:data:`scan_datagrams` does the same for a batch of UDP datagrams, and :data:`recv_datagrams` takes
such a batch off the socket in one system call.  All are ``None`` where the
extension could not be built (no C compiler at install) or when ``LOGFLUME_PURE_PYTHON=1`` is set
(to compare).
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable
from dataclasses import dataclass

Buffer = bytes | bytearray | memoryview

Messages = list[tuple[Buffer, bool]]
#: One stream's share of a scan: (field values, the records each ending in LF, their ends)
Group = tuple[tuple[str, ...], bytes, list[int]]
#: scan_tcp(data, start, end, max_message_size, fields) -> (stop, groups, messages, nbytes)
ScanTCP = Callable[[Buffer, int, int, int, tuple[str, ...]], tuple[int, list[Group], int, int]]

#: scan_datagrams(datagrams, start, max_message_size, fields) -> (stop, groups, messages, nbytes)
ScanDatagrams = Callable[[list[bytes], int, int, tuple[str, ...]], tuple[int, list[Group], int, int]]

#: recv_datagrams(fd, scratch, slot, timeout_ms) -> [(peer, [datagram, ...]), ...]: one recvmmsg
RecvDatagrams = Callable[[int, bytearray, int, int], list[tuple[str, list[bytes]]]]

scan_tcp: ScanTCP | None
scan_datagrams: ScanDatagrams | None
recv_datagrams: RecvDatagrams | None
try:
    from agent.sources.syslog._scan import recv_datagrams, scan_datagrams, scan_tcp
except ImportError:  # built without a C compiler: FrameDecoder and parse_header do it all
    scan_tcp = scan_datagrams = recv_datagrams = None
if os.environ.get("LOGFLUME_PURE_PYTHON") == "1":
    scan_tcp = scan_datagrams = recv_datagrams = None

MAX_LENGTH_DIGITS = 10


class FrameDecoder:
    """Incremental RFC 6587 decoder for one connection.

    ``feed(data)`` returns ``(message, truncated)`` pairs; a message is a
    ``memoryview`` into ``data`` when it lay wholly inside it (valid until the
    next feed; the caller copies what it keeps) or ``bytes`` when it spanned
    reads.  Messages exclude their framing (length prefix, trailing LF/CR).
    """

    def __init__(self, max_message_size: int) -> None:
        self.max = max_message_size
        self._mode = 0          # 0: frame start, 1: octet count digits, 2: octet body, 3: LF body, 4: LF discard
        self._digits = bytearray()
        self._remaining = 0     # octet body bytes still to read (kept or skipped)
        self._skip = 0          # octet body bytes to skip after the kept part
        self._part = bytearray()
        self._truncated = False

    @property
    def buffered(self) -> int:
        return len(self._part)

    @property
    def idle(self) -> bool:
        """At a frame start with nothing held: the next bytes may go to :func:`scan_tcp` instead."""
        return self._mode == 0 and not self._part

    def feed(self, data: bytes | bytearray, end: int | None = None) -> Messages:
        """Decode ``data[:end]`` (a reusable receive buffer and the count read into it)."""
        return self._decode(data, 0, len(data) if end is None else end, False)[0]

    def feed_frame(self, data: bytes | bytearray, start: int, end: int) -> tuple[Messages, int]:
        """Decode ``data[start:end]`` until one frame is complete (where :func:`scan_tcp` can go on);
        returns its message (if it made one) and where decoding stopped."""
        return self._decode(data, start, end, True)

    def _decode(self, data: bytes | bytearray, i: int, n: int, one_frame: bool) -> tuple[Messages, int]:
        out: Messages = []
        mv = memoryview(data)
        took_frame = not self.idle
        while i < n:
            mode = self._mode
            if mode == 0:
                c = mv[i]
                if c in (10, 13, 0, 32):   # empty frames / stray separators
                    i += 1
                    continue
                if one_frame and took_frame:
                    return out, i
                if 49 <= c <= 57:           # '1'..'9': octet counting
                    self._mode = 1
                    self._digits.clear()
                else:
                    self._mode = 3
                    self._truncated = False
                took_frame = True
                continue
            if mode == 1:
                c = mv[i]
                if 48 <= c <= 57 and len(self._digits) < MAX_LENGTH_DIGITS:
                    self._digits.append(c)
                    i += 1
                    continue
                if c != 32:
                    # "123abc" or a number too long to be a length: not octet counting after all;
                    # the frame is LF-delimited text.
                    self._part += self._digits
                    self._mode = 3
                    self._truncated = False
                    continue
                length = int(self._digits)
                i += 1
                keep = min(length, self.max)
                self._remaining = keep
                self._skip = length - keep
                self._truncated = length > keep
                self._part.clear()
                self._mode = 2
                if keep == 0:
                    out.append((b"", False))
                    self._mode = 5 if self._skip else 0
                continue
            if mode == 2:
                take = min(self._remaining, n - i)
                if not self._part and take == self._remaining:
                    out.append((mv[i:i + take], self._truncated))
                else:
                    self._part += mv[i:i + take]
                    if take == self._remaining:
                        out.append((bytes(self._part), self._truncated))
                        self._part.clear()
                self._remaining -= take
                i += take
                if self._remaining == 0:
                    self._mode = 5 if self._skip else 0
                continue
            if mode == 5:               # skipping the cut-off rest of an octet-counted message
                take = min(self._skip, n - i)
                self._skip -= take
                i += take
                if self._skip == 0:
                    self._mode = 0
                continue
            if mode == 3:
                nl = data.find(b"\n", i, n)
                end = n if nl < 0 else nl
                room = self.max - len(self._part)
                if end - i > room:
                    # Over the limit: keep what fits, drop the rest up to the next LF.
                    self._part += mv[i:i + room]
                    out.append((_strip_cr(bytes(self._part)), True))
                    self._part.clear()
                    i += room
                    self._mode = 4
                    continue
                if nl < 0:
                    self._part += mv[i:n]
                    i = n
                    continue
                if self._part:
                    self._part += mv[i:nl]
                    out.append((_strip_cr(bytes(self._part)), False))
                    self._part.clear()
                else:
                    out.append((_strip_cr(mv[i:nl]), False))
                i = nl + 1
                self._mode = 0
                continue
            if mode == 4:               # discarding the rest of an over-long LF message
                nl = data.find(b"\n", i, n)
                if nl < 0:
                    i = n
                else:
                    i = nl + 1
                    self._mode = 0
                continue
        return out, i

    def finish(self) -> list[tuple[Buffer, bool]]:
        """At EOF: an unterminated LF message still counts (senders often omit the last LF)."""
        out: list[tuple[Buffer, bool]] = []
        if self._mode == 3 and self._part:
            out.append((_strip_cr(bytes(self._part)), False))
        elif self._mode == 2 and self._part:
            out.append((bytes(self._part), True))
        self._part.clear()
        self._mode = 0
        return out


def _strip_cr(msg: Buffer) -> Buffer:
    return msg[:-1] if len(msg) and msg[-1] in (13, 0) else msg


FACILITIES = (
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv", "ftp",
    "ntp", "security", "console", "solaris-cron", "local0", "local1", "local2", "local3", "local4", "local5",
    "local6", "local7",
)
SEVERITIES = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")

_PRI = re.compile(rb"<(\d{1,3})>")
_RFC5424 = re.compile(rb"(\d{1,2}) (\S+) (\S+) (\S+) (\S+) (\S+)")
_RFC3164_TS = re.compile(rb"(?:[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d|\d{4}-\d\d-\d\dT\S+) ")
_SAFE = re.compile(r"[^A-Za-z0-9._\-@]")
FIELD_MAX = 64
NIL = "-"


@dataclass(slots=True)
class SyslogHeader:
    format: str = "unknown"     # "rfc5424", "rfc3164" or "unknown"
    facility: str = NIL
    severity: str = NIL
    host: str = NIL
    app: str = NIL
    procid: str = NIL
    msgid: str = NIL


@functools.lru_cache(maxsize=4096)
def _field(raw: bytes) -> str:
    """A header field made safe for a stream name (cached: hosts and apps repeat)."""
    text = _SAFE.sub("_", raw[:FIELD_MAX].decode("ascii", "replace"))
    return text or NIL


def parse_header(msg: Buffer) -> SyslogHeader:
    """Header fields of one message; anything unparseable is ``-`` (never raises)."""
    head = bytes(msg[:512])
    h = SyslogHeader()
    m = _PRI.match(head)
    if not m:
        return h
    pri = int(m.group(1))
    if pri <= 191:
        h.facility = FACILITIES[pri >> 3]
        h.severity = SEVERITIES[pri & 7]
    rest = head[m.end():]
    m5 = _RFC5424.match(rest)
    if m5 and m5.group(1) != b"0":
        h.format = "rfc5424"
        host, app, procid, msgid = m5.group(3, 4, 5, 6)
        h.host = _field(host)
        h.app = _field(app)
        h.procid = _field(procid)
        h.msgid = _field(msgid)
        return h
    h.format = "rfc3164"
    ts = _RFC3164_TS.match(rest)
    if ts:
        rest = rest[ts.end():]
    parts = rest.split(b" ", 2)
    first = parts[0] if parts else b""
    if first.endswith(b":") or b"[" in first:
        tag = first
    else:
        if first:
            h.host = _field(first)
        tag = parts[1] if len(parts) > 1 else b""
        if not (tag.endswith(b":") or b"[" in tag):
            return h
    app, _, pid = tag.rstrip(b":").partition(b"[")
    h.app = _field(app)
    if pid:
        h.procid = _field(pid.rstrip(b"]"))
    return h
