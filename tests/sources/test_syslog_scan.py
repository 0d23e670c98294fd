"""The syslog source's compiled scanner (``_scan.c``) against the pure-Python path it replaces.

Whatever a sender sends, split at any read boundary (TCP) or in any datagrams (UDP), the source must
make the same chunks (streams, bytes, record ends, flags, seq_ids) with the scanner as with
FrameDecoder and parse_header alone: the scanner is a speed-up, never a second behaviour.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import agent.sources.syslog as syslog_source
from agent.sources.syslog import framing
from logflume.chunk import Chunk
from logflume.chunking import EventStreams, StreamLedger
from logflume.component import Context
from logflume.metrics import Metrics
from logflume.topology import build_topology
from tests.conftest import free_port

MAX = 80

needs_scanner = pytest.mark.skipif(framing.scan_tcp is None, reason="the compiled scanner is not built")

WORD = st.text(alphabet="abcAB09._-@/$ :[]\u00e9", min_size=0, max_size=8).map(lambda t: t.encode())
PRI = st.one_of(st.integers(0, 200).map(lambda p: b"<%d>" % p), st.sampled_from([b"", b"<1234>", b"<>", b"<x>"]))
TS3164 = st.sampled_from([b"", b"Oct 11 22:14:15 ", b"Oct  1 02:04:05 ", b"2026-12-07T05:00:00Z ",
                          b"2026-12-07T ", b"Oct 11 22:14:15\t"])
MESSAGES = st.one_of(
    # RFC 5424, including version 0 (read as RFC 3164) and missing fields
    st.tuples(PRI, st.sampled_from([b"1", b"0", b"12", b"123", b"01"]), WORD, WORD, WORD, WORD, WORD).map(
        lambda t: t[0] + t[1] + b" 2003-10-11T22:14:15.003Z " + b" ".join(t[2:6]) + b" - " + t[6]),
    # RFC 3164: [timestamp] [host] tag[pid]: message
    st.tuples(PRI, TS3164, WORD, WORD, st.sampled_from([b":", b"", b"::", b"]:"]), WORD).map(
        lambda t: t[0] + t[1] + t[2] + b" " + t[3] + t[4] + b" " + t[5]),
    st.binary(max_size=30),
)
LINE_ENDS = st.sampled_from([b"\n", b"\r\n", b"\0\n", b"\n\n", b" \n"])
FRAMES = st.one_of(
    st.tuples(MESSAGES, LINE_ENDS).map(lambda t: t[0].replace(b"\n", b" ") + t[1]),  # newline framing
    MESSAGES.map(lambda m: b"%d %s" % (len(m), m) if m else b"\n"),  # octet counting
    st.integers(MAX - 2, MAX + 30).map(lambda n: b"<13>app: " + b"y" * n + b"\n"),  # around the limit
    st.sampled_from([b"\n", b"\r", b" ", b"\0", b"0 x\n", b"123abc\n", b"99999999999 z\n"]),
)
TEMPLATES = ["syslog:{app}", "{host}/{app}/{procid}", "{facility}.{severity}.{format}.{msgid}", "all",
             "{transport}-{peer}-{app}"]


def make_source(tmp_path: Path, template: str) -> syslog_source.SyslogSource:
    raw = {
        "sources": {"s": {"type": "syslog", "tcp": f"127.0.0.1:{free_port()}", "stream": template,
                          "max_message_size": MAX, "channels": ["ch"]}},
        "channels": {"ch": {"type": "memory"}},
        "sinks": {"out": {"type": "logflume.testing.recording_sink:RecordingSink", "channel": "ch"}},
    }
    ctx = Context(agent_name="h", data_dir=tmp_path, metrics=Metrics())
    return build_topology(raw, None, ctx).sources["s"].component


def run(src: syslog_source.SyslogSource, data: bytes, cuts: list[int], ledger: Path) -> list[Chunk]:
    """``data`` read in the pieces ``cuts`` makes, as ``serve`` reads a connection; the chunks made."""
    got: list[Chunk] = []
    src.streams = EventStreams(source="h", datatype="SysLog", tags={}, chunk_size=200, flush_interval=60,
                               deliver=got.extend, ledger=StreamLedger(ledger))
    decoder = framing.FrameDecoder(MAX)
    bounds = sorted({0, len(data), *[c for c in cuts if c <= len(data)]})
    for a, b in zip(bounds, bounds[1:], strict=False):
        buf = bytearray(data[a:b]) + b"\xee" * 5  # a reused receive buffer, longer than the read
        src._take_read(decoder, buf, b - a, "tcp", "127.0.0.1")
    src._accept(decoder.finish(), "tcp", "127.0.0.1")
    src.streams.flush()
    return got


def shape(chunks: list[Chunk]) -> list[tuple]:
    """Each stream's chunks in order; the order between streams is no promise (the scanner hands over a read
    stream by stream, the Python path message by message)."""
    return sorted((c.stream, c.seq_id, bytes(c.data), list(c.record_ends), sorted(c.flags)) for c in chunks)


@needs_scanner
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=st.lists(FRAMES, max_size=25).map(b"".join), cuts=st.lists(st.integers(0, 2000), max_size=8),
       template=st.sampled_from(TEMPLATES))
def test_the_scanner_makes_the_chunks_the_python_path_makes(tmp_path_factory, monkeypatch, frames, cuts, template):
    tmp = tmp_path_factory.mktemp("scan")
    src = make_source(tmp, template)
    fast = run(src, frames, cuts, tmp / "fast.json")
    with monkeypatch.context() as m:
        m.setattr(syslog_source, "scan_tcp", None)
        slow = run(src, frames, cuts, tmp / "slow.json")
    assert shape(fast) == shape(slow)


def run_datagrams(src: syslog_source.SyslogSource, datagrams: list[bytes], ledger: Path) -> list[Chunk]:
    got: list[Chunk] = []
    src.streams = EventStreams(source="h", datatype="SysLog", tags={}, chunk_size=200, flush_interval=60,
                               deliver=got.extend, ledger=StreamLedger(ledger))
    src._take_datagrams(datagrams, "127.0.0.1")
    src.streams.flush()
    return got


@needs_scanner
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(datagrams=st.lists(st.one_of(
    st.tuples(MESSAGES, st.sampled_from([b"", b"\n", b"\r\n", b"\0", b"\n\r\n"])).map(b"".join),
    st.integers(MAX - 2, MAX + 30).map(lambda n: b"<13>app: " + b"y" * n),
    st.sampled_from([b"", b"\n", b"\r\0"])), max_size=25), template=st.sampled_from(TEMPLATES))
def test_the_datagram_scanner_makes_the_chunks_the_python_path_makes(tmp_path_factory, monkeypatch, datagrams,
                                                                    template):
    tmp = tmp_path_factory.mktemp("udp")
    src = make_source(tmp, template)
    fast = run_datagrams(src, datagrams, tmp / "fast.json")
    with monkeypatch.context() as m:
        m.setattr(syslog_source, "scan_datagrams", None)
        slow = run_datagrams(src, datagrams, tmp / "slow.json")
    assert shape(fast) == shape(slow)


@needs_scanner
def test_the_scanner_groups_a_read_by_stream_and_stops_where_the_decoder_must_go_on():
    data = bytearray(b"<13>Oct 11 22:14:15 web1 nginx[1]: a\n<13>web1 cron: b\r\n\n23 <13>web2 nginx[2]: c\nd\n"
                     b"<13>web1 nginx: e\n12345678901 f\n<13>web1 nginx: g")
    stop, groups, messages, nbytes = framing.scan_tcp(data, 0, len(data), 1024, ("app", "host"))
    assert data[stop:].startswith(b"12345678901 f")  # eleven digits are no length: the decoder's
    assert messages == 4 and nbytes == len(b"<13>Oct 11 22:14:15 web1 nginx[1]: a\n<13>web1 cron: b\n"
                                             b"<13>web2 nginx[2]: c\nd\n\n<13>web1 nginx: e\n")
    assert groups == [
        (("nginx", "web1"), b"<13>Oct 11 22:14:15 web1 nginx[1]: a\n<13>web1 nginx: e\n", [37, 55]),
        (("cron", "web1"), b"<13>web1 cron: b\n", [17]),
        (("nginx", "web2"), b"<13>web2 nginx[2]: c\nd\n\n", [24]),  # octet counted: one record, LFs and all
    ]
    stop, groups, messages, _ = framing.scan_tcp(data, len(data) - 16, len(data), 1024, ("app",))
    assert (stop, groups, messages) == (len(data) - 16, [], 0)  # no newline yet: left to the decoder
    stop, _, messages, _ = framing.scan_tcp(data, 0, len(data), 20, ("app",))
    assert (stop, messages) == (0, 0)  # longer than max_message_size: cut by the decoder


@needs_scanner
def test_the_scanner_refuses_a_range_outside_the_buffer():
    with pytest.raises(ValueError):
        framing.scan_tcp(b"<13>a: b\n", 0, 100, 1024, ("app",))
    with pytest.raises(ValueError, match="unknown field"):
        framing.scan_tcp(b"<13>a: b\n", 0, 9, 1024, ("peer",))
