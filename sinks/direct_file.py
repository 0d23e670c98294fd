"""Appending to a local file with ``O_DIRECT``: from an aligned buffer to the disk, not through the page cache.

Why: a store that fsyncs before every ack (``sync: every_batch``, the default)
has the kernel copy each byte into a fresh page-cache page only to write it
back at once.  On the benchmark machine (2026-12-07, 1 GiB in 64 MiB records,
fsync after each) that path ran at ~300 MB/s and 1.6-2.8 CPU s/GB; copying into
a reused aligned buffer and writing it with ``O_DIRECT`` ran at ~1.1 GB/s and
0.2 CPU s/GB (docs/benchmarks.md, "Writing the store with O_DIRECT").

How: each write is copied into a page-aligned staging buffer (shared by the
files of one store, whose writes its lock serializes) and written out in whole
blocks; the last partial block (under 4 KiB) stays with the file.  ``flush``
writes that tail through the page cache (``O_DIRECT`` off for one ``pwrite``),
so the file is never longer than what was written; the next write rewrites the
block from its start, as page-cache write-back rewrites a partly filled page.  Where the file
system refuses ``O_DIRECT`` (some tmpfs, FUSE), :func:`open_direct` says so and
the caller writes through the page cache as before.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import threading
from typing import Any

#: Alignment of offsets, lengths and buffers (the largest logical block size of common disks).
BLOCK = 4096
#: Bytes staged and written per ``pwrite``: large enough to keep the disk busy, small enough to stay in cache.
STAGE = 4 * 1024 * 1024


class DirectBuffer:
    """The page-aligned staging buffer of one store (4 MiB), lent to its files one write at a time."""

    def __init__(self, size: int = STAGE) -> None:
        self.mem = mmap.mmap(-1, size)  # anonymous mappings are page-aligned
        self.view = memoryview(self.mem)
        self.lock = threading.Lock()


def open_direct(fd: int, stage: DirectBuffer) -> DirectFile | None:
    """Switch the open, empty file ``fd`` to ``O_DIRECT`` and wrap it; None where its file system refuses."""
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_DIRECT)
    except OSError:
        return None
    return DirectFile(fd, stage)


class DirectFile:
    """A write-only file object (``write``, ``flush``, ``fileno``, ``close``) appending with ``O_DIRECT``."""

    def __init__(self, fd: int, stage: DirectBuffer) -> None:
        self._fd = fd
        self._stage = stage
        self._pos = 0  # file offset of the first byte of the tail: always a multiple of BLOCK
        self._tail = bytearray()  # bytes past the last whole block written (fewer than BLOCK)
        self._failed = False  # a write failed part-way: where the tail belongs is no longer known
        self.closed = False

    def fileno(self) -> int:
        return self._fd

    def write(self, data: Any) -> int:
        if self._failed:
            raise OSError("an earlier write to this file failed")
        src = memoryview(data).cast("B")
        n = len(src)
        if len(self._tail) + n < BLOCK:  # a small write (a record header): no disk write yet
            self._tail += src
            return n
        stage = self._stage
        with stage.lock:
            try:
                self._write_staged(src)
            except BaseException:
                self._failed = True
                raise
        return n

    def _write_staged(self, src: memoryview) -> None:
        """Tail + ``src`` through the staging buffer: whole blocks to the file, the rest kept as the tail."""
        n = len(src)
        buf, size = self._stage.view, len(self._stage.view)
        fill = len(self._tail)
        buf[:fill] = self._tail
        i = 0
        while i < n:
            k = min(n - i, size - fill)
            buf[fill:fill + k] = src[i:i + k]
            fill += k
            i += k
            whole = fill - fill % BLOCK
            if fill == size or i == n:
                self._pwrite(buf[:whole])
                self._pos += whole
                rest = fill - whole
                buf[:rest] = buf[whole:fill]
                fill = rest
        self._tail = bytearray(buf[:fill])

    def flush(self) -> None:
        """Put every byte written so far on the file: whole blocks directly, the last partial one through
        the page cache.

        ``O_DIRECT`` writes whole blocks only; writing the tail padded and truncating back let a reader
        see zeros past the end for a moment (the latency bench's reader did, and skipped a line).  So the
        tail goes with ``O_DIRECT`` switched off for one ``pwrite`` and the file only ever grows to its true
        length; the caller's fsync writes that page.  The next direct write of the block replaces it (the
        kernel writes back and drops the cached page first).
        """
        if self.closed or not self._tail:
            return
        if self._failed:
            raise OSError("an earlier write to this file failed")
        flags = fcntl.fcntl(self._fd, fcntl.F_GETFL)
        fcntl.fcntl(self._fd, fcntl.F_SETFL, flags & ~os.O_DIRECT)
        try:
            self._pwrite(memoryview(self._tail))
        finally:
            fcntl.fcntl(self._fd, fcntl.F_SETFL, flags)

    def close(self) -> None:
        if self.closed:
            return
        try:
            if not self._failed:  # after a failed write nothing more is written: recovery cuts the torn record
                self.flush()
        finally:
            self.closed = True
            os.close(self._fd)

    def _pwrite(self, view: memoryview) -> None:
        """Write all of ``view`` at the tail's offset (``pwrite`` may write less than asked)."""
        done = 0
        while done < len(view):
            k = os.pwrite(self._fd, view[done:], self._pos + done)
            if k <= 0:
                raise OSError(f"pwrite wrote {k} bytes")
            done += k
