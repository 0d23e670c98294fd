"""Serving a standard Thrift service (framed transport) on a Connection, with the wire's limits.

Used by the Scribe and Flume endpoints so existing clients work unchanged:
each frame is a 4-byte big-endian length plus one Thrift message, answered by
one framed reply.  The length is checked against ``max_frame_size`` before
the frame is allocated; garbage or a slow peer closes only that connection.
"""

from __future__ import annotations

import logging
import struct
import threading
from typing import Any

from thriftpy2.protocol.binary import TBinaryProtocol
from thriftpy2.protocol.compact import TCompactProtocol
from thriftpy2.thrift import TProcessor
from thriftpy2.transport.memory import TMemoryBuffer

from logflume.wire.connection import Connection, PeerClosed, Timeout, frame_deadline

_LEN = struct.Struct(">i")


class _CompactProtocol(TCompactProtocol):
    """Compact protocol that keeps strings as bytes but method names as text (thriftpy2 decodes neither)."""

    def read_message_begin(self):  # type: ignore[override]
        name, mtype, seqid = super().read_message_begin()
        if isinstance(name, (bytes, bytearray)):
            name = name.decode("utf-8", "replace")
        return name, mtype, seqid


class ThriftServiceEndpoint:
    """One Thrift service over framed transport, ``binary`` (non-strict reads accepted) or ``compact`` protocol."""

    name = "thrift"

    def __init__(
        self,
        service: Any,
        handler: object,
        *,
        protocol: str = "binary",
        max_frame_size: int = 16 * 1024 * 1024,
        idle_timeout: float = 60.0,
        frame_timeout: float = 30.0,
        log: logging.Logger | None = None,
    ) -> None:
        if protocol not in ("binary", "compact"):
            raise ValueError(f"protocol must be binary or compact, got {protocol!r}")
        self.processor = TProcessor(service, handler)
        self.protocol = protocol
        self.max_frame_size = max_frame_size
        self.idle_timeout = idle_timeout
        self.frame_timeout = frame_timeout
        self.log = log or logging.getLogger(f"logflume.wire.{self.name}")

    def _protocols(self, frame: bytes) -> tuple[Any, Any, TMemoryBuffer]:
        inbuf, outbuf = TMemoryBuffer(frame), TMemoryBuffer()
        if self.protocol == "compact":
            return _CompactProtocol(inbuf, decode_response=False), TCompactProtocol(outbuf), outbuf
        # Old Scribe clients write message headers without the version word: accept both.
        return (TBinaryProtocol(inbuf, strict_read=False, decode_response=False),
                TBinaryProtocol(outbuf), outbuf)

    def serve(self, conn: Connection, stopping: threading.Event) -> None:
        while conn.wait_readable(self.idle_timeout, stopping):
            try:
                size = _LEN.unpack(conn.read_exact(4, frame_deadline(4, self.frame_timeout)))[0]
                if size <= 0 or size > self.max_frame_size:
                    self.log.warning("closing %s: frame of %d bytes (limit %d)", conn.peer, size, self.max_frame_size)
                    return
                frame = bytes(conn.read_exact(size, frame_deadline(size, self.frame_timeout)))
            except PeerClosed:
                return
            except Timeout as exc:
                self.log.warning("closing %s: %s", conn.peer, exc)
                return
            except OSError as exc:
                self.log.info("connection %s: %s", conn.peer, exc)
                return
            iprot, oprot, outbuf = self._protocols(frame)
            try:
                self.processor.process(iprot, oprot)
            except Exception as exc:
                self.log.warning("closing %s: bad %s call: %s: %s", conn.peer, self.name, type(exc).__name__, exc)
                return
            reply = outbuf.getvalue()
            if reply:
                try:
                    conn.sendall(_LEN.pack(len(reply)) + reply, timeout=self.frame_timeout)
                except OSError as exc:
                    self.log.info("connection %s: %s", conn.peer, exc)
                    return
