"""Example third-party plugins: exactly what the README's plugin guide shows."""

import os
from typing import ClassVar

from logflume.chunk import Chunk
from logflume.settings import Int, Setting, Str
from logflume.sink import Sink
from logflume.source import ThreadedSource


class HelloSource(ThreadedSource):
    """Emits `count` greeting lines, one chunk per line."""

    settings: ClassVar[dict[str, Setting]] = {
        "greeting": Setting(Str(), "hello", "Text of each line"),
        "count": Setting(Int(min=1), 3, "How many lines"),
    }

    def run(self) -> None:
        offset = 0
        for i in range(self.config.count):
            if self.stopping.is_set():
                return
            data = f"{self.config.greeting} {i}\n".encode()
            offset += len(data)
            self.output.deliver([Chunk(self.context.agent_name, "hello", self.config.datatype, offset, "run-1", data)])


class UpperFileSink(Sink):
    """Appends the records upper-cased to a local file, fsynced before acknowledging."""

    settings: ClassVar[dict[str, Setting]] = {"path": Setting(Str(), doc="Output file")}

    def deliver(self, chunks):
        with open(self.config.path, "ab") as f:
            for chunk in chunks:
                f.write(bytes(chunk.data).upper())
            f.flush()
            os.fsync(f.fileno())
