"""TailSource (``type: tail``): follow log files into chunks without losing or doubling a byte.

One thread does everything: it finds files (glob scan, watchdog events),
reads the ones that grew, hands their chunks to the channel and, once the
channel committed them, advances the position file.  See docs/tail.md for the
settings, rotation semantics and guarantees.

The parts, as Fluent Bit splits its tail input: ``paths.py`` (which paths are
followed), ``scan.py`` (finding files and telling what each one is),
``reader.py`` (one followed file: reading, truncation, its chunker),
``checkpoint.py`` (the position file) and ``watcher.py`` (change events); this
module holds the loop, the descriptors and delivery.

Files are tracked by identity (a fingerprint of the first bytes, with device
and inode as hints), not by path: a file renamed by rotation keeps being read
to its end through its open descriptor, the new file at the old path is read
from its beginning, and a file that shrinks (copytruncate) starts a new epoch
at 0.  A generation read before and found again (after a restart, at another
inode, or as the copy copytruncate made) resumes at its committed offset under
the stream and epoch it was first read under: it is never read twice.
"""

from __future__ import annotations

import codecs
import os
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import ClassVar

from agent.sources.tail.checkpoint import CheckpointWriter, PositionFile
from agent.sources.tail.container_format import FORMATS, ContainerFormat
from agent.sources.tail.generations import FingerprintIndex, Generations
from agent.sources.tail.paths import PATH_SETTINGS, FollowedPaths, PathSpec
from agent.sources.tail.reader import TailedFile
from agent.sources.tail.scan import FileFinder
from agent.sources.tail.watcher import ChangeWatcher
from logflume.chunk import Chunk
from logflume.chunking import MultilinePattern, RecordChunker
from logflume.errors import ChannelClosed, ConfigError
from logflume.settings import (
    Bool,
    Duration,
    Enum,
    Int,
    ListOf,
    Obj,
    Optional,
    Regex,
    Setting,
    Size,
    Str,
)
from logflume.source import SourceOutput, ThreadedSource

MULTILINE_SETTINGS = {
    "pattern": Setting(Regex(), doc="Regular expression searched in each line (bytes, delimiter excluded)"),
    "negate": Setting(Bool(), False, "Invert the match"),
    "match": Setting(Enum("after", "before"), "after",
                     "Matching lines join the record before them (after) or the one after them (before)"),
}


def decode_delimiter(text: str) -> bytes:
    r"""YAML ``'\r\n'`` (backslash escapes) and ``"\r\n"`` (real characters) both give CR LF."""
    raw = text.encode("utf-8")
    if b"\\" in raw:
        try:
            return codecs.escape_decode(raw)[0]
        except ValueError as exc:
            raise ValueError(f"invalid escape in {text!r}: {exc}") from None
    return raw


class Delimiter(Str):
    """A record delimiter: shown by ``check`` with backslash escapes (``\\n``), which it also accepts."""

    expected = "a non-empty string such as '\\n', '\\r\\n' or '\\0'"

    def render(self, value):
        return value.encode("unicode_escape").decode("ascii")


