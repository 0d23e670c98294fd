"""Finding the records of a chunk that a pattern matches, without a Python loop per record.

The pattern is searched in the whole chunk (one C scan); each hit is mapped to
the record that holds it, and a hit that runs past that record's end is
checked again inside the record alone.  So a record matches exactly when the
pattern matches the record on its own, and records no hit touches cost
nothing.  A record is searched without its newline delimiter; patterns are
compiled as bytes with ``re.MULTILINE``, so ``^`` and ``$`` anchor at each
line of a record.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator

from logflume.chunk import Buffer, Chunk

_NEWLINE = re.compile(rb"\n")
#: Greedy up to the last newline of a range (memoryview has no rfind).
_UP_TO_LAST_NEWLINE = re.compile(rb".*\n", re.DOTALL)


def compile_pattern(pattern: str) -> re.Pattern[bytes]:
    return re.compile(pattern.encode(), re.MULTILINE)


class RecordIndex:
    """Record bounds of one chunk: by ``record_ends`` when given, else by newlines."""

    def __init__(self, chunk: Chunk) -> None:
        self.data: Buffer = chunk.data
        self.n = len(chunk.data)
        self.ends = chunk.record_ends

    def end_of(self, pos: int) -> int:
        """End (exclusive, delimiter included) of the record holding byte ``pos``."""
        if self.ends is not None:
            i = bisect.bisect_right(self.ends, pos)
            return self.ends[i] if i < len(self.ends) else self.n
        m = _NEWLINE.search(self.data, pos)
        return m.end() if m else self.n

    def content_end(self, end: int) -> int:
        """Where the record ending at ``end`` ends without its newline delimiter."""
        if self.ends is None and end > 0 and self.data[end - 1] == 10:
            return end - 1
        return end

    def start_of(self, pos: int, floor: int) -> int:
        """Start of the record holding byte ``pos``, known to be at or after ``floor``."""
        if self.ends is not None:
            i = bisect.bisect_right(self.ends, pos)
            return self.ends[i - 1] if i > 0 else 0
        m = _UP_TO_LAST_NEWLINE.match(self.data, floor, pos)
        return m.end() if m else floor


def matching_records(regex: re.Pattern[bytes], chunk: Chunk) -> Iterator[tuple[int, int]]:
    """(start, end) of every record of ``chunk`` in which ``regex`` finds a match, in order."""
    index = RecordIndex(chunk)
    data, n = chunk.data, index.n
    pos = 0
    while pos < n:
        m = regex.search(data, pos)
        if m is None:
            return
        at = m.start()
        if at >= n:
            return
        start, end = index.start_of(at, pos), index.end_of(at)
        cend = index.content_end(end)
        if (at <= cend and m.end() <= cend) or regex.search(data, start, cend) is not None:
            yield start, end
        pos = end


def matches_in_records(regex: re.Pattern[bytes], chunk: Chunk) -> Iterator[re.Match[bytes]]:
    """Every non-empty match that lies inside one record, in order."""
    index = RecordIndex(chunk)
    data, n = chunk.data, index.n
    pos = 0
    while pos < n:
        m = regex.search(data, pos)
        if m is None:
            return
        a, b = m.span()
        if a >= n:
            return
        end = index.end_of(a)
        cend = index.content_end(end)
        if b > cend:  # ran into the delimiter or the next record: search this record's rest on its own
            m = regex.search(data, a, cend) if a <= cend else None
            if m is None:
                pos = end
                continue
            a, b = m.span()
        if b > a:
            yield m
            pos = b
        else:
            pos = a + 1
