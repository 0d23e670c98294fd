"""A durable collecting sink for the tail tests (YAML: ``type: tests.tail.sinks:CollectingSink``).

Every delivered chunk is appended to ``path`` as ``[u32 meta length][meta JSON]
[u64 data length][data]`` and fsynced before ``deliver`` returns, so what the
file holds after a SIGKILL is exactly what the sink acknowledged.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from logflume.chunk import Chunk
from logflume.settings import Setting, Str
from logflume.sink import Sink
from logflume.source import SourceOutput

_META = struct.Struct(">I")
_DATA = struct.Struct(">Q")


def append_chunks(fd: int, chunks: Sequence[Chunk]) -> None:
    for c in chunks:
        meta = c.metadata_json()
        os.write(fd, _META.pack(len(meta)) + meta + _DATA.pack(len(c.data)))
        view = memoryview(c.data)
        while view:
            view = view[os.write(fd, view):]
    os.fsync(fd)


def read_chunks(path: str | Path) -> list[Chunk]:
    """Every complete chunk in the file (a record torn by a kill at the end is ignored)."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    out, pos = [], 0
    while pos + 4 <= len(raw):
        (mlen,) = _META.unpack_from(raw, pos)
        if pos + 4 + mlen + 8 > len(raw):
            break
        meta = raw[pos + 4:pos + 4 + mlen]
        (dlen,) = _DATA.unpack_from(raw, pos + 4 + mlen)
        start = pos + 12 + mlen
        if start + dlen > len(raw):
            break
        out.append(Chunk.from_metadata_json(meta, raw[start:start + dlen]))
        pos = start + dlen
    return out


class CollectingSink(Sink):
    settings: ClassVar[dict[str, Setting]] = {
        "path": Setting(Str(), doc="File the chunks are appended to"),
    }

    def writes(self) -> list[str]:
        return ["file:" + os.path.abspath(self.config.path)]

    def start(self) -> None:
        self.fd = os.open(self.config.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def stop(self) -> None:
        fd = getattr(self, "fd", None)
        if fd is not None:
            self.fd = None
            os.close(fd)

    def deliver(self, chunks: Sequence[Chunk]) -> None:
        append_chunks(self.fd, chunks)


class DurableFileOutput(SourceOutput):
    """A source output whose commit is an fsynced append: stands in for a durable channel."""

    def __init__(self, path: str | Path) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def deliver(self, chunks: Sequence[Chunk]) -> None:
        append_chunks(self.fd, chunks)
