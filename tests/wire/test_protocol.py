"""The logflume wire protocol against a real in-process server on loopback."""

from __future__ import annotations

import logging
import os
import socket
import struct
import time

import pytest

from logflume.chunk import FLAG_PARTIAL, Chunk
from logflume.errors import DeliveryError, TryLater
from logflume.wire import PROTOCOL_VERSION, RefusedError, Status, TcpServer, WireClient, WireEndpoint
from logflume.wire.buffers import BufferPool
from logflume.wire.identity import Authenticator, Credential
from logflume.wire.protocol import (
    MAX_HEADER,
    PREFIX,
    Hello,
    ProtocolError,
    decode_message,
    encode_batch,
    encode_call,
    pack_prefix,
    unpack_prefix,
)
from tests.security.wire_peer import read_reply

pytestmark = pytest.mark.timeout(60)


def tokens(*values: str) -> Authenticator:
    """Shared tokens that may send any source."""
    return Authenticator([Credential("shared-token", ("*",), v) for v in values])


def chunk(i: int, data: bytes, **kw) -> Chunk:
    return Chunk(source="host-a", stream=f"/var/log/s{i % 3}", datatype="SysLog", seq_id=1000 * i + len(data),
                 epoch="dev:ino:fp", data=data, **kw)


def same(a: Chunk, b: Chunk) -> bool:
    """Same metadata and bytes (``sender`` is the collector's to set)."""
    meta_a, meta_b = a.metadata(), b.metadata()
    meta_a.pop("sender", None)
    meta_b.pop("sender", None)
    return meta_a == meta_b and bytes(a.data) == bytes(b.data)


@pytest.mark.parametrize("compression", ["none", "zstd", "lz4"])
def test_batch_round_trips_every_field(wire_server, compression):
    srv, rec = wire_server()
    sent = [
        chunk(1, b"one\ntwo\n", tags={"env": "prod", "dc": "x"}),
        chunk(2, memoryview(b"abcdefgh")[2:], record_ends=[3, 6], flags=[FLAG_PARTIAL]),
        chunk(3, b""),
        chunk(4, os.urandom(300_000) + b"log line\n" * 10_000),
    ]
    client = WireClient(*srv.address, sender="agent-1", compression=compression)
    ack = client.deliver(sent)
    client.close()
    assert ack.ok, ack
    assert len(rec.chunks) == len(sent)
    for a, b in zip(sent, rec.chunks, strict=True):
        assert same(a, b), (a.metadata(), b.metadata())
        assert b.sender == "peer:127.0.0.1"  # no credentials configured: the peer is named by its address


def test_64mib_chunk_arrives_intact(wire_server):
    srv, rec = wire_server()
    data = os.urandom(1 << 20) * 64
    client = WireClient(*srv.address)
    assert client.deliver([chunk(1, data)]).ok
    assert client.deliver([chunk(2, data[:1000])]).ok  # the reused buffer does not leak old bytes
    client.close()
    assert bytes(rec.chunks[0].data) == data
    assert bytes(rec.chunks[1].data) == data[:1000]


def test_one_receive_buffer_serves_every_batch(wire_server):
    """The body buffer goes back to the pool after each batch: no view of it may outlive deliver()
    (a leftover loop variable did, and every batch allocated a new buffer of its size)."""
    pool = BufferPool(max_idle_bytes=256 * 1024 * 1024)
    got: list[bytes] = []
    srv = TcpServer(WireEndpoint(lambda chunks: got.extend(bytes(c.data) for c in chunks),  # chunks left as given
                                 server_name="c", max_frame_size=1 << 24, idle_timeout=30.0, pool=pool),
                    "127.0.0.1", 0)
    srv.start()
    try:
        client = WireClient(*srv.address)
        for i in range(5):
            assert client.deliver([chunk(i, b"x" * 100_000), chunk(i + 1, b"y" * 1000)]).ok
        client.close()
    finally:
        srv.stop(timeout=2.0)
    assert got == [b"x" * 100_000, b"y" * 1000] * 5
    assert pool.allocated == 1


