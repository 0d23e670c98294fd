"""Example third-party plugins: exactly what the README's plugin guide shows."""

import os
from typing import ClassVar

from logflume.chunking import EventStreams
from logflume.settings import Int, Setting, Str
from logflume.sink import Sink
from logflume.source import ThreadedSource


class HelloSource(ThreadedSource):
    """Emits `count` greeting lines as records of the stream "hello"."""

    settings: ClassVar[dict[str, Setting]] = {
        "greeting": Setting(Str(), "hello", "Text of each line"),
        "count": Setting(Int(min=1), 3, "How many lines"),
    }

    def run(self) -> None:
        # The public chunker numbers each stream (seq_id, epoch) through a ledger in the source's
        # state dir, so a restart never reuses numbers; it cuts chunks at chunk_size/flush_interval
        # and hands them to output.deliver, which returns once they are committed to every channel.
        streams = EventStreams.for_source(self, self.output.deliver)
        for i in range(self.config.count):
            if self.stopping.is_set():
                break
            streams.add("hello", f"{self.config.greeting} {i}\n".encode())
        streams.flush()


class UpperFileSink(Sink):
    """Appends the records upper-cased to a local file, fsynced before acknowledging."""

    settings: ClassVar[dict[str, Setting]] = {"path": Setting(Str(), doc="Output file")}

    def deliver(self, chunks):
        with open(self.config.path, "ab") as f:
            for chunk in chunks:
                f.write(bytes(chunk.data).upper())
            f.flush()
            os.fsync(f.fileno())
