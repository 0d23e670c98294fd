"""The chunk: the unit that moves from sources to stores (see docs/design.md).

A chunk carries up to ``chunk_size`` bytes of one stream, cut after a record
boundary, plus the metadata that identifies exactly which bytes they are:
``(source, stream, epoch, seq_id - len(data), seq_id)``.  That identity is what
lets every hop retry freely and lets archive drop duplicates.

The bytes are held as given (``bytes``, ``bytearray`` or ``memoryview``) and
never copied here; metadata travels beside them.
"""

from __future__ import annotations

import bisect
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


#: Bounds on metadata that every hop can store and every job can partition by.  A chunk
#: outside them is refused by collectors and set aside (``_errors``) by jobs, never
#: allowed to stop a pipeline.  Timestamps: 1970-01-01 up to 2100-01-01 (ms).
MAX_TIMESTAMP_MS = 4_102_444_800_000
MAX_SOURCE_LEN = 255
MAX_DATATYPE_LEN = 128
MAX_STREAM_LEN = 4096
MAX_EPOCH_LEN = 256
MAX_TAGS = 64
MAX_TAG_KEY_LEN = 128
MAX_TAG_VALUE_LEN = 1024
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@+=-]*\Z")
_TAG_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:@+=/-]*\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _newline_before(data: Buffer, lo: int, hi: int) -> int:
    """Position after the last newline in ``data[lo:hi]``; 0 if there is none."""
    if isinstance(data, (bytes, bytearray)):
        return data.rfind(b"\n", lo, hi) + 1
    view = memoryview(data)
    window = 64 * 1024
    while hi > lo:  # a memoryview has no rfind: look back window by window (records are rarely long)
        start = max(lo, hi - window)
        at = bytes(view[start:hi]).rfind(b"\n")
        if at >= 0:
            return start + at + 1
        hi = start
        window *= 4
    return 0


def _newline_after(data: Buffer, lo: int, hi: int) -> int:
    """Position after the first newline in ``data[lo:hi]``; 0 if there is none."""
    if isinstance(data, (bytes, bytearray)):
        return data.find(b"\n", lo, hi) + 1
    m = _NEWLINE.search(data, lo, hi)
    return m.end() if m else 0


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
    #: Identity that delivered the chunk to a collector (set by the collector, never by the sender).
    sender: str = ""

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

    def metadata_error(self) -> str | None:
        """Why this chunk's metadata is unusable downstream, or None when it is within bounds.

        Names become directory names (datatype), log fields (source) and partition
        keys, so they are bounded in length and characters; the byte range and
        ``record_ends`` must describe the data.  Checked by collectors at the door
        and by jobs before they partition.
        """
        if not 0 < len(self.source) <= MAX_SOURCE_LEN or _CONTROL.search(self.source) or "/" in self.source:
            return f"source must be 1-{MAX_SOURCE_LEN} characters without '/' or control characters"
        if not len(self.datatype) <= MAX_DATATYPE_LEN or not _NAME.match(self.datatype):
            return (f"datatype must be 1-{MAX_DATATYPE_LEN} characters of letters, digits and _.:@+=- "
                    f"starting with a letter or digit")
        if not 0 < len(self.stream) <= MAX_STREAM_LEN or "\x00" in self.stream:
            return f"stream must be 1-{MAX_STREAM_LEN} characters without NUL"
        if len(self.epoch) > MAX_EPOCH_LEN or _CONTROL.search(self.epoch):
            return f"epoch must be at most {MAX_EPOCH_LEN} characters without control characters"
        if not 0 <= self.timestamp < MAX_TIMESTAMP_MS:
            return f"timestamp {self.timestamp} is outside 1970-01-01..2100-01-01 (milliseconds since the epoch)"
        if self.seq_id < len(self.data):
            return f"seq_id {self.seq_id} is below the chunk's length {len(self.data)} (the range would start before 0)"
        if len(self.tags) > MAX_TAGS:
            return f"at most {MAX_TAGS} tags, got {len(self.tags)}"
        for k, v in self.tags.items():
            if not len(k) <= MAX_TAG_KEY_LEN or not _TAG_KEY.match(k):
                return f"tag name {k[:40]!r} must be 1-{MAX_TAG_KEY_LEN} characters of letters, digits and _.:@+=/-"
            if len(v) > MAX_TAG_VALUE_LEN or _CONTROL.search(v):
                return f"tag {k!r}: value must be at most {MAX_TAG_VALUE_LEN} characters without control characters"
        if self.record_ends is not None:
            if len(self.record_ends) > len(self.data):
                return "more record_ends than data bytes"
            prev = 0
            for end in self.record_ends:
                if not prev < end <= len(self.data):
                    return "record_ends must increase strictly within the chunk's data"
                prev = end
        return None

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
        if self.sender:
            meta["sender"] = self.sender
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
                sender=str(meta.get("sender") or ""),
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

    def cut(self, limit: int) -> list[Chunk]:
        """This chunk as consecutive chunks of at most ``limit`` bytes each, cut after records (views, no copy).

        Each piece is a chunk of its own (its ``seq_id`` is its end in the stream), so
        every hop and archive treat it like any other; together they are this chunk.
        A record longer than ``limit`` stays whole in a piece of its own.  A chunk with
        flags other than ``partial`` (a piece of a split record, a truncated record)
        is not cut: only the whole chunk says which of its records the flag is about.
        """
        n = len(self.data)
        if n <= limit or any(f != FLAG_PARTIAL for f in self.flags):
            return [self]
        cuts = self._cuts(limit)
        if not cuts:
            return [self]
        view = memoryview(self.data)
        pieces: list[Chunk] = []
        start = self.start
        ends = self.record_ends
        prev = 0
        for end in [*cuts, n]:
            record_ends = None
            if ends is not None:
                lo, hi = bisect.bisect_right(ends, prev), bisect.bisect_right(ends, end)
                record_ends = [e - prev for e in ends[lo:hi]]
            pieces.append(Chunk(
                source=self.source, stream=self.stream, datatype=self.datatype, seq_id=start + end,
                epoch=self.epoch, data=view[prev:end], tags=dict(self.tags), record_ends=record_ends,
                timestamp=self.timestamp, flags=list(self.flags) if end == n else [], sender=self.sender,
            ))
            prev = end
        return pieces

    def _cuts(self, limit: int) -> list[int]:
        """Positions (after a record) where :meth:`cut` cuts: as few pieces as ``limit`` allows, of about equal size."""
        n, ends = len(self.data), self.record_ends  # no record_ends: newline-terminated records
        step = -(-n // -(-n // limit))  # pieces of about equal size: no small last piece
        cuts: list[int] = []
        pos = 0
        while n - pos > limit:
            if ends is not None:
                i = bisect.bisect_right(ends, pos + step)  # the last end within step, else the first after it
                end = ends[i - 1] if i and ends[i - 1] > pos else (ends[i] if i < len(ends) else 0)
            else:
                end = _newline_before(self.data, pos, pos + step) or _newline_after(self.data, pos + step, n)
            if not end or end >= n:
                break
            cuts.append(end)
            pos = end
        return cuts

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
