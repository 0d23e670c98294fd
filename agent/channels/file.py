"""FileChannel: a durable, transactional channel on local disk.

Every put is appended to a log of segment files as a checksummed record; a
commit appends a COMMIT record (listing the chunks its takes consume) and, by
default, fdatasyncs before it returns.  So a chunk whose put committed
survives ``kill -9`` and power loss, a take that did not commit comes back,
and a torn last record (the crash hit mid-write) is recognised by its
checksum and dropped: it was never committed.  Only positions and lengths of
the held chunks stay in memory; a take reads its chunk back with one
``preadv`` into a fresh buffer.  A periodic checkpoint records what is held
so that a reopen replays only the log after it, and lets fully consumed
segments be deleted.  See docs/channels.md.
"""

from __future__ import annotations

import fcntl
import heapq
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import ClassVar

from agent.channels.filelog import checkpoint as checkpoints
from agent.channels.filelog import salvage
from agent.channels.filelog.checkpoint import Checkpoint, Entry
from agent.channels.filelog.records import (
    HEADER_SIZE,
    OP_COMMIT,
    OP_PUT,
    OP_ROLLBACK,
    BadRecord,
    LogCorrupted,
    body_crc,
    encode_positions,
    read_put,
)
from agent.channels.filelog.replay import Damage, ReplayResult, replay
from agent.channels.filelog.segments import LogWriteError, SegmentLog, list_segments
from logflume.channel import ByteBudget, Channel, StagedTransaction, Transaction, wait_for_head
from logflume.chunk import Buffer, Chunk
from logflume.errors import ChannelClosed, ConfigError, LogflumeError, StartupError
from logflume.settings import Duration, Enum, Optional, Setting, Size, Str
from logflume.statefile import STATE_FILE_MODE, make_state_dir

__all__ = ["FileChannel", "ChunkTooLarge", "LogCorrupted", "LogWriteError"]

#: A held chunk: (commit sequence number, its PUT record's entry).
_Held = tuple[int, Entry]


class ChunkTooLarge(LogflumeError, ValueError):
    """A put of a chunk above ``max_chunk_size``: a configuration mismatch, not a transient failure."""


