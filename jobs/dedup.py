"""Exact byte-range de-duplication: every byte of a stream is kept once, and only proven copies go.

Delivery is at-least-once, so the same bytes may reach the store several times
(a retry after a lost acknowledgement, two collectors, an agent re-reading
from its last checkpoint with different chunk boundaries).  A chunk names its
bytes exactly: ``(source, stream, epoch, [seq_id - len(data), seq_id))``, and
two chunks whose ranges overlap in one ``(source, stream, epoch)`` must carry
the same bytes there.  Archive keeps, per numbering space, the set of byte
ranges it has already written; a chunk entirely inside that set is dropped, a
chunk partly inside it is trimmed to its new bytes (as zero-copy views), with
``record_ends`` re-based and cut to the kept piece.

Dropping is only allowed once the overlap is proven to hold the same bytes:
the chunk is compared byte for byte with what was kept — in memory for this
batch's pieces, re-read from the archive file for earlier batches (each
stream's :class:`Segment` says which file and where).  A chunk that disagrees,
or whose overlap cannot be re-read, is a :class:`Conflict`: it is set aside
whole (archive writes it to ``_conflicts``), never dropped and never mixed into
the kept bytes.  The chunk seen first (earlier batch; in a batch, the
:func:`dedup_order`) stays in the archive.

Only the overlap path compares; a chunk that overlaps nothing costs what it
did before.  Bytes kept before byte checks existed (manifest format 1), or by
earlier batches of a dry run, have no location: an overlap with them is
trusted, as before.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from logflume.chunk import FLAG_PARTIAL, FLAG_SPLIT, Buffer, Chunk

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
    return dataclasses.replace(chunk, seq_id=end, data=memoryview(chunk.data)[lo:hi], tags=dict(chunk.tags),
                               record_ends=record_ends, flags=flags)


def dedup_order(chunk: Chunk) -> tuple:
    """Sort key that makes de-duplication deterministic: by stream, start, longest first."""
    return (chunk.source, chunk.stream, chunk.epoch, chunk.start, -chunk.seq_id, chunk.timestamp,
            chunk.datatype, sorted(chunk.tags.items()), chunk.flags)


def same_bytes(a: Buffer, b: Buffer, step: int = 1 << 16) -> bool:
    """Whether two equal-length buffers hold the same bytes, compared in cache-sized slices.

    (``memoryview ==`` unpacks item by item, about 5x slower; copying whole
    views would double memory.)
    """
    if len(a) != len(b):
        return False
    ma, mb = memoryview(a), memoryview(b)
    for i in range(0, len(ma), step):
        if ma[i:i + step].tobytes() != mb[i:i + step].tobytes():
            return False
    return True


@dataclass
class DedupStats:
    chunks_in: int = 0
    chunks_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    duplicates_dropped: int = 0
    overlaps_trimmed: int = 0
    conflicts: int = 0

    def add(self, other: DedupStats) -> None:
        """Add ``other``'s counts (to a subclass too, which keeps its own fields)."""
        for name in DedupStats.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass(frozen=True, slots=True, order=True)
class Segment:
    """Kept bytes of one stream inside ``[start, end)`` are records of ``file`` from ``offset`` on.

    ``offset`` is a sync point: a SequenceFile reader started there begins at
    the stream's first record in the file (archive syncs before each stream).
    """

    start: int
    end: int
    file: str
    offset: int


@dataclass
class Conflict:
    """A chunk whose overlap with kept bytes is not proven identical: set aside whole."""

    chunk: Chunk
    start: int  # the first disagreeing overlap
    end: int
    reason: str
    kept: Chunk | None  # the kept side (as first delivered, or as archived); None if it cannot be read
    kept_in: str  # archive file of the kept side, "" when kept by this batch

    def key(self, where: Callable[[Chunk], str]) -> dict[str, Any]:
        """The ``_conflicts`` record key: this chunk's metadata plus both sides, with their senders.

        ``where`` names the input file a chunk of this batch was read from.
        """
        kept = self.kept
        return {**self.chunk.metadata(), "conflict": {
            "reason": self.reason,
            "range": [self.start, self.end],
            "input": where(self.chunk),
            "kept": kept.metadata() if kept is not None else None,
            "kept_in": self.kept_in or (where(kept) if kept is not None else ""),
        }}


#: Reads back the archived records of one stream: (file, offset, key) -> its chunks from that sync point.
ArchiveReader = Callable[[str, int, tuple[str, str, str]], list[Chunk]]


