"""Scribe-compatible endpoint: ``scribe.Log(list<LogEntry>)`` -> chunks (category = stream, messages = records).

Speaks exactly what scribed speaks (framed transport, binary protocol, strict
or non-strict message headers), so ``scribe_cat`` and the old Python loggers
ship to logflume unchanged.  A whole call becomes one chunk per category and
is answered OK only after ``deliver`` returned (durable); when ``deliver``
asks to back off, or fails, the call is refused with TRY_LATER, as Scribe does.

Authentication: Scribe carries nothing but categories and messages, so a
client that has no client certificate shows its token as a category prefix,
``TOKEN:category`` (``scribe_cat host:1463 "$TOKEN:app"``); the prefix is
removed before the category becomes the stream.  Every entry of a call must
carry the same token.  An endpoint with no credentials configured takes the
categories as they are and names the client by its address.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from logflume.chunk import Chunk
from logflume.chunking import StreamLedger
from logflume.wire.identity import Authenticator
from logflume.wire.idl import scribe_thrift
from logflume.wire.thrift_service import Peer, Refused, ThriftServiceEndpoint, deliver_call

ResultCode = scribe_thrift.ResultCode


def _text(v: bytes | str | None) -> str:
    if v is None:
        return ""
    return v.decode("utf-8", "replace") if isinstance(v, (bytes, bytearray)) else v


def _raw(v: bytes | str | None) -> bytes:
    if v is None:
        return b""
    return v.encode() if isinstance(v, str) else bytes(v)


class _ScribeHandler:
    def __init__(self, ledger: StreamLedger, source: str, datatype: str, tags: dict[str, str],
                 deliver: Callable[[Sequence[Chunk]], None], log: logging.Logger) -> None:
        self.ledger, self.source, self.datatype, self.tags = ledger, source, datatype, tags
        self.deliver, self.log = deliver, log

    def Log(self, messages: list | None, *, peer: Peer) -> int:  # noqa: N802 - the Thrift method name
        if not messages:
            return ResultCode.OK
        categories = [_raw(m.category) for m in messages]
        token: bytes | None = None
        if peer.needs_token:
            token = categories[0].partition(b":")[0]
            for i, cat in enumerate(categories):
                given, sep, rest = cat.partition(b":")
                if not sep or given != token:
                    raise Refused("authentication failed: every category must start with the same TOKEN:")
                categories[i] = rest
        sender = peer.identity(token).name
        # One chunk per category, its messages in arrival order.
        by_category: dict[str, list[bytes]] = {}
        for c, m in zip(categories, messages, strict=True):
            by_category.setdefault(_text(c), []).append(_raw(m.message))
        chunks = [self.ledger.records_chunk(source=self.source, stream=stream, datatype=self.datatype, tags=self.tags,
                                            records=records) for stream, records in by_category.items()]
        return deliver_call(self.deliver, chunks, sender, codes=ResultCode, busy="TRY_LATER",
                            what=f"scribe: {len(messages)} messages", log=self.log)


class ScribeEndpoint(ThriftServiceEndpoint):
    name = "scribe"

    def __init__(
        self,
        deliver: Callable[[Sequence[Chunk]], None],
        *,
        source: str,
        datatype: str = "Raw",
        tags: dict[str, str] | None = None,
        max_frame_size: int = 16 * 1024 * 1024,
        idle_timeout: float = 60.0,
        frame_timeout: float = 30.0,
        authenticator: Authenticator | None = None,
        log: logging.Logger | None = None,
    ) -> None:
        log = log or logging.getLogger("logflume.wire.scribe")
        #: Messages carry no offsets: each start of the endpoint is a new epoch of every stream.
        self.ledger = StreamLedger(None)
        handler = _ScribeHandler(self.ledger, source, datatype, dict(tags or {}), deliver, log)
        super().__init__(scribe_thrift.scribe, handler, protocols=("binary",),
                         max_frame_size=max_frame_size, idle_timeout=idle_timeout,
                         frame_timeout=frame_timeout, authenticator=authenticator, log=log)