class FileChannel(Channel):
    durable: ClassVar[bool] = True
    settings: ClassVar[dict[str, Setting]] = {
        "capacity": Setting(Size(min=1), "1GiB", "Bytes of chunks the channel holds before put blocks (back-pressure)"),
        "dir": Setting(Optional(Str()), None,
                       "Directory of the segment files and checkpoint (default: <data_dir>/channel/<name>)"),
        "segment_size": Setting(Size(min=4096), "64MiB",
                                "Roll to a new segment file after this many bytes (a bigger record gets its own)"),
        "fsync": Setting(Enum("every_commit", "interval"), "every_commit",
                         "every_commit: a commit returns once on disk; interval: fsync every fsync_interval"),
        "fsync_interval": Setting(Duration(), "1s", "How often to fsync when fsync is interval"),
        "checkpoint_interval": Setting(Duration(), "30s",
                                       "How often to checkpoint (also done on every segment roll and on stop)"),
        "max_chunk_size": Setting(Size(min=1), "256MiB", "A put of a bigger chunk fails with ChunkTooLarge"),
        "on_corruption": Setting(Enum("refuse", "quarantine"), "refuse",
                                 "Damaged log: refuse (to start; a damaged chunk stops the take), or quarantine: move "
                                 "the damage to <dir>.quarantine/ and go on with every intact chunk"),
    }

    def configure(self) -> None:
        file = self.context.config_file
        if self.config.fsync == "interval" and self.config.fsync_interval <= 0:
            raise ConfigError(file, f"channels.{self.name}.fsync_interval", "expected a duration above 0")
        if self.config.checkpoint_interval <= 0:
            raise ConfigError(file, f"channels.{self.name}.checkpoint_interval", "expected a duration above 0")
        self._cond = threading.Condition()
        self._write_lock = threading.Lock()
        self._checkpoint_lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._durable = (0, 0)  # the log is on disk up to this (segment, offset)
        self._closed = True
        self._log: SegmentLog | None = None
        self._lock_fd = -1
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.directory: Path | None = Path(self.config.dir) if self.config.dir else None
        self._reset_state()
        self._fill = self.metrics.gauge("channel_fill_bytes", "Bytes held by the channel")
        self._fill_chunks = self.metrics.gauge("channel_fill_chunks", "Chunks held by the channel")
        self.metrics.gauge("channel_capacity_bytes", "Channel capacity in bytes").set(self.config.capacity)
        self._fsyncs = self.metrics.counter("channel_fsyncs", "fsync calls made by a durable channel")
        self._checkpoints = self.metrics.counter("channel_checkpoints", "Checkpoints written by a durable channel")
        self._segments = self.metrics.gauge("channel_segments", "Segment files of a durable channel on disk")
        self._quarantined = self.metrics.counter("channel_quarantined_bytes",
                                                 "Damaged bytes moved to the quarantine folder")

    def _reset_state(self) -> None:
        self._queue: OrderedDict[tuple[int, int], _Held] = OrderedDict()  # committed, not taken; commit order
        self._taken: dict[tuple[int, int], _Held] = {}  # taken by open transactions, not yet consumed
        self._open_puts: dict[int, list[Entry]] = {}  # txid -> PUT records written, not committed
        # capacity covers bytes queued + taken + staged by open puts
        self._budget = ByteBudget(self._cond, self.config.capacity, self.name, lambda: self._closed)
        self._held_bytes = 0  # bytes queued + taken: committed and not yet consumed
        self._seq = 0
        self._next_txid = 1
        self._reading = 0  # takes reading a chunk outside the lock; stop waits for them

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if not self._closed:
            return
        if self.directory is None:
            self.directory = self.context.state_dir("channel", self.name)
        directory = self.directory
        try:
            make_state_dir(directory)
            self._lock_fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, STATE_FILE_MODE)
        except OSError as exc:
            raise StartupError(f"file channel {self.name}: cannot use directory {directory}: {exc.strerror}") from None
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = -1
            raise StartupError(
                f"file channel {self.name}: {directory} is in use by another channel or process") from None
        try:
            self._open(directory)
        except BaseException:
            self._release_dir()
            raise
        self._closed = False
        self._stopping.clear()
        self._thread = threading.Thread(target=self._background, name=f"channel-{self.name}", daemon=True)
        self._thread.start()

    def _open(self, directory: Path) -> None:
        try:
            ckpt, segments, result = self._replay(directory)
        except LogCorrupted as exc:
            if self.config.on_corruption == "refuse":
                raise LogCorrupted(exc.segment, exc.offset, exc.reason, salvage.commands_hint(directory)) from None
            self._quarantine(directory, exc)
            ckpt, segments, result = self._replay(directory)
        if result.torn:
            self.log.warning("file channel %s: discarded a torn record at the end of %s (offset %d, %d bytes): %s",
                             self.name, *result.torn)
        if result.discarded_puts:
            self.log.info("file channel %s: discarded %d chunk(s) of transactions that never committed",
                          self.name, result.discarded_puts)
        self._reset_state()
        for entry in result.queue:
            self._seq += 1
            self._queue[(entry[0], entry[1])] = (self._seq, entry)
            self._held_bytes += entry[3]
        self._budget.used = self._held_bytes
        self._next_txid = result.next_txid
        self._durable = (0, 0)
        first = max([*segments, ckpt.segment]) + 1
        if not (directory / checkpoints.FILE_NAME).exists():
            # A fresh directory: its first checkpoint goes to disk before its first segment, so a kill
            # in between cannot leave a segment without a checkpoint (which the next start refuses).
            try:
                checkpoints.save(directory, ckpt)
            except OSError as exc:
                raise StartupError(f"file channel {self.name}: cannot write the first checkpoint in {directory}: "
                                   f"{exc.strerror or exc}") from None
        try:
            self._log = SegmentLog(directory, self.config.segment_size, first, on_fsync=self._fsyncs.inc)
        except OSError as exc:
            raise StartupError(f"file channel {self.name}: cannot create a segment in {directory}: {exc.strerror}") \
                from None
        self._update_gauges()
        self._try_checkpoint("after reopen")
        self.log.info("file channel %s: opened %s with %d chunk(s), %d bytes (%d record(s) replayed)",
                      self.name, directory, len(self._queue), self._held_bytes, result.records)

    @staticmethod
    def _replay(directory: Path) -> tuple[Checkpoint, list[int], ReplayResult]:
        ckpt = checkpoints.load(directory)
        segments = list_segments(directory)
        if ckpt is None:
            if segments:
                raise LogCorrupted(str(directory / checkpoints.FILE_NAME), 0,
                                   f"checkpoint missing but {len(segments)} segment file(s) exist; "
                                   "replaying them without it could resurrect or lose chunks")
            ckpt = Checkpoint(segment=0)
        return ckpt, segments, replay(directory, ckpt, segments)

    def _quarantine(self, directory: Path, found: LogCorrupted) -> None:
        """on_corruption: quarantine: what ``logflume channel salvage`` does, then start."""
        self.log.error("file channel %s: %s; quarantining the damage (on_corruption: quarantine)", self.name, found)
        try:
            moved = salvage.salvage(directory)
        except OSError as exc:
            raise StartupError(f"file channel {self.name}: {found}; quarantine failed: {exc.strerror or exc} "
                               f"({exc.filename}); {salvage.commands_hint(directory)}") from None
        if moved is None:  # the survey is replay's tolerant twin: it always sees what replay refused
            raise LogCorrupted(found.segment, found.offset, found.reason, salvage.commands_hint(directory))
        self._quarantined.inc(moved.bytes)
        self.metrics.errors.inc()
        for d in moved.damage:
            self.log.warning("file channel %s: quarantined %s at offset %d (%d bytes): %s; %s",
                             self.name, d.path, d.offset, d.length, d.reason, d.impact)
        self.log.warning("file channel %s: %d damaged region(s), %d bytes, moved to %s; starting with %d intact "
                         "chunk(s)", self.name, len(moved.damage), moved.bytes, moved.directory, moved.kept_chunks)

    def stop(self) -> None:
        with self._cond:
            was_open = not self._closed
            self._closed = True
            self._cond.notify_all()
            # Let takes that are reading a chunk finish before their descriptors close.
            self._cond.wait_for(lambda: self._reading == 0, timeout=30)
        self._stopping.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
        self._thread = None
        if not was_open and self._log is None:
            return
        try:
            self._try_checkpoint("at stop")
        finally:
            try:
                with self._write_lock:
                    log, self._log = self._log, None
                    if log is not None:
                        log.close()
            finally:
                self._release_dir()

    def _release_dir(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = -1

    # -- Channel API -------------------------------------------------------------------------

    def transaction(self) -> Transaction:
        return _FileTransaction(self)

    def size_bytes(self) -> int:
        """Bytes committed and not yet consumed (queued plus taken by open transactions)."""
        with self._cond:
            return self._held_bytes

    def size_chunks(self) -> int:
        with self._cond:
            return len(self._queue) + len(self._taken)

    def checkpoint(self) -> None:
        """Write a checkpoint now and delete the segments nothing needs any more.

        The snapshot is taken under the write lock, so it is exactly the state
        at one log position; the log is fsynced up to that position first.
        """
        with self._checkpoint_lock:
            with self._write_lock:
                log = self._log
                if log is None or log.broken is not None:
                    return
                with self._cond:
                    taken = sorted(self._taken.values())
                    held = [e for _, e in heapq.merge(taken, self._queue.values())]
                    open_puts = {t: list(es) for t, es in self._open_puts.items()}
                    next_txid = self._next_txid
                seg, off = log.current, log.offset
            self._sync_to((seg, off))
            ckpt = Checkpoint(next_txid, seg, off, held, open_puts)
            assert self.directory is not None
            checkpoints.save(self.directory, ckpt)
            self._checkpoints.inc()
            needed = ckpt.referenced_segments()
            remaining = 0
            for number in list_segments(self.directory):
                if number < seg and number not in needed:
                    log.delete(number)
                else:
                    remaining += 1
            self._segments.set(remaining)

    def _try_checkpoint(self, when: str) -> None:
        """Checkpoint, but only warn on failure: the previous checkpoint plus the log stay valid."""
        try:
            self.checkpoint()
        except OSError as exc:
            self.metrics.errors.inc()
            self.log.warning("file channel %s: checkpoint %s failed (%s); the previous one stays valid, "
                             "the next reopen replays more log", self.name, when, exc.strerror or exc)

    # -- background: interval fsync and periodic checkpoints --------------------------------

    def _background(self) -> None:
        interval_sync = self.config.fsync == "interval"
        tick = min(self.config.checkpoint_interval, self.config.fsync_interval if interval_sync else 1.0, 1.0)
        next_sync = time.monotonic() + self.config.fsync_interval
        next_ckpt = time.monotonic() + self.config.checkpoint_interval
        checkpointed_segment = self._log.current if self._log else 0
        while not self._stopping.wait(tick):
            try:
                now = time.monotonic()
                if interval_sync and now >= next_sync:
                    self._sync_now()
                    next_sync = now + self.config.fsync_interval
                log = self._log
                rolled = log is not None and log.current != checkpointed_segment
                if now >= next_ckpt or rolled:
                    if log is not None:
                        checkpointed_segment = log.current
                    self.checkpoint()
                    next_ckpt = time.monotonic() + self.config.checkpoint_interval
            except Exception:
                self.metrics.errors.inc()
                self.log.exception("file channel %s: background fsync/checkpoint failed", self.name)

    def _sync_to(self, target: tuple[int, int]) -> None:
        """Return once the log is on disk up to ``target`` (segment, offset): group commit.

        Concurrent committers share one fdatasync: whoever syncs covers every
        record appended before it started, and the others find their target
        already durable.  The write lock is not held during the fdatasync.
        """
        with self._sync_lock:
            if self._durable >= target:
                return
            with self._write_lock:
                log = self._log
                if log is None:
                    raise ChannelClosed(self.name)
                if log.broken is not None:
                    raise LogWriteError(f"file channel {self.name}: log unusable after an earlier failure "
                                        f"({log.broken}); restart to recover")
                pos = (log.current, log.offset)
                if log.synced_offset == log.offset:  # synced by a roll or the last sync
                    self._durable = max(self._durable, pos)
                    return
                fd, _end = log.dup_for_sync()
            try:
                os.fdatasync(fd)
            except OSError as exc:
                log.broken = exc
                self.metrics.errors.inc()
                raise LogWriteError(f"fsync of {log.path(pos[0])} failed ({exc.strerror or exc}); the last "
                                    "commit may not be durable; restart to recover") from exc
            finally:
                os.close(fd)
            self._fsyncs.inc()
            with self._write_lock:
                if log.current == pos[0]:
                    log.synced_offset = max(log.synced_offset, pos[1])
            self._durable = pos

    def _sync_now(self) -> None:
        with self._write_lock:
            log = self._log
            if log is None or log.broken is not None:
                return
            end = (log.current, log.offset)
        self._sync_to(end)

    # -- used by transactions ----------------------------------------------------------------

    def _new_txid(self) -> int:
        with self._cond:
            txid = self._next_txid
            self._next_txid += 1
            return txid

    def _append_locked(self, op: int, txid: int, meta: Buffer, data: Buffer, crc: int) -> tuple[int, int]:
        if self._closed or self._log is None:
            raise ChannelClosed(self.name)
        try:
            return self._log.append(op, txid, meta, data, crc)
        except LogWriteError:
            self.metrics.errors.inc()
            raise

    def _put(self, txid: int, chunk: Chunk, timeout: float | None) -> Entry:
        n = len(chunk.data)
        if n > self.config.max_chunk_size:
            raise ChunkTooLarge(f"file channel {self.name}: chunk of {n} bytes from {chunk.stream!r} is above "
                                f"max_chunk_size ({self.config.max_chunk_size} bytes)")
        self._budget.reserve(n, timeout)
        try:
            meta = chunk.metadata_json()
            crc = body_crc(meta, chunk.data)  # outside the lock: 64 MiB take ~10 ms
            with self._write_lock:
                seg, off = self._append_locked(OP_PUT, txid, meta, chunk.data, crc)
                entry = (seg, off, len(meta), n)
                with self._cond:
                    self._open_puts.setdefault(txid, []).append(entry)
        except BaseException:
            self._budget.release(n)
            raise
        return entry

    def _take(self, timeout: float | None) -> tuple[tuple[int, int], _Held, Chunk] | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._cond:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                if not wait_for_head(self._cond, lambda: bool(self._queue), lambda: self._closed, self.name, left):
                    return None
                if self._closed:
                    raise ChannelClosed(self.name)
                key, held = self._queue.popitem(last=False)
                self._taken[key] = held
                self._reading += 1
                log = self._log
            try:
                assert log is not None
                try:
                    return key, held, self._read(log, held[1])
                except LogCorrupted as exc:
                    if self.config.on_corruption == "refuse":
                        raise
                    self._quarantine_held(log, key, held, exc)
            except BaseException:
                self._return_to_head([(key, held)])
                raise
            finally:
                with self._cond:
                    self._reading -= 1
                    self._cond.notify_all()

    def _quarantine_held(self, log: SegmentLog, key: tuple[int, int], held: _Held, found: LogCorrupted) -> None:
        """on_corruption: quarantine for a held chunk found damaged at take: copy it aside, consume it durably.

        It is consumed by a COMMIT that takes it and puts nothing, so it stays gone after a restart.
        """
        seg, off, meta_len, data_len = held[1]
        path = log.path(seg)
        present = max(0, min(os.path.getsize(path), off + HEADER_SIZE + meta_len + data_len) - off)
        damage = Damage(str(path), off, present, found.reason, "committed chunk lost")
        assert self.directory is not None
        folder, copied = salvage.write_quarantine(
            self.directory, [damage], {"kept_chunks": None},
            "Found when a sink took the chunk; the channel went on with the next one.")
        body = encode_positions([key])
        with self._write_lock:
            end_seg, end_off = self._append_locked(OP_COMMIT, 0, body, b"", body_crc(body))
            with self._cond:
                del self._taken[key]
                self._held_bytes -= data_len
                self._budget.used -= data_len
                self._update_gauges()
                self._cond.notify_all()
        self._quarantined.inc(copied)
        try:
            self._sync_to((end_seg, end_off + HEADER_SIZE + len(body)))
        except LogWriteError as exc:  # not durable: after a restart the chunk is found and quarantined again
            self.log.error("file channel %s: %s", self.name, exc)
        self.log.warning("file channel %s: quarantined the held chunk at %s offset %d (%d bytes) to %s: %s",
                         self.name, path, off, copied, folder, found.reason)

    def _read(self, log: SegmentLog, entry: Entry) -> Chunk:
        seg, off, meta_len, data_len = entry
        path = log.path(seg)
        try:
            meta, data = read_put(log.reader(seg), off, meta_len, data_len)
            return Chunk.from_metadata_json(meta, data)
        except (BadRecord, ValueError) as exc:
            self.metrics.errors.inc()
            err = LogCorrupted(str(path), off, f"committed chunk unreadable: {exc}",
                               f"stop the agent, then {salvage.commands_hint(log.directory)}")
            if self.config.on_corruption == "refuse":
                self.log.error("%s (the chunk stays at the head of the channel; it is not skipped)", err)
            raise err from None
        except OSError as exc:
            self.metrics.errors.inc()
            raise LogflumeError(f"file channel {self.name}: cannot read {path} at offset {off}: "
                                f"{exc.strerror or exc}") from None

    def _return_to_head(self, items: list[tuple[tuple[int, int], _Held]]) -> None:
        """Put taken chunks back at the head, merged by commit order (so order survives any rollback order)."""
        with self._cond:
            for key, _ in items:
                del self._taken[key]
            items = sorted(items, key=lambda kv: kv[1][0])
            newest = items[-1][1][0]
            prefix = []
            while self._queue:
                key, held = next(iter(self._queue.items()))
                if held[0] > newest:
                    break
                self._queue.popitem(last=False)
                prefix.append((key, held))
            merged = list(heapq.merge(prefix, items, key=lambda kv: kv[1][0]))
            for key, held in reversed(merged):
                self._queue[key] = held
                self._queue.move_to_end(key, last=False)
            self._update_gauges()
            self._cond.notify_all()

    def _commit(self, txid: int, puts: list[Entry], takes: list[tuple[tuple[int, int], _Held]]) -> tuple[int, int]:
        """Append the COMMIT record and apply it; returns the log position to sync to.

        State changes together with the append (under the write lock), so a
        checkpoint always matches its log position.  The chunks are visible to
        takers before the fsync that follows: if power fails in between, they
        may be delivered and then reappear or be re-read by the source, which
        is a duplicate, never a loss.
        """
        body = encode_positions(key for key, _ in takes)
        with self._write_lock:
            seg, off = self._append_locked(OP_COMMIT, txid, body, b"", body_crc(body))
            with self._cond:
                for entry in puts:
                    self._seq += 1
                    self._queue[(entry[0], entry[1])] = (self._seq, entry)
                    self._held_bytes += entry[3]
                self._open_puts.pop(txid, None)
                taken_bytes = 0
                for key, held in takes:
                    del self._taken[key]
                    taken_bytes += held[1][3]
                self._held_bytes -= taken_bytes
                self._budget.used -= taken_bytes
                self._update_gauges()
                self._cond.notify_all()
        return seg, off + HEADER_SIZE + len(body)

    def _rollback_puts(self, txid: int, put_bytes: int) -> None:
        try:
            with self._write_lock:
                if not self._closed and self._log is not None and self._log.broken is None:
                    self._log.append(OP_ROLLBACK, txid, b"", b"", body_crc(b""))
        except LogWriteError as exc:
            # Advisory only: a PUT that never commits is discarded on reopen anyway.
            self.log.debug("file channel %s: could not log rollback of tx %d: %s", self.name, txid, exc)
        with self._cond:
            self._open_puts.pop(txid, None)
            self._budget.used -= put_bytes
            self._cond.notify_all()

    def _update_gauges(self) -> None:
        self._fill.set(self._held_bytes)
        self._fill_chunks.set(len(self._queue) + len(self._taken))


class _FileTransaction(StagedTransaction):
    channel: FileChannel

    def __init__(self, channel: FileChannel) -> None:
        super().__init__(channel)
        self._txid = 0
        self._end = (0, 0)  # log position of the COMMIT record

    def _stage(self, chunk: Chunk, timeout: float | None) -> Entry:
        if not self._txid:
            self._txid = self.channel._new_txid()
        return self.channel._put(self._txid, chunk, timeout)

    def _take(self, timeout: float | None) -> tuple[tuple[tuple[int, int], _Held], Chunk] | None:
        got = self.channel._take(timeout)
        if got is None:
            return None
        key, held, chunk = got
        return (key, held), chunk

    def _apply(self) -> None:
        self._end = self.channel._commit(self._txid, self.puts, self.takes)  # fails: the COMMIT is not in the log

    def _committed(self) -> None:
        if self.channel.config.fsync == "every_commit":
            self.channel._sync_to(self._end)

    def _unstage(self) -> None:
        self.channel._rollback_puts(self._txid, self.put_bytes)

    def _untake(self) -> None:
        self.channel._return_to_head(self.takes)
