"""How every source, built in or third party, turns what it reads into chunks.

Two kinds of input, one module:

* **A byte stream with offsets of its own** (a file, a pipe):
  :class:`RecordChunker` cuts it after record boundaries (``record_delimiter``,
  optionally a :class:`MultilinePattern`); ``seq_id`` is the stream offset of
  each chunk's end, so the numbering is the stream's own.  :func:`pump` reads
  a pipe into one.
* **Records that arrive already delimited** (syslog messages, HTTP bodies,
  Scribe or Flume events): a :class:`StreamLedger` numbers each stream (an
  epoch plus a byte counter), persisted ahead of use in a state file or kept
  in memory (every start is then a new epoch).  :class:`EventStreams` groups
  records per stream into chunks cut at ``chunk_size`` or ``flush_interval``
  and delivers them in order; :meth:`StreamLedger.records_chunk` makes one
  numbered chunk at once (an endpoint that answers per call).

Either way ``seq_id`` is strictly increasing per (source, stream, epoch),
``record_ends`` is set unless records are plain newline-terminated lines, a
record longer than ``chunk_size`` leaves in pieces flagged ``split`` and a
record still missing its delimiter at the end is flagged ``partial``
(design.md, "The chunk").

:class:`RecordChunker` holds the bytes fed but not yet sent in one growing
``bytearray``.  When a chunk is cut, that bytearray itself becomes the chunk's
data (no copy); only the unsent remainder is copied into a fresh buffer.  Past
4 MiB (with a ``chunk_size`` of 8 MiB or more) the bytes move into a pooled
buffer instead, one a chunk already gone was built in (logflume/chunkbuffers.py),
and the chunk is a ``memoryview`` of it: no fresh pages per chunk.  With
the plain ``\\n`` delimiter it never looks at individual records (it only
finds the last newline), which keeps the common case fast.  Times given to it
are the caller's clock (``time.monotonic()``); they only decide when
``flush_interval`` and ``partial_timeout`` are due.
"""

from __future__ import annotations

import bisect
import itertools
import json
import logging
import math
import mmap
import operator
import os
import re
import selectors
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from logflume.chunk import FLAG_PARTIAL, FLAG_SPLIT, Buffer, Chunk, now_ms
from logflume.chunkbuffers import CHUNK_BUFFERS, REUSE_FROM, SLACK, ChunkBuffers, PooledBuffer
from logflume.errors import ChannelClosed
from logflume.settings import Duration, Setting
from logflume.statefile import write_atomic

if TYPE_CHECKING:
    from logflume.source import Source

__all__ = [
    "OVERFLOW_STREAM_SUFFIX", "EventStreams", "MultilinePattern", "RecordBlock", "RecordChunker", "SourceBusy",
    "StreamLedger",
    "pump",
]

log = logging.getLogger("logflume.source")

Record = bytes | bytearray | memoryview


@dataclass(frozen=True, slots=True)
class RecordBlock:
    """Records already joined, as a bulk parser (a compiled source path) hands them over: ``data`` holds
    them back to back, ``ends`` the end of each within it."""

    data: Buffer
    ends: list[int]

    def __len__(self) -> int:
        return len(self.ends)

#: Longest an idle event-source flusher sleeps before it looks at its stop flag again.
IDLE_CHECK = 0.25

#: Stream used once ``max_streams`` distinct streams exist (hostile senders
#: could otherwise create a stream, and its buffers, per message).
OVERFLOW_STREAM_SUFFIX = "_other"


