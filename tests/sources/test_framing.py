"""RFC 6587 framing and header parsing, including adversarial splits of the byte stream."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.sources.syslog.framing import FrameDecoder, parse_header


def decode(chunks, max_size=1000):
    d = FrameDecoder(max_size)
    out = []
    for c in chunks:
        out += [(bytes(m), t) for m, t in d.feed(bytearray(c))]
    out += [(bytes(m), t) for m, t in d.finish()]
    return out


def test_mixed_framing_and_limits():
    stream = b"5 hello<13>lf message\r\n\n\n12 <13>octet\nxx" + b"99999999999 not a length\n"
    assert decode([stream]) == [(b"hello", False), (b"<13>lf message", False), (b"<13>octet\nxx", False),
                                (b"99999999999 not a length", False)]
    assert decode([b"<13>" + b"a" * 50 + b"\nnext\n"], max_size=10) == [(b"<13>aaaaaa", True), (b"next", False)]
    assert decode([b"20 " + b"b" * 20 + b"3 abc"], max_size=8) == [(b"b" * 8, True), (b"abc", False)]
    assert decode([b"no final newline"]) == [(b"no final newline", False)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=0, max_size=40).filter(lambda b: b"\n" not in b and b[:1] not in
                                                          (b"\r", b"\x00", b" ") and not b[:1].isdigit()),
                min_size=1, max_size=20),
       st.lists(st.booleans(), min_size=20, max_size=20), st.data())
def test_any_split_of_the_stream_gives_the_same_messages(msgs, octet, data):
    msgs = [m for m in msgs if m and m[-1:] not in (b"\r", b"\x00")]
    wire = b"".join(b"%d %s" % (len(m), m) if octet[i] else m + b"\n" for i, m in enumerate(msgs))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=10)))
    pieces = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]
    assert decode(pieces) == [(m, False) for m in msgs]


def test_headers():
    h = parse_header(b"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [x] msg")
    assert (h.format, h.facility, h.severity, h.host, h.app, h.msgid) == \
        ("rfc5424", "local4", "notice", "mymachine.example.com", "evntslog", "ID47")
    h = parse_header(b"<34>Oct 11 22:14:15 mymachine su[123]: 'su root' failed")
    assert (h.format, h.facility, h.severity, h.host, h.app, h.procid) == \
        ("rfc3164", "auth", "crit", "mymachine", "su", "123")
    assert parse_header(b"<13>Oct 11 22:14:15 cron: x").app == "cron"
    assert parse_header(b"<13>Oct 11 22:14:15 host evil/../$(app): x").app == "evil_..___app_"
    assert parse_header(b"\xff\xfe garbage").app == "-"
    assert parse_header(b"<999>1 x").facility == "-"
