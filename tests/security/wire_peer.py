"""A hostile logflume-protocol peer for the security tests: raw frames over a loopback socket."""

from __future__ import annotations

import socket
from typing import Any

from thriftpy2.thrift import TMessageType

from logflume.wire.idl import PROTOCOL_VERSION, Compression
from logflume.wire.protocol import (
    PREFIX,
    Batch,
    ChunkHeader,
    Hello,
    Service,
    decode_message,
    encode_call,
    encode_message,
    pack_prefix,
    unpack_prefix,
)


def ping(token: str | None = None, sender: str = "attacker") -> bytes:
    return encode_call("ping", 1, hello=Hello(version=PROTOCOL_VERSION, token=token, sender=sender))


def header(source: str = "victim", *, length: int, wire_length: int, codec: int = Compression.NONE,
           seq_id: int | None = None, **fields: Any) -> Any:
    values = {"stream": "/var/log/app.log", "datatype": "Raw", "tags": {}, "epoch": "e1", "record_ends": None,
              "timestamp": 1_700_000_000_000, "flags": []}
    values.update(fields)
    return ChunkHeader(source=source, seq_id=length if seq_id is None else seq_id, length=length,
                       wire_length=wire_length, compression=codec, **values)


def deliver(headers: list, body_len: int, token: str | None = None) -> bytes:
    """Prefix and header of a deliver frame (the bodies follow)."""
    batch = Batch(version=PROTOCOL_VERSION, token=token, sender="attacker", chunks=headers)
    head = encode_message("deliver", TMessageType.CALL, 2, Service.deliver_args(batch=batch))
    return pack_prefix(len(head), body_len) + head


def connect(port: int, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def read_reply(sock: socket.socket) -> Any:
    """The next reply (its ``success`` is the Welcome or Ack); ConnectionError when the peer closed instead."""
    prefix = _exact(sock, PREFIX.size)
    header_len, _ = unpack_prefix(prefix, 1 << 20)
    return decode_message(_exact(sock, header_len), TMessageType.REPLY)[3]


def reply(sock: socket.socket) -> Any | None:
    """The next reply's result (Welcome or Ack), or None when the collector closed the connection instead."""
    try:
        return read_reply(sock).success
    except (ConnectionError, TimeoutError, OSError):
        return None


def _exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        more = sock.recv(n - len(buf))
        if not more:
            raise ConnectionError("closed")
        buf += more
    return buf