def test_token_auth(wire_server, caplog):
    srv, rec = wire_server(authenticator=tokens("s3cret", "other"))
    with caplog.at_level(logging.WARNING):
        bad = WireClient(*srv.address, token="wrong", sender="agent-x")
        with pytest.raises(RefusedError, match="authentication failed"):
            bad.connect()
        none = WireClient(*srv.address, sender="agent-y")
        with pytest.raises(RefusedError, match="authentication failed"):
            none.deliver([chunk(1, b"x\n")])
    assert "refusing agent-x" in caplog.text and "authentication failed" in caplog.text
    good = WireClient(*srv.address, token="other")
    assert good.deliver([chunk(1, b"x\n")]).ok
    good.close()
    assert len(rec.chunks) == 1


def test_wrong_protocol_version_is_refused_with_reason(wire_server):
    srv, _ = wire_server()
    with socket.create_connection(srv.address, timeout=5) as s:
        s.sendall(encode_call("ping", 1, hello=Hello(version=PROTOCOL_VERSION + 98, sender="future")))
        reply = read_reply(s)
    welcome = reply.success
    assert welcome.status == Status.ERROR
    assert f"version {PROTOCOL_VERSION + 98} not supported" in welcome.reason


def test_try_later_and_error_answers(wire_server):
    srv, rec = wire_server()
    client = WireClient(*srv.address)

    def busy(_chunks):
        raise TryLater("queue full", delay=2.5)

    rec.hook = busy
    ack = client.deliver([chunk(1, b"a\n")])
    assert ack.status == Status.TRY_LATER and ack.delay == 2.5 and "queue full" in ack.reason

    def broken(_chunks):
        raise OSError("disk on fire")

    rec.hook = broken
    ack = client.deliver([chunk(1, b"a\n")])
    assert ack.status == Status.ERROR and "disk on fire" in ack.reason
    rec.hook = None
    assert client.deliver([chunk(1, b"a\n")]).ok  # same connection still usable
    client.close()


def _closed_by_server(s: socket.socket, within: float) -> float:
    """Seconds until the server closed ``s`` (recv returned EOF or reset)."""
    t0 = time.monotonic()
    s.settimeout(within)
    try:
        while s.recv(4096):
            pass
    except ConnectionResetError:
        pass
    return time.monotonic() - t0


def test_garbage_closes_only_that_connection(wire_server, caplog):
    srv, rec = wire_server()
    healthy = WireClient(*srv.address)
    assert healthy.deliver([chunk(1, b"before\n")]).ok
    with caplog.at_level(logging.WARNING), socket.create_connection(srv.address, timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + os.urandom(64))
        assert _closed_by_server(s, 5) < 5
    assert "not a logflume frame" in caplog.text
    assert healthy.deliver([chunk(2, b"after\n")]).ok
    healthy.close()
    assert [bytes(c.data) for c in rec.chunks] == [b"before\n", b"after\n"]


def test_oversized_frame_refused_before_allocation(wire_server, caplog):
    srv, rec = wire_server(max_frame_size=1 << 20)
    with caplog.at_level(logging.WARNING), socket.create_connection(srv.address, timeout=5) as s:
        s.sendall(pack_prefix(100, 1 << 40))  # claims a 1 TiB body: must not be allocated
        assert _closed_by_server(s, 5) < 5
    assert "exceeds max_frame_size" in caplog.text
    # a real batch just above the limit is refused by the client, which learned the limit in the handshake
    client = WireClient(*srv.address)
    with pytest.raises(DeliveryError, match="max_frame_size"):
        client.deliver([chunk(1, b"x" * (2 << 20))])
    assert client.deliver([chunk(1, b"x" * 1000)]).ok
    client.close()


