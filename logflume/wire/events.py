"""Turning event-style messages (Scribe log entries, Flume events) into chunks.

Events carry no offsets of their own, so the endpoint numbers them: each
stream gets a byte counter, and the endpoint's epoch (its start time plus a
random part) names that numbering, as the design says for event sources.
``seq_id`` is strictly increasing per (source, stream, epoch) even with many
connections delivering at once.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Sequence

from logflume.chunk import Chunk, now_ms


class EventChunker:
    def __init__(self, source: str, datatype: str, tags: dict[str, str] | None = None) -> None:
        self.source = source
        self.datatype = datatype
        self.tags = dict(tags or {})
        self.epoch = f"{now_ms()}-{os.urandom(4).hex()}"
        self._offsets: dict[str, int] = {}
        self._lock = threading.Lock()

    def chunk(self, stream: str, records: Sequence[bytes], tags: dict[str, str] | None = None) -> Chunk:
        """One chunk holding ``records`` (small messages: joined once, with ``record_ends``)."""
        ends: list[int] = []
        pos = 0
        for r in records:
            pos += len(r)
            ends.append(pos)
        data = b"".join(records)
        with self._lock:
            seq = self._offsets.get(stream, 0) + len(data)
            self._offsets[stream] = seq
        merged = dict(self.tags)
        if tags:
            merged.update(tags)
        return Chunk(source=self.source, stream=stream, datatype=self.datatype, seq_id=seq, epoch=self.epoch,
                     data=data, tags=merged, record_ends=ends)

    def by_stream(self, items: Iterable[tuple[str, bytes]]) -> list[Chunk]:
        """One chunk per stream, records in arrival order (Scribe: one chunk per category per call)."""
        groups: dict[str, list[bytes]] = {}
        for stream, record in items:
            groups.setdefault(stream, []).append(record)
        return [self.chunk(stream, records) for stream, records in groups.items()]
