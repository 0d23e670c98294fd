"""WireClient: one connection from an agent to one collector.

``connect()`` dials, wraps TLS and does the ``ping`` handshake (version and
token are checked before any data moves).  ``deliver(chunks)`` writes the
frame header and then each chunk's buffer as is (``sendall`` of the chunk's
own ``bytes``/``memoryview``: no joining, no copy) and waits for the ack;
``send`` and ``ack`` do the two halves, for a sender that keeps a batch on the
way while it waits.
"""

from __future__ import annotations

import itertools
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass

from thriftpy2.thrift import TMessageType

from logflume.chunk import Chunk
from logflume.errors import DeliveryError
from logflume.wire.connection import Connection, frame_deadline
from logflume.wire.idl import PROTOCOL_VERSION, Status
from logflume.wire.protocol import (
    PREFIX,
    Hello,
    ProtocolError,
    decode_message,
    encode_batch,
    encode_call,
    unpack_prefix,
)

#: Largest reply frame a client accepts (replies carry no bodies).
MAX_REPLY = 1024 * 1024


@dataclass(frozen=True)
class AckResult:
    status: int
    delay: float
    reason: str
    #: REFUSED for one chunk's metadata: its index in the batch (None: the whole batch, e.g. its sources)
    chunk: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == Status.OK


class RefusedError(DeliveryError):
    """The collector refused us for a reason retrying will not fix (token, version)."""


class WireClient:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
        server_name: str | None = None,
        token: str | None = None,
        sender: str = "",
        compression: str = "none",
    ) -> None:
        self.host, self.port = host, port
        self.timeout = timeout
        self.ssl_context = ssl_context
        self.server_name = server_name or host
        self.token = token
        self.sender = sender
        self.compression = compression
        self.conn: Connection | None = None
        self.max_frame_size = 0
        self.server = ""
        self.in_flight = 0
        self._seq = itertools.count(1)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def connect(self) -> None:
        """Dial and handshake; DeliveryError (RefusedError for token/version problems) on failure."""
        self.close()
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.ssl_context is not None:
                sock = self.ssl_context.wrap_socket(sock, server_hostname=self.server_name)
        except ssl.SSLError as exc:
            raise RefusedError(f"collector {self.address}: TLS handshake failed: {exc}") from None
        except OSError as exc:
            raise DeliveryError(f"collector {self.address}: cannot connect: {exc.strerror or exc}") from None
        self.conn = Connection(sock, self.address)
        welcome = self._call_simple("ping", hello=Hello(version=PROTOCOL_VERSION, token=self.token, sender=self.sender))
        if welcome.status != Status.OK:
            self.close()
            raise RefusedError(f"collector {self.address} refused us: {welcome.reason}")
        self.max_frame_size = int(welcome.max_frame_size)
        self.server = welcome.server

    def _call_simple(self, name: str, **args: object) -> object:
        frame = encode_call(name, next(self._seq), **args)
        self._send([frame])
        return self._read_reply(name)

    def _send(self, parts: Sequence[object]) -> None:
        assert self.conn is not None
        try:
            self.conn.send_parts(list(parts), timeout=self.timeout)
        except OSError as exc:
            self.close()
            raise DeliveryError(f"collector {self.address}: send failed: {exc}") from None

    def _read_reply(self, name: str) -> object:
        assert self.conn is not None
        try:
            if not self.conn.wait_readable(self.timeout):
                raise TimeoutError(f"no reply within {self.timeout}s")
            prefix = self.conn.read_exact(PREFIX.size, frame_deadline(PREFIX.size, self.timeout))
            header_len, body_len = unpack_prefix(prefix, MAX_REPLY)
            header = self.conn.read_exact(header_len, frame_deadline(header_len, self.timeout))
            got, mtype, _seqid, result = decode_message(header, TMessageType.REPLY)
        except ssl.SSLError as exc:
            self.close()
            if isinstance(exc, ssl.SSLEOFError):
                raise DeliveryError(f"collector {self.address}: connection lost: {exc}") from None
            raise RefusedError(f"collector {self.address}: TLS refused: {exc}") from None
        except (OSError, ProtocolError) as exc:
            self.close()
            raise DeliveryError(f"collector {self.address}: no valid reply: {exc}") from None
        if mtype != TMessageType.REPLY or got != name or result.success is None or body_len:
            self.close()
            raise DeliveryError(f"collector {self.address}: unexpected reply {got!r} (type {mtype})")
        return result.success

    def deliver(self, chunks: Sequence[Chunk]) -> AckResult:
        """Send one batch and return the collector's answer; DeliveryError when the connection fails."""
        self.send(chunks)
        return self.ack(len(chunks))

    def send(self, chunks: Sequence[Chunk]) -> None:
        """Send one batch without waiting for its answer (``ack`` reads the answers, in the order sent).

        The collector reads the next batch while it stores this one, so a sender that has more
        keeps one batch on the way while it waits (``in_flight`` counts the unanswered ones).
        """
        if self.conn is not None and not self.in_flight and self.conn.wait_readable(0):
            self.close()  # the collector closed an idle connection (or sent junk): start afresh
        if self.conn is None:
            self.connect()
        head, bodies = encode_batch(chunks, sender=self.sender, token=self.token, compression=self.compression,
                                    seqid=next(self._seq))
        size = len(head) - PREFIX.size + sum(len(b) for b in bodies)
        if self.max_frame_size and size > self.max_frame_size:
            raise DeliveryError(
                f"batch of {size} bytes exceeds collector {self.address}'s max_frame_size {self.max_frame_size}"
            )
        self._send([head, *bodies])
        self.in_flight += 1

    def ack(self, nchunks: int) -> AckResult:
        """The answer to the oldest batch sent and not answered yet (of ``nchunks`` chunks)."""
        ack = self._read_reply("deliver")
        self.in_flight -= 1
        index = ack.chunk if isinstance(ack.chunk, int) and 0 <= ack.chunk < nchunks else None
        result = AckResult(int(ack.status), max(0, int(ack.delay_ms or 0)) / 1000.0, ack.reason or "", index)
        if result.status == Status.ERROR and "authentication" in result.reason:
            self.close()
            raise RefusedError(f"collector {self.address} refused us: {result.reason}")
        return result

    def close(self) -> None:
        self.in_flight = 0  # their answers are lost with the connection
        if self.conn is not None:
            self.conn.close()
            self.conn = None