# == byte streams ============================================================================


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
    byte; once the caller says it has read everything there is, also after
    ``caught_up_flush`` since the first unsent byte or ``quiet_flush`` without
    a new byte; everything, a trailing partial record flagged ``partial``, once
    no byte arrived for ``partial_timeout``); ``finish``
    everything at end of stream.  A record longer than ``chunk_size`` leaves in ``chunk_size``
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
        quiet_flush: float = 0.0,
        caught_up_flush: float = 0.0,
        buffers: ChunkBuffers | None = None,
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
        self.quiet_flush = quiet_flush
        self.caught_up_flush = caught_up_flush
        #: Only the plain newline case may leave ``record_ends`` out (design.md).
        self.track_ends = self.delimiter != b"\n" or multiline is not None
        self._offset = start_offset
        # The bytes fed and not yet sent are _buf[:_n]: a growing bytearray, or the mapping of a pooled buffer
        # (_pooled) once they pass REUSE_FROM and a pooled buffer is free (chunk sizes of 2 x REUSE_FROM or more).
        self._buf: bytearray | mmap.mmap = bytearray()
        self._n = 0
        self._pooled: PooledBuffer | None = None
        self._buffers = (buffers if buffers is not None else CHUNK_BUFFERS) if chunk_size >= 2 * REUSE_FROM else None
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
        return self._n

    @property
    def held_bytes(self) -> int:
        """Memory this chunker holds: its pending bytes, or more while it writes into a pooled buffer whose pages
        are in place past them (what a source bounding its memory must count)."""
        pooled = self._pooled
        return self._n if pooled is None else max(self._n, pooled.written)

    def feed(self, data: Buffer, now: float) -> list[Chunk]:
        """Add bytes; returns the chunks that reached ``chunk_size``."""
        if not len(data):
            return []
        if not self._n:
            self._first_unsent_at = now
        self._last_fed_at = now
        self._append(data)
        self._find_records()
        out: list[Chunk] = []
        # Strictly more than chunk_size: a buffer of exactly chunk_size may still be one whole
        # record whose end is not known yet; cutting it now would flag it split for good.
        while self._n > self.chunk_size:
            out.append(self._cut_full())
        return out

    def poll(self, now: float, caught_up: bool = False) -> list[Chunk]:
        """Chunks due by time: complete records after ``flush_interval``; when ``caught_up`` (the input has
        nothing more to give now) also ``caught_up_flush`` after the first unsent byte or ``quiet_flush`` after
        the last; everything after ``partial_timeout``.

        A reader that keeps up with its writer sends within ``caught_up_flush`` (whether the writer pauses or
        not), while a reader that is behind (never caught up) keeps filling ``chunk_size`` chunks: low latency
        when the input is slow, big chunks under load.
        """
        if not self._n:
            return []
        if self._last_fed_at is not None and now - self._last_fed_at >= self.partial_timeout:
            return self._drain()
        if self._first_unsent_at is not None and now - self._first_unsent_at >= self.flush_interval:
            return self.flush_complete(now)
        due = self._caught_up_due(caught_up)
        if due is not None and now >= due:
            return self.flush_complete(now)
        return []

    def flush_complete(self, now: float) -> list[Chunk]:
        """The complete records held, as one chunk now (flush_interval, or the caller short of memory)."""
        end = self._complete_end()
        if end <= 0:
            return []
        chunk = self._cut(end, split=False, partial=False)
        if self._n:
            self._first_unsent_at = now
        return [chunk]

    def finish(self) -> list[Chunk]:
        """End of stream: everything still held, a trailing partial record flagged ``partial``."""
        return self._drain()

    def next_deadline(self, caught_up: bool = False) -> float | None:
        """Clock time at which :meth:`poll` (given the same ``caught_up``) will next have something to do
        (None: nothing held)."""
        if not self._n:
            return None
        times = []
        if self._last_fed_at is not None:
            times.append(self._last_fed_at + self.partial_timeout)
        if self._first_unsent_at is not None and self._complete_end() > 0:
            times.append(self._first_unsent_at + self.flush_interval)
            due = self._caught_up_due(caught_up)
            if due is not None:
                times.append(due)
        return min(times) if times else None

    def _caught_up_due(self, caught_up: bool) -> float | None:
        """When complete records are due because the input is caught up: ``caught_up_flush`` after the first
        unsent byte or ``quiet_flush`` after the last, whichever comes first (None: not caught up, or both off)."""
        if not caught_up:
            return None
        times = []
        if self.caught_up_flush > 0 and self._first_unsent_at is not None:
            times.append(self._first_unsent_at + self.caught_up_flush)
        if self.quiet_flush > 0 and self._last_fed_at is not None:
            times.append(self._last_fed_at + self.quiet_flush)
        return min(times) if times else None

    # -- record boundaries --------------------------------------------------------------------

    def _find_records(self) -> None:
        buf, n, d = self._buf, self._n, self._delimiter_len()
        if not self.track_ends:
            pos = buf.rfind(b"\n", self._scan, n)
            if pos >= 0:
                self._last_end = pos + 1
            self._scan = n
            return
        if self.multiline is None:
            delim, pos = self.delimiter, self._scan
            while True:
                hit = buf.find(delim, pos, n)
                if hit < 0:
                    break
                pos = hit + d
                self._ends.append(pos)
            # A delimiter may straddle what has arrived and what comes next.
            self._scan = max(pos, n - d + 1)
            return
        self._classify_lines()

    def _classify_lines(self) -> None:
        buf, delim, d, ml = self._buf, self.delimiter, self._delimiter_len(), self.multiline
        assert ml is not None
        view = memoryview(buf)
        try:
            pos, n = self._scan, self._n
            while True:
                hit = buf.find(delim, pos, n)
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
            self._scan = max(pos, n - d + 1)
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
        ml = self.multiline
        if ml is not None and ml.match == "after" and self._line_start < self._n:
            # The last line has no delimiter yet, so _classify_lines never saw it: it may start a record.
            start = self._line_start
            with memoryview(self._buf) as view:
                continues = ml.continues(view[start:self._n])
            if not continues and start > self._rec_start:  # at 0 the last cut already ended the record before
                self._ends.append(start)
                self._rec_start = start
            self._line_start = self._scan = self._n
        while self._n > self.chunk_size:
            out.append(self._cut_full())
        if self._n:
            end = self._n
            d = self._delimiter_len()
            partial = end < d or self._buf[end - d:end] != self.delimiter
            if self.track_ends and (not self._ends or self._ends[-1] != end):
                self._ends.append(end)  # the held record (open multiline record or partial) ends here
            out.append(self._cut(end, split=False, partial=partial))
        self._rec_start = self._line_start = self._scan = 0
        return out

    def _append(self, data: Buffer) -> None:
        """Add ``data`` after the bytes held; past ``REUSE_FROM`` they move into a pooled buffer as soon as one is
        free (also midway: a freed buffer must not stay resident beside plain memory growing to a chunk)."""
        n = self._n
        need = n + len(data)
        pooled = self._pooled
        if pooled is None and self._buffers is not None and REUSE_FROM <= need <= self.chunk_size + SLACK:
            pooled = self._buffers.take(self.chunk_size + SLACK, self)
            if pooled is not None:
                with memoryview(self._buf) as view:
                    pooled.mem[:n] = view[:n]
                pooled.wrote(n)
                self._buf, self._pooled = pooled.mem, pooled
        if pooled is None:
            self._buf += data  # type: ignore[operator]  # a bytearray while not pooled
        elif need <= len(pooled):
            if need > pooled.written:
                self._buffers.sweep(keep=0)  # type: ignore[union-attr]  # pooled implies _buffers
            pooled.mem[n:need] = data
            pooled.wrote(need)
        else:  # more than the slack past chunk_size in one feed: go on in plain memory
            with memoryview(pooled.mem) as view:
                self._buf = bytearray(view[:n])
            self._buf += data
            self._pooled = None
            pooled.cut_at(0)
        self._n = need

    def _cut(self, end: int, *, split: bool, partial: bool) -> Chunk:
        buf, n, pooled = self._buf, self._n, self._pooled
        data: Buffer
        if pooled is not None:  # the chunk is a view of the pooled buffer, which comes back once it is gone
            with memoryview(buf) as view:
                rest = bytearray(view[end:n])
            data = memoryview(buf)[:end]
            self._pooled = None
            pooled.cut_at(end)
            assert self._buffers is not None
            self._buffers.sweep()
        elif end >= n:
            data, rest = buf, bytearray()
        else:
            with memoryview(buf) as view:
                rest = bytearray(view[end:])
            del buf[end:]  # type: ignore[arg-type]  # a bytearray while not pooled
            data = buf
        self._buf, self._n = rest, n - end
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
        if not rest:
            self._first_unsent_at = None
        return Chunk(
            source=self.source,
            stream=self.stream,
            datatype=self.datatype,
            seq_id=self._offset,
            epoch=self.epoch,
            data=data,
            tags=dict(self.tags),
            record_ends=record_ends,
            flags=flags,
        )


