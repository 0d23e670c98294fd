"""The collector's Flume endpoint serves binary and compact Thrift clients on one port, bounded in both."""

from __future__ import annotations

import socket
import struct
import time

import pytest
from thriftpy2.protocol.binary import TBinaryProtocol
from thriftpy2.protocol.compact import TCompactProtocol
from thriftpy2.thrift import TMessageType
from thriftpy2.transport.memory import TMemoryBuffer

from logflume.wire.idl import flume_thrift
from tests.collector.conftest import collector_config
from tests.collector.test_compat import stored
from tests.conftest import free_port
from tests.wire.official import run_client

pytestmark = pytest.mark.timeout(120)

Flume = flume_thrift.ThriftSourceProtocol


def test_binary_and_compact_clients_on_one_port(tmp_path, gen, start_collector):
    fp = free_port()
    cfg, _, store = collector_config(tmp_path, "c", flume=f"127.0.0.1:{fp}")
    col = start_collector(cfg)
    addr = ("127.0.0.1", fp)
    for proto, strict in (("compact", True), ("binary", True), ("binary", False)):
        calls = [[[{"p": f"{proto}-{strict}"}, f"{proto} {i}"] for i in range(10)], [[{"p": "one"}, proto]]]
        assert run_client(gen, "flume", addr, calls, protocol=proto, strict=strict) == ["OK", "OK"], col.log()
    got = stored(store)
    for proto, strict in (("compact", True), ("binary", True), ("binary", False)):
        assert got[("flume", (("p", f"{proto}-{strict}"),))] == [f"{proto} {i}".encode() for i in range(10)]
    assert got[("flume", (("p", "one"),))] == [b"compact", b"binary", b"binary"]
    assert col.terminate(30) == 0


def _call(proto_cls, body: bytes, seqid: int) -> bytes:
    buf = TMemoryBuffer()
    proto = proto_cls(buf)
    proto.write_message_begin("append", TMessageType.CALL, seqid)
    Flume.append_args(event=flume_thrift.ThriftFlumeEvent(headers={}, body=body)).write(proto)
    proto.write_message_end()
    raw = buf.getvalue()
    return struct.pack(">i", len(raw)) + raw


def _reply(sock: socket.socket) -> bytes:
    head = b""
    while len(head) < 4:
        head += sock.recv(4 - len(head)) or b"!" * 4
    size = struct.unpack(">i", head)[0]
    data = b""
    while len(data) < size:
        more = sock.recv(size - len(data))
        assert more, "connection closed before the reply"
        data += more
    return data


def test_one_connection_may_switch_protocols_and_each_reply_speaks_the_call_s(tmp_path, start_collector):
    fp = free_port()
    cfg, _, store = collector_config(tmp_path, "c", flume=f"127.0.0.1:{fp}")
    col = start_collector(cfg)
    with socket.create_connection(("127.0.0.1", fp), timeout=20) as s:
        s.sendall(_call(TCompactProtocol, b"first", 1))
        assert _reply(s)[0] == 0x82  # a compact reply
        s.sendall(_call(TBinaryProtocol, b"second", 2))
        assert _reply(s)[:2] == b"\x80\x01"  # a strict binary reply
    assert stored(store)[("flume", ())] == [b"first", b"second"]
    assert col.terminate(30) == 0


def _hostile_list(protocol: str, n: int) -> bytes:
    """appendBatch whose events list holds ``n`` empty structs (1 byte each on the wire, ~250 in memory)."""
    name = b"appendBatch"
    if protocol == "compact":
        count = bytearray()
        v = n
        while v >= 0x80:
            count.append((v & 0x7F) | 0x80)
            v >>= 7
        count.append(v)
        head = b"\x82\x21\x00" + bytes([len(name)]) + name + b"\x19\xfc" + bytes(count)
    else:
        head = (b"\x80\x01\x00\x01" + struct.pack(">i", len(name)) + name + struct.pack(">i", 0)
                + b"\x0f\x00\x01\x0c" + struct.pack(">i", n))
    raw = head + b"\x00" * n + b"\x00"
    return struct.pack(">i", len(raw)) + raw


def _peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def _closed(sock: socket.socket) -> bool:
    sock.settimeout(10)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_hostile_frames_are_refused_within_bounds_in_both_protocols(tmp_path, gen, start_collector):
    fp = free_port()
    cfg, _, store = collector_config(tmp_path, "c", flume=f"127.0.0.1:{fp}", thrift_max_frame_size="4MiB")
    col = start_collector(cfg)
    addr = ("127.0.0.1", fp)
    assert run_client(gen, "flume", addr, [[[{}, "warm"]]], protocol="binary") == ["OK"]
    peak = _peak_rss_kib(col.pid)
    for frame in (_hostile_list("compact", 3 << 20), _hostile_list("binary", 3 << 20),
                  struct.pack(">i", 8) + b"\x81" + b"\x00" * 7):  # neither protocol
        with socket.create_connection(addr, timeout=10) as s:
            t0 = time.monotonic()
            s.sendall(frame)
            assert _closed(s)
            assert time.monotonic() - t0 < 10
    # 3 MiB of empty structs would be ~800 MiB decoded; the decode budget refuses them at 8x the frame
    assert _peak_rss_kib(col.pid) - peak < 64 * 1024
    log = col.log()
    assert log.count("more than 8x its size in memory") == 2, log
    assert "not a Thrift message in compact or binary protocol (first byte 0x81)" in log
    assert run_client(gen, "flume", addr, [[[{}, "after"]]], protocol="compact") == ["OK"]
    assert stored(store)[("flume", ())] == [b"warm", b"after"]
    assert col.terminate(30) == 0
