"""Serving a standard Thrift service (framed transport) on a Connection, with the wire's limits.

Used by the Scribe and Flume endpoints so existing clients work unchanged:
each frame is a 4-byte big-endian length plus one Thrift message, answered by
one framed reply in the protocol the call came in.  The first byte of a
message names its protocol (:func:`sniff_protocol`), so one port can serve
clients of both protocols (Flume's ThriftSource and RPC client can be set to
either); an endpoint refuses a protocol it was not given.  The length is checked against ``max_frame_size`` before
the frame is allocated, and the message is decoded by
:mod:`logflume.wire.safe_thrift` (no length in it is trusted); garbage or a
slow peer closes only that connection.  Replies are encoded by thriftpy2.

Scribe and Flume have no authentication of their own, so the handler gets a
:class:`Peer` for each call and authenticates what the call carries (a token
in the Scribe category or a Flume header, see those modules) or the
connection's client certificate; a refusal (:class:`Refused`) closes the
connection with one log line.
"""

from __future__ import annotations

import logging
import struct
import threading
from collections.abc import Callable, Sequence
from typing import Any

from thriftpy2.protocol.binary import TBinaryProtocol
from thriftpy2.protocol.compact import TCompactProtocol
from thriftpy2.thrift import TMessageType
from thriftpy2.transport.memory import TMemoryBuffer

from logflume.chunk import Chunk
from logflume.errors import ChannelClosed, TryLater
from logflume.wire.connection import Connection, PeerClosed, Timeout, frame_deadline
from logflume.wire.identity import Authenticator, Identity, certificate_names
from logflume.wire.safe_thrift import DecodeError, decode_call

_LEN = struct.Struct(">i")
PROTOCOLS = ("binary", "compact")
#: First byte of a compact protocol message (protocol id).
_COMPACT_ID = 0x82
#: First byte of a strict binary message (version word 0x8001....).
_BINARY_STRICT = 0x80


def sniff_protocol(frame: bytes | bytearray | memoryview) -> str | None:
    """``binary``, ``compact`` or None (neither) from the first byte of a Thrift message.

    Compact messages start with the protocol id 0x82; strict binary ones with
    the version word 0x8001 (first byte 0x80); non-strict binary ones with the
    method name's length, a positive big-endian i32 (first byte below 0x80).
    """
    if not frame:
        return None
    first = frame[0]
    if first == _COMPACT_ID:
        return "compact"
    if first == _BINARY_STRICT or first < 0x80:
        return "binary"
    return None


class Refused(Exception):
    """A call's credentials were refused: the connection is closed (these protocols cannot say why)."""


def refuse_bad_metadata(chunks: list) -> None:
    """Refused when a chunk made from a call has metadata jobs could not use (a NUL in a category, odd header names)."""
    for c in chunks:
        problem = c.metadata_error()
        if problem is not None:
            raise Refused(f"stream {c.stream[:80]!r}: metadata refused: {problem}")


def deliver_call(deliver: Callable[[Sequence[Chunk]], None], chunks: list[Chunk], sender: str, *,
                 codes: Any, busy: str, what: str, log: logging.Logger) -> int:
    """A Scribe or Flume call's answer: ``codes.OK`` only once ``deliver`` returned (durable), else ``busy``.

    Stamps the call's chunks with their sender and refuses bad metadata first (:func:`refuse_bad_metadata`).
    ``busy`` (Scribe's ``TRY_LATER``, Flume's ``FAILED``: the name of one of ``codes``) is all these protocols
    can say, whether ``deliver`` asked to back off or failed; only a failure is logged, ``what`` naming the call.
    """
    for c in chunks:
        c.sender = sender
    refuse_bad_metadata(chunks)
    try:
        deliver(chunks)
    except (TryLater, ChannelClosed):
        return getattr(codes, busy)
    except Exception as exc:
        log.error("%s not stored, answered %s: %s", what, busy, exc)
        return getattr(codes, busy)
    return codes.OK