class TailSource(FileFinder, ThreadedSource):
    """Follows files matching globs; one stream per file path, one epoch per file identity."""

    settings: ClassVar[dict[str, Setting]] = {
        "paths": Setting(ListOf(Obj(PATH_SETTINGS, shorthand="glob"), min_items=1),
                         doc="Globs to follow: strings, or {glob, datatype, tags, exclude} mappings"),
        "exclude": Setting(ListOf(Str()), [], "Globs of files never to follow (full path, or base name if no '/')"),
        "start_at": Setting(Enum("beginning", "end"), "beginning",
                            "Where to start in files present at the first start (no position yet)"),
        "chunk_size": Setting(Size(min=1), "64MiB", "Largest chunk; a longer record is split into flagged pieces"),
        "read_block_size": Setting(Size(min=1), "1MiB", "Bytes per read() call"),
        "max_buffered": Setting(Optional(Size(min=1)), None,
                                "Most bytes read from all files and not yet in the channel (default: chunk_size); "
                                "beyond it complete records leave early in smaller chunks"),
        "flush_interval": Setting(Duration(), "500ms",
                                  "Send complete records at the latest this long after the first unsent byte"),
        "caught_up_flush": Setting(Duration(), "20ms",
                                   "Once a file was read to its end, send complete records at the latest this long "
                                   "after the first unsent byte (0: off, only flush_interval); a reader that is "
                                   "behind keeps cutting full chunks"),
        "quiet_flush": Setting(Duration(), "0s",
                               "Also send complete records once a file was read to its end and did not grow for "
                               "this long (e.g. 5ms: a burst leaves as soon as it ends; 0: off)"),
        "record_delimiter": Setting(Delimiter(), "\n", "Bytes that end a record (backslash escapes allowed: '\\r\\n')"),
        "multiline": Setting(Optional(Obj(MULTILINE_SETTINGS)), None,
                             "Group lines into records: {pattern, negate, match} (Filebeat semantics)"),
        "partial_timeout": Setting(Duration(), "5s", "Send a record still missing its delimiter after this long idle"),
        "format": Setting(Enum(*FORMATS), "raw",
                          "Container runtime lines: cri or docker keep a message's 16 KiB pieces in one record"),
        "max_open_files": Setting(Int(min=1), 1024, "Most files held open at once"),
        "close_inactive": Setting(Duration(), "5m",
                                  "Close a file that did not grow for this long (reopened when it does)"),
        "rotate_wait": Setting(Duration(), "5s",
                               "Keep reading a file renamed away or deleted until it was quiet this long"),
        "scan_interval": Setting(Duration(), "10s", "Re-run the globs this often (new files, missed events)"),
        "use_events": Setting(Bool(), True, "Use inotify (watchdog) events; false: periodic scan only (NFS)"),
        "forget_after": Setting(Duration(), "24h", "Drop the position of a file not seen for this long"),
        "follow_symlinks": Setting(Bool(), False,
                                   "Follow symbolic links that match the globs (their target must match a glob too)"),
        "checkpoint_interval": Setting(
            Duration(), "0s", "Write the position file at most this often (0: as soon as the last write ended)"),
    }

    # -- configuration --------------------------------------------------------------------------

    def configure(self) -> None:
        cfg = self.config
        where, file = f"sources.{self.name}", self.context.config_file
        specs = [PathSpec(os.path.abspath(os.path.expanduser(entry.glob)), entry.datatype or cfg.datatype,
                          {**cfg.tags, **entry.tags}, tuple(entry.exclude)) for entry in cfg.paths]
        self.paths = FollowedPaths(specs, cfg.exclude, cfg.follow_symlinks, self.log)
        try:
            self.delimiter = decode_delimiter(cfg.record_delimiter)
        except ValueError as exc:
            raise ConfigError(file, f"{where}.record_delimiter", str(exc)) from None
        if not self.delimiter:
            raise ConfigError(file, f"{where}.record_delimiter", "expected at least one byte, got ''")
        self.multiline: MultilinePattern | None = None
        if cfg.multiline is not None:
            try:
                self.multiline = MultilinePattern(cfg.multiline.pattern, cfg.multiline.negate, cfg.multiline.match)
            except ValueError as exc:
                raise ConfigError(file, f"{where}.multiline", str(exc)) from None
        self.container_format: ContainerFormat | None = None
        if cfg.format != "raw":
            conflicts = {"multiline": cfg.multiline is not None, "record_delimiter": self.delimiter != b"\n"}
            for key, conflict in conflicts.items():
                if conflict:
                    raise ConfigError(file, f"{where}.{key}", f"cannot be combined with format: {cfg.format} "
                                                              "(the runtime's lines decide the records)")
            self.container_format = ContainerFormat(cfg.format)
        self.block = min(cfg.read_block_size, cfg.chunk_size)
        self.max_buffered = cfg.max_buffered or cfg.chunk_size
        self.files: dict[tuple[int, int], TailedFile] = {}
        self.by_path: dict[str, tuple[int, int]] = {}
        self.last_rotation: dict[str, float] = {}  # stream -> wall-clock time a file of it was last let go
        self.remembered = Generations()  # generations read before and not being read now
        self._copy_searches: dict[str, int] = {}  # generation -> complete searches made for its copy
        self._live: FingerprintIndex[TailedFile] | None = None  # files being read, by fingerprint (per step)
        self._rescan = False  # a generation ended: look for its copy at once
        self._short_waits: dict[tuple[int, int], float] = {}  # file -> since when it waits on a short match
        self.unreadable: dict[tuple[int, int], tuple[int, int]] = {}
        self.open_count = 0
        self._initial_scan = True
        self._ckpt_dirty = False
        m = self.metrics
        self.m_bytes_read = m.counter("tail_bytes_read", "Bytes read from tailed files")
        self.m_chunks = m.counter("tail_chunks_emitted", "Chunks emitted (committed to the channel)")
        self.m_open = m.gauge("tail_files_open", "Files held open")
        self.m_tracked = m.gauge("tail_files_tracked", "Files followed (open or not)")
        self.m_unreadable = m.counter("tail_files_unreadable", "Files skipped because they could not be opened")
        self.m_rotations = m.counter("tail_rotations", "Files let go after rotation or deletion, read to their end")
        self.m_truncations = m.counter("tail_truncations", "Files that shrank and were read again from 0")

    def reads(self) -> list[str]:
        return ["file:" + g for g in self.paths.globs]

    def describe(self) -> dict:
        return {"type": type(self).__name__, "globs": self.paths.globs}

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self, output: SourceOutput) -> None:  # type: ignore[override]
        self.positions = PositionFile(self.context.state_dir("source", self.name) / "positions.json")
        self.remembered = Generations(self.positions.load())
        self._copy_searches = {}
        self.checkpoints = CheckpointWriter(self.positions, self.config.checkpoint_interval, self._checkpoint_failed)
        self.watcher = ChangeWatcher(self.paths.globs, use_events=self.config.use_events)
        self.watcher.start()
        super().start(output)

    def stop(self) -> None:
        self.stopping.set()
        watcher = getattr(self, "watcher", None)
        if watcher is not None:
            watcher.wakeup.set()
        super().stop()
        if watcher is not None:
            watcher.stop()
        if not self.alive:
            for tf in self.files.values():
                self._close(tf)
        checkpoints = getattr(self, "checkpoints", None)
        if checkpoints is not None:
            checkpoints.close(timeout=10)

    def status(self) -> dict:
        """Per stream: bytes read and committed to the channel in its files, lag, last rotation (for /status).

        Asked from the status endpoint's thread: it only reads numbers, over a snapshot of the file table
        (``list()`` of a dict's values is taken whole under the GIL).  A stream whose old file is still
        being drained after a rotation sums both files.
        """
        rows: dict[str, dict] = {}
        for tf in list(self.files.values()):
            row = rows.setdefault(tf.stream, {"stream": tf.stream, "path": tf.path, "lag_bytes": 0,
                                              "bytes_read": 0, "bytes_acked": 0, "files": 0})
            row["lag_bytes"] += tf.lag
            row["bytes_read"] += tf.read_pos
            row["bytes_acked"] += tf.committed
            row["files"] += 1
            if tf.rotated_at is None:
                row["path"] = tf.path
        for stream, row in rows.items():
            row["last_rotation"] = self.last_rotation.get(stream)
        return {"streams": list(rows.values())}

    def _lag_gauge(self, tf: TailedFile):
        return self.metrics.gauge("tail_file_lag_bytes", "Bytes of a file not yet committed", path=tf.stream)

    # -- the loop -------------------------------------------------------------------------------

    def run(self) -> None:
        try:
            now = time.monotonic()
            self._scan(now)
            self._initial_scan = False
            self._save_checkpoint(force=True, urgent=True)
            self.checkpoints.flush(timeout=10)
            next_scan = now + self.config.scan_interval
            while not self.stopping.is_set():
                now = time.monotonic()
                try:
                    nread = self._step(now, next_scan)
                except ChannelClosed:
                    raise
                except Exception:  # a bug or an unexpected OS error must not stop the whole source
                    self.metrics.errors.inc()
                    self.log.exception("tail source %s: unexpected error; re-reading from committed positions",
                                       self.name)
                    for tf in self.files.values():
                        tf.rewind()
                    self.stopping.wait(1.0)
                    continue
                if now >= next_scan:
                    next_scan = now + self.config.scan_interval
                if nread == 0 and not self.stopping.is_set():
                    self.watcher.wait(self._idle_wait(time.monotonic(), next_scan))
        finally:
            self._save_checkpoint(force=True, urgent=True)
            self.checkpoints.flush(timeout=10)
            for tf in self.files.values():
                self._close(tf)

    def _step(self, now: float, next_scan: float) -> int:
        """One round: take events, scan if due, read and deliver; returns bytes read."""
        self._live = None
        dirty, moves, dir_changed = self.watcher.take()
        for old, new in moves:
            self._moved(old, new, now)
        if dir_changed or now >= next_scan or self._rescan:
            self._rescan = False
            self._scan(now)
            self.watcher.ensure_watches()
        else:
            for path in dirty:
                spec = self.paths.spec_for(path)
                if spec is not None:
                    self._consider(path, spec, now)
        nread = self._service(now)
        self._save_checkpoint()
        return nread

    def _idle_wait(self, now: float, next_scan: float) -> float:
        deadline = min(next_scan, now + 1.0)
        for tf in self.files.values():
            d = tf.chunker.next_deadline(caught_up=tf.fd is not None and tf.at_eof)
            if d is not None and d < deadline:
                deadline = d
            if tf.rotated_at is not None:
                deadline = min(deadline, max(tf.last_active, tf.rotated_at) + self.config.rotate_wait)
        return min(max(deadline - now, 0.005), 1.0)

    def _make_chunker(self, stream: str, epoch: str, offset: int, datatype: str, tags: dict[str, str]):
        cfg = self.config
        return RecordChunker(
            source=self.context.agent_name, stream=stream, datatype=datatype, tags=tags, epoch=epoch,
            start_offset=offset, chunk_size=cfg.chunk_size, record_delimiter=self.delimiter,
            multiline=self.container_format.grouping() if self.container_format else self.multiline,  # type: ignore[arg-type]
            flush_interval=cfg.flush_interval, partial_timeout=cfg.partial_timeout, quiet_flush=cfg.quiet_flush,
            caught_up_flush=cfg.caught_up_flush,
        )

    # -- descriptors ----------------------------------------------------------------------------

    def _open(self, tf: TailedFile, now: float) -> bool:
        if tf.fd is not None:
            return True
        if self.open_count >= self.config.max_open_files and not self._evict_one(now):
            return False
        if not tf.reopen():
            return False
        self.open_count += 1
        self.m_open.set(self.open_count)
        tf.last_active = now
        return True

    def _close(self, tf: TailedFile) -> None:
        if tf.fd is not None:
            tf.close()
            self.open_count -= 1
            self.m_open.set(self.open_count)

    def _evict_one(self, now: float) -> bool:
        """Close the open file that can best wait (at its end, quiet longest) to free a descriptor."""
        best = None
        for tf in self.files.values():
            if tf.fd is None or tf.rotated_at is not None:
                continue  # a rotated or deleted file may not be reopened: it keeps its descriptor
            rank = (not tf.at_eof, tf.last_active)
            if best is None or rank < best[0]:
                best = (rank, tf)
        if best is None:
            return False
        self._close(best[1])
        return True

    def _forget_file(self, tf: TailedFile) -> None:
        """Let go of a file read to its end (or no longer reachable): its generation is remembered, to be
        known wherever its bytes turn up.  A deleted file's bytes live on only in a copy, if one was made
        (``mv`` to another filesystem copies, then unlinks): remembered as ended, it is looked for until its
        copy searches are done, and a copy found later, even through a rename event handled late, resumes it
        instead of being read again from 0 (chaos seed 61)."""
        key = tf.ident.key
        self._close(tf)
        self.files.pop(key, None)
        if self.by_path.get(tf.path) == key:
            del self.by_path[tf.path]
        self._take_ended(tf)
        pos = tf.position()
        if tf.deleted:
            pos = replace(pos, ended=True)
            self._copy_searches[pos.epoch] = 0
        self.remembered.add(pos)
        same_stream = next((t for t in self.files.values() if t.stream == tf.stream), None)
        if same_stream is not None:  # the new file at a rotated file's path: its lag is the stream's now
            self._lag_gauge(same_stream).set(same_stream.lag)
        else:
            self.metrics.remove("tail_file_lag_bytes", path=tf.stream)
            self.last_rotation.pop(tf.stream, None)
        self._ckpt_dirty = True

    # -- reading and delivering -----------------------------------------------------------------

    def _service(self, now: float) -> int:
        """Read every file that may have grown, deliver what is due; returns bytes read."""
        cfg = self.config
        batch: list[Chunk] = []
        touched: list[TailedFile] = []
        finished: list[TailedFile] = []
        total = 0
        batch_bytes = 0
        held = sum(tf.chunker.held_bytes for tf in self.files.values())  # read, not yet cut into chunks
        waiting = [tf for tf in self.files.values() if tf.fd is None and tf.wants_read]
        waiting.sort(key=lambda t: t.last_active)
        order = [tf for tf in self.files.values() if tf.fd is not None] + waiting
        for tf in order:
            if self.stopping.is_set():
                break
            if tf.fd is None:
                had_slot = self.open_count < cfg.max_open_files
                if not self._open(tf, now):
                    if had_slot:
                        tf.wants_read = False  # not at its path any more: the next scan decides
                    continue
            before, held_before = tf.chunker.pending_bytes, tf.chunker.held_bytes
            # Just enough to complete this file's next chunk, within what the byte limit has left.
            room = min(cfg.chunk_size - before, self.max_buffered - held - batch_bytes)
            try:
                result = tf.read(now, max(room, 0) + self.block, self.block, cfg.rotate_wait)
            except OSError as exc:
                self.metrics.errors.inc()
                self.log.warning("error reading %s (%s); will retry", tf.path, exc)
                self._close(tf)
                continue
            done, nread = result.done, result.nread
            if result.chunks or done or nread or tf.truncations != tf.committed_truncations:
                touched.append(tf)  # a truncation alone moves the position too: to 0 of the new epoch
            if nread:
                total += nread
                self.m_bytes_read.inc(nread)
                self.metrics.bytes_in.inc(nread)
                self._lag_gauge(tf).set(tf.lag)
            if done:
                finished.append(tf)
            held += tf.chunker.held_bytes - held_before
            batch += result.chunks
            batch_bytes += sum(len(c) for c in result.chunks)
            # Only the batch may hold the chunks: a result kept until the next file's read would keep a
            # delivered chunk (up to chunk_size) alive beside the next one (64 MiB more with the file channel).
            del result
            if held + batch_bytes > self.max_buffered:
                held = self._relieve(held, batch, touched, now)
                batch_bytes = sum(len(c) for c in batch)
            if batch_bytes >= cfg.chunk_size or held + batch_bytes > self.max_buffered:
                self._deliver(batch, touched)
                batch, touched, batch_bytes = [], [], 0
            if not done and now - tf.last_active >= cfg.close_inactive and tf.rotated_at is None:
                self._close(tf)
        for tf in self.files.values():
            if tf.fd is None and tf.chunker.pending_bytes:
                due = tf.chunker.poll(now)
                if due:
                    batch += due
                    touched.append(tf)
        self._deliver(batch, touched)
        for tf in finished:
            self.m_rotations.inc()
            self.last_rotation[tf.stream] = time.time()
            self._forget_file(tf)
        return total

    def _relieve(self, held: int, batch: list[Chunk], touched: list[TailedFile], now: float) -> int:
        """Over ``max_buffered``: the biggest holders' complete records leave now, as smaller chunks.

        Without it every followed file could hold nearly a chunk while waiting to fill one
        (10 busy files: 10 x chunk_size of memory).  Returns the bytes still held.
        """
        for tf in sorted(self.files.values(), key=lambda f: f.chunker.held_bytes, reverse=True):
            if held <= self.max_buffered // 2 or not tf.chunker.pending_bytes:
                break
            before = tf.chunker.held_bytes
            due = tf.chunker.flush_complete(now)
            if due:
                batch += due
                touched.append(tf)
                held -= before - tf.chunker.held_bytes
        return held

    def _deliver(self, chunks: Sequence[Chunk], touched: list[TailedFile]) -> None:
        if chunks:
            self._announce([tf for tf in touched if not tf.announced])
            self.output.deliver(chunks)
            self.metrics.chunks_out.inc(len(chunks))
            self.metrics.bytes_out.inc(sum(len(c) for c in chunks))
            self.m_chunks.inc(len(chunks))
        for tf in touched:
            if tf.committed_truncations != tf.truncations:
                self.m_truncations.inc(tf.truncations - tf.committed_truncations)
            tf.mark_committed()
            self._take_ended(tf)
            self._lag_gauge(tf).set(tf.lag)
            self._ckpt_dirty = True
        if chunks:
            self._save_checkpoint()

    def _save_checkpoint(self, force: bool = False, urgent: bool = False) -> None:
        """Hand the committed positions to the writer thread (it coalesces and paces the writes)."""
        if not (self._ckpt_dirty or force):
            return
        entries = [pos for tf in self.files.values() for pos in tf.positions()]
        live = {p.epoch for p in entries}
        entries += [p for p in self.remembered if p.epoch not in live]
        self.checkpoints.submit(entries, urgent)
        self._ckpt_dirty = False

    def _announce(self, fresh: list[TailedFile]) -> None:
        """Put new files, and files' new epochs after a truncation, in the position file (offset 0, their
        stream) before any of their chunks is sent.

        A crash after the channel committed a new file's first chunks but before the position file named
        the file would leave nothing to tell a restart that the file, renamed meanwhile, was first read
        as ``app.log``: it would be read again under its new name, a duplicate archive cannot recognise.
        Likewise a truncated file's next generation: unnamed, it would be taken for a new file after a
        restart and read again under another epoch (chaos seed 8 under load, 2026-12-07).
        """
        if not fresh:
            return
        self._save_checkpoint(force=True, urgent=True)
        if self.checkpoints.flush(timeout=10):  # a failed write was reported; reading goes on
            # Named with the fingerprint of its first bytes: an epoch seen while its file was empty (a truncation
            # to 0) is named with an empty one, which would fit whatever the file holds after a restart, a later
            # generation too (chaos seed 8, 2026-12-07); it is announced again with its first chunk.
            for tf in fresh:
                tf.announced = any(p.epoch == tf.epoch and p.fp_len > 0 for p in tf.positions())

    def _take_ended(self, tf: TailedFile) -> None:
        """Generations the file was truncated away from, committed to their end: remembered for their copy."""
        if tf.ended:
            for pos in tf.ended:
                self.remembered.add(pos)
                self._copy_searches[pos.epoch] = 0
            tf.ended = []
            self._rescan = True
            self._ckpt_dirty = True

    def _checkpoint_failed(self, exc: OSError) -> None:
        # disk full, read-only: reading goes on, the writer tries again
        self.metrics.errors.inc()
        self.log.error("cannot write position file %s: %s (will retry)", self.positions.path, exc)
