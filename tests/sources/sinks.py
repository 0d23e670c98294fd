"""Real sink plugins for the network-source tests (YAML: ``type: tests.sources.sinks:CollectSink``)."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Sequence
from typing import ClassVar

from logflume.chunk import Chunk
from logflume.settings import Optional, Setting, Str
from logflume.sink import Sink


class CollectSink(Sink):
    """Keeps every delivered chunk in memory; with ``gate`` (a file path) blocks until that file exists.

    A blocked sink never takes-and-commits, so a small memory channel fills up:
    the way to test a source's back-pressure.  With ``jsonl`` each chunk is also
    appended (metadata + data) to a file, for agents run as real processes.
    """

    settings: ClassVar[dict[str, Setting]] = {
        "gate": Setting(Optional(Str()), None, "Deliver only once this file exists"),
        "jsonl": Setting(Optional(Str()), None, "Append every chunk as one JSON line here"),
    }

    def configure(self) -> None:
        self.chunks: list[Chunk] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def writes(self) -> list[str]:
        return ["file:" + os.path.abspath(self.config.jsonl)] if self.config.jsonl else []

    def stop(self) -> None:
        self.stopping.set()

    def deliver(self, chunks: Sequence[Chunk]) -> None:
        gate = self.config.gate
        while gate and not os.path.exists(gate) and not self.stopping.is_set():
            time.sleep(0.02)
        with self.lock:
            self.chunks.extend(chunks)
        if self.config.jsonl:
            with open(self.config.jsonl, "a", encoding="utf-8") as fh:
                for c in chunks:
                    fh.write(json.dumps({**c.metadata(), "data": bytes(c.data).decode("utf-8", "replace")}) + "\n")

    def records(self, stream: str | None = None) -> list[bytes]:
        """Every record delivered so far (delimiters stripped), in delivery order."""
        with self.lock:
            chunks = list(self.chunks)
        return [bytes(r).rstrip(b"\n") for c in chunks if stream is None or c.stream == stream for r in c.records()]