class StreamState:
    """What archive remembers of one ``(source, stream, epoch)``: kept ranges and where they are."""

    __slots__ = ("covered", "segments", "unlocated")

    def __init__(self, covered: RangeSet | None = None, segments: list[Segment] | None = None,
                 unlocated: RangeSet | None = None) -> None:
        self.covered = covered if covered is not None else RangeSet()
        self.segments = segments if segments is not None else []  # sorted by start
        self.unlocated = unlocated if unlocated is not None else RangeSet()  # kept without a location

    def to_json(self) -> list:
        return [[[a, b] for a, b in self.covered], [[g.start, g.end, g.file, g.offset] for g in self.segments],
                [[a, b] for a, b in self.unlocated]]


class _Pieces:
    """Disjoint kept pieces of one stream, sorted by start, each with the chunk it came from."""

    __slots__ = ("starts", "pieces", "origins")

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.pieces: list[Chunk] = []
        self.origins: list[Chunk] = []

    def add(self, piece: Chunk, origin: Chunk) -> None:
        i = bisect.bisect_right(self.starts, piece.start)
        self.starts.insert(i, piece.start)
        self.pieces.insert(i, piece)
        self.origins.insert(i, origin)

    def within(self, start: int, end: int) -> Iterator[tuple[Chunk, Chunk]]:
        """(piece, origin) for every piece intersecting ``[start, end)`` (pieces are disjoint)."""
        i = max(bisect.bisect_right(self.starts, start) - 1, 0)
        while i < len(self.pieces) and self.starts[i] < end:
            if self.pieces[i].seq_id > start:
                yield self.pieces[i], self.origins[i]
            i += 1