def test_slow_peer_is_cut_off_without_blocking_others(wire_server, caplog):
    srv, rec = wire_server(frame_timeout=1.0, idle_timeout=30.0)
    frame = encode_call("ping", 1, hello=Hello(version=PROTOCOL_VERSION, sender="slow"))
    with caplog.at_level(logging.WARNING), socket.create_connection(srv.address, timeout=10) as slow:
        t0 = time.monotonic()
        closed = False
        for b in frame:  # one byte a second
            try:
                slow.sendall(bytes([b]))
            except OSError:
                closed = True
                break
            # meanwhile a normal agent is served promptly
            client = WireClient(*srv.address)
            t = time.monotonic()
            assert client.deliver([chunk(1, b"x\n")]).ok
            assert time.monotonic() - t < 1.0
            client.close()
            slow.settimeout(1.0)
            try:
                if slow.recv(1) == b"":
                    closed = True
                    break
            except TimeoutError:
                pass
            except ConnectionResetError:
                closed = True
                break
        assert closed, "slow peer was never disconnected"
        assert time.monotonic() - t0 < 6
    assert "frame not complete in time" in caplog.text


def test_idle_connection_closed_and_client_reconnects(wire_server):
    srv, rec = wire_server(idle_timeout=0.5)
    client = WireClient(*srv.address)
    assert client.deliver([chunk(1, b"a\n")]).ok
    time.sleep(1.2)  # the server closed the idle connection meanwhile
    assert client.deliver([chunk(2, b"b\n")]).ok
    client.close()
    assert len(rec.chunks) == 2


def test_max_connections(wire_server):
    srv, _ = wire_server(max_connections=2)
    a, b = WireClient(*srv.address), WireClient(*srv.address)
    a.connect()
    b.connect()
    c = WireClient(*srv.address, timeout=3)
    with pytest.raises(DeliveryError):
        c.connect()
    a.close()
    time.sleep(0.5)
    c.connect()  # room again
    for x in (b, c):
        x.close()
    assert srv.refused >= 1


def test_unpack_prefix_checks():
    with pytest.raises(ProtocolError, match="not a logflume frame"):
        unpack_prefix(struct.pack(">4sIQ", b"XXXX", 10, 10), 1 << 20)
    with pytest.raises(ProtocolError, match="frame header"):
        unpack_prefix(pack_prefix(MAX_HEADER + 1, 0), 1 << 30)
    with pytest.raises(ProtocolError, match="frame header"):
        unpack_prefix(pack_prefix(0, 0), 1 << 30)
    assert unpack_prefix(pack_prefix(10, 20), 30) == (10, 20)


def test_decode_rejects_garbage_and_inconsistent_batches():
    with pytest.raises(ProtocolError):
        decode_message(os.urandom(64))
    head, bodies = encode_batch([chunk(1, b"abc")], sender="a", token=None)
    _, _, _, args = decode_message(head[PREFIX.size:])
    from logflume.wire.protocol import validate_batch

    assert validate_batch(args.batch, 3, 1024) == 3
    with pytest.raises(ProtocolError, match="add up"):
        validate_batch(args.batch, 4, 1024)


def test_declared_inflated_sizes_are_bounded_and_reserved():
    """A compressed chunk counts at its declared length, which may not exceed the frame limit."""
    head, _ = encode_batch([chunk(1, b"a" * 5000), chunk(2, b"b" * 100)], sender="a", token=None,
                           compression="zstd")
    batch = decode_message(head[PREFIX.size:])[3].batch
    from logflume.wire.protocol import validate_batch

    wire = sum(h.wire_length for h in batch.chunks)
    assert validate_batch(batch, wire, 1 << 20) == wire + 5100  # bodies as received + what they inflate to
    with pytest.raises(ProtocolError, match="declare 5100 bytes once decompressed"):
        validate_batch(batch, wire, 5099)


def test_a_body_inflating_past_its_declared_length_is_refused():
    import zstandard

    stream = zstandard.ZstdCompressor(write_content_size=False).compress(b"\0" * (64 << 20))
    from logflume.wire.protocol import Compression, decompress

    with pytest.raises(ProtocolError, match="more than the 1024 bytes"):
        decompress(memoryview(stream), Compression.ZSTD, 1024)