def pump(
    fd: int,
    chunker: RecordChunker,
    deliver: Callable[[list[Chunk]], None],
    stopping: Callable[[], bool],
    block_size: int = 1 << 20,
) -> int:
    """Read a pipe (stdin, a child's stdout) into ``chunker`` until EOF or ``stopping()``; returns bytes read.

    Reads wait at most 0.1 s (selectors), so chunks are cut by size as data
    arrives and by time while the writer is slow: a read shorter than
    ``block_size`` drained the pipe, so the input is caught up (the chunker's
    ``caught_up_flush``).  Every chunk is delivered before more is read: a full
    channel stops the reading, and the writer blocks on its pipe.  What is
    held is delivered at the end.
    """
    total = 0
    caught_up = False
    sel = selectors.DefaultSelector()
    sel.register(fd, selectors.EVENT_READ)
    try:
        while not stopping():
            deadline = chunker.next_deadline(caught_up)
            wait = 0.1 if deadline is None else min(0.1, max(deadline - time.monotonic(), 0.0))
            ready = sel.select(timeout=wait)
            now = time.monotonic()
            if ready:
                data = os.read(fd, block_size)
                if not data:
                    deliver(chunker.finish())
                    return total
                total += len(data)
                caught_up = len(data) < block_size
                chunks = chunker.feed(data, now)
                if chunks:
                    deliver(chunks)
            due = chunker.poll(time.monotonic(), caught_up)
            if due:
                deliver(due)
        deliver(chunker.finish())
        return total
    finally:
        sel.close()


