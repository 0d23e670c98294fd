"""Flume-ThriftSource-compatible endpoint: ``append`` / ``appendBatch`` -> chunks (headers = tags, bodies = records).

Speaks what Flume's ThriftSource speaks (framed transport, compact protocol by
default, binary as an option), so Flume's ThriftRpcClient and any
Thrift-generated client ship to logflume unchanged.  Consecutive events with
the same headers go into one chunk; the call is answered OK only after
``deliver`` returned (durable), FAILED when it could not be stored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from logflume.chunk import Chunk
from logflume.errors import ChannelClosed, TryLater
from logflume.wire.events import EventChunker
from logflume.wire.idl import flume_thrift
from logflume.wire.thrift_service import ThriftServiceEndpoint

FlumeStatus = flume_thrift.Status


def _text(v: bytes | str | None) -> str:
    if v is None:
        return ""
    return v.decode("utf-8", "replace") if isinstance(v, (bytes, bytearray)) else v


class _FlumeHandler:
    def __init__(self, chunker: EventChunker, stream: str, deliver: Callable[[Sequence[Chunk]], None],
                 log: logging.Logger) -> None:
        self.chunker, self.stream, self.deliver, self.log = chunker, stream, deliver, log

    def append(self, event: object) -> int:
        return self.appendBatch([event])

    def appendBatch(self, events: list | None) -> int:  # noqa: N802 - the Thrift method name
        if not events:
            return FlumeStatus.OK
        chunks: list[Chunk] = []
        run: list[bytes] = []
        run_tags: dict[str, str] | None = None
        for ev in events:
            tags = {_text(k): _text(v) for k, v in (ev.headers or {}).items()}
            body = ev.body if isinstance(ev.body, bytes) else _text(ev.body).encode() if ev.body is not None else b""
            if run and tags != run_tags:
                chunks.append(self.chunker.chunk(self.stream, run, run_tags))
                run = []
            run.append(body)
            run_tags = tags
        chunks.append(self.chunker.chunk(self.stream, run, run_tags))
        try:
            self.deliver(chunks)
        except (TryLater, ChannelClosed):
            return FlumeStatus.FAILED
        except Exception as exc:
            self.log.error("flume: %d events not stored, answered FAILED: %s", len(events), exc)
            return FlumeStatus.FAILED
        return FlumeStatus.OK


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
        protocol: str = "compact",
        max_frame_size: int = 16 * 1024 * 1024,
        idle_timeout: float = 60.0,
        frame_timeout: float = 30.0,
        log: logging.Logger | None = None,
    ) -> None:
        log = log or logging.getLogger("logflume.wire.flume")
        self.chunker = EventChunker(source, datatype, tags)
        super().__init__(flume_thrift.ThriftSourceProtocol, _FlumeHandler(self.chunker, stream, deliver, log),
                         protocol=protocol, max_frame_size=max_frame_size, idle_timeout=idle_timeout,
                         frame_timeout=frame_timeout, log=log)
