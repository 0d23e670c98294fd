"""Built-in processors on real-looking lines: the fields they give and the reasons they reject."""

from __future__ import annotations

import pytest

from logflume.errors import ConfigError
from logflume.processor import ParseError, RecordContext, build_processor

WHERE = RecordContext("h", "/var/log/x", "e", 0, "T", 1_764_000_000_000)  # read 2025-11-24
JAN = RecordContext("h", "/var/log/x", "e", 0, "T", 1_767_312_000_000)  # read 2026-01-02


def parse(kind: str, line: bytes, where: RecordContext = WHERE, **settings) -> dict:
    return build_processor(kind, settings).process(line, where)


def test_syslog_rfc5424_with_structured_data() -> None:
    r = parse("syslog", b'<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 '
                        b'[exampleSDID@32473 iut="3" eventSource="Application"][x@1 q="a\\"b\\]c"] \xef\xbb\xbfhi')
    assert r == {
        "format": "rfc5424", "facility": 20, "severity": 5, "time": "2003-10-11T22:14:15.003000+00:00",
        "host": "mymachine.example.com", "app": "evntslog", "pid": None, "msgid": "ID47",
        "structured_data": {"exampleSDID@32473": {"iut": "3", "eventSource": "Application"},
                            "x@1": {"q": 'a"b]c'}},
        "message": "hi",
    }


def test_syslog_rfc3164_with_and_without_pri() -> None:
    r = parse("syslog", b"<34>Oct 11 22:14:15 mymachine su: 'su root' failed")
    assert (r["format"], r["facility"], r["severity"], r["time"], r["host"], r["app"], r["pid"], r["message"]) == (
        "rfc3164", 4, 2, "2025-10-11T22:14:15", "mymachine", "su", None, "'su root' failed")
    r = parse("syslog", b"Nov  4 06:25:01 web1 CRON[999]: (root) CMD (x)")
    assert (r["facility"], r["time"], r["app"], r["pid"], r["message"]) == (
        None, "2025-11-04T06:25:01", "CRON", "999", "(root) CMD (x)")
    # a December line read in January is from last year
    assert parse("syslog", b"Dec 31 23:59:59 web1 logger: x", JAN)["time"] == "2025-12-31T23:59:59"
    with pytest.raises(ParseError, match="PRI"):
        parse("syslog", b"Nov 24 16:00:01 web1 x: y", require_pri=True)


@pytest.mark.parametrize("line, reason", [
    (b"this is not syslog", "neither"),
    (b"<999>Nov 24 16:00:01 host x: y", "PRI 999"),
    (b"<13>1 not-a-time host app - - - m", "timestamp"),
    (b"<13>2 2025-11-24T16:00:03Z host app - - - m", "version 2"),
    (b"<13>1 2025-11-24T16:00:03Z host app - - [broken", "structured data"),
    (b"Feb 30 16:00:01 host x: y", "bad RFC 3164 timestamp"),
    (b"", "neither"),
])
def test_syslog_rejects_with_reason(line: bytes, reason: str) -> None:
    with pytest.raises(ParseError, match=reason):
        parse("syslog", line)


def test_access_combined_common_and_odd_requests() -> None:
    r = parse("access", b'127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /a.gif HTTP/1.0" 200 2326 '
                        b'"http://e.com/" "Mozilla/4.08 [en]"')
    assert r == {"remote_addr": "127.0.0.1", "ident": None, "user": "frank", "time": "2000-10-10T13:55:36-07:00",
                 "request": "GET /a.gif HTTP/1.0", "method": "GET", "path": "/a.gif", "protocol": "HTTP/1.0",
                 "status": 200, "bytes": 2326, "referer": "http://e.com/", "user_agent": "Mozilla/4.08 [en]",
                 "extra": None}
    r = parse("access", b'1.2.3.4 - - [24/Nov/2025:16:00:02 +0100] "GET / HTTP/1.1" 304 -')
    assert (r["bytes"], r["referer"], r["user_agent"]) == (0, None, None)
    r = parse("access", b'1.2.3.4 - - [24/Nov/2025:16:00:03 +0000] "\\x16\\x03" 400 157 "-" "-" 0.012')
    assert (r["method"], r["status"], r["extra"]) == (None, 400, "0.012")
    with pytest.raises(ParseError, match="time"):
        parse("access", b'1.2.3.4 - - [99/Foo/2025:16:00:06 +0000] "GET / HTTP/1.1" 200 1')
    with pytest.raises(ParseError, match="combined or common"):
        parse("access", b"garbage")


def test_json_objects_only() -> None:
    assert parse("json", b'{"a": 1, "b": {"c": [1]}}') == {"a": 1, "b": {"c": [1]}}
    assert parse("json", b'{"a": 1}', field="doc") == {"doc": {"a": 1}}
    for line, reason in [(b"[1]", "expected an object"), (b'{"a"', "not JSON"), (b'{"a":"\xff"}', "UTF-8")]:
        with pytest.raises(ParseError, match=reason):
            parse("json", line)


def test_regex_named_groups_and_types() -> None:
    pat = r"(?P<level>[A-Z]+) took (?P<ms>\d+) ms"
    assert parse("regex", b"WARN took 25 ms", pattern=pat, types={"ms": "int"}) == {"level": "WARN", "ms": 25}
    with pytest.raises(ParseError, match="does not match"):
        parse("regex", b"xx WARN took 25 ms", pattern=pat)
    assert parse("regex", b"xx WARN took 25 ms", pattern=pat, match="search")["ms"] == "25"
    with pytest.raises(ConfigError, match="named group"):
        build_processor("regex", {"pattern": "abc"})
    with pytest.raises(ConfigError, match="no group named 'nope'"):
        build_processor("regex", {"pattern": pat, "types": {"nope": "int"}})
    with pytest.raises(ConfigError, match="pattern"):
        build_processor("regex", {})
    with pytest.raises(ConfigError, match="regular expression"):
        build_processor("regex", {"pattern": "(?P<x>"})


def test_raw_and_unknown_types() -> None:
    assert parse("raw", b"caf\xc3\xa9 \xff") == {"message": "café \ufffd"}
    with pytest.raises(ParseError, match="UTF-8"):
        parse("raw", b"\xff", strict_utf8=True)
    with pytest.raises(ConfigError, match="unknown processor type 'nope'"):
        build_processor("nope")
    with pytest.raises(ConfigError, match="unknown key"):
        build_processor("raw", {"strict": True})
    with pytest.raises(ConfigError, match="not a subclass"):
        build_processor("logflume.chunk:Chunk")
