"""Arbitrary bytes never crash the decoders: they decode or raise ProtocolError (the connection is closed)."""

from __future__ import annotations

import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logflume.chunk import Chunk
from logflume.wire import WireClient
from logflume.wire.protocol import PREFIX, ProtocolError, decode_message, encode_batch, unpack_prefix

pytestmark = pytest.mark.timeout(120)

_head, _ = encode_batch([Chunk("a", "s", "Raw", 3, "e", b"abc", tags={"k": "v"}, record_ends=[1, 3])],
                        sender="x", token="t")
VALID_HEADER = _head[PREFIX.size:]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_random_headers_decode_or_raise_protocol_error(raw):
    try:
        decode_message(raw)
    except ProtocolError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=len(VALID_HEADER) - 1), st.integers(min_value=0, max_value=255))
def test_corrupted_valid_headers_decode_or_raise_protocol_error(pos, value):
    raw = bytearray(VALID_HEADER)
    raw[pos] = value
    try:
        decode_message(bytes(raw))
    except ProtocolError:
        pass
    try:
        decode_message(bytes(raw[:pos]))  # truncated
    except ProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=PREFIX.size, max_size=PREFIX.size))
def test_random_prefixes(raw):
    try:
        header_len, body_len = unpack_prefix(raw, 1 << 20)
    except ProtocolError:
        return
    assert 0 < header_len and header_len + body_len <= 1 << 20


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(junk=st.binary(min_size=1, max_size=2048))
def test_server_survives_random_streams(wire_server, junk):
    if not hasattr(test_server_survives_random_streams, "srv"):
        test_server_survives_random_streams.srv = wire_server(frame_timeout=0.5)
    srv, rec = test_server_survives_random_streams.srv
    with socket.create_connection(srv.address, timeout=5) as s:
        try:  # the server may already have hung up on the junk: that is fine
            s.sendall(junk)
            s.shutdown(socket.SHUT_WR)
            s.settimeout(5)
            while s.recv(4096):
                pass
        except OSError:
            pass
    client = WireClient(*srv.address, timeout=5)
    assert client.deliver([Chunk("a", "s", "Raw", 2, "e", b"ok")]).ok
    client.close()
