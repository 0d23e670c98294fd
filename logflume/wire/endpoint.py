"""The server side of the logflume protocol: frames in, chunks to ``deliver``, one ack per batch.

``deliver(chunks)`` returns once the chunks are durable (or raises TryLater to
ask the agent to come back later); only then is OK sent.

Admission comes first: once the header has told the batch's size,
``reserve(nbytes)`` (a context manager) may refuse it with TryLater; the
body is then read into a small scratch buffer and dropped, and the agent is
told TRY_LATER, so memory is only committed to batches that will be stored.
An admitted body is read with ``recv_into`` straight into a buffer from the
server's :class:`BufferPool` and handed on as ``memoryview`` slices: a 64 MiB
body is written into memory once.  The views are valid until ``deliver``
returns; the buffer is then reused for the next frame of any connection.
"""

from __future__ import annotations

import hmac
import logging
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from thriftpy2.thrift import TMessageType

from logflume.chunk import Chunk
from logflume.errors import TryLater
from logflume.wire.buffers import BufferPool
from logflume.wire.connection import Connection, PeerClosed, Timeout, frame_deadline
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
    unpack_prefix,
    validate_batch,
)

Deliver = Callable[[Sequence[Chunk]], None]
#: Largest frame accepted before the handshake (a ping is a few hundred bytes).
MAX_HELLO = 64 * 1024
#: Piece size when reading and dropping the body of a refused batch.
DISCARD_PIECE = 1024 * 1024


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
        tokens: Sequence[str] = (),
        log: logging.Logger | None = None,
        reserve: Callable[[int], AbstractContextManager[object]] | None = None,
        pool: BufferPool | None = None,
    ) -> None:
        self.deliver = deliver
        self.server_name = server_name
        self.max_frame_size = max_frame_size
        self.idle_timeout = idle_timeout
        self.frame_timeout = frame_timeout
        self.tokens = [t.encode() for t in tokens]
        self.log = log or logging.getLogger("logflume.wire.endpoint")
        self.reserve = reserve or (lambda _n: nullcontext())
        self.pool = pool or BufferPool(max_idle_bytes=max_frame_size)

    def _authorized(self, token: str | None) -> bool:
        if not self.tokens:
            return True
        given = (token or "").encode()
        return any(hmac.compare_digest(given, t) for t in self.tokens)

    def serve(self, conn: Connection, stopping: threading.Event) -> None:
        greeted = [False]  # a connection must pass the ping handshake before it may send batches
        while conn.wait_readable(self.idle_timeout, stopping):
            try:
                if not self._one_frame(conn, greeted):
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

    def _one_frame(self, conn: Connection, greeted: list[bool]) -> bool:
        """Read, handle and answer one frame; False when the connection must close."""
        deadline = frame_deadline(PREFIX.size, self.frame_timeout)
        prefix = conn.read_exact(PREFIX.size, deadline)
        header_len, body_len = unpack_prefix(prefix, self.max_frame_size)
        if not greeted[0] and (body_len or header_len > MAX_HELLO):
            # nothing big is read from a peer that has not shown its version and token yet
            raise ProtocolError(f"expected a ping handshake first, got a frame of {header_len + body_len} bytes")
        deadline = frame_deadline(header_len + body_len, self.frame_timeout)
        header = conn.read_exact(header_len, deadline)
        name, _mtype, seqid, args = decode_message(header, expect_type=TMessageType.CALL)
        if name == "ping":
            if body_len:
                raise ProtocolError("ping frame carries a body")
            hello = args.hello
            if hello is None:
                raise ProtocolError("ping without hello")
            ok, reason = self._check(hello.version, hello.token, hello.sender, conn.peer)
            greeted[0] = ok
            self._reply(conn, "ping", seqid, Welcome(
                status=Status.OK if ok else Status.ERROR, version=PROTOCOL_VERSION, server=self.server_name,
                max_frame_size=self.max_frame_size, reason=reason,
            ))
            return ok
        batch = args.batch
        validate_batch(batch, body_len)
        ok, reason = self._check(batch.version, batch.token, batch.sender, conn.peer)
        if not ok:
            self._reply(conn, "deliver", seqid, Ack(status=Status.ERROR, delay_ms=0, reason=reason))
            return False
        try:
            with self.reserve(body_len):
                ack = self._receive_and_deliver(conn, batch, body_len, deadline)
        except TryLater as exc:
            self._discard(conn, body_len, deadline)
            ack = Ack(status=Status.TRY_LATER, delay_ms=int(exc.delay * 1000), reason=str(exc))
        self._reply(conn, "deliver", seqid, ack)
        return True

    def _receive_and_deliver(self, conn: Connection, batch: Any, body_len: int, deadline: float) -> Any:
        buf = self.pool.get(body_len)
        try:
            body = memoryview(buf)[:body_len]
            conn.read_into(body, deadline)
            chunks: list[Chunk] = []
            piece: Any = None
            pos = 0
            for h in batch.chunks:
                piece = body[pos:pos + h.wire_length]
                pos += h.wire_length
                if h.compression not in (None, Compression.NONE):
                    piece = decompress(piece, h.compression, h.length)
                chunks.append(chunk_from_header(h, piece))
            del piece, body
            try:
                self.deliver(chunks)
            except TryLater as exc:
                return Ack(status=Status.TRY_LATER, delay_ms=int(exc.delay * 1000), reason=str(exc))
            except Exception as exc:
                self.log.error("batch from %s (%s) not stored: %s", batch.sender, conn.peer, exc)
                return Ack(status=Status.ERROR, delay_ms=0, reason=f"store failed: {exc}")
            finally:
                del chunks  # release the views so the buffer can be reused
            return Ack(status=Status.OK, delay_ms=0, reason="")
        finally:
            self.pool.put(buf)

    @staticmethod
    def _discard(conn: Connection, nbytes: int, deadline: float) -> None:
        """Read and drop a refused body in 1 MiB pieces, keeping the connection in step."""
        scratch = memoryview(bytearray(min(nbytes, DISCARD_PIECE)))
        while nbytes > 0:
            k = min(nbytes, len(scratch))
            conn.read_into(scratch[:k], deadline)
            nbytes -= k

    def _check(self, version: int | None, token: str | None, sender: str | None, peer: str) -> tuple[bool, str]:
        if version != PROTOCOL_VERSION:
            reason = f"protocol version {version} not supported (collector speaks {PROTOCOL_VERSION})"
            self.log.warning("refusing %s (%s): %s", sender, peer, reason)
            return False, reason
        if not self._authorized(token):
            reason = "authentication failed: missing or wrong token"
            self.log.warning("refusing %s (%s): %s", sender, peer, reason)
            return False, reason
        return True, ""
