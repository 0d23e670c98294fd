"""Per-stream batching of whole records into chunks, numbered so ``seq_id`` never repeats.

Event sources (syslog, http, forward) receive records that are already
delimited.  :class:`EventStreams` groups them per stream into chunks cut at
``chunk_size`` or after ``flush_interval``; :class:`StreamLedger` numbers each
stream (an epoch plus a byte counter) and persists the counter *ahead* of use,
so a restart continues above anything that was ever handed to a channel.

Every delivery happens under one lock: chunks of a stream reach the channel
in ``seq_id`` order, and while a full channel blocks that delivery every
producer waiting on the lock stops reading its input (back-pressure).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from logflume.chunk import FLAG_SPLIT, Chunk, now_ms
from logflume.errors import ChannelClosed
from logflume.statefile import write_atomic

if TYPE_CHECKING:
    from logflume.source import Source

log = logging.getLogger("logflume.source")

Record = bytes | bytearray | memoryview

#: Stream used once ``max_streams`` distinct streams exist (hostile senders
#: could otherwise create a stream, and its buffers, per message).
OVERFLOW_STREAM_SUFFIX = "_other"


class SourceBusy(Exception):
    """The delivery lock could not be had in time: the channel is full (answer 429 / try later)."""


class StreamLedger:
    """Epoch and next ``seq_id`` of every stream, reserved ahead in a JSON file.

    On disk each stream keeps ``{"epoch": E, "reserved": R}``: no chunk of
    epoch E ever ended above R.  After a restart numbering resumes at R (a gap,
    never an overlap), so ``(stream, epoch, range)`` keeps naming unique bytes
    even after a crash.  Without a state file every start is a new epoch.
    """

    def __init__(self, path: Path | None, reserve: int = 1 << 30) -> None:
        self.path = path
        self.reserve = reserve
        self.started = str(now_ms())
        self._streams: dict[str, dict[str, object]] = {}
        self._next: dict[str, int] = {}
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
        self.max_streams = max_streams
        self.buffer_limit = buffer_limit
        self.ledger = ledger
        self._deliver = deliver
        self._on_committed = on_committed
        self._on_error = on_error or (lambda exc: log.error("flush of %s failed: %r", source, exc))
        self.lock = threading.RLock()
        self._pending: dict[str, _Pending] = {}
        self._pending_bytes = 0
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

        # Settings the source declares, unless overridden (the http source has no flush_interval).
        args: dict[str, Any] = {name: overrides.pop(name) if name in overrides else getattr(c, name)
                                for name in ("datatype", "tags", "chunk_size", "flush_interval", "max_streams")}
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

    def deliver_now(
        self, batches: Sequence[tuple[str, Sequence[Record]]], lock_timeout: float | None = None,
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
                for record in records:
                    chunks += self._append(stream, record, ())
            for stream in dict.fromkeys(s for s, _ in batches):
                chunks += self._cut(stream)
            if chunks:
                self._send(chunks)
            return sum(len(c) for c in chunks)
        finally:
            self.lock.release()

    def poll(self, now: float | None = None) -> None:
        """Deliver the streams whose oldest record waited ``flush_interval``."""
        now = time.monotonic() if now is None else now
        with self.lock:
            due = [s for s, p in self._pending.items() if p.buf and now - p.since >= self.flush_interval]
            chunks: list[Chunk] = []
            for stream in due:
                chunks += self._cut(stream)
            if chunks:
                self._send(chunks)

    def poll_until(self, stopping: threading.Event) -> None:
        """The flusher thread of an event source: cut chunks due by time until ``stopping`` is set."""
        interval = max(0.01, min(self.flush_interval / 4, 0.25))
        while not stopping.wait(interval):
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

    def _cut(self, stream: str, record_end: bool = True) -> list[Chunk]:
        pending = self._pending.get(stream)
        if pending is None or not pending.buf:
            return []
        data = pending.buf
        epoch, seq_id = self.ledger.allocate(stream, len(data))
        chunk = Chunk(
            source=self.source, stream=stream, datatype=self.datatype, seq_id=seq_id, epoch=epoch,
            data=data, tags=dict(self.tags), record_ends=pending.ends if record_end else [],
            timestamp=now_ms(), flags=sorted(pending.flags),
        )
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
