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
are valid until the batch is stored; the buffer is then reused.

``deliver`` either stores the chunks before it returns, or returns a
:class:`~concurrent.futures.Future` that completes once they are stored (the
collector's store writer).  With a future, the connection reads the sender's
next frame while the store writes this one (at most ``IN_FLIGHT`` batches per
connection): receiving and writing overlap instead of taking turns.  Replies
still go out in frame order, each only once its batch is durable, and as soon
as the sender has nothing more on the way.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from contextlib import AbstractContextManager, ExitStack, nullcontext
from typing import Any

from thriftpy2.thrift import TMessageType

from logflume.chunk import Chunk
from logflume.errors import TryLater
from logflume.stopflag import StopFlag
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

#: Stores chunks: returns once they are stored, or returns a Future that completes once they are.
Deliver = Callable[[Sequence[Chunk]], "Future[None] | None"]
Reserve = Callable[[int, str], AbstractContextManager[object]]
#: Largest frame accepted before the handshake (a ping with a token is a few hundred bytes).
MAX_HELLO = 8 * 1024
#: Piece size when reading a body: each piece must arrive within ``progress_timeout``.
PIECE = 1024 * 1024
#: Batches of one connection being stored at once: the next frame is read while the store writes one.
IN_FLIGHT = 2


class _Answer:
    """A frame's reply, maybe still waiting for its batch to be stored; replies leave in frame order."""

    __slots__ = ("name", "seqid", "result", "stored", "release", "who", "peer")

    def __init__(self, name: str, seqid: int, result: Any = None, *, stored: Future | None = None,
                 release: ExitStack | None = None, who: str = "", peer: str = "") -> None:
        self.name, self.seqid, self.result = name, seqid, result
        self.stored = stored  # the store's outcome, for a batch handed on and not yet stored
        self.release = release  # the batch's admission and receive buffer, freed once it is stored
        self.who, self.peer = who, peer

    @property
    def ready(self) -> bool:
        """True when the reply can go out without waiting for the store."""
        return self.stored is None or self.stored.done()


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
        answers: deque[_Answer] = deque()  # frames read and not yet answered, oldest first
        try:
            self._serve_frames(conn, stopping, answers)
        except PeerClosed:
            pass
        except Timeout as exc:
            self.log.warning("closing %s: %s", conn.peer, exc)
        except ProtocolError as exc:
            self.log.warning("closing %s: protocol error: %s", conn.peer, exc)
        except OSError as exc:
            self.log.info("connection %s: %s", conn.peer, exc)
        finally:
            # Batches handed on are stored whatever happens to the connection; their buffers are reused
            # only after that.  The answers go out if the connection still takes them.
            while answers:
                try:
                    self._send_answer(conn, answers.popleft())
                except OSError:  # the peer is gone: only wait for the stores
                    while answers:
                        self._outcome(answers.popleft())

    def _serve_frames(self, conn: Connection, stopping: threading.Event, answers: deque[_Answer]) -> None:
        identity: list[Identity] = []  # set by a successful ping; nothing but a ping is read before
        stored = StopFlag()  # set whenever a batch of this connection has been stored
        while True:
            stored.clear()
            while answers and answers[0].ready:
                self._send_answer(conn, answers.popleft())
            if answers:
                if len(answers) >= IN_FLIGHT or stopping.is_set():
                    self._send_answer(conn, answers.popleft())  # waits for the store
                    continue
                if not conn.wait_readable(self.frame_timeout, stored):
                    continue  # a batch was stored (or nothing came for a while): answer what is ready
            elif not conn.wait_readable(self.idle_timeout, stopping):
                if not stopping.is_set():
                    self.log.info("closing %s: idle for %.0fs", conn.peer, self.idle_timeout)
                return
            if not self._one_frame(conn, identity, answers, stored):
                return

    def _outcome(self, answer: _Answer) -> Any:
        """The reply of ``answer``, waiting until its batch is stored; frees what the batch held."""
        if answer.stored is None:
            return answer.result
        try:
            answer.stored.result()
        except TryLater as exc:
            return Ack(status=Status.TRY_LATER, delay_ms=int(exc.delay * 1000), reason=str(exc))
        except Exception as exc:
            self.log.error("batch from %s (%s) not stored: %s", answer.who, answer.peer, exc)
            return Ack(status=Status.ERROR, delay_ms=0, reason=f"store failed: {exc}")
        finally:
            answer.stored = None
            if answer.release is not None:
                answer.release.close()
        return Ack(status=Status.OK, delay_ms=0, reason="")

    def _send_answer(self, conn: Connection, answer: _Answer) -> None:
        result = self._outcome(answer)
        conn.sendall(encode_reply(answer.name, answer.seqid, result), timeout=self.frame_timeout)

    def _one_frame(self, conn: Connection, identity: list[Identity], answers: deque[_Answer],
                   stored: StopFlag) -> bool:
        """Read and handle one frame, queueing its answer; False when the connection must close."""
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
            welcome = self._hello(conn, args.hello, body_len, identity)
            answers.append(_Answer("ping", seqid, welcome))
            return welcome.status == Status.OK
        batch = args.batch
        need = validate_batch(batch, body_len, self.max_frame_size)
        who = identity[0]
        if batch.version != PROTOCOL_VERSION:
            reason = f"protocol version {batch.version} not supported (collector speaks {PROTOCOL_VERSION})"
            self.log.warning("refusing %s (%s): %s", who.name, conn.peer, reason)
            answers.append(_Answer("deliver", seqid, Ack(status=Status.ERROR, delay_ms=0, reason=reason)))
            return False
        for h in batch.chunks:
            refusal = who.refusal(h.source if type(h.source) is str else str(h.source))
            if refusal is not None:
                self.log.warning("refusing batch from %s (%s): %s", who.name, conn.peer, refusal)
                self._discard(conn, body_len, deadline)
                answers.append(_Answer("deliver", seqid, Ack(status=Status.REFUSED, delay_ms=0, reason=refusal)))
                return True
        held = ExitStack()  # the admission, then the receive buffer: held until the batch is stored
        try:
            held.enter_context(self.reserve(need, who.name))  # per identity; without credentials the address
        except TryLater as exc:
            self._discard(conn, body_len, deadline)
            answers.append(_Answer("deliver", seqid, Ack(status=Status.TRY_LATER, delay_ms=int(exc.delay * 1000),
                                                         reason=str(exc))))
            return True
        try:
            answer = self._receive_and_deliver(conn, batch, body_len, deadline, who, seqid, held)
        except BaseException:
            held.close()
            raise
        if answer.stored is not None:
            answer.stored.add_done_callback(lambda _: stored.set())
        answers.append(answer)
        return True

    def _hello(self, conn: Connection, hello: Any, body_len: int, identity: list[Identity]) -> Any:
        """The answer to a ping: Welcome OK and the connection's identity, or ERROR with the reason (then close)."""
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
        return Welcome(
            status=Status.OK if ok else Status.ERROR, version=PROTOCOL_VERSION, server=self.server_name,
            max_frame_size=self.max_frame_size, reason="" if ok else str(result),
        )

    def _read_body(self, conn: Connection, body: memoryview, deadline: float) -> None:
        """Fill ``body`` piece by piece; a piece that does not arrive within ``progress_timeout`` ends the frame."""
        for pos in range(0, len(body), PIECE):
            conn.read_into(body[pos:pos + PIECE], min(deadline, time.monotonic() + self.progress_timeout))

    def _receive_and_deliver(self, conn: Connection, batch: Any, body_len: int, deadline: float,
                             who: Identity, seqid: int, held: ExitStack) -> _Answer:
        """Read the body into a pooled buffer and hand the chunks on; ``held`` frees the buffer once stored."""
        buf = self.pool.get(body_len)
        held.callback(self.pool.put, buf)  # after every view of it is gone, or the pool drops it
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
                held.close()
                reason = f"chunk {i}: metadata refused: {refusal}"
                self.log.warning("refusing batch from %s (%s): %s", who.name, conn.peer, reason)
                return _Answer("deliver", seqid, Ack(status=Status.REFUSED, delay_ms=0, reason=reason, chunk=i))
            chunks.append(c)
        del piece, body, c  # only ``chunks`` holds views now, and only until the store has them
        answer = _Answer("deliver", seqid, who=who.name, peer=conn.peer, release=held)
        stored: Future[None] = Future()
        try:
            outcome = self.deliver(chunks)
        except BaseException as exc:  # stored (or not) right here: the same outcome as a future's
            stored.set_exception(exc)
        else:
            if outcome is None:
                stored.set_result(None)
            else:
                stored = outcome
        del chunks  # the store's own reference is dropped once it wrote them: then the buffer is reused
        answer.stored = stored
        return answer

    def _discard(self, conn: Connection, nbytes: int, deadline: float) -> None:
        """Read and drop a refused body in 1 MiB pieces, keeping the connection in step."""
        scratch = memoryview(bytearray(min(nbytes, PIECE)))
        while nbytes > 0:
            k = min(nbytes, len(scratch))
            conn.read_into(scratch[:k], min(deadline, time.monotonic() + self.progress_timeout))
            nbytes -= k
