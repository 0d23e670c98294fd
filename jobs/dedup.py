"""Exact byte-range de-duplication: every byte of a stream is kept once.

Delivery is at-least-once, so the same bytes may reach the store several times
(a retry after a lost acknowledgement, two collectors, an agent re-reading
from its last checkpoint with different chunk boundaries).  A chunk names its
bytes exactly: ``(source, stream, epoch, [seq_id - len(data), seq_id))``, and
two chunks whose ranges overlap in one ``(source, stream, epoch)`` carry the
same bytes there.  So archive keeps, per numbering space, the set of byte
ranges it has already written; a chunk entirely inside that set is dropped, a
chunk partly inside it is trimmed to its new bytes (as zero-copy views), with
``record_ends`` re-based and cut to the kept piece.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from logflume.chunk import FLAG_PARTIAL, FLAG_SPLIT, Chunk

#: Flags that describe a chunk's last record; they go when that record is trimmed away.
_TAIL_FLAGS = frozenset({FLAG_SPLIT, FLAG_PARTIAL})


class RangeSet:
    """Disjoint, sorted, merged half-open ranges ``[start, end)`` of one stream."""

    __slots__ = ("starts", "ends")

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        for start, end in sorted(ranges):
            self.add(start, end)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(zip(self.starts, self.ends, strict=True))

    def __len__(self) -> int:
        return len(self.starts)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RangeSet) and self.starts == other.starts and self.ends == other.ends

    def covered(self) -> int:
        """How many bytes the set covers."""
        return sum(e - s for s, e in self)

    def missing(self, start: int, end: int) -> list[tuple[int, int]]:
        """The parts of ``[start, end)`` not in the set, in order."""
        out: list[tuple[int, int]] = []
        # first range that ends after `start`
        i = bisect.bisect_right(self.ends, start)
        pos = start
        while pos < end and i < len(self.starts):
            s, e = self.starts[i], self.ends[i]
            if s >= end:
                break
            if s > pos:
                out.append((pos, s))
            pos = max(pos, e)
            i += 1
        if pos < end:
            out.append((pos, end))
        return out

    def add(self, start: int, end: int) -> None:
        """Add ``[start, end)``, merging with every range it touches or overlaps."""
        if end <= start:
            return
        lo = bisect.bisect_left(self.ends, start)  # first range that ends at/after start
        hi = bisect.bisect_right(self.starts, end)  # ranges before hi start at/before end
        if lo < hi:
            start = min(start, self.starts[lo])
            end = max(end, self.ends[hi - 1])
        self.starts[lo:hi] = [start]
        self.ends[lo:hi] = [end]


def trim(chunk: Chunk, start: int, end: int) -> Chunk:
    """The part of ``chunk`` holding stream bytes ``[start, end)``, sharing its buffer.

    ``record_ends`` inside the piece are kept (re-based); the piece's end becomes
    a record end when the original had explicit ends.  Tail flags (split,
    partial) stay only when the piece keeps the chunk's last byte.
    """
    c0 = chunk.start
    lo, hi = start - c0, end - c0
    if not (0 <= lo < hi <= len(chunk.data)):
        raise ValueError(f"range [{start}, {end}) is not inside chunk [{c0}, {chunk.seq_id})")
    if lo == 0 and hi == len(chunk.data):
        return chunk
    record_ends = None
    if chunk.record_ends is not None:
        record_ends = [r - lo for r in chunk.record_ends if lo < r <= hi]
        if not record_ends or record_ends[-1] != hi - lo:
            record_ends.append(hi - lo)
    flags = list(chunk.flags)
    if hi != len(chunk.data):
        flags = [f for f in flags if f not in _TAIL_FLAGS]
    return Chunk(
        source=chunk.source,
        stream=chunk.stream,
        datatype=chunk.datatype,
        seq_id=end,
        epoch=chunk.epoch,
        data=memoryview(chunk.data)[lo:hi],
        tags=dict(chunk.tags),
        record_ends=record_ends,
        timestamp=chunk.timestamp,
        flags=flags,
    )


def dedup_order(chunk: Chunk) -> tuple:
    """Sort key that makes de-duplication deterministic: by stream, start, longest first."""
    return (chunk.source, chunk.stream, chunk.epoch, chunk.start, -chunk.seq_id, chunk.timestamp,
            chunk.datatype, sorted(chunk.tags.items()), chunk.flags)


@dataclass
class DedupStats:
    chunks_in: int = 0
    chunks_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    duplicates_dropped: int = 0
    overlaps_trimmed: int = 0

    def add(self, other: DedupStats) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class Deduplicator:
    """Remembers which bytes of each ``(source, stream, epoch)`` were kept.

    ``covered`` can be saved and restored (see :meth:`state` / :meth:`from_state`)
    so that runs over new inputs still drop bytes archived by earlier runs.
    """

    covered: dict[tuple[str, str, str], RangeSet] = field(default_factory=dict)
    stats: DedupStats = field(default_factory=DedupStats)

    def feed(self, chunk: Chunk) -> list[Chunk]:
        """The new parts of ``chunk`` (none, itself, or trimmed pieces); marks them covered."""
        st = self.stats
        st.chunks_in += 1
        st.bytes_in += len(chunk.data)
        if not chunk.data:
            st.duplicates_dropped += 1
            return []
        ranges = self.covered.get(chunk.key)
        if ranges is None:
            ranges = self.covered[chunk.key] = RangeSet()
        gaps = ranges.missing(chunk.start, chunk.seq_id)
        if not gaps:
            st.duplicates_dropped += 1
            return []
        ranges.add(chunk.start, chunk.seq_id)
        if len(gaps) == 1 and gaps[0] == (chunk.start, chunk.seq_id):
            pieces = [chunk]
        else:
            st.overlaps_trimmed += 1
            pieces = [trim(chunk, s, e) for s, e in gaps]
        st.chunks_out += len(pieces)
        st.bytes_out += sum(len(p.data) for p in pieces)
        return pieces

    def run(self, chunks: Iterable[Chunk]) -> list[Chunk]:
        """De-duplicate a batch: sorted by :func:`dedup_order`, so the result is
        sorted by (source, stream, epoch, seq_id) and does not depend on input order."""
        out: list[Chunk] = []
        for chunk in sorted(chunks, key=dedup_order):
            out.extend(self.feed(chunk))
        return out

    def state(self) -> list[list]:
        """JSON-able covered ranges: ``[[source, stream, epoch, [[start, end], ...]], ...]``."""
        return [[s, t, e, [[a, b] for a, b in rs]] for (s, t, e), rs in sorted(self.covered.items())]

    @classmethod
    def from_state(cls, state: list[list]) -> Deduplicator:
        covered: dict[tuple[str, str, str], RangeSet] = {}
        for source, stream, epoch, ranges in state:
            covered[(str(source), str(stream), str(epoch))] = RangeSet((int(a), int(b)) for a, b in ranges)
        return cls(covered=covered)