# == delimited records ========================================================================

#: Settings :meth:`EventStreams.for_source` reads from its source, and their values when it declares none.
EVENT_DEFAULTS: dict[str, Any] = {"datatype": "Raw", "tags": {}, "chunk_size": 1 << 20, "flush_interval": 0.5,
                                  "caught_up_flush": 0.0, "max_streams": 1000}

#: ``caught_up_flush`` as an event source that calls :meth:`EventStreams.behind` declares it.
CAUGHT_UP_FLUSH = Setting(Duration(), "20ms",
                          "While no connection has more waiting than one read takes, cut a stream's chunk once its "
                          "oldest record waited this long (0: off, only flush_interval); a source that is behind "
                          "keeps cutting full chunks")


class SourceBusy(Exception):
    """The delivery lock could not be had in time: the channel is full (answer 429 / try later)."""


class StreamLedger:
    """Epoch and next ``seq_id`` of every stream, reserved ahead in a JSON state file (or in memory).

    On disk each stream keeps ``{"epoch": E, "reserved": R}``: no chunk of
    epoch E ever ended above R.  After a restart numbering resumes at R (a gap,
    never an overlap), so ``(stream, epoch, range)`` keeps naming unique bytes
    even after a crash.  Without a state file (``path=None``) every start is a
    new epoch: its start time plus a random part, so two processes started in
    the same millisecond never share one.  Safe to use from many threads.
    """

    def __init__(self, path: Path | None, reserve: int = 1 << 30) -> None:
        self.path = path
        self.reserve = reserve
        self.started = f"{now_ms()}-{os.urandom(4).hex()}"
        self._streams: dict[str, dict[str, object]] = {}
        self._next: dict[str, int] = {}
        self._lock = threading.Lock()
        if path is not None and path.exists():
            try:
                saved = json.loads(path.read_text(encoding="utf-8"))
                for stream, entry in saved.get("streams", {}).items():
                    self._streams[stream] = {"epoch": str(entry["epoch"]), "reserved": int(entry["reserved"])}
                    self._next[stream] = int(entry["reserved"])
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                # A damaged ledger must not stop the source: start new epochs instead.
                self._streams.clear()
                self._next.clear()

    def epoch(self, stream: str) -> str:
        entry = self._streams.get(stream)
        return str(entry["epoch"]) if entry else self.started

    def allocate(self, stream: str, nbytes: int) -> tuple[str, int]:
        """Number ``nbytes`` more bytes of ``stream``: returns (epoch, seq_id of their end)."""
        with self._lock:
            entry = self._streams.get(stream)
            if entry is None:
                entry = self._streams[stream] = {"epoch": self.started, "reserved": 0}
                self._next[stream] = 0
            end = self._next[stream] + nbytes
            if end > int(entry["reserved"]):  # type: ignore[arg-type]
                entry["reserved"] = end + self.reserve
                self._save()
            self._next[stream] = end
            return str(entry["epoch"]), end

    def chunk(self, *, source: str, stream: str, datatype: str, tags: dict[str, str], data: Buffer,
              record_ends: list[int], flags: Iterable[str] = ()) -> Chunk:
        """``data`` (whole records ending at ``record_ends``) as the next chunk of ``stream``."""
        epoch, seq_id = self.allocate(stream, len(data))
        return Chunk(source=source, stream=stream, datatype=datatype, seq_id=seq_id, epoch=epoch, data=data,
                     tags=dict(tags), record_ends=record_ends, timestamp=now_ms(), flags=sorted(flags))

    def records_chunk(self, *, source: str, stream: str, datatype: str, tags: dict[str, str],
                      records: Sequence[Buffer]) -> Chunk:
        """One chunk holding ``records`` now (small messages of one call: joined once, with ``record_ends``)."""
        ends: list[int] = []
        pos = 0
        for r in records:
            pos += len(r)
            ends.append(pos)
        return self.chunk(source=source, stream=stream, datatype=datatype, tags=tags, data=b"".join(records),
                          record_ends=ends)

    def _save(self) -> None:
        if self.path is None:
            return
        write_atomic(self.path, json.dumps({"streams": self._streams}).encode())


