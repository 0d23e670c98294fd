"""Running a TailSource in-process with a real collecting output, and checking what it delivered."""

from __future__ import annotations

import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

from agent.sources.tail import TailSource
from logflume.chunk import Chunk
from logflume.component import Context
from logflume.metrics import Metrics
from logflume.settings import parse_settings
from logflume.source import SourceOutput
from tests.conftest import wait_for  # noqa: F401 - re-exported to the tail tests


class CollectingOutput(SourceOutput):
    """Commits by keeping the chunks (copied, as a channel would own them)."""

    def __init__(self) -> None:
        self.chunks: list[Chunk] = []
        self.lock = threading.Lock()

    def deliver(self, chunks) -> None:
        with self.lock:
            for c in chunks:
                c.data = bytes(c.data)
                self.chunks.append(c)

    def snapshot(self) -> list[Chunk]:
        with self.lock:
            return list(self.chunks)


def make_source(tmp_path: Path, raw: dict[str, Any], name: str = "t") -> TailSource:
    raw = {"channels": ["ch"], **raw}
    values = parse_settings(TailSource.schema(), raw, f"sources.{name}", None)
    ctx = Context(agent_name="testhost", data_dir=tmp_path / "data", metrics=Metrics())
    return TailSource(name, values, ctx)


class Running:
    def __init__(self, source: TailSource, output: CollectingOutput) -> None:
        self.source, self.output = source, output

    def stream_bytes(self, stream: str | Path, from_zero: bool = True) -> bytes:
        return assemble(self.output.snapshot(), str(stream), from_zero)

    def metric(self, name: str) -> float:
        return self.source.context.metrics.value(name, kind="source", component=self.source.name)


def start(tmp_path: Path, raw: dict[str, Any], name: str = "t") -> Running:
    src = make_source(tmp_path, raw, name)
    out = CollectingOutput()
    src.start(out)
    return Running(src, out)


def by_epoch(chunks: list[Chunk], stream: str) -> dict[str, list[Chunk]]:
    """Chunks of one stream grouped by epoch, each group in delivery order."""
    groups: dict[str, list[Chunk]] = defaultdict(list)
    for c in chunks:
        if c.stream == stream:
            groups[c.epoch].append(c)
    return groups


def epoch_bytes(chunks: list[Chunk], from_zero: bool = True) -> bytes:
    """The bytes of one epoch placed by seq_id: overlaps must agree, gaps are errors.

    ``from_zero=False`` allows the epoch to begin later (start_at: end, or a resume).
    """
    buf = bytearray()
    ordered = sorted(chunks, key=lambda c: (c.start, c.seq_id))
    base = 0 if from_zero or not ordered else ordered[0].start
    for c in ordered:
        data = bytes(c.data)
        c_start, c_end = c.start - base, c.seq_id - base
        if c_start > len(buf):
            raise AssertionError(f"gap in epoch {c.epoch}: bytes {len(buf) + base}..{c.start} missing")
        overlap = min(len(buf), c_end) - c_start
        if overlap > 0 and bytes(buf[c_start:c_start + overlap]) != data[:overlap]:
            raise AssertionError(f"epoch {c.epoch}: duplicate range {c.start}..{c.start + overlap} differs")
        buf += data[max(overlap, 0):]
    return bytes(buf)


def assemble(chunks: list[Chunk], stream: str, from_zero: bool = True) -> bytes:
    """All bytes of a stream: its epochs in order of first delivery, each deduplicated by seq_id."""
    groups = by_epoch(chunks, stream)
    return b"".join(epoch_bytes(g, from_zero) for g in groups.values())


