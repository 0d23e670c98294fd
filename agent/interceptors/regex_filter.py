"""regex_filter: keep or drop records that match a pattern, without breaking exact delivery.

What is left of a chunk goes on as one chunk per run of consecutive kept
records, each a zero-copy slice at its own stream range (see
``logflume/interceptor.py``): the bytes are the source's, so archive still
drops duplicates by range, a re-read after a crash (other chunk boundaries)
overlaps with identical bytes, and the same range kept by two configs is the
union of both.  Each kept record's stream offset is the chunk's start plus
its position, as without a filter.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import ClassVar

from agent.interceptors.records import RecordIndex, compile_pattern, matching_records
from logflume.chunk import FLAG_PARTIAL, FLAG_SPLIT, Chunk
from logflume.interceptor import Interceptor, keep_spans
from logflume.settings import Enum, Regex, Setting

_NEWLINE = re.compile(rb"\n")
#: Flags saying a chunk's last record continues in the stream's next chunk.
_OPEN_FLAGS = (FLAG_PARTIAL, FLAG_SPLIT)
#: Streams whose open record's decision is remembered (one entry per stream with a record in flight).
_PENDING_MAX = 10_000


class RegexFilterInterceptor(Interceptor):
    """Keeps (``mode: keep``) or drops (``mode: drop``) each record the pattern matches (Flume's regex filter).

    A record cut by the source (flag ``partial`` or ``split``: its rest comes in the stream's next chunk) is
    decided by its first piece; the rest follows that decision.
    """

    record_level: ClassVar[bool] = True
    settings: ClassVar[dict[str, Setting]] = {
        "pattern": Setting(Regex(), doc="Regular expression searched in each record (bytes, ^ and $ at line ends)"),
        "mode": Setting(Enum("keep", "drop"), "drop", "keep: only matching records go on; drop: matching ones go"),
    }

    def configure(self) -> None:
        self.regex = compile_pattern(self.config.pattern)
        self.keep_matching = self.config.mode == "keep"
        #: (source, stream, epoch) -> (offset where its open record continues, keep it?)
        self._pending: dict[tuple[str, str, str], tuple[int, bool]] = {}
        self.records_dropped = self.metrics.counter("records_dropped", "Records dropped by a filter")
        self.bytes_dropped = self.metrics.counter("bytes_dropped", "Bytes dropped by a filter")

    def _kept_spans(self, chunk: Chunk) -> tuple[list[tuple[int, int]], int]:
        """Kept record spans, and how many records matched."""
        n = len(chunk.data)
        matched = list(matching_records(self.regex, chunk))
        pending = self._pending.pop(chunk.key, None)
        forced: tuple[int, bool] | None = None
        if pending is not None and pending[0] == chunk.start and n:
            first_end = next(iter(chunk.record_spans()))[1]
            forced = (first_end, pending[1])
        if self.keep_matching:
            kept = matched
        else:
            kept, pos = [], 0
            for a, b in matched:
                if a > pos:
                    kept.append((pos, a))
                pos = b
            if pos < n:
                kept.append((pos, n))
        if forced is not None:
            end, keep_first = forced
            kept = [(max(a, end), b) for a, b in kept if b > end]
            if keep_first:
                kept.insert(0, (0, end))
        if any(f in _OPEN_FLAGS for f in chunk.flags) and n:
            last_start = RecordIndex(chunk).start_of(n - 1, 0)
            keep_last = bool(kept) and kept[-1][1] == n and kept[-1][0] <= last_start
            if len(self._pending) >= _PENDING_MAX:
                self._pending.clear()
            self._pending[chunk.key] = (chunk.seq_id, keep_last)
        return kept, len(matched)

    def intercept(self, chunks: Sequence[Chunk]) -> Sequence[Chunk]:
        out: list[Chunk] = []
        for chunk in chunks:
            spans, matched = self._kept_spans(chunk)
            kept = sum(b - a for a, b in spans)
            if kept != len(chunk.data):
                self.bytes_dropped.inc(len(chunk.data) - kept)
                self.records_dropped.inc(_records(chunk) - matched if self.keep_matching else matched)
                out.extend(keep_spans(chunk, spans))
            else:
                out.append(chunk)
        return out


def _records(chunk: Chunk) -> int:
    """How many records ``chunk`` holds (a trailing piece without a delimiter counts)."""
    n = len(chunk.data)
    if chunk.record_ends is not None:
        return len(chunk.record_ends) + (1 if not chunk.record_ends or chunk.record_ends[-1] < n else 0)
    data = chunk.data
    lines = data.count(b"\n") if isinstance(data, (bytes, bytearray)) else len(_NEWLINE.findall(data))
    return lines + (1 if n and data[-1] != 10 else 0)
