"""Small real plugins used by the core tests (named in YAML as tests.core.plugins:Class)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import ClassVar

from logflume.chunk import Chunk
from logflume.errors import DeliveryError, TryLater
from logflume.settings import Int, ListOf, Setting, Size, Str
from logflume.sink import Sink
from logflume.source import ThreadedSource


class CountingSource(ThreadedSource):
    """Emits ``count`` numbered lines in chunks of ``lines_per_chunk``; optional ``reads`` for loop tests."""

    settings: ClassVar[dict[str, Setting]] = {
        "count": Setting(Int(min=0), 100),
        "lines_per_chunk": Setting(Int(min=1), 10),
        "stream": Setting(Str(), "numbers"),
        "reads_from": Setting(ListOf(Str()), []),
        "line_pad": Setting(Size(), 0),
    }

    def reads(self) -> list[str]:
        return list(self.config.reads_from)

    def run(self) -> None:
        offset = 0
        i = 0
        while i < self.config.count and not self.stopping.is_set():
            lines = []
            for _ in range(self.config.lines_per_chunk):
                if i >= self.config.count:
                    break
                lines.append(f"line {i:08d}".ljust(self.config.line_pad or 0, "x") + "\n")
                i += 1
            data = "".join(lines).encode()
            offset += len(data)
            self.output.deliver([Chunk(self.context.agent_name, self.config.stream, self.config.datatype,
                                       offset, "e1", data)])
        self.done = True
        self.log.info("counting source %s done: %d lines", self.name, i)


class FlakySink(Sink):
    """Fails the first ``failures`` deliveries (every other one a TRY_LATER), then records batches in memory."""

    settings: ClassVar[dict[str, Setting]] = {"failures": Setting(Int(min=0), 3)}

    def configure(self) -> None:
        self.attempts = 0
        self.delivered: list[Chunk] = []
        self.attempt_times: list[float] = []
        self.lock = threading.Lock()

    def deliver(self, chunks: Sequence[Chunk]) -> None:
        with self.lock:
            self.attempts += 1
            self.attempt_times.append(time.monotonic())
            if self.attempts <= self.config.failures:
                if self.attempts % 2:
                    raise DeliveryError("next hop down")
                raise TryLater("busy", delay=0.05)
            self.delivered.extend(chunks)


class FailingSource(ThreadedSource):
    """Raises in ``run`` the first ``failures`` times (after delivering one chunk each time), then delivers a last
    chunk and returns; ``runs`` counts the calls."""

    settings: ClassVar[dict[str, Setting]] = {"failures": Setting(Int(min=0), 1)}

    def configure(self) -> None:
        self.runs = 0

    def run(self) -> None:
        self.runs += 1
        data = f"run {self.runs}\n".encode()
        self.output.deliver([Chunk(source=self.context.agent_name, stream="runs", datatype="Raw", seq_id=self.runs,
                                   epoch="e", data=data, record_ends=[len(data)])])
        if self.runs <= self.config.failures:
            raise RuntimeError(f"failure {self.runs}")
