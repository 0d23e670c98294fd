"""M2 and bounded decoding: nothing but a small ping is decoded before authentication, and no Thrift
message may decode to much more memory than its own size.

Before the fix a 64 KiB header of empty structs was fully decoded before the token
was checked (about 35 MB per connection), and a 2 MiB Scribe frame of empty
LogEntry structs raised the collector's peak memory by about 580 MB (an empty
struct is one byte on the wire and some 250 bytes as a Python object).
"""

from __future__ import annotations

import socket
import struct
import threading

import pytest

from logflume.wire.idl import Status
from logflume.wire.protocol import pack_prefix
from tests.fuzz.collector_proc import CollectorProcess, Cost
from tests.security.wire_peer import connect, ping, reply

pytestmark = pytest.mark.timeout(180)

TOKEN = "4f1c7e2a9b3d8e6f0a5c2b7d9e1f3a6c"
CREDENTIALS = f"  identities:\n    agent:\n      token: {TOKEN}\n      sources: ['*']\n"
MAX_GROWTH_MIB = 32


def empty_structs_call(method: bytes, path: bytes, count: int) -> bytes:
    """A strict binary CALL of ``method`` with a list of ``count`` empty structs at ``path`` (field headers)."""
    head = b"\x80\x01\x00\x01" + struct.pack(">i", len(method)) + method + struct.pack(">i", 1)
    stops = b"\x00" * (1 + path.count(b"\x0c"))  # end each enclosing struct, then the arguments
    return head + path + b"\x0c" + struct.pack(">i", count) + b"\x00" * count + stops


DELIVER_CHUNKS = b"\x0c\x00\x01" + b"\x0f\x00\x04"  # deliver_args{1: Batch{4: list<ChunkHeader>}}
SCRIBE_MESSAGES = b"\x0f\x00\x01"  # Log_args{1: list<LogEntry>}


@pytest.fixture(scope="module")
def collector(tmp_path_factory):
    coll = CollectorProcess(tmp_path_factory.mktemp("decode"), extra=CREDENTIALS)
    coll.start()
    yield coll
    if coll.alive():
        coll.stop()


def test_no_call_but_a_small_ping_is_decoded_before_authentication(collector):
    # deliver(Batch{4: chunks = 65,000 empty ChunkHeaders}): 64 KiB, sent by 8 peers at once without a ping
    call = empty_structs_call(b"deliver", DELIVER_CHUNKS, 65_000)
    assert len(call) <= 64 * 1024
    frame = pack_prefix(len(call), 0) + call
    answers: list[object] = []

    def attack() -> None:
        with connect(collector.ports["logflume"]) as s:
            try:
                s.sendall(frame)
            except OSError:
                pass
            answers.append(reply(s))

    with Cost(collector) as cost:
        threads = [threading.Thread(target=attack) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    print(f"8 x 64 KiB pre-auth header of empty structs: {cost}")
    assert answers == [None] * 8  # closed without an answer: nothing was decoded
    assert cost.peak_growth_mib < 8, cost
    assert cost.cpu_seconds < 0.5, cost
    assert collector.log().count("expected a ping handshake first") >= 8
    with connect(collector.ports["logflume"]) as s:  # the real agent still gets in
        s.sendall(ping(TOKEN))
        assert reply(s).status == Status.OK


def test_an_authenticated_header_of_empty_structs_is_refused_within_budget(collector):
    call = empty_structs_call(b"deliver", DELIVER_CHUNKS, 1 << 20)  # 1 MiB: 2^20 empty ChunkHeaders
    with Cost(collector) as cost, connect(collector.ports["logflume"]) as s:
        s.sendall(ping(TOKEN))
        assert reply(s).status == Status.OK
        s.sendall(pack_prefix(len(call), 0) + call)
        answer = reply(s)
    print(f"1 MiB authenticated header of empty structs: {cost}")
    assert answer is None
    assert cost.peak_growth_mib < MAX_GROWTH_MIB, cost
    assert cost.seconds < 10, cost


def test_a_scribe_frame_of_empty_entries_is_refused_within_budget(collector):
    call = empty_structs_call(b"Log", SCRIBE_MESSAGES, 2 << 20)  # Log(messages = 2 Mi empty LogEntry)
    with Cost(collector) as cost, socket.create_connection(("127.0.0.1", collector.ports["scribe"]), 10) as s:
        s.sendall(struct.pack(">i", len(call)) + call)
        s.shutdown(socket.SHUT_WR)
        try:
            while s.recv(65536):
                pass
        except OSError:
            pass
    print(f"2 MiB Scribe frame of empty LogEntry structs: {cost}")
    assert cost.peak_growth_mib < MAX_GROWTH_MIB, cost
    assert cost.seconds < 10, cost
    assert collector.alive()
