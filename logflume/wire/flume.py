"""Flume-ThriftSource-compatible endpoint: ``append`` / ``appendBatch`` -> chunks (headers = tags, bodies = records).

Speaks what Flume's ThriftSource speaks (framed transport; compact protocol,
Flume's default, and binary, both on the one port: each call is told apart by
its first byte and answered in its own protocol), so Flume's ThriftRpcClient
and any Thrift-generated client ship to logflume unchanged, whichever protocol
they are configured for.  Consecutive events with
the same headers go into one chunk; the call is answered OK only after
``deliver`` returned (durable), FAILED when it could not be stored.

Authentication: a client with no client certificate sends its token in the
event header ``logflume-token`` (Flume's ``static`` interceptor adds it to
every event; ``RpcClient`` users put it in the headers map).  The header is
removed before the headers become tags.  Flume's own Thrift RPC client
speaks TLS (``ssl = true`` with a truststore), which ``flume_tls`` serves.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from logflume.chunk import Chunk
from logflume.chunking import StreamLedger
from logflume.wire.identity import Authenticator
from logflume.wire.idl import flume_thrift
from logflume.wire.thrift_service import Peer, Refused, ThriftServiceEndpoint, deliver_call

FlumeStatus = flume_thrift.Status
#: Event header that carries a Flume client's token (removed from the chunk's tags).
TOKEN_HEADER = "logflume-token"


def _text(v: bytes | str | None) -> str:
    if v is None:
        return ""
    return v.decode("utf-8", "replace") if isinstance(v, (bytes, bytearray)) else v


class _FlumeHandler:
    def __init__(self, ledger: StreamLedger, source: str, stream: str, datatype: str, tags: dict[str, str],
                 deliver: Callable[[Sequence[Chunk]], None], log: logging.Logger) -> None:
        self.ledger, self.source, self.stream, self.datatype, self.tags = ledger, source, stream, datatype, tags
        self.deliver, self.log = deliver, log

    def _chunk(self, records: list[bytes], headers: dict[str, str] | None) -> Chunk:
        return self.ledger.records_chunk(source=self.source, stream=self.stream, datatype=self.datatype,
                                         tags={**self.tags, **(headers or {})}, records=records)

    def append(self, event: object, *, peer: Peer) -> int:
        return self.appendBatch([event], peer=peer)

    def appendBatch(self, events: list | None, *, peer: Peer) -> int:  # noqa: N802 - the Thrift method name
        if not events:
            return FlumeStatus.OK
        chunks: list[Chunk] = []
        run: list[bytes] = []
        run_tags: dict[str, str] | None = None
        tokens: set[str | None] = set()
        for ev in events:
            tags = {_text(k): _text(v) for k, v in (ev.headers or {}).items()}
            tokens.add(tags.pop(TOKEN_HEADER, None))
            body = ev.body if isinstance(ev.body, bytes) else _text(ev.body).encode() if ev.body is not None else b""
            if run and tags != run_tags:
                chunks.append(self._chunk(run, run_tags))
                run = []
            run.append(body)
            run_tags = tags
        chunks.append(self._chunk(run, run_tags))
        if len(tokens) != 1:
            raise Refused(f"authentication failed: events of one call carry different {TOKEN_HEADER} headers")
        token = tokens.pop()
        if peer.needs_token and not token:
            raise Refused(f"authentication failed: missing {TOKEN_HEADER} header (or client certificate)")
        sender = peer.identity(token.encode() if token and peer.needs_token else None).name
        return deliver_call(self.deliver, chunks, sender, codes=FlumeStatus, busy="FAILED",
                            what=f"flume: {len(events)} events", log=self.log)


class FlumeEndpoint(ThriftServiceEndpoint):
    name = "flume"

    def __init__(
        self,
        deliver: Callable[[Sequence[Chunk]], None],
        *,
        source: str,
        stream: str = "flume",
        datatype: str = "Raw",
        tags: dict[str, str] | None = None,
        max_frame_size: int = 16 * 1024 * 1024,
        idle_timeout: float = 60.0,
        frame_timeout: float = 30.0,
        authenticator: Authenticator | None = None,
        log: logging.Logger | None = None,
    ) -> None:
        log = log or logging.getLogger("logflume.wire.flume")
        #: Events carry no offsets: each start of the endpoint is a new epoch of every stream.
        self.ledger = StreamLedger(None)
        handler = _FlumeHandler(self.ledger, source, stream, datatype, dict(tags or {}), deliver, log)
        super().__init__(flume_thrift.ThriftSourceProtocol, handler,
                         protocols=("compact", "binary"), max_frame_size=max_frame_size, idle_timeout=idle_timeout,
                         frame_timeout=frame_timeout, authenticator=authenticator, log=log)
