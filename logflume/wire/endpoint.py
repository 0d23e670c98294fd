"""The server side of the logflume protocol: frames in, chunks to ``deliver``, one ack per batch.

``deliver(chunks)`` returns once the chunks are durable (or raises TryLater to
ask the agent to come back later); only then is OK sent.

Authentication comes first: until a ``ping`` (at most ``MAX_HELLO`` bytes,
nothing else is even decoded) has shown a token or a client certificate the
:class:`~logflume.wire.identity.Authenticator` accepts, nothing else is read.
The identity it yields is bound to the connection; every chunk must carry a
``source`` that identity may send, and metadata within ``Chunk.metadata_error``'s
bounds, or the batch is answered REFUSED with the reason.  Chunks are stored
with ``sender`` set to the identity's name.

Admission comes next: once the header has told the batch's size *as it will
be in memory* (compressed bodies count at their declared, inflated length,
which may not exceed ``max_frame_size``), ``reserve(nbytes, peer)`` (a context
manager) may refuse it with TryLater; the body is then read into a small
scratch buffer and dropped, and the agent is told TRY_LATER, so memory is only
committed to batches that will be stored.  An admitted body must keep
arriving: a peer that sends nothing for ``progress_timeout`` loses its
connection and its reservation.  An admitted body is read with ``recv_into``
straight into a buffer from the server's :class:`BufferPool` and handed on as
``memoryview`` slices: a 64 MiB body is written into memory once.  The views
are valid until ``deliver`` returns; the buffer is then reused.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from thriftpy2.thrift import TMessageType

from logflume.chunk import Chunk
from logflume.errors import TryLater
from logflume.wire.buffers import BufferPool
from logflume.wire.connection import Connection, PeerClosed, Timeout, frame_deadline
from logflume.wire.identity import Authenticator, Identity, certificate_names, sanitize
from logflume.wire.idl import PROTOCOL_VERSION, Compression, Status
from logflume.wire.protocol import (
    PREFIX,
    Ack,
    ProtocolError,
    Welcome,
    chunk_from_header,
    decode_message,
    decompress,
    encode_reply,
    method_name,
    unpack_prefix,
    validate_batch,
)

Deliver = Callable[[Sequence[Chunk]], None]
Reserve = Callable[[int, str], AbstractContextManager[object]]
#: Largest frame accepted before the handshake (a ping with a token is a few hundred bytes).
MAX_HELLO = 8 * 1024
#: Piece size when reading a body: each piece must arrive within ``progress_timeout``.
PIECE = 1024 * 1024


class WireEndpoint:
    """Serves ``ping`` and ``deliver`` of the LogFlume service on each connection."""

    name = "logflume"

    def __init__(
        self,
        deliver: Deliver,
        *,
        server_name: str,
        max_frame_size: int,
        idle_timeout: float,
        frame_timeout: float = 30.0,
        progress_timeout: float = 10.0,
        authenticator: Authenticator | None = None,
        log: logging.Logger | None = None,
        reserve: Reserve | None = None,
        pool: BufferPool | None = None,
    ) -> None:
        self.deliver = deliver
        self.server_name = server_name
        self.max_frame_size = max_frame_size
        self.idle_timeout = idle_timeout
        self.frame_timeout = frame_timeout
        self.progress_timeout = progress_timeout
        self.authenticator = authenticator or Authenticator()
        self.log = log or logging.getLogger("logflume.wire.endpoint")
        self.reserve: Reserve = reserve or (lambda _n, _peer: nullcontext())
        self.pool = pool or BufferPool(max_idle_bytes=max_frame_size)

    def serve(self, conn: Connection, stopping: threading.Event) -> None:
        identity: list[Identity] = []  # set by a successful ping; nothing but a ping is read before
        while conn.wait_readable(self.idle_timeout, stopping):
            try:
                if not self._one_frame(conn, identity):
                    return
            except PeerClosed:
                return
            except Timeout as exc:
                self.log.warning("closing %s: %s", conn.peer, exc)
                return
            except ProtocolError as exc:
                self.log.warning("closing %s: protocol error: %s", conn.peer, exc)
                return
            except OSError as exc:
                self.log.info("connection %s: %s", conn.peer, exc)
                return
        if not stopping.is_set():
            self.log.info("closing %s: idle for %.0fs", conn.peer, self.idle_timeout)

    def _reply(self, conn: Connection, name: str, seqid: int, result: object) -> None:
        conn.sendall(encode_reply(name, seqid, result), timeout=self.frame_timeout)

    def _one_frame(self, conn: Connection, identity: list[Identity]) -> bool:
        """Read, handle and answer one frame; False when the connection must close."""
        deadline = frame_deadline(PREFIX.size, self.frame_timeout)
        prefix = conn.read_exact(PREFIX.size, deadline)
        header_len, body_len = unpack_prefix(prefix, self.max_frame_size)
        if not identity and (body_len or header_len > MAX_HELLO):
            # nothing big is read from a peer that has not shown its version and credentials yet
            raise ProtocolError(f"expected a ping handshake first, got a frame of {header_len + body_len} bytes")
        deadline = frame_deadline(header_len + body_len, self.frame_timeout)
        header = conn.read_exact(header_len, deadline)
        if not identity and method_name(header) != "ping":
            raise ProtocolError(f"expected a ping handshake first, got {sanitize(method_name(header), 64)!r}")
        name, _mtype, seqid, args = decode_message(header, expect_type=TMessageType.CALL)
        if name == "ping":
            return self._hello(conn, args.hello, body_len, seqid, identity)
        batch = args.batch
        need = validate_batch(batch, body_len, self.max_frame_size)
        who = identity[0]
        if batch.version != PROTOCOL_VERSION:
            reason = f"protocol version {batch.version} not supported (collector speaks {PROTOCOL_VERSION})"
            self.log.warning("refusing %s (%s): %s", who.name, conn.peer, reason)
            self._reply(conn, "deliver", seqid, Ack(status=Status.ERROR, delay_ms=0, reason=reason))
            return False
        for h in batch.chunks:
            refusal = who.refusal(h.source if type(h.source) is str else str(h.source))
            if refusal is not None:
                self.log.warning("refusing batch from %s (%s): %s", who.name, conn.peer, refusal)
                self._discard(conn, body_len, deadline)
                self._reply(conn, "deliver", seqid, Ack(status=Status.REFUSED, delay_ms=0, reason=refusal))
                return True
        try:
            with self.reserve(need, who.name):  # per identity; with no credentials that is the peer's address
                ack = self._receive_and_deliver(conn, batch, body_len, deadline, who)
        except TryLater as exc:
            self._discard(conn, body_len, deadline)
            ack = Ack(status=Status.TRY_LATER, delay_ms=int(exc.delay * 1000), reason=str(exc))
        self._reply(conn, "deliver", seqid, ack)
        return True

    def _hello(self, conn: Connection, hello: Any, body_len: int, seqid: int, identity: list[Identity]) -> bool:
        """Answer a ping: Welcome OK and the connection's identity, or ERROR with the reason (and close)."""
        if body_len:
            raise ProtocolError("ping frame carries a body")
        if hello is None:
            raise ProtocolError("ping without hello")
        sender = sanitize(hello.sender or "")
        if hello.version != PROTOCOL_VERSION:
            result: Identity | str = (f"protocol version {hello.version} not supported "
                                      f"(collector speaks {PROTOCOL_VERSION})")
        else:
            result = self.authenticator.authenticate(hello.token, certificate_names(conn.sock), conn.peer)
        ok = isinstance(result, Identity)
        if isinstance(result, Identity):
            identity[:] = [result]
            self.log.debug("%s (%s) authenticated as %s", sender, conn.peer, result.name)
        else:
            self.log.warning("refusing %s (%s): %s", sender, conn.peer, result)
        self._reply(conn, "ping", seqid, Welcome(
            status=Status.OK if ok else Status.ERROR, version=PROTOCOL_VERSION, server=self.server_name,
            max_frame_size=self.max_frame_size, reason="" if ok else str(result),
        ))
        return ok

    def _read_body(self, conn: Connection, body: memoryview, deadline: float) -> None:
        """Fill ``body`` piece by piece; a piece that does not arrive within ``progress_timeout`` ends the frame."""
        for pos in range(0, len(body), PIECE):
            conn.read_into(body[pos:pos + PIECE], min(deadline, time.monotonic() + self.progress_timeout))

    def _receive_and_deliver(self, conn: Connection, batch: Any, body_len: int, deadline: float,
                             who: Identity) -> Any:
        buf = self.pool.get(body_len)
        try:
            body = memoryview(buf)[:body_len]
            self._read_body(conn, body, deadline)
            chunks: list[Chunk] = []
            piece: Any = None
            c: Chunk | None = None
            pos = 0
            for i, h in enumerate(batch.chunks):
                piece = body[pos:pos + h.wire_length]
                pos += h.wire_length
                if h.compression not in (None, Compression.NONE):
                    piece = decompress(piece, h.compression, h.length)
                c = chunk_from_header(h, piece)
                c.sender = who.name
                refusal = c.metadata_error()
                if refusal is not None:
                    del chunks, piece, body, c
                    reason = f"chunk {i}: metadata refused: {refusal}"
                    self.log.warning("refusing batch from %s (%s): %s", who.name, conn.peer, reason)
                    return Ack(status=Status.REFUSED, delay_ms=0, reason=reason, chunk=i)
                chunks.append(c)
            del piece, body, c  # only ``chunks`` may hold views now; dropped below so the buffer is reused
            try:
                self.deliver(chunks)
            except TryLater as exc:
                return Ack(status=Status.TRY_LATER, delay_ms=int(exc.delay * 1000), reason=str(exc))
            except Exception as exc:
                self.log.error("batch from %s (%s) not stored: %s", who.name, conn.peer, exc)
                return Ack(status=Status.ERROR, delay_ms=0, reason=f"store failed: {exc}")
            finally:
                del chunks  # release the views so the buffer can be reused
            return Ack(status=Status.OK, delay_ms=0, reason="")
        finally:
            self.pool.put(buf)

    def _discard(self, conn: Connection, nbytes: int, deadline: float) -> None:
        """Read and drop a refused body in 1 MiB pieces, keeping the connection in step."""
        scratch = memoryview(bytearray(min(nbytes, PIECE)))
        while nbytes > 0:
            k = min(nbytes, len(scratch))
            conn.read_into(scratch[:k], min(deadline, time.monotonic() + self.progress_timeout))
            nbytes -= k
