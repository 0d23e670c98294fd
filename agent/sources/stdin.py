"""StdinSource: the agent's standard input as one stream (``cmd | logflume agent -c ...``).

There is no offset to resume from, so every run is a new epoch; the agent
stops reading at EOF (and keeps running so its sinks can drain).
"""

from __future__ import annotations

import sys
import time
from typing import ClassVar

from logflume.chunking import RecordChunker, pump
from logflume.settings import Duration, Setting, Size, Str
from logflume.source import ThreadedSource


class StdinSource(ThreadedSource):
    settings: ClassVar[dict[str, Setting]] = {
        "stream": Setting(Str(), "stdin", "Stream name of the chunks"),
        "chunk_size": Setting(Size(min=1), "64MiB", "Largest chunk"),
        "flush_interval": Setting(Duration(), "500ms", "Send what was read after this long even if the chunk is small"),
        "caught_up_flush": Setting(Duration(), "20ms",
                                   "Once the pipe is drained, send complete records at the latest this long after "
                                   "the first unsent byte (0: off, only flush_interval)"),
        "partial_timeout": Setting(Duration(), "5s", "Send a record still missing its delimiter after this long"),
    }

    def run(self) -> None:
        chunker = RecordChunker(
            source=self.context.agent_name, stream=self.config.stream, datatype=self.config.datatype,
            tags=self.config.tags, epoch=f"stdin-{time.time_ns()}", chunk_size=self.config.chunk_size,
            flush_interval=self.config.flush_interval, partial_timeout=self.config.partial_timeout,
            caught_up_flush=self.config.caught_up_flush,
        )
        n = pump(sys.stdin.fileno(), chunker, self._deliver, self.stopping.is_set)
        self.log.info("stdin closed after %d bytes", n)

    def _deliver(self, chunks: list) -> None:
        if chunks:
            self.output.deliver(chunks)
            self.metrics.chunks_out.inc(len(chunks))
            self.metrics.bytes_out.inc(sum(len(c) for c in chunks))
