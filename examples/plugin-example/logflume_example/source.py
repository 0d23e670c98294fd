"""GreetingSource: records that arrive whole, made into chunks by the public chunker."""

from __future__ import annotations

from typing import ClassVar

from logflume.chunking import EventStreams
from logflume.settings import Int, Setting, Str
from logflume.source import ThreadedSource


class GreetingSource(ThreadedSource):
    """Emits ``count`` greeting lines as records of the stream ``greetings``."""

    settings: ClassVar[dict[str, Setting]] = {
        "greeting": Setting(Str(), "hello", "Text of each line"),
        "count": Setting(Int(min=1), 3, "How many lines"),
    }

    def run(self) -> None:
        # EventStreams numbers the stream (epoch, seq_id) through a ledger in this source's state
        # dir, so a restart never reuses a number; it cuts chunks at chunk_size/flush_interval and
        # hands each to output.deliver, which returns once the chunk is committed to every channel.
        streams = EventStreams.for_source(self, self.output.deliver)
        for i in range(self.config.count):
            if self.stopping.is_set():
                break
            streams.add("greetings", f"{self.config.greeting} {i}\n".encode())
        streams.flush()