class Peer:
    """One connection's credentials: its verified certificate names and address; authenticates each call."""

    def __init__(self, authenticator: Authenticator, conn: Connection) -> None:
        self.authenticator = authenticator
        self.address = conn.peer
        self.cert_names = certificate_names(conn.sock)
        self._known: tuple[bytes | None, Identity] | None = None

    @property
    def by_certificate(self) -> bool:
        """True when the certificate alone authenticates (then no token is expected in the calls)."""
        return not self.authenticator.open and isinstance(self._authenticate(None), Identity)

    @property
    def needs_token(self) -> bool:
        return not self.authenticator.open and not self.by_certificate

    def identity(self, token: bytes | None) -> Identity:
        """The identity of a call carrying ``token`` (None: none shown), or Refused."""
        if self._known is not None and self._known[0] == token:
            return self._known[1]
        result = self._authenticate(token)
        if not isinstance(result, Identity):
            raise Refused(result)
        self._known = (token, result)
        return result

    def _authenticate(self, token: bytes | None) -> Identity | str:
        return self.authenticator.authenticate(token, self.cert_names, self.address)


class ThriftServiceEndpoint:
    """One Thrift service over framed transport in the given ``protocols`` (binary: non-strict headers accepted).

    Each call is decoded in the protocol its first byte names and answered in
    the same one.  ``handler`` has one method per service method, called with
    the decoded arguments in IDL order (strings as ``bytes``: clients send any
    bytes).
    """

    name = "thrift"

    def __init__(
        self,
        service: Any,
        handler: object,
        *,
        protocols: tuple[str, ...] = ("binary",),
        max_frame_size: int = 16 * 1024 * 1024,
        idle_timeout: float = 60.0,
        frame_timeout: float = 30.0,
        authenticator: Authenticator | None = None,
        log: logging.Logger | None = None,
    ) -> None:
        if not protocols or not set(protocols) <= set(PROTOCOLS):
            raise ValueError(f"protocols must be some of {', '.join(PROTOCOLS)}, got {protocols!r}")
        self.service = service
        self.handler = handler
        self.protocols = tuple(protocols)
        self.max_frame_size = max_frame_size
        self.idle_timeout = idle_timeout
        self.frame_timeout = frame_timeout
        self.authenticator = authenticator or Authenticator()
        self.log = log or logging.getLogger(f"logflume.wire.{self.name}")

    def _reply(self, protocol: str, name: str, seqid: int, result: Any) -> bytes:
        out = TMemoryBuffer()
        proto = TCompactProtocol(out) if protocol == "compact" else TBinaryProtocol(out)
        proto.write_message_begin(name, TMessageType.REPLY, seqid)
        getattr(self.service, name + "_result")(success=result).write(proto)
        proto.write_message_end()
        return out.getvalue()

    def _call(self, frame: bytes, peer: Peer) -> bytes | None:
        """Decode one call, run the handler, return the reply message (None for oneway calls)."""
        protocol = sniff_protocol(frame)
        if protocol not in self.protocols:
            raise DecodeError(f"not a Thrift message in {' or '.join(self.protocols)} protocol "
                              f"(first byte {frame[0]:#04x})")
        name, mtype, seqid, args = decode_call(frame, self.service, protocol, strict=False, text=False)
        values = [getattr(args, field[1]) for _, field in sorted(args.thrift_spec.items())]
        result = getattr(self.handler, name)(*values, peer=peer)
        if mtype == TMessageType.ONEWAY:
            return None
        return self._reply(protocol, name, seqid, result)

    def serve(self, conn: Connection, stopping: threading.Event) -> None:
        peer = Peer(self.authenticator, conn)
        while conn.wait_readable(self.idle_timeout, stopping):
            try:
                size = _LEN.unpack(conn.read_exact(4, frame_deadline(4, self.frame_timeout)))[0]
                if size <= 0 or size > self.max_frame_size:
                    self.log.warning("closing %s: frame of %d bytes (limit %d)", conn.peer, size, self.max_frame_size)
                    return
                frame = conn.read_exact(size, frame_deadline(size, self.frame_timeout))
            except PeerClosed:
                return
            except Timeout as exc:
                self.log.warning("closing %s: %s", conn.peer, exc)
                return
            except OSError as exc:
                self.log.info("connection %s: %s", conn.peer, exc)
                return
            try:
                reply = self._call(frame, peer)
            except DecodeError as exc:
                self.log.warning("closing %s: bad %s call: %s", conn.peer, self.name, exc)
                return
            except Refused as exc:
                self.log.warning("refusing %s (%s): %s", conn.peer, self.name, exc)
                return
            if reply:
                try:
                    conn.sendall(_LEN.pack(len(reply)) + reply, timeout=self.frame_timeout)
                except OSError as exc:
                    self.log.info("connection %s: %s", conn.peer, exc)
                    return
