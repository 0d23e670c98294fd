"""NullSink: accepts and discards everything (benchmarks, tests, deliberately dropped streams)."""

from __future__ import annotations

from collections.abc import Sequence

from logflume.chunk import Chunk
from logflume.sink import Sink


class NullSink(Sink):
    def deliver(self, chunks: Sequence[Chunk]) -> None:
        self.metrics.chunks_in.inc(len(chunks))
        self.metrics.bytes_in.inc(sum(len(c) for c in chunks))