def test_buffer_pool_reuses_but_never_overwrites_held_views():
    pool = BufferPool(max_idle_bytes=1 << 20)
    a = pool.get(10)
    a[:] = b"0123456789"
    held = memoryview(a)[2:5]
    pool.put(a)  # still viewed: dropped, not reused
    b = pool.get(10)
    assert b is not a
    b[:] = b"x" * 10
    assert bytes(held) == b"234"
    pool.put(b)
    assert pool.get(8) is b  # nobody holds it: reused (smallest that fits)
    pool.put(b)
    big = bytearray(2 << 20)
    pool.put(big)  # over the idle cap: not kept
    assert pool.get(2 << 20) is not big
    assert pool.get(10) is b  # what the cap allows stays idle


def test_refused_batch_is_drained_and_connection_stays_usable(wire_server):
    admitted = {"ok": False}

    class Gate:
        def __init__(self, n, peer):
            if not admitted["ok"]:
                raise TryLater("no room", 0.25)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    srv, rec = wire_server(reserve=Gate)
    client = WireClient(*srv.address)
    big = chunk(1, os.urandom(5 << 20))
    ack = client.deliver([big])
    assert ack.status == Status.TRY_LATER and ack.delay == 0.25 and not rec.chunks
    admitted["ok"] = True
    assert client.deliver([big]).ok  # same connection: the refused body was read and dropped
    client.close()
    assert bytes(rec.chunks[0].data) == bytes(big.data)


def test_batches_before_the_handshake_are_refused(wire_server, caplog):
    srv, rec = wire_server(authenticator=tokens("t"))
    head, bodies = encode_batch([chunk(1, b"y" * (1 << 20))], sender="sneaky", token="t")
    with caplog.at_level(logging.WARNING), socket.create_connection(srv.address, timeout=5) as s:
        s.sendall(head)  # no ping first: the server reads nothing big from an unknown peer
        assert _closed_by_server(s, 5) < 5
    assert "expected a ping handshake first" in caplog.text
    assert not rec.chunks


def test_admission_reserves_the_inflated_size_before_reading_the_body(wire_server):
    reserved: list[int] = []

    class Record:
        def __init__(self, n, peer):
            reserved.append(n)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    srv, rec = wire_server(reserve=Record)
    client = WireClient(*srv.address, compression="zstd")
    assert client.deliver([chunk(1, b"z" * (1 << 20))]).ok
    client.close()
    assert len(reserved) == 1 and reserved[0] > 1 << 20  # compressed body plus the 1 MiB it inflates to


def test_a_stop_reaches_idle_connections_and_the_accept_loop_at_once(monkeypatch):
    """Idle waits and the accept loop select on the server's StopFlag: a graceful stop does not wait out
    a poll interval (it did: every daemon stop paid up to 0.2 s; with polls of 30 s here, 30 s)."""
    import logflume.wire.connection as connection_mod
    import logflume.wire.server as server_mod

    monkeypatch.setattr(server_mod, "POLL", 30.0)
    monkeypatch.setattr(connection_mod, "POLL_INTERVAL", 30.0)
    srv = TcpServer(WireEndpoint(lambda chunks: None, server_name="c", max_frame_size=1 << 20, idle_timeout=300.0),
                    "127.0.0.1", 0)
    srv.start()
    client = WireClient(*srv.address)
    assert client.deliver([chunk(1, b"a\n")]).ok  # handshaken, now idle between frames
    silent = socket.create_connection(srv.address)  # not a byte sent: waiting for its first one
    try:
        t = time.monotonic()
        srv.stop_accepting()
        assert srv.join(20.0)
        assert time.monotonic() - t < 10  # 30 s and more without the flag's pipe; generous for a loaded machine
    finally:
        silent.close()
        client.close()
        srv.stop(timeout=2.0)
