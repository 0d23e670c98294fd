"""The chunk: the unit that moves from sources to stores (see docs/design.md).

A chunk carries up to ``chunk_size`` bytes of one stream, cut after a record
boundary, plus the metadata that identifies exactly which bytes they are:
``(source, stream, epoch, seq_id - len(data), seq_id)``.  That identity is what
lets every hop retry freely and lets archive drop duplicates.

The bytes are held as given (``bytes``, ``bytearray`` or ``memoryview``) and
never copied here; metadata travels beside them.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

Buffer = bytes | bytearray | memoryview

_NEWLINE = re.compile(b"\n")

#: Flag: the chunk's last record is incomplete and continues in the next chunk
#: of the same stream (a record longer than ``chunk_size`` was split).
FLAG_SPLIT = "split"
#: Flag: the chunk's last record had no delimiter when it was sent (a partial
#: record flushed after ``partial_timeout``, or a file that ends without one).
FLAG_PARTIAL = "partial"
#: Flag: a record was cut short by a size limit (e.g. syslog ``max_message_size``).
FLAG_TRUNCATED = "truncated"

METADATA_FIELDS = (
    "source",
    "stream",
    "datatype",
    "tags",
    "seq_id",
    "epoch",
    "record_ends",
    "timestamp",
    "flags",
)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class Chunk:
    source: str
    stream: str
    datatype: str
    seq_id: int
    epoch: str
    data: Buffer
    tags: dict[str, str] = field(default_factory=dict)
    record_ends: list[int] | None = None
    timestamp: int = field(default_factory=now_ms)
    flags: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.data)

    @property
    def start(self) -> int:
        """Stream offset of the chunk's first byte."""
        return self.seq_id - len(self.data)

    @property
    def key(self) -> tuple[str, str, str]:
        """The numbering space in which ``seq_id`` is strictly increasing."""
        return (self.source, self.stream, self.epoch)

    def metadata(self) -> dict[str, Any]:
        """Every field but ``data``, as plain JSON-able values."""
        meta: dict[str, Any] = {
            "source": self.source,
            "stream": self.stream,
            "datatype": self.datatype,
            "tags": dict(self.tags),
            "seq_id": self.seq_id,
            "epoch": self.epoch,
            "timestamp": self.timestamp,
        }
        if self.record_ends is not None:
            meta["record_ends"] = list(self.record_ends)
        if self.flags:
            meta["flags"] = list(self.flags)
        meta["length"] = len(self.data)
        return meta

    def metadata_json(self) -> bytes:
        """Compact JSON of :meth:`metadata`: the key of a sink-file record."""
        return json.dumps(self.metadata(), separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def from_metadata(cls, meta: dict[str, Any], data: Buffer) -> Chunk:
        """Rebuild a chunk from :meth:`metadata` output and its bytes.

        Raises ``ValueError`` naming the field when the metadata is malformed.
        """
        length = meta.get("length")
        if length is not None and length != len(data):
            raise ValueError(f"length {length} in metadata but {len(data)} data bytes")
        try:
            record_ends = meta.get("record_ends")
            return cls(
                source=str(meta["source"]),
                stream=str(meta["stream"]),
                datatype=str(meta.get("datatype", "")),
                seq_id=int(meta["seq_id"]),
                epoch=str(meta.get("epoch", "")),
                data=data,
                tags={str(k): str(v) for k, v in (meta.get("tags") or {}).items()},
                record_ends=[int(x) for x in record_ends] if record_ends is not None else None,
                timestamp=int(meta.get("timestamp", 0)),
                flags=[str(f) for f in (meta.get("flags") or [])],
            )
        except KeyError as exc:
            raise ValueError(f"chunk metadata lacks field {exc.args[0]!r}") from None
        except (TypeError, AttributeError, ValueError) as exc:
            raise ValueError(f"malformed chunk metadata: {exc}") from None

    @classmethod
    def from_metadata_json(cls, raw: Buffer, data: Buffer) -> Chunk:
        try:
            meta = json.loads(bytes(raw))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"chunk metadata is not JSON: {exc}") from None
        if not isinstance(meta, dict):
            raise ValueError("chunk metadata is not a JSON object")
        return cls.from_metadata(meta, data)

    def record_spans(self) -> Iterator[tuple[int, int]]:
        """(start, end) of each record, relative to the chunk.

        Uses ``record_ends`` when present, else newline ends; a trailing piece
        without a newline counts as a record (a partial or split one).
        """
        n = len(self.data)
        if self.record_ends is not None:
            prev = 0
            for end in self.record_ends:
                if prev < end <= n:
                    yield prev, end
                    prev = end
            if prev < n:
                yield prev, n
            return
        if isinstance(self.data, (bytes, bytearray)):
            prev = 0
            while prev < n:
                nl = self.data.find(b"\n", prev)
                end = n if nl < 0 else nl + 1
                yield prev, end
                prev = end
            return
        # A memoryview has no find(); the re module scans any buffer without copying it.
        prev = 0
        for m in _NEWLINE.finditer(self.data):
            yield prev, m.end()
            prev = m.end()
        if prev < n:
            yield prev, n

    def records(self) -> Iterator[memoryview]:
        """Each record as a zero-copy view (delimiters included)."""
        mv = memoryview(self.data)
        for start, end in self.record_spans():
            yield mv[start:end]


def runs_within(chunks: Sequence[Chunk], limit: int) -> list[Sequence[Chunk]]:
    """Consecutive runs of ``chunks`` whose bytes add up to at most ``limit``, in order.

    A chunk bigger than ``limit`` goes alone.  Used wherever a batch must be cut
    to fit something: a channel's capacity (one transaction), a frame's size.
    """
    if sum(len(c) for c in chunks) <= limit:
        return [chunks]
    runs: list[Sequence[Chunk]] = []
    run: list[Chunk] = []
    size = 0
    for c in chunks:
        if run and size + len(c) > limit:
            runs.append(run)
            run, size = [], 0
        run.append(c)
        size += len(c)
    if run:
        runs.append(run)
    return runs
