"""Merging a stream's adjacent small chunks into one archive record.

Agents send a file their reader keeps up with within ``caught_up_flush``
(20 ms), so a stream written a line at a time reaches the store as many small
chunks, each stored beside a ~230-byte key (its metadata).  Archive keeps
bytes, not chunk boundaries: after de-duplication, consecutive chunks of one
``(source, stream, epoch)`` whose byte ranges touch and whose metadata agree
become one chunk, so the long-term copy pays for a key per second of a stream
instead of per flush.  Nothing a reader counts changes: the byte range, every
record boundary, the datatype, tags, sender and flags stay; the merged chunk
keeps the timestamp of its first piece, and ``window`` bounds how far the
pieces' timestamps may be from it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from logflume.chunk import FLAG_PARTIAL, FLAG_SPLIT, Chunk

#: Chunks are merged only up to this many bytes: past it a key costs < 0.03 %, and a big chunk is never copied.
MAX_MERGED = 1 << 20
#: Default for ``window``: the chunk timestamps one merged chunk may span, in milliseconds.
DEFAULT_WINDOW_MS = 1000

#: Flags about a chunk's last record: a chunk carrying one continues into the next and ends a merge.
_TAIL_FLAGS = frozenset({FLAG_SPLIT, FLAG_PARTIAL})


def _joins(first: Chunk, last: Chunk, nxt: Chunk, size: int, window_ms: int) -> bool:
    """Whether ``nxt`` may be appended to the merge that began with ``first`` and ends with ``last``."""
    return (nxt.start == last.seq_id and nxt.key == last.key
            and size + len(nxt.data) <= MAX_MERGED
            and abs(nxt.timestamp - first.timestamp) <= window_ms
            and nxt.datatype == last.datatype and nxt.tags == last.tags and nxt.sender == last.sender
            and not _TAIL_FLAGS.intersection(last.flags)
            and [f for f in nxt.flags if f not in _TAIL_FLAGS] == last.flags)


def merge(pieces: list[Chunk]) -> Chunk:
    """One chunk holding ``pieces`` (adjacent, of one stream, metadata agreeing) back to back."""
    if len(pieces) == 1:
        return pieces[0]
    first, last = pieces[0], pieces[-1]
    plain = all(p.record_ends is None for p in pieces) and all(bytes(p.data[-1:]) == b"\n" for p in pieces[:-1])
    record_ends: list[int] | None = None
    if not plain:  # a piece's last record may lack a newline: keep every boundary explicitly
        record_ends, base = [], 0
        for p in pieces:
            record_ends += [base + end for _, end in p.record_spans()]
            base += len(p.data)
    data = b"".join(p.data for p in pieces)
    return dataclasses.replace(first, seq_id=last.seq_id, data=data, tags=dict(first.tags),
                               record_ends=record_ends, flags=list(last.flags))


def coalesce(chunks: Iterable[Chunk], window_ms: int = DEFAULT_WINDOW_MS) -> list[Chunk]:
    """``chunks`` (sorted by stream and ``seq_id``, as de-duplication leaves them) with each run of adjacent
    small chunks merged (``window_ms`` 0: none)."""
    out: list[Chunk] = []
    run: list[Chunk] = []
    size = 0
    for c in chunks:
        if run and window_ms > 0 and _joins(run[0], run[-1], c, size, window_ms):
            run.append(c)
            size += len(c.data)
            continue
        if run:
            out.append(merge(run))
        run, size = [c], len(c.data)
    if run:
        out.append(merge(run))
    return out
