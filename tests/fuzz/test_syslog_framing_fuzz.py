"""RFC 6587 framing on hostile TCP streams: same messages however the bytes are split, memory bounded.

A syslog sender is outside our control: any byte string, split at any read
boundary, must decode to the same messages as when it arrives in one read,
no message may exceed ``max_message_size``, the decoder may never buffer
more than that, and a length prefix of ten nines must not allocate
anything like it.
"""

from __future__ import annotations

import tracemalloc

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.sources.syslog.framing import FrameDecoder, parse_header

MAX = 64

PIECES = st.one_of(
    st.binary(max_size=20),
    st.sampled_from([b"\n", b"\r\n", b" ", b"0 ", b"5 hello", b"12 ", b"9999999999 ", b"99999999999", b"<13>",
                     b"<165>1 2003-10-11T22:14:15.003Z host app 1 ID47 - msg", b"123abc\n"]),
    st.integers(0, 3 * MAX).map(lambda n: f"{n} ".encode() + b"x" * n),
)


def decode(data: bytes, cuts: list[int], max_size: int = MAX) -> list[tuple[bytes, bool]]:
    dec = FrameDecoder(max_size)
    bounds = sorted({0, len(data), *[c for c in cuts if c <= len(data)]})
    out = []
    for a, b in zip(bounds, bounds[1:], strict=False):
        buf = bytearray(data[a:b]) + bytearray(b"\xee" * 7)  # a reused receive buffer, longer than the read
        for msg, truncated in dec.feed(buf, b - a):
            out.append((bytes(msg), truncated))  # copy now: views are valid only until the next feed
        assert dec.buffered <= max_size, "decoder buffers more than max_message_size"
    out += [(bytes(m), t) for m, t in dec.finish()]
    return out


@settings(max_examples=500, deadline=None)
@given(parts=st.lists(PIECES, max_size=12).map(b"".join), cuts=st.lists(st.integers(0, 1500), max_size=15))
def test_split_invariance_and_bounded_messages(parts, cuts):
    whole = decode(parts, [])
    assert decode(parts, cuts) == whole
    assert all(len(m) <= MAX for m, _ in whole)


@settings(max_examples=300, deadline=None)
@given(msgs=st.lists(st.binary(min_size=1, max_size=MAX), max_size=10),
       cuts=st.lists(st.integers(0, 800), max_size=10))
def test_octet_counted_messages_roundtrip(msgs, cuts):
    """RFC 6587 MSG-LEN starts with a non-zero digit, so messages are at least one byte."""
    data = b"".join(f"{len(m)} ".encode() + m for m in msgs)
    assert decode(data, cuts) == [(m, False) for m in msgs]


def _plain_text_frame(m: bytes) -> bool:
    """A message that LF framing carries unchanged: no LF, no leading digit/separator, no trailing CR/NUL."""
    return b"\n" not in m and m[:1] not in b"0123456789\r\x00 " and not m.endswith((b"\r", b"\x00"))


@settings(max_examples=300, deadline=None)
@given(msgs=st.lists(st.binary(min_size=1, max_size=MAX).filter(_plain_text_frame), max_size=10),
       cuts=st.lists(st.integers(0, 800), max_size=10))
def test_lf_framed_messages_roundtrip(msgs, cuts):
    data = b"".join(m + b"\n" for m in msgs)
    assert decode(data, cuts) == [(m, False) for m in msgs if m]


def test_hostile_length_prefix_allocates_nothing_like_it():
    """A 9,999,999,999-byte frame announced, 4 MiB sent: memory stays at max_message_size."""
    tracemalloc.start()
    try:
        dec = FrameDecoder(1 << 16)
        out = dec.feed(bytearray(b"9999999999 "))
        block = bytearray(b"A" * (1 << 20))
        for _ in range(4):
            out += dec.feed(block)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(out) == 1 and out[0][1] is True and len(out[0][0]) == 1 << 16
    assert peak < 8 << 20, f"peak {peak} bytes while skipping a hostile frame"


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=600))
def test_parse_header_never_raises(msg):
    h = parse_header(msg)
    for value in (h.facility, h.severity, h.host, h.app, h.procid, h.msgid):
        assert isinstance(value, str) and 0 < len(value) <= 64
