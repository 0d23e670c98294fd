"""Scribe and Flume endpoints, driven by clients from Apache Thrift's compiler and official Python library."""

from __future__ import annotations

import socket
import struct
import time

import pytest

from logflume.chunk import Chunk
from logflume.errors import ChannelClosed, TryLater
from logflume.wire import TcpServer
from logflume.wire.flume import FlumeEndpoint
from logflume.wire.scribe import ScribeEndpoint
from tests.wire.conftest import Recorder
from tests.wire.official import run_client

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def serve(serving):
    """Factory: ``serve(endpoint_cls, **endpoint_kwargs)`` -> (server, recorder), the endpoint's source edge-1."""

    def make(endpoint_cls, **kw) -> tuple[TcpServer, Recorder]:
        return serving(lambda rec: endpoint_cls(rec, source="edge-1", **kw))

    return make


def records(chunks: list[Chunk]) -> list[bytes]:
    return [bytes(r) for c in chunks for r in c.records()]


@pytest.mark.parametrize("strict", [True, False], ids=["strict", "nonstrict-like-scribe_cat"])
def test_scribe_client_categories_become_streams(gen, serve, strict):
    srv, rec = serve(ScribeEndpoint)
    calls = [
        [["www", "GET /a\n"], ["db", "slow query\n"], ["www", "GET /b\n"]],
        [["www", "no newline"], ["www", "ünïcode ✓\n"]],
    ]
    assert run_client(gen, "scribe", srv.address, calls, strict=strict) == ["OK", "OK"]
    by_stream: dict[str, list[bytes]] = {}
    for c in rec.chunks:
        assert c.source == "edge-1" and c.datatype == "Raw"
        by_stream.setdefault(c.stream, []).extend(bytes(r) for r in c.records())
    assert by_stream == {
        "www": [b"GET /a\n", b"GET /b\n", b"no newline", "ünïcode ✓\n".encode()],
        "db": [b"slow query\n"],
    }
    assert len(rec.chunks) == 3  # one chunk per category per call
    www = [c for c in rec.chunks if c.stream == "www"]
    assert www[0].seq_id < www[1].seq_id and www[1].start == www[0].seq_id  # byte-offset numbering, no gaps


def test_scribe_answers_try_later_when_store_is_behind(gen, serve):
    srv, rec = serve(ScribeEndpoint)
    state = {"n": 0}

    def behind(_chunks):
        state["n"] += 1
        if state["n"] == 1:
            raise TryLater("behind", 1.0)
        if state["n"] == 2:
            raise ChannelClosed()

    rec.hook = behind
    calls = [[["c", "m1\n"]], [["c", "m2\n"]], [["c", "m3\n"]]]
    assert run_client(gen, "scribe", srv.address, calls) == ["TRY_LATER", "TRY_LATER", "OK"]
    assert records(rec.chunks) == [b"m3\n"]


@pytest.mark.parametrize("protocol", ["compact", "binary"])
def test_flume_client_headers_become_tags(gen, serve, protocol):
    srv, rec = serve(FlumeEndpoint, stream="app", tags={"dc": "eu"})
    calls = [
        [[{"host": "web1"}, "one\n"]],                                     # append
        [[{"host": "web1"}, "two\n"], [{"host": "web1"}, "three\n"], [{"host": "web2"}, "four"]],  # appendBatch
    ]
    assert run_client(gen, "flume", srv.address, calls, protocol=protocol) == ["OK", "OK"]
    got = [(c.stream, c.tags, [bytes(r) for r in c.records()]) for c in rec.chunks]
    assert got == [
        ("app", {"dc": "eu", "host": "web1"}, [b"one\n"]),
        ("app", {"dc": "eu", "host": "web1"}, [b"two\n", b"three\n"]),
        ("app", {"dc": "eu", "host": "web2"}, [b"four"]),
    ]


def test_flume_failed_when_not_stored(gen, serve):
    srv, rec = serve(FlumeEndpoint)

    def broken(_chunks):
        raise OSError("disk full")

    rec.hook = broken
    assert run_client(gen, "flume", srv.address, [[[{}, "x"]]], protocol="compact") == ["FAILED"]


def test_thrift_endpoint_survives_garbage_and_oversized_frames(gen, serve):
    srv, rec = serve(ScribeEndpoint, max_frame_size=4096, frame_timeout=1.0)
    with socket.create_connection(srv.address, timeout=5) as s:
        s.sendall(struct.pack(">i", 1 << 30))  # 1 GiB frame: refused before allocation
        s.settimeout(5)
        assert s.recv(10) == b""
    with socket.create_connection(srv.address, timeout=5) as s:
        s.sendall(struct.pack(">i", 50) + b"\xff" * 50)  # a frame of garbage
        s.settimeout(5)
        assert s.recv(10) == b""
    with socket.create_connection(srv.address, timeout=5) as s:
        s.sendall(b"\x00\x00")  # half a length, then silence: cut off after frame_timeout
        t0 = time.monotonic()
        s.settimeout(10)
        assert s.recv(10) == b""
        assert time.monotonic() - t0 < 5
    assert run_client(gen, "scribe", srv.address, [[["c", "still fine\n"]]]) == ["OK"]
    assert records(rec.chunks) == [b"still fine\n"]