class _Pending:
    """Records of one stream waiting to become a chunk."""

    __slots__ = ("buf", "ends", "flags", "since")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.ends: list[int] = []
        self.flags: set[str] = set()
        self.since = 0.0


class EventStreams:
    """Groups delimited records per stream into chunks and delivers them in order.

    ``deliver`` is called with the lock held and must block until the chunks
    are committed (``SourceOutput.deliver``).  ``add`` buffers (for senders
    that expect no answer); ``deliver_now`` returns only once its records are
    committed (for senders that get an answer: HTTP 200, forward ack).

    A stream is cut ``flush_interval`` after its oldest pending record, or
    already ``caught_up_flush`` after it (when that is set) if no reader
    reported :meth:`behind` within the last ``caught_up_flush``: what the
    tail does at the end of a file.  A source keeping up with its senders
    sends within milliseconds; one that is behind keeps cutting big chunks.
    """

    def __init__(
        self,
        *,
        source: str,
        datatype: str,
        tags: dict[str, str],
        chunk_size: int,
        flush_interval: float,
        deliver: Callable[[Sequence[Chunk]], None],
        ledger: StreamLedger,
        caught_up_flush: float = 0.0,
        max_streams: int = 1000,
        buffer_limit: int = 64 << 20,
        on_committed: Callable[[Sequence[Chunk]], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.source = source
        self.datatype = datatype
        self.tags = dict(tags)
        self.chunk_size = chunk_size
        self.flush_interval = flush_interval
        self.caught_up_flush = caught_up_flush
        self._behind_at = -math.inf  # when a reader last found more waiting than it took
        self.max_streams = max_streams
        self.buffer_limit = buffer_limit
        self.ledger = ledger
        self._deliver = deliver
        self._on_committed = on_committed
        self._on_error = on_error or (lambda exc: log.error("flush of %s failed: %r", source, exc))
        self.lock = threading.RLock()
        self._pending: dict[str, _Pending] = {}
        self._pending_bytes = 0
        self._arrived = threading.Event()  # a stream began pending: wakes an idle flusher
        self._known: set[str] = set()
        self._known_lock = threading.Lock()  # not self.lock: naming a stream must not wait for a full channel

    @classmethod
    def for_source(cls, source: Source, deliver: Callable[[Sequence[Chunk]], None], **overrides: Any) -> EventStreams:
        """The streams of an event source: its settings, its ledger in its state dir, its metrics.

        Committed chunks are counted in the source's ``chunks_out``/``bytes_out``; flush
        errors in its ``errors`` and its log.  ``overrides`` replace constructor arguments.
        """
        c, m = source.config, source.metrics

        def committed(chunks: Sequence[Chunk]) -> None:
            m.chunks_out.inc(len(chunks))
            m.bytes_out.inc(sum(len(ch) for ch in chunks))

        def failed(exc: BaseException) -> None:
            m.errors.inc()
            source.log.error("source %s: flush failed: %r", source.name, exc)

        # Settings the source declares, unless overridden (the http source has no flush_interval);
        # a source that declares none of them gets the defaults of the built-in event sources.
        args: dict[str, Any] = {name: overrides.pop(name) if name in overrides else c.get(name, default)
                                for name, default in EVENT_DEFAULTS.items()}
        ledger = StreamLedger(source.context.state_dir("source", source.name) / "streams.json",
                              reserve=max(1 << 30, args["chunk_size"] * 16))
        return cls(source=source.context.agent_name, deliver=deliver, ledger=ledger, on_committed=committed,
                   on_error=failed, **args, **overrides)

    # -- stream names -------------------------------------------------------
    def admit(self, stream: str, overflow: str) -> str:
        """``stream`` if it is known or there is room for a new one, else ``overflow``."""
        if stream in self._known:
            return stream
        with self._known_lock:
            if len(self._known) < self.max_streams:
                self._known.add(stream)
                return stream
        return overflow

    # -- buffering ----------------------------------------------------------
    def add(self, stream: str, record: Record, flags: Iterable[str] = (), terminator: bytes = b"") -> None:
        """Buffer one record (``terminator`` appended); delivers (blocking) if a chunk filled up."""
        with self.lock:
            chunks = self._append(stream, record, flags, terminator)
            if self._pending_bytes > self.buffer_limit:
                chunks += self._cut_all()
            if chunks:
                self._send(chunks)

    def add_many(self, items: Iterable[tuple[str, Record, tuple[str, ...]]], terminator: bytes = b"") -> None:
        """``add`` for a batch of (stream, record, flags) under one lock (what one socket read gave)."""
        with self.lock:
            chunks: list[Chunk] = []
            for stream, record, flags in items:
                chunks += self._append(stream, record, flags, terminator)
            if self._pending_bytes > self.buffer_limit:
                chunks += self._cut_all()
            if chunks:
                self._send(chunks)

    def add_blocks(self, blocks: Iterable[tuple[str, RecordBlock]]) -> None:
        """``add_many`` for records already joined, a block per stream.

        A bulk parser (a compiled source path) hands over a whole read's records per stream at once;
        chunks are still cut at ``chunk_size`` on record boundaries.
        """
        with self.lock:
            chunks: list[Chunk] = []
            for stream, block in blocks:
                chunks += self._append_block(stream, block.data, block.ends)
            if self._pending_bytes > self.buffer_limit:
                chunks += self._cut_all()
            if chunks:
                self._send(chunks)

    def deliver_now(
        self, batches: Sequence[tuple[str, Sequence[Record] | RecordBlock]], lock_timeout: float | None = None,
    ) -> int:
        """Deliver these records now, with whatever their streams had pending; returns bytes delivered.

        Raises :class:`SourceBusy` when the lock is not free within
        ``lock_timeout`` seconds (another delivery is blocked on a full channel).
        """
        if not self.lock.acquire(timeout=-1 if lock_timeout is None else lock_timeout):
            raise SourceBusy("channel full: a delivery is already waiting")
        try:
            chunks: list[Chunk] = []
            for stream, records in batches:
                if isinstance(records, RecordBlock):
                    chunks += self._append_block(stream, records.data, records.ends)
                    continue
                for record in records:
                    chunks += self._append(stream, record, ())
            for stream in dict.fromkeys(s for s, _ in batches):
                chunks += self._cut(stream)
            if chunks:
                self._send(chunks)
            return sum(len(c) for c in chunks)
        finally:
            self.lock.release()

    def behind(self, now: float | None = None) -> None:
        """A reader took a full read: more was waiting.  Holds off ``caught_up_flush`` cuts for that long."""
        self._behind_at = time.monotonic() if now is None else now

    def poll(self, now: float | None = None) -> None:
        """Deliver the streams whose oldest record waited ``flush_interval`` (``caught_up_flush`` when caught up)."""
        now = time.monotonic() if now is None else now
        wait = self.flush_interval
        if 0 < self.caught_up_flush < wait and now - self._behind_at >= self.caught_up_flush:
            wait = self.caught_up_flush
        with self.lock:
            due = [s for s, p in self._pending.items() if p.buf and now - p.since >= wait]
            chunks: list[Chunk] = []
            for stream in due:
                chunks += self._cut(stream)
            if chunks:
                self._send(chunks)

    def poll_until(self, stopping: threading.Event, idle_check: float = IDLE_CHECK) -> None:
        """The flusher thread of an event source: cut chunks due by time until ``stopping`` is set.

        With nothing pending it sleeps until a stream has a record (or ``idle_check`` passed, to
        notice ``stopping``) instead of waking every few milliseconds: an idle agent with a syslog and
        a forward source spent 1.7-2.8 % of a core on those wake-ups, 0.2 % now (2026-12-07).
        """
        soonest = min(self.flush_interval, self.caught_up_flush or math.inf)
        interval = max(0.005, min(soonest / 4, 0.25))
        while not stopping.is_set():
            self._arrived.clear()
            if not self._pending:
                self._arrived.wait(idle_check)
                continue
            if stopping.wait(interval):
                return
            try:
                self.poll()
            except ChannelClosed:
                return
            except Exception as exc:
                self._on_error(exc)

    def flush(self) -> None:
        """Deliver everything pending (on shutdown)."""
        with self.lock:
            chunks = self._cut_all()
            if chunks:
                self._send(chunks)

    def flush_within(self, timeout: float, log) -> None:
        """``flush`` at shutdown, giving up after ``timeout`` (a channel that stays full must not hang stop)."""
        def run() -> None:
            try:
                self.flush()
            except ChannelClosed:
                pass

        worker = threading.Thread(target=run, name="flush-on-stop", daemon=True)
        worker.start()
        worker.join(timeout)
        if worker.is_alive() or self._pending_bytes:
            log.warning("%d buffered bytes could not be delivered at shutdown (channel full or closed)",
                        self._pending_bytes)

    @property
    def pending_bytes(self) -> int:
        return self._pending_bytes

    # -- internals (lock held) ---------------------------------------------
    def _get(self, stream: str) -> _Pending:
        pending = self._pending.get(stream)
        if pending is None:
            pending = self._pending[stream] = _Pending()
            pending.since = time.monotonic()
            self._arrived.set()
        return pending

    def _append(self, stream: str, record: Record, flags: Iterable[str], terminator: bytes = b"") -> list[Chunk]:
        out: list[Chunk] = []
        size = self.chunk_size
        n = len(record) + len(terminator)
        pending = self._pending.get(stream)
        if pending is not None and pending.buf and len(pending.buf) + n > size:
            out += self._cut(stream)
        pos = 0
        if n > size:
            if terminator:
                record, terminator = bytes(record) + terminator, b""
            # A record longer than a chunk is split; every piece but the last is flagged.
            view = memoryview(record)
            while n - pos > size:
                pending = self._get(stream)
                pending.buf += view[pos:pos + size]
                pending.flags.add(FLAG_SPLIT)
                self._pending_bytes += size
                out += self._cut(stream, record_end=False)
                pos += size
            record = view[pos:]
        pending = self._get(stream)
        pending.buf += record
        if terminator:
            pending.buf += terminator
        pending.ends.append(len(pending.buf))
        pending.flags.update(flags)
        self._pending_bytes += n - pos
        if len(pending.buf) >= size:
            out += self._cut(stream)
        return out

    def _append_block(self, stream: str, records: Buffer, ends: list[int]) -> list[Chunk]:
        out: list[Chunk] = []
        size = self.chunk_size
        view = memoryview(records)
        start = k = 0  # the first record not appended yet: its offset in records, its index in ends
        while k < len(ends):
            pending = self._pending.get(stream)
            used = len(pending.buf) if pending is not None else 0
            j = bisect.bisect_right(ends, start + size - used, k)  # records k..j-1 fit beside what is pending
            if j == k:
                if used:
                    out += self._cut(stream)
                else:  # a record longer than a chunk: split as add() splits it
                    out += self._append(stream, view[start:ends[k]], ())
                    start, k = ends[k], k + 1
                continue
            pending = self._get(stream)
            base = len(pending.buf) - start
            pending.buf += view[start:ends[j - 1]]
            pending.ends += map(operator.add, ends[k:j], itertools.repeat(base)) if base else ends[k:j]
            self._pending_bytes += ends[j - 1] - start
            start, k = ends[j - 1], j
            if len(pending.buf) >= size:
                out += self._cut(stream)
        return out

    def _cut(self, stream: str, record_end: bool = True) -> list[Chunk]:
        pending = self._pending.get(stream)
        if pending is None or not pending.buf:
            return []
        data = pending.buf
        chunk = self.ledger.chunk(source=self.source, stream=stream, datatype=self.datatype, tags=self.tags,
                                  data=data, record_ends=pending.ends if record_end else [], flags=pending.flags)
        self._pending_bytes -= len(data)
        del self._pending[stream]
        return [chunk]

    def _cut_all(self) -> list[Chunk]:
        out: list[Chunk] = []
        for stream in list(self._pending):
            out += self._cut(stream)
        return out

    def _send(self, chunks: list[Chunk]) -> None:
        # One transaction per chunk: a batch of several chunks could exceed the channel's
        # capacity and then never fit; a single chunk is always admitted into an empty channel.
        for chunk in chunks:
            self._deliver([chunk])
            if self._on_committed is not None:
                self._on_committed([chunk])
