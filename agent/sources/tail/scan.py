"""Finding files for the tail source: glob scans, rename events, and generations found again.

:class:`FileFinder` is the part of :class:`agent.sources.tail.TailSource` that decides which file is
what: a file not followed yet is new (read from 0), a generation read before (resumed at its
committed offset under its own stream and epoch, wherever it turns up: renamed, moved, copied by
copytruncate), or one to wait for.  It runs in the source's thread, on the source's file table.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import time
from dataclasses import replace
from typing import Any

from agent.sources.tail.checkpoint import Position
from agent.sources.tail.generations import FingerprintIndex, Generations
from agent.sources.tail.identity import FileIdentity, read_head
from agent.sources.tail.paths import COMPRESSED_SUFFIXES, FollowedPaths, PathSpec
from agent.sources.tail.reader import TailedFile

#: Complete searches for the copy of a generation whose own file no longer holds it (truncated away by
#: copytruncate, its inode reused or gone) before the search ends; an ended generation is then dropped.
#: The copy exists before its original is truncated or unlinked, so the first complete search finds it;
#: the others cover a listing that missed a file renamed while it was read.
COPY_SEARCHES = 3

#: How the source opens files itself: never through a symbolic link (a link swapped in after the check
#: fails with ELOOP), never blocking on a FIFO swapped in for a file.
OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK

#: What a newly seen file is (see ``TailSource._identify``).
NEW, RESUME, WAIT = "new", "resume", "wait"


class FileFinder:
    """Scanning and identifying files; a mixin of :class:`agent.sources.tail.TailSource`, whose state it uses.

    It calls back into the source for descriptors (``_open``, ``_evict_one``), to let a file go
    (``_forget_file``) and for a new file's chunker (``_make_chunker``).
    """

    # the source's state (set in TailSource.configure and start)
    config: Any
    log: logging.Logger
    paths: FollowedPaths
    files: dict[tuple[int, int], TailedFile]
    by_path: dict[str, tuple[int, int]]
    remembered: Generations
    unreadable: dict[tuple[int, int], tuple[int, int]]
    open_count: int
    _copy_searches: dict[str, int]
    _live: FingerprintIndex[TailedFile] | None
    _short_waits: dict[tuple[int, int], float]
    _initial_scan: bool
    _ckpt_dirty: bool
    metrics: Any
    m_unreadable: Any
    m_tracked: Any
    m_open: Any

    def _scan(self, now: float) -> None:
        """Run every glob; notice new, rotated, grown and vanished files."""
        seen: set[tuple[int, int]] = set()
        for path, spec in self.paths.matching():
            key = self._consider(path, spec, now)
            if key is not None:
                seen.add(key)
        wall = time.time()
        for key, tf in list(self.files.items()):
            if key in seen:
                continue
            if tf.rotated_at is None:
                tf.rotated_at = now  # no longer at any watched path: read it to its end, then let go
            if tf.fd is None and not self._open(tf, now):
                if tf.chunker.pending_bytes == 0:
                    self._forget_file(tf)
        stale = time.monotonic() - 2 * self.config.rotate_wait - self.config.scan_interval
        self._short_waits = {k: t for k, t in self._short_waits.items() if t > stale}
        self._find_moved(now)
        for pos in self.remembered:
            if pos.ended:  # its copy, if there is one, was found by now
                if self._copy_searches.get(pos.epoch, 0) < COPY_SEARCHES:
                    continue
            elif wall - pos.last_seen <= self.config.forget_after:
                continue
            self.remembered.pop(pos.epoch)
            self._copy_searches.pop(pos.epoch, None)
            self._ckpt_dirty = True
        self.m_tracked.set(len(self.files))

    def _consider(self, path: str, spec: PathSpec, now: float) -> tuple[int, int] | None:
        """Look at one path that matches a glob; returns the identity key of the file there."""
        try:
            real = self.paths.resolve(path)
            if real is None:
                return None
            st = os.lstat(real)
        except OSError:
            self.by_path.pop(path, None)
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        key = (st.st_dev, st.st_ino)
        prev = self.by_path.get(path)
        if prev is not None and prev != key:
            old = self.files.get(prev)
            if old is not None and old.path == path and old.rotated_at is None:
                old.rotated_at = now  # rotated by rename (or replaced): drain the old file, then let go
        self.by_path[path] = key
        tf = self.files.get(key)
        if tf is not None:
            tf.path = real
            tf.rotated_at = None
            tf.last_seen = time.time()
            if st.st_size != tf.read_pos:
                tf.wants_read = True
            return key
        if self.unreadable.get(key) == (st.st_mtime_ns, st.st_mode):
            return key
        if st.st_size == 0:
            return key  # nothing to read yet; followed once it has bytes (from its beginning)
        return self._track_new(real, spec, now, stream=path if real != path else None)

    def _track_new(self, path: str, spec: PathSpec | None, now: float, stream: str | None = None,
                   known_only: bool = False) -> tuple[int, int] | None:
        """Open a file not followed yet; returns its key once followed.

        ``stream`` names a file first seen under another name (a rename event); ``known_only`` follows the
        file only if it holds a generation read before (files outside the globs, looked at after a restart).
        """
        if self.open_count >= self.config.max_open_files and not self._evict_one(now):
            return None  # every descriptor drains a rotated file: look again at the next scan
        try:
            fd = os.open(path, OPEN_FLAGS)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if known_only or exc.errno == errno.ELOOP:  # ELOOP: replaced by a symbolic link since we looked
                return None
            try:
                st = os.stat(path)
                self.unreadable[(st.st_dev, st.st_ino)] = (st.st_mtime_ns, st.st_mode)
            except OSError:
                pass
            self.m_unreadable.inc()
            self.metrics.errors.inc()
            self.log.warning("cannot read %s (%s); skipping it until its permissions change", path, exc.strerror)
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):  # replaced by a FIFO, device or directory since we looked
                os.close(fd)
                return None
            head = read_head(fd)
            verdict, pos, had_position = self._identify(st, head, path)
        except OSError:
            os.close(fd)
            return None
        if verdict == WAIT or (verdict == NEW and known_only):
            os.close(fd)
            return None
        key = (st.st_dev, st.st_ino)
        self.unreadable.pop(key, None)
        if pos is not None:
            self.remembered.pop(pos.epoch)
            self._copy_searches.pop(pos.epoch, None)
            offset, epoch, stream, truncs = pos.offset, pos.epoch, pos.stream, pos.truncations
            spec = self.paths.spec_for(pos.stream) or spec or self.paths.specs[0]
            if pos.key == key and not pos.ended:
                ident = pos.identity  # the same file: keep the fingerprint length it had
            else:
                ident = FileIdentity.of_head(st, head)
                how = "a copy of" if pos.ended else "moved from"
                self.log.info("%s is %s %s (epoch %s): continuing it at offset %d", path, how, pos.path,
                              pos.epoch, pos.offset)
        else:
            ident = FileIdentity.of_head(st, head)
            at_end = self._initial_scan and self.config.start_at == "end" and not had_position
            offset = st.st_size if at_end else 0
            epoch, stream, truncs = ident.epoch(), stream or path, 0
            assert spec is not None
        tf = TailedFile(
            ident, epoch=epoch, stream=stream, path=path, datatype=spec.datatype, tags=spec.tags,
            offset=offset, truncations=truncs, make_chunker=self._make_chunker, now=now, last_seen=time.time(),
        )
        tf.announced = pos is not None  # a generation the position file holds already
        self._short_waits.pop(key, None)
        self.files[key] = tf
        if self._live is not None:
            self._live.add(ident.fp_len, ident.fp, tf)
        self.by_path[path] = key
        self._ckpt_dirty = True
        tf.fd = fd
        self.open_count += 1
        self.m_open.set(self.open_count)
        return key

    def _identify(self, st: os.stat_result, head: bytes, path: str) -> tuple[str, Position | None, bool]:
        """What a file not followed yet holds: (verdict, generation to resume, had a position at its inode).

        RESUME: a generation read before: the same inode and first bytes, or the same first bytes elsewhere
        (a copy, a move to another inode or device) and at least as long as its committed offset.
        WAIT: a copy of a generation still being read (copytruncate copies before it truncates), or one shorter
        than what was read of it: looked at again later.  NEW: a file to read from its beginning.
        A fingerprint of less than the maximum (a short file) says little: such a generation is taken for a
        copy while it is being read (for at most ``rotate_wait``, away from its own paths), once it was
        truncated away, or in a file that can only be it moved (see :func:`_moved_copy_of`); another file that
        merely starts with the same few bytes is read as new.
        """
        key = (st.st_dev, st.st_ino)
        had_position = False
        for pos in self.remembered.at_inode(key):
            if pos.identity.head_matches(head):
                return RESUME, pos, True
            # Other first bytes at its inode: truncated while we were away, or the inode was reused.  Its
            # bytes live on only in a copy, if one was made: remember it as ended.
            had_position = True
            self.log.info("%s no longer holds epoch %s (first bytes differ): reading it as a new file from 0",
                          path, pos.epoch)
            self.remembered.add(replace(pos, ended=True))
            self._copy_searches[pos.epoch] = 0
            self._ckpt_dirty = True
        for tf in self._live_index().find(head):
            if tf.key == key:
                continue
            if tf.ident.full:
                return WAIT, None, had_position
            # A few identical bytes may be a copy about to be truncated away, or just another file that
            # starts the same: wait rotate_wait for the truncation, then read it as a file of its own.
            first = self._short_waits.setdefault(key, time.monotonic())
            if path not in (tf.stream, tf.path) and time.monotonic() - first < self.config.rotate_wait:
                return WAIT, None, had_position
        best, shorter = None, False
        for pos in self.remembered.with_head(head):
            if not (pos.ended or pos.identity.full or _moved_copy_of(pos, path)):
                continue  # a few bytes alike in a file read and let go long ago prove nothing
            if st.st_size < pos.offset:
                shorter = True
            elif best is None or pos.offset > best.offset:
                best = pos
        if best is not None:
            return RESUME, best, had_position
        return (WAIT if shorter else NEW), None, had_position

    def _live_index(self) -> FingerprintIndex[TailedFile]:
        if self._live is None:
            self._live = FingerprintIndex()
            for tf in self.files.values():
                self._live.add(tf.ident.fp_len, tf.ident.fp, tf)
        return self._live

    def _moved(self, old: str, new: str, now: float) -> None:
        """A rename event: follow the file to its new name, even one it had before we first saw it."""
        try:
            st = os.lstat(new)
        except OSError:
            return
        if not stat.S_ISREG(st.st_mode):
            return  # a symbolic link (or no file): the scan decides
        key = (st.st_dev, st.st_ino)
        tf = self.files.get(key)
        if tf is None:
            spec = self.paths.spec_for(old)
            if spec is None or st.st_size == 0 or not stat.S_ISREG(st.st_mode):
                return
            # Created and rotated away between two looks (fast rotation): its stream is still the old path.
            key = self._track_new(new, spec, now, stream=old)
            tf = self.files.get(key) if key else None
            if tf is None:
                return
        tf.path = new
        if self.paths.spec_for(new) is not None:
            tf.rotated_at = None  # still at a watched path: followed like any other file
        elif tf.rotated_at is None:
            tf.rotated_at = now  # renamed out of the globs: read to its end, then let go

    def _find_moved(self, now: float) -> None:
        """At every scan, the start's included: generations that left the globs with bytes left are found
        again in the directory they were last read in, and read to their end under their own stream.

        One renamed away keeps its inode: found by it (``scandir`` gives inodes without a ``stat``), and
        resumed when its file is longer than what was read.  One whose inode is gone (moved by copying:
        ``mv`` to another filesystem, logrotate's ``olddir``) or holds other bytes (``ended``: truncated by
        copytruncate, or the inode reused) lives on only in a copy, if one was made: the files of its
        directory the agent knows nothing of are looked at by content, until :data:`COPY_SEARCHES` searches
        have completed.  A search that could not open a candidate (every descriptor taken) or lost one to a
        rename does not count: one listing can miss a file renamed while it is read (chaos seeds 43, 51).
        """
        by_dir: dict[str, list[Position]] = {}
        for pos in self.remembered:
            by_dir.setdefault(os.path.dirname(pos.path), []).append(pos)
        for directory, positions in sorted(by_dir.items()):
            try:
                entries = list(os.scandir(directory))
            except OSError:
                entries = []  # the directory is gone, and every copy made in it
            present = {entry.inode() for entry in entries}
            lost = [p for p in positions if self._copy_searches.get(p.epoch, 0) < COPY_SEARCHES
                    and (p.ended or p.ino not in present)]
            smallest = min((p.offset for p in lost), default=None)
            renamed: dict[int, list[Position]] = {}
            for pos in positions:
                if not pos.ended:
                    renamed.setdefault(pos.ino, []).append(pos)
            complete = True
            for entry in entries:  # the cheap tests first: most entries are generations read to their end
                if smallest is None and entry.inode() not in renamed:
                    continue  # nothing to search by content here: only inodes matter
                try:
                    if not entry.is_file(follow_symlinks=False):
                        continue
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                key = (st.st_dev, st.st_ino)
                if key in self.files:
                    continue
                known = [p for p in renamed.get(st.st_ino, ()) if p.key == key]
                if known:
                    wanted = any(st.st_size > p.offset for p in known)  # else read to its end already
                else:
                    wanted = smallest is not None and st.st_size >= max(smallest, 1)
                if not wanted or self.paths.spec_for(entry.path) or entry.path.endswith(COMPRESSED_SUFFIXES):
                    continue  # in the globs: the scan's to decide; a compressed file is no copy of plain bytes
                if not self._resume_outside(entry.path, now):
                    complete = False
            if complete:
                for pos in lost:
                    if pos.epoch in self.remembered:  # else found and followed now
                        self._copy_searches[pos.epoch] = self._copy_searches.get(pos.epoch, 0) + 1

    def _resume_outside(self, path: str, now: float) -> bool:
        """Follow a file outside the globs if it holds a generation read before, to its end.

        Returns whether the file could be looked at: False when every descriptor is taken, or when it was
        renamed or removed since it was listed.
        """
        if self.open_count >= self.config.max_open_files and not self._evict_one(now):
            return False
        key = self._track_new(path, None, now, known_only=True)
        tf = self.files.get(key) if key else None
        if tf is None:
            return os.path.lexists(path)
        tf.rotated_at = now  # not at a watched path: read to its end, then let go
        self.log.info("resuming %s (stream %s) at offset %d", path, tf.stream, tf.committed)
        return True


def _moved_copy_of(pos: Position, path: str) -> bool:
    """Can the file at ``path`` be taken for generation ``pos`` on a fingerprint shorter than the maximum?

    A generation first seen young (a few lines) keeps a short fingerprint if the agent stops before it grows.
    When it is then moved by copying (``mv`` across filesystems, logrotate's ``olddir``) or copytruncated
    while the agent is down, or its copy is scanned before its truncated original, the copy is found only
    by those few bytes.  They are enough when every byte resuming would skip is covered by them (so nothing
    can be skipped that was not read) and the file sits where rotation puts the generation's copies: in its
    directory, named after its stream (``x.log`` -> ``x.log.1``, ``x-20261206.log``).  Read as new instead, the
    copy would be read twice, or, outside the globs, never.
    """
    if pos.offset > pos.fp_len:
        return False
    directory, name = os.path.split(path)
    stem = os.path.splitext(os.path.basename(pos.stream))[0]
    return bool(stem) and name.startswith(stem) and directory in (os.path.dirname(pos.path),
                                                                   os.path.dirname(pos.stream))

