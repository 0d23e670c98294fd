"""Turning a byte stream into chunks cut after record boundaries (shared by every stream source).

A :class:`RecordChunker` holds the bytes that were fed but not yet sent in one
growing ``bytearray``.  When a chunk is cut, that bytearray itself becomes the
chunk's data (no copy); only the unsent remainder (usually a partial record)
is copied into a fresh buffer.  So each byte is copied once between the read
and the chunk, however many records it holds.

Records are decided by ``record_delimiter`` (default ``\\n``) and, optionally,
a :class:`MultilinePattern` that groups lines into one record the way
Filebeat's ``multiline`` does.  With the plain ``\\n`` delimiter the chunker
never looks at individual records (it only finds the last newline), which is
what keeps the common case fast.

Times are the caller's clock (``time.monotonic()`` in the sources); they only
decide when ``flush_interval`` and ``partial_timeout`` are due.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from typing import Literal

from logflume.chunk import FLAG_PARTIAL, FLAG_SPLIT, Buffer, Chunk


@dataclass(frozen=True)
class MultilinePattern:
    """Filebeat's multiline rule: which lines continue a record instead of starting one.

    A line *matches* when ``pattern`` is found in it (``re.search``, bytes,
    delimiter excluded), inverted by ``negate``.  With ``match="after"``
    matching lines are appended to the record before them (``pattern: '^\\['``,
    ``negate: true``: every line not starting with ``[`` continues the previous
    record -- Java stack traces).  With ``match="before"`` matching lines are
    prepended to the next non-matching line (a trailing ``\\`` continuation).
    """

    pattern: str
    negate: bool = False
    match: Literal["after", "before"] = "after"
    regex: re.Pattern[bytes] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.match not in ("after", "before"):
            raise ValueError(f"multiline.match: expected 'after' or 'before', got {self.match!r}")
        try:
            compiled = re.compile(self.pattern.encode("utf-8"))
        except re.error as exc:
            raise ValueError(f"multiline.pattern: invalid regular expression {self.pattern!r}: {exc}") from None
        object.__setattr__(self, "regex", compiled)

    def continues(self, line: Buffer) -> bool:
        """True when ``line`` (without its delimiter) belongs to a neighbouring record."""
        return (self.regex.search(line) is not None) != self.negate


class RecordChunker:
    """Cuts a byte stream into :class:`Chunk` objects after complete records.

    ``feed`` returns the chunks that reached ``chunk_size``; ``poll`` those due
    by time (complete records after ``flush_interval`` since the first unsent
    byte; everything, a trailing partial record flagged ``partial``, once no
    byte arrived for ``partial_timeout``); ``finish`` everything at end of
    stream.  A record longer than ``chunk_size`` leaves in ``chunk_size``
    pieces flagged ``split`` (all but its last piece).

    The chunker keeps references to what ``feed`` is given only until it
    returns (it copies into its own buffer), so callers may reuse read buffers.
    """

    def __init__(
        self,
        *,
        source: str,
        stream: str,
        datatype: str,
        tags: dict[str, str],
        epoch: str,
        start_offset: int = 0,
        chunk_size: int,
        record_delimiter: bytes = b"\n",
        multiline: MultilinePattern | None = None,
        flush_interval: float = 1.0,
        partial_timeout: float = 5.0,
    ) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size: expected at least 1 byte, got {chunk_size}")
        if not record_delimiter:
            raise ValueError("record_delimiter: expected at least one byte, got an empty delimiter")
        if start_offset < 0:
            raise ValueError(f"start_offset: expected >= 0, got {start_offset}")
        self.source = source
        self.stream = stream
        self.datatype = datatype
        self.tags = dict(tags)
        self.epoch = epoch
        self.chunk_size = chunk_size
        self.delimiter = bytes(record_delimiter)
        self.multiline = multiline
        self.flush_interval = flush_interval
        self.partial_timeout = partial_timeout
        #: Only the plain newline case may leave ``record_ends`` out (design.md).
        self.track_ends = self.delimiter != b"\n" or multiline is not None
        self._offset = start_offset
        self._buf = bytearray()
        # Record ends (positions in _buf) known so far; in fast mode only the last one.
        self._ends: list[int] = []
        self._last_end = 0  # fast mode: position after the last delimiter in _buf
        self._scan = 0  # next position in _buf not yet searched for a delimiter
        self._line_start = 0  # multiline: start of the next line to classify
        self._rec_start = 0  # multiline "after": start of the record still open
        self._split_open = False  # multiline "after": the last cut split a record at a line boundary
        self._first_unsent_at: float | None = None
        self._last_fed_at: float | None = None

    # -- public -------------------------------------------------------------------------------

    @property
    def offset(self) -> int:
        """Stream offset of the end of the bytes emitted so far (the next chunk's start)."""
        return self._offset

    @property
    def pending_bytes(self) -> int:
        """Bytes fed but not yet emitted."""
        return len(self._buf)

    def feed(self, data: Buffer, now: float) -> list[Chunk]:
        """Add bytes; returns the chunks that reached ``chunk_size``."""
        if not len(data):
            return []
        if not self._buf:
            self._first_unsent_at = now
        self._last_fed_at = now
        self._buf += data
        self._find_records()
        out: list[Chunk] = []
        # Strictly more than chunk_size: a buffer of exactly chunk_size may still be one whole
        # record whose end is not known yet; cutting it now would flag it split for good.
        while len(self._buf) > self.chunk_size:
            out.append(self._cut_full())
        return out

    def poll(self, now: float) -> list[Chunk]:
        """Chunks due by time: complete records after ``flush_interval``, everything after ``partial_timeout``."""
        if not self._buf:
            return []
        if self._last_fed_at is not None and now - self._last_fed_at >= self.partial_timeout:
            return self._drain()
        if self._first_unsent_at is not None and now - self._first_unsent_at >= self.flush_interval:
            return self.flush_complete(now)
        return []

    def flush_complete(self, now: float) -> list[Chunk]:
        """The complete records held, as one chunk now (flush_interval, or the caller short of memory)."""
        end = self._complete_end()
        if end <= 0:
            return []
        chunk = self._cut(end, split=False, partial=False)
        if self._buf:
            self._first_unsent_at = now
        return [chunk]

    def finish(self) -> list[Chunk]:
        """End of stream: everything still held, a trailing partial record flagged ``partial``."""
        return self._drain()

    def next_deadline(self) -> float | None:
        """Clock time at which :meth:`poll` will next have something to do (None: nothing held)."""
        if not self._buf:
            return None
        times = []
        if self._last_fed_at is not None:
            times.append(self._last_fed_at + self.partial_timeout)
        if self._first_unsent_at is not None and self._complete_end() > 0:
            times.append(self._first_unsent_at + self.flush_interval)
        return min(times) if times else None

    # -- record boundaries --------------------------------------------------------------------

    def _find_records(self) -> None:
        buf, d = self._buf, self._delimiter_len()
        if not self.track_ends:
            pos = buf.rfind(b"\n", self._scan)
            if pos >= 0:
                self._last_end = pos + 1
            self._scan = len(buf)
            return
        if self.multiline is None:
            delim, pos = self.delimiter, self._scan
            while True:
                hit = buf.find(delim, pos)
                if hit < 0:
                    break
                pos = hit + d
                self._ends.append(pos)
            # A delimiter may straddle what has arrived and what comes next.
            self._scan = max(pos, len(buf) - d + 1)
            return
        self._classify_lines()

    def _classify_lines(self) -> None:
        buf, delim, d, ml = self._buf, self.delimiter, self._delimiter_len(), self.multiline
        assert ml is not None
        view = memoryview(buf)
        try:
            pos = self._scan
            while True:
                hit = buf.find(delim, pos)
                if hit < 0:
                    break
                start, line_end = self._line_start, hit + d
                pos = line_end
                self._line_start = line_end
                continues = ml.continues(view[start:hit])
                if ml.match == "after":
                    # After a split cut at a line boundary the open record may end right there
                    # (start 0): a new record's first line ends it at the chunk's first byte.
                    if not continues and (start > self._rec_start or self._split_open):
                        self._ends.append(start)
                        self._rec_start = start
                    self._split_open = False
                elif not continues:
                    self._ends.append(line_end)
                    self._rec_start = line_end
            self._scan = max(pos, len(buf) - d + 1)
        finally:
            view.release()

    def _delimiter_len(self) -> int:
        return len(self.delimiter)

    def _complete_end(self) -> int:
        """Position after the last complete record in the buffer (0: none)."""
        if not self.track_ends:
            return self._last_end
        return self._ends[-1] if self._ends else 0

    # -- cutting ------------------------------------------------------------------------------

    def _cut_full(self) -> Chunk:
        """The buffer holds at least ``chunk_size`` bytes: cut after the last record that fits."""
        limit = self.chunk_size
        if not self.track_ends:
            end = self._buf.rfind(b"\n", 0, limit) + 1
        else:
            i = bisect.bisect_right(self._ends, limit)
            end = self._ends[i - 1] if i else 0
        if end > 0:
            return self._cut(end, split=False, partial=False)
        return self._cut(limit, split=True, partial=False)

    def _drain(self) -> list[Chunk]:
        """Everything held, in chunks of at most ``chunk_size`` (the last maybe a partial record)."""
        out: list[Chunk] = []
        while len(self._buf) > self.chunk_size:
            out.append(self._cut_full())
        if self._buf:
            end = len(self._buf)
            partial = not self._buf.endswith(self.delimiter)
            if self.track_ends and (not self._ends or self._ends[-1] != end):
                self._ends.append(end)  # the held record (open multiline record or partial) ends here
            out.append(self._cut(end, split=False, partial=partial))
        self._rec_start = self._line_start = self._scan = 0
        return out

    def _cut(self, end: int, *, split: bool, partial: bool) -> Chunk:
        buf = self._buf
        if end >= len(buf):
            rest = bytearray()
        else:
            with memoryview(buf) as view:
                rest = bytearray(view[end:])
            del buf[end:]
        self._buf = buf_next = rest
        record_ends: list[int] | None = None
        if self.track_ends:
            i = bisect.bisect_right(self._ends, end)
            record_ends, self._ends = self._ends[:i], [e - end for e in self._ends[i:]]
        self._split_open = split and end == self._line_start
        # Cuts are made at or after the last known end, or (split) where none is known.
        self._last_end = self._last_end - end if self._last_end > end else 0
        self._scan = max(self._scan - end, 0)
        self._line_start = max(self._line_start - end, 0)
        self._rec_start = max(self._rec_start - end, 0)
        flags: list[str] = []
        if split:
            flags.append(FLAG_SPLIT)
        if partial:
            flags.append(FLAG_PARTIAL)
        self._offset += end
        if not buf_next:
            self._first_unsent_at = None
        return Chunk(
            source=self.source,
            stream=self.stream,
            datatype=self.datatype,
            seq_id=self._offset,
            epoch=self.epoch,
            data=buf,
            tags=dict(self.tags),
            record_ends=record_ends,
            flags=flags,
        )
