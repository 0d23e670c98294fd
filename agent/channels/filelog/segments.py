"""The append-only segment files of one channel directory.

Segments are named ``log-<number>.seg`` with a zero-padded, increasing
number.  Only the newest one is written to; a segment is fsynced before the
next one is created, so a torn record can only ever sit at the end of the
newest segment.  Each process writes a new segment (never appends to an old
one), and segments are deleted whole once a checkpoint shows nothing in them
is still needed.
"""

from __future__ import annotations

import errno
import os
import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from agent.channels.filelog.records import header, record_size
from logflume.chunk import Buffer
from logflume.errors import LogflumeError
from logflume.statefile import STATE_FILE_MODE, fsync_dir

_NAME = re.compile(r"log-(\d{10})\.seg")


class LogWriteError(LogflumeError):
    """Appending to the log failed (disk full, I/O error); nothing committed before is affected."""


def segment_name(number: int) -> str:
    return f"log-{number:010d}.seg"


def list_segments(directory: Path) -> list[int]:
    """Numbers of the segment files in ``directory``, oldest first."""
    out = []
    for entry in os.scandir(directory):
        m = _NAME.fullmatch(entry.name)
        if m:
            out.append(int(m.group(1)))
    return sorted(out)


def pwrite_all(fd: int, buffers: Sequence[Buffer], offset: int) -> None:
    """Write every buffer at ``offset`` with as few ``pwritev`` calls as the kernel allows; no joining."""
    views = [memoryview(b) for b in buffers if len(b)]
    pos = offset
    while views:
        n = os.pwritev(fd, views, pos)
        if n <= 0:
            raise OSError(errno.EIO, "pwritev wrote nothing")
        pos += n
        while views and n >= len(views[0]):
            n -= len(views[0])
            views.pop(0)
        if views and n:
            views[0] = views[0][n:]


class SegmentLog:
    """Appends records to the newest segment and reads records back from any segment.

    Appends are not thread-safe: the channel serialises them under its write
    lock.  Reads are safe from any thread (descriptors are cached per segment).
    """

    def __init__(self, directory: Path, segment_size: int, first: int,
                 on_fsync: Callable[[], None] = lambda: None) -> None:
        self.directory = directory
        self.on_fsync = on_fsync
        self.segment_size = segment_size
        self.current = first
        self.offset = 0
        self.synced_offset = 0
        self.broken: BaseException | None = None
        self._fd = self._create(first)
        self._readers: dict[int, int] = {}
        self._readers_lock = threading.Lock()

    def path(self, number: int) -> Path:
        return self.directory / segment_name(number)

    def _create(self, number: int) -> int:
        fd = os.open(self.path(number), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                     STATE_FILE_MODE)  # chunks of private logs: owner only
        fsync_dir(self.directory)
        return fd

    def append(self, op: int, txid: int, meta: Buffer, data: Buffer, crc_of_body: int) -> tuple[int, int]:
        """Write one record; returns its (segment, offset).

        The header is built here, once the record's segment is known, so it
        can say how much of that segment is already fsynced.

        On failure the partial record is cut off again so the log stays valid,
        and LogWriteError says why.  If even that fails, the log refuses every
        further write until it is reopened (the torn tail is then discarded).
        """
        if self.broken is not None:
            raise LogWriteError(f"file channel log {self.directory} is unusable after an earlier write failure "
                                f"({self.broken}); restart to recover")
        size = record_size(len(meta), len(data))
        if self.offset and self.offset + size > self.segment_size:
            self.roll()
        seg, off = self.current, self.offset
        head = header(op, txid, len(meta), len(data), self.synced_offset, crc_of_body)
        try:
            pwrite_all(self._fd, (head, meta, data), off)
        except OSError as exc:
            try:
                os.ftruncate(self._fd, off)
            except OSError as exc2:
                self.broken = exc2
            raise LogWriteError(f"cannot append to {self.path(seg)}: {exc.strerror or exc}") from exc
        self.offset = off + size
        return seg, off

    def roll(self) -> None:
        """Close the current segment durably and start the next one."""
        try:
            self.sync()
        except OSError as exc:
            self.broken = exc
            raise LogWriteError(f"fsync of {self.path(self.current)} failed: {exc.strerror or exc}") from exc
        try:
            fd = self._create(self.current + 1)
        except OSError as exc:
            raise LogWriteError(f"cannot create {self.path(self.current + 1)}: {exc.strerror or exc}") from exc
        os.close(self._fd)
        self._fd = fd
        self.current += 1
        self.offset = 0
        self.synced_offset = 0

    def sync(self) -> bool:
        """fdatasync the current segment if anything was written since the last sync."""
        if self.synced_offset == self.offset:
            return False
        os.fdatasync(self._fd)
        self.synced_offset = self.offset
        self.on_fsync()
        return True

    def dup_for_sync(self) -> tuple[int, int]:
        """A duplicate descriptor of the current segment and its end: fsync it without holding the write lock."""
        return os.dup(self._fd), self.offset

    def reader(self, number: int) -> int:
        with self._readers_lock:
            fd = self._readers.get(number)
            if fd is None:
                fd = os.open(self.path(number), os.O_RDONLY | os.O_CLOEXEC)
                self._readers[number] = fd
            return fd

    def delete(self, number: int) -> None:
        with self._readers_lock:
            fd = self._readers.pop(number, None)
            if fd is not None:
                os.close(fd)
        try:
            os.unlink(self.path(number))
        except FileNotFoundError:
            pass

    def close(self) -> None:
        if self._fd >= 0:
            try:
                if self.broken is None:
                    self.sync()
            finally:
                os.close(self._fd)
                self._fd = -1
        with self._readers_lock:
            for fd in self._readers.values():
                os.close(fd)
            self._readers.clear()