def _overlaps(start: int, end: int, gaps: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of ``[start, end)`` that are not in ``gaps`` (sorted, disjoint, inside it)."""
    out, pos = [], start
    for s, e in gaps:
        if s > pos:
            out.append((pos, s))
        pos = e
    if pos < end:
        out.append((pos, end))
    return out


def _view(chunk: Chunk, start: int, end: int) -> memoryview:
    return memoryview(chunk.data)[start - chunk.start:end - chunk.start]


class Deduplicator:
    """Keeps each byte of each ``(source, stream, epoch)`` once, after proving every overlap identical.

    The per-stream state can be saved and restored (:meth:`state` /
    :meth:`from_state`) so that later runs over new inputs still drop, and
    still verify, bytes archived by earlier runs; :meth:`locate` records where
    a batch's pieces were written.  ``read_archived`` re-reads them.
    """

    def __init__(self, streams: dict[tuple[str, str, str], StreamState] | None = None,
                 read_archived: ArchiveReader | None = None) -> None:
        self.streams: dict[tuple[str, str, str], StreamState] = streams if streams is not None else {}
        self.read_archived = read_archived
        self.stats = DedupStats()
        self.conflicts: list[Conflict] = []
        self._batch: dict[tuple[str, str, str], _Pieces] = {}
        self._archived: tuple[tuple[str, int, tuple[str, str, str]], _Pieces | str] | None = None

    def feed(self, chunk: Chunk) -> list[Chunk]:
        """The new parts of ``chunk`` (none, itself, or trimmed pieces); marks them covered.

        A chunk that conflicts with kept bytes gives none and is added to :attr:`conflicts`.
        """
        st = self.stats
        st.chunks_in += 1
        st.bytes_in += len(chunk.data)
        if not chunk.data:
            st.duplicates_dropped += 1
            return []
        key = chunk.key
        stream = self.streams.get(key)
        if stream is None:
            stream = self.streams[key] = StreamState()
        start, end = chunk.start, chunk.seq_id
        gaps = stream.covered.missing(start, end)
        if len(gaps) == 1 and gaps[0] == (start, end):
            pieces = [chunk]  # the common case: nothing to compare
        else:
            conflict = self._verify(chunk, stream, _overlaps(start, end, gaps))
            if conflict is not None:
                st.conflicts += 1
                self.conflicts.append(conflict)
                return []
            if not gaps:
                st.duplicates_dropped += 1
                return []
            st.overlaps_trimmed += 1
            pieces = [trim(chunk, s, e) for s, e in gaps]
        stream.covered.add(start, end)
        batch = self._batch.get(key)
        if batch is None:
            batch = self._batch[key] = _Pieces()
        for p in pieces:
            batch.add(p, chunk)
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

    # -- proving overlaps --------------------------------------------------

    def _verify(self, chunk: Chunk, stream: StreamState, overlaps: list[tuple[int, int]]) -> Conflict | None:
        """None when every overlapping byte equals the kept byte; else the first conflict."""
        batch = self._batch.get(chunk.key)
        for x, y in overlaps:
            proven = RangeSet()
            if batch is not None:
                for piece, origin in batch.within(x, y):
                    a, b = max(x, piece.start), min(y, piece.seq_id)
                    if not same_bytes(_view(chunk, a, b), _view(piece, a, b)):
                        return Conflict(chunk, a, b, "bytes differ from the chunk kept for this range", origin, "")
                    proven.add(a, b)
            for a, b in proven.missing(x, y):
                conflict = self._verify_archived(chunk, stream, a, b)
                if conflict is not None:
                    return conflict
        return None

    def _verify_archived(self, chunk: Chunk, stream: StreamState, x: int, y: int) -> Conflict | None:
        """Compare ``[x, y)`` of ``chunk`` with bytes earlier batches kept, re-read from their files."""
        proven = RangeSet()
        for seg in stream.segments:
            if seg.start >= y:
                break
            if seg.end <= x:
                continue
            archived = self._read_segment(seg, chunk.key)
            if isinstance(archived, str):
                return Conflict(chunk, max(x, seg.start), min(y, seg.end),
                                f"kept bytes cannot be re-read to compare: {archived}", None, seg.file)
            for piece, _ in archived.within(x, y):
                a, b = max(x, piece.start), min(y, piece.seq_id)
                if not same_bytes(_view(chunk, a, b), _view(piece, a, b)):
                    return Conflict(chunk, a, b, "bytes differ from the archived chunk for this range", piece,
                                    seg.file)
                proven.add(a, b)
        for a, b in proven.missing(x, y):
            if stream.unlocated.missing(a, b):
                return Conflict(chunk, a, b, "kept bytes of this range are not in the archive files the manifest "
                                "names", None, "")
        return None

    def _read_segment(self, seg: Segment, key: tuple[str, str, str]) -> _Pieces | str:
        """The stream's archived pieces in ``seg`` (the last segment read is cached), or why they cannot be read."""
        ident = (seg.file, seg.offset, key)
        if self._archived is not None and self._archived[0] == ident:
            return self._archived[1]
        if self.read_archived is None:
            return "no reader for archive files"
        got: _Pieces | str = _Pieces()
        try:
            for c in self.read_archived(seg.file, seg.offset, key):
                if c.seq_id > seg.start and c.start < seg.end:
                    got.add(c, c)
        except Exception as exc:  # a missing or damaged archive file: reported as a conflict, never a stop
            got = f"{seg.file}: {exc}"
        self._archived = (ident, got)
        return got

    # -- state ---------------------------------------------------------------

    def locate(self, key: tuple[str, str, str], start: int, end: int, file: str | None, offset: int = 0) -> None:
        """Record where this batch wrote the stream's pieces within ``[start, end)``; ``file`` None: nowhere
        to re-read them (a dry run), so later overlaps with them are trusted."""
        stream = self.streams[key]
        if file is None:
            for piece in self._batch[key].pieces:
                if piece.start < end and piece.seq_id > start:
                    stream.unlocated.add(max(start, piece.start), min(end, piece.seq_id))
            return
        seg = Segment(start, end, file, offset)
        bisect.insort(stream.segments, seg)

    def state(self) -> list[list]:
        """JSON-able per-stream state: ``[[source, stream, epoch, covered, segments, unlocated], ...]``
        with ``covered`` and ``unlocated`` as ``[[start, end], ...]`` and segments as
        ``[[start, end, file, offset], ...]``."""
        return [[s, t, e, *st.to_json()] for (s, t, e), st in sorted(self.streams.items())]

    @classmethod
    def from_state(cls, state: list[list], read_archived: ArchiveReader | None = None) -> Deduplicator:
        """Restore :meth:`state`; a format-1 entry ``[source, stream, epoch, ranges]`` has no locations."""
        streams: dict[tuple[str, str, str], StreamState] = {}
        for entry in state:
            source, stream, epoch, ranges = entry[:4]
            covered = RangeSet((int(a), int(b)) for a, b in ranges)
            if len(entry) == 4:  # kept before byte checks: nothing to re-read
                streams[(str(source), str(stream), str(epoch))] = StreamState(covered, [], RangeSet(covered))
                continue
            segments = sorted(Segment(int(a), int(b), str(f), int(o)) for a, b, f, o in entry[4])
            streams[(str(source), str(stream), str(epoch))] = StreamState(
                covered, segments, RangeSet((int(a), int(b)) for a, b in entry[5]))
        return cls(streams, read_archived)

