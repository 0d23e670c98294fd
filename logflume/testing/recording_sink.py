"""A sink that records what it is given, for tests of sources, channels and the agent.

Name it in a config as ``type: logflume.testing.recording_sink:RecordingSink``.
Without ``path`` it keeps the chunks in memory (``sink.chunks``, ``sink.records()``),
for an agent run in the test's own process.  With ``path`` it appends each chunk
to that file and fsyncs before ``deliver`` returns, so what the file holds after a
SIGKILL is exactly what the sink acknowledged; :func:`read_chunks` reads it back,
for an agent run as a real process.  ``gate`` holds deliveries back (a sink that
never commits fills its channel: the way to test back-pressure) and ``delay``
makes a slow next hop.

The file is ``[u32 metadata length][metadata JSON][u64 data length][data]`` per
chunk, big-endian: the chunk comes back byte for byte, tags and flags included.
"""

from __future__ import annotations

import os
import struct
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from logflume.chunk import Chunk
from logflume.errors import DeliveryError
from logflume.settings import Duration, Optional, Setting, Str
from logflume.sink import Sink

__all__ = ["RecordingSink", "append_chunks", "open_chunk_file", "read_chunks"]

_META = struct.Struct(">I")
_DATA = struct.Struct(">Q")


def append_chunks(fd: int, chunks: Sequence[Chunk]) -> None:
    """Append ``chunks`` to the open file ``fd`` in the format :func:`read_chunks` reads, then fsync."""
    for c in chunks:
        meta = c.metadata_json()
        os.write(fd, _META.pack(len(meta)) + meta + _DATA.pack(len(c.data)))
        view = memoryview(c.data)
        while view:
            view = view[os.write(fd, view):]
    os.fsync(fd)


def read_chunks(path: str | Path) -> list[Chunk]:
    """Every complete chunk in the file (a chunk torn by a kill at the end is left out); none if it is missing."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    return _parse(raw)[0]


def open_chunk_file(path: str | Path) -> int:
    """Open the file for :func:`append_chunks`, first cutting off a chunk torn by a kill at its end.

    A SIGKILL can stop a write part-way (Linux returns a short write on a fatal signal) or between a
    chunk's header and its data; a chunk appended after such a tail would be read as the torn chunk's
    data, and every chunk after it lost to the reader.  The torn chunk was never acknowledged, so its
    sender sends it again, as to any durable channel.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    size = os.fstat(fd).st_size
    if size:
        end = _parse(os.pread(fd, size, 0))[1]
        if end < size:
            os.ftruncate(fd, end)
            os.fsync(fd)
    return fd


def _parse(raw: bytes) -> tuple[list[Chunk], int]:
    """The complete chunks in ``raw`` and where the last of them ends."""
    out, pos = [], 0
    while pos + _META.size <= len(raw):
        (mlen,) = _META.unpack_from(raw, pos)
        if pos + _META.size + mlen + _DATA.size > len(raw):
            break
        meta = raw[pos + _META.size:pos + _META.size + mlen]
        (dlen,) = _DATA.unpack_from(raw, pos + _META.size + mlen)
        start = pos + _META.size + mlen + _DATA.size
        if start + dlen > len(raw):
            break
        out.append(Chunk.from_metadata_json(meta, raw[start:start + dlen]))
        pos = start + dlen
    return out, pos


class RecordingSink(Sink):
    """Records every delivered chunk: in memory, or durably in ``path``."""

    settings: ClassVar[dict[str, Setting]] = {
        "path": Setting(Optional(Str()), None, "Append every chunk to this file (fsynced) instead of memory"),
        "gate": Setting(Optional(Str()), None, "Deliver only once this file exists"),
        "delay": Setting(Duration(), 0, "Sleep this long per delivery (a slow next hop)"),
    }

    def configure(self) -> None:
        self.chunks: list[Chunk] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.fd: int | None = None

    def writes(self) -> list[str]:
        return ["file:" + os.path.abspath(self.config.path)] if self.config.path else []

    def start(self) -> None:
        if self.config.path:
            self.fd = open_chunk_file(self.config.path)

    def stop(self) -> None:
        self.stopping.set()
        with self.lock:  # not while a delivery writes
            fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)

    def deliver(self, chunks: Sequence[Chunk]) -> None:
        gate = self.config.gate
        while gate and not os.path.exists(gate) and not self.stopping.is_set():
            time.sleep(0.02)
        time.sleep(self.config.delay)
        with self.lock:
            if not self.config.path:
                self.chunks.extend(chunks)
            elif self.fd is None:
                raise DeliveryError(f"sink {self.name} is stopped")
            else:
                append_chunks(self.fd, chunks)

    def records(self, stream: str | None = None) -> list[bytes]:
        """Every record kept in memory so far (delimiters stripped), in delivery order."""
        with self.lock:
            chunks = list(self.chunks)
        return [bytes(r).rstrip(b"\n") for c in chunks if stream is None or c.stream == stream for r in c.records()]
