"""safe_thrift: decodes what thriftpy2 encodes (binary strict/non-strict, compact), refuses lying lengths fast."""

from __future__ import annotations

import struct
import time
from contextlib import nullcontext

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from thriftpy2.protocol.binary import TBinaryProtocol
from thriftpy2.protocol.compact import TCompactProtocol
from thriftpy2.thrift import TMessageType
from thriftpy2.transport.memory import TMemoryBuffer

from logflume.wire.idl import flume_thrift, scribe_thrift
from logflume.wire.protocol import Batch, ChunkHeader, Service, encode_message
from logflume.wire.safe_thrift import DecodeError, decode_call

pytestmark = pytest.mark.timeout(60)

Flume = flume_thrift.ThriftSourceProtocol
Scribe = scribe_thrift.scribe


def encode(proto_cls, name, args, **kw) -> bytes:
    buf = TMemoryBuffer()
    proto = proto_cls(buf, **kw)
    proto.write_message_begin(name, TMessageType.CALL, 7)
    args.write(proto)
    proto.write_message_end()
    return buf.getvalue()


def flume_call(proto_cls=TCompactProtocol) -> bytes:
    events = [flume_thrift.ThriftFlumeEvent(headers={"h": "1", "ü": "✓"}, body=b"\x00\xffbody"),
              flume_thrift.ThriftFlumeEvent(headers={}, body=b"")]
    return encode(proto_cls, "appendBatch", Flume.appendBatch_args(events=events))


@pytest.mark.parametrize("protocol", ["compact", "binary"])
def test_flume_round_trip(protocol):
    raw = flume_call(TCompactProtocol if protocol == "compact" else TBinaryProtocol)
    name, mtype, seqid, args = decode_call(raw, Flume, protocol, text=False)
    assert (name, mtype, seqid) == ("appendBatch", TMessageType.CALL, 7)
    assert [(e.headers, e.body) for e in args.events] == [
        ({b"h": b"1", "ü".encode(): "✓".encode()}, b"\x00\xffbody"), ({}, b"")]


@pytest.mark.parametrize("strict", [True, False])
def test_scribe_round_trip_strict_and_not(strict):
    entries = [scribe_thrift.LogEntry(category="c", message="m\n"), scribe_thrift.LogEntry(category="d", message="")]
    raw = encode(TBinaryProtocol, "Log", Scribe.Log_args(messages=entries), strict_write=strict)
    with pytest.raises(DecodeError, match="without version word") if not strict else nullcontext():
        decode_call(raw, Scribe, strict=True, text=False)
    name, _, _, args = decode_call(raw, Scribe, strict=False, text=False)
    assert name == "Log" and [(e.category, e.message) for e in args.messages] == [(b"c", b"m\n"), (b"d", b"")]


def test_logflume_batch_round_trip_with_unknown_fields_skipped():
    h = ChunkHeader(source="s", stream="t", datatype="Raw", tags={"a": "b"}, seq_id=2**40, epoch="e",
                    record_ends=[1, 2], timestamp=-5, flags=["split"], length=3, wire_length=3, compression=0)
    raw = encode_message("deliver", TMessageType.CALL, 1, Service.deliver_args(
        batch=Batch(version=1, token=None, sender="x", chunks=[h, h])))
    _, _, _, args = decode_call(raw, Service)
    got = args.batch.chunks[1]
    assert (got.tags, got.seq_id, got.record_ends, got.timestamp, got.flags) == ({"a": "b"}, 2**40, [1, 2], -5,
                                                                                   ["split"])
    assert args.batch.token is None


def _logflume_prefix() -> bytes:
    buf = TMemoryBuffer()
    TBinaryProtocol(buf).write_message_begin("deliver", TMessageType.CALL, 1)
    return buf.getvalue()


@pytest.mark.parametrize(("body", "match"), [
    (b"\x0c\x00\x01\x0f\x00\x04\x0c" + struct.pack(">i", 0x7FFFFFFF) + b"\x00\x00", "cannot fit"),
    (b"\x0c\x00\x01\x0b\x00\x03" + struct.pack(">i", 0x7FFFFFFF) + b"abc", "exceeds"),
    (b"\x0c\x00\x01\x0f\x00\x63\x01" + struct.pack(">i", 0x7FFFFFFF), "unknown Thrift type|cannot fit"),
    (b"\x0c\x00\x01\x09\x00\x63", "unknown Thrift type"),
    (b"\x0c\x00\x01" + b"\x0c\x00\x09" * 100, "nested too deeply"),
    (b"\x00" + b"junk", "stray bytes"),
    (b"\x0c\x00\x01\x0d\x00\x05\x0b\x0b" + struct.pack(">i", 0x7FFFFFFF), "cannot fit"),
])
def test_lying_lengths_are_refused_fast(body, match):
    t0 = time.monotonic()
    with pytest.raises(DecodeError, match=match):
        decode_call(_logflume_prefix() + body, Service)
    assert time.monotonic() - t0 < 0.5


