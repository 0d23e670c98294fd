"""A small durable store for collector tests: SequenceFiles in a directory, fsynced per batch.

Used as ``store: {type: tests.collector.store_plugin:SeqDirStore, dir: ...}``
until (and besides) the real BufferStore, so the collector's ack can be
checked against bytes really on disk.  ``delay`` slows every batch (to build
a queue: TRY_LATER tests); while ``fail_file`` exists every batch fails.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from logflume.chunk import Chunk
from logflume.errors import DeliveryError
from logflume.sequencefile import SequenceFileReader, SequenceFileWriter, TruncatedFileError
from logflume.settings import Duration, Optional, Setting, Str
from logflume.sink import Sink


class SeqDirStore(Sink):
    settings: ClassVar[dict[str, Setting]] = {
        "dir": Setting(Str(), doc="Directory for the .seq files"),
        "delay": Setting(Duration(), "0s", "Sleep this long per batch"),
        "fail_file": Setting(Optional(Str()), None, "While this file exists, every batch fails"),
    }

    def configure(self) -> None:
        self._f = None
        self._w: SequenceFileWriter | None = None

    def start(self) -> None:
        d = Path(self.config.dir)
        d.mkdir(parents=True, exist_ok=True)
        path = d / f"store-{os.getpid()}-{time.time_ns()}.seq"
        self._f = open(path, "wb")
        self._w = SequenceFileWriter(self._f)
        self._f.flush()
        os.fsync(self._f.fileno())

    def deliver(self, chunks: Sequence[Chunk]) -> None:
        if self.config.fail_file and os.path.exists(self.config.fail_file):
            raise DeliveryError("store failing on purpose (fail_file exists)")
        if self.config.delay:
            time.sleep(self.config.delay)
        assert self._w is not None and self._f is not None
        for c in chunks:
            self._w.append_chunk(c)
        self._w.flush()
        os.fsync(self._f.fileno())

    def flush(self) -> None:
        if self._w is not None:
            self._w.flush()

    def stop(self) -> None:
        if self._w is not None:
            self._w.close()
            self._w = None
        if self._f is not None:
            self._f.close()
            self._f = None


def read_store(directory: str | os.PathLike[str]) -> list[Chunk]:
    """Every chunk in every .seq file of ``directory`` (a torn tail from a killed process is skipped)."""
    out: list[Chunk] = []
    for path in sorted(Path(directory).glob("*.seq")):
        with open(path, "rb") as f:
            try:
                out.extend(SequenceFileReader(f).iter_chunks())
            except TruncatedFileError:
                pass
    return out


def records(chunks: Sequence[Chunk]) -> list[bytes]:
    """All records of all chunks, as bytes."""
    return [bytes(r) for c in chunks for r in c.records()]