def test_compact_lying_counts_are_refused():
    head = b"\x82\x21\x07\x0bappendBatch"
    for body in (b"\x19\xfc\xff\xff\xff\x07", b"\x19\xf5\xff\xff\xff\x07", b"\x1b\xff\xff\xff\xff\x07\x88"):
        with pytest.raises(DecodeError):
            decode_call(head + body, Flume, "compact")


VALID = {"compact": flume_call(TCompactProtocol), "binary": flume_call(TBinaryProtocol)}


@settings(max_examples=400, deadline=None)
@given(protocol=st.sampled_from(["compact", "binary"]), pos=st.floats(0, 1), value=st.integers(0, 255),
       cut=st.booleans())
def test_mutations_decode_or_raise(protocol, pos, value, cut):
    raw = bytearray(VALID[protocol])
    at = min(int(pos * len(raw)), len(raw) - 1)
    raw[at] = value
    if cut:
        del raw[at:]
    t0 = time.monotonic()
    try:
        decode_call(bytes(raw), Flume, protocol, text=False)
    except DecodeError:
        pass
    assert time.monotonic() - t0 < 0.5


def _log_call(entries: list) -> bytes:
    return encode(TBinaryProtocol, "Log", Scribe.Log_args(messages=entries))


def test_decoded_memory_is_bounded_by_the_input_size():
    """An empty struct is 1 byte on the wire and ~250 in memory: a list of them is refused, not built."""
    n = 1 << 20
    raw = (b"\x80\x01\x00\x01" + struct.pack(">i", 3) + b"Log" + struct.pack(">i", 1) + b"\x0f\x00\x01\x0c"
           + struct.pack(">i", n) + b"\x00" * n + b"\x00")
    t0 = time.monotonic()
    with pytest.raises(DecodeError, match="more than 8x its size in memory"):
        decode_call(raw, Scribe, strict=False, text=False)
    assert time.monotonic() - t0 < 1
    # real traffic decodes: short categories and messages of a few dozen bytes, and 2000 chunk headers
    entries = [scribe_thrift.LogEntry(category="app", message=f"GET /index.html 200 {i}\n") for i in range(20_000)]
    assert len(decode_call(_log_call(entries), Scribe, strict=False, text=False)[3].messages) == 20_000
    headers = [ChunkHeader(source="web-01", stream="/var/log/app.log", datatype="Raw", tags={"env": "prod"},
                           seq_id=i, epoch="dev:ino:fp", record_ends=list(range(1, 50)), timestamp=1, flags=[],
                           length=4096, wire_length=4096, compression=0) for i in range(2000)]
    batch = Batch(version=1, token=None, sender="a", chunks=headers)
    raw = encode_message("deliver", TMessageType.CALL, 1, Service.deliver_args(batch=batch))
    assert len(decode_call(raw, Service)[3].batch.chunks) == 2000


@settings(max_examples=200, deadline=None)
@given(ends=st.lists(st.integers(-(1 << 63), (1 << 63) - 1), max_size=300), cut=st.integers(1, 64))
def test_a_list_of_i64_is_read_whole_and_refused_when_cut(ends, cut):
    """record_ends (one i64 per record) are unpacked in one call: the same values, and a list cut short is
    a DecodeError, not a shorter list."""
    h = ChunkHeader(source="s", stream="t", datatype="Raw", tags={}, seq_id=1, epoch="e", record_ends=ends,
                    timestamp=0, flags=[], length=1, wire_length=1, compression=0)
    raw = encode_message("deliver", TMessageType.CALL, 1, Service.deliver_args(
        batch=Batch(version=1, token=None, sender="x", chunks=[h])))
    _, _, _, args = decode_call(raw, Service)
    assert args.batch.chunks[0].record_ends == ends
    start = raw.index(struct.pack(">BhBi", 15, 7, 10, len(ends))) + 8  # the list's first element
    with pytest.raises(DecodeError):
        decode_call(raw[:start + max(0, 8 * len(ends) - cut)], Service)
