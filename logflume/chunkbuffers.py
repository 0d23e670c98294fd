"""Buffers that chunks are built in, written again once their chunk is gone.

Why: a chunker that grows a fresh 64 MiB buffer for every chunk faults in 16,384 fresh pages per
chunk. On the benchmark machine faulting in 1 GiB of fresh pages costs about 1 s of kernel time, the
largest cost of the tail path (docs/benchmarks.md, "Chunk buffers reused within the bound"). A :class:`ChunkBuffers`
pool keeps the buffers of cut chunks and lends one again, pages already in place, once nothing views
its chunk any more.

Bounded so that the agent's memory bound (2 x chunk_size + 64 MiB) still holds:

* at most ``max_buffers`` buffers exist; a chunker that finds none free grows plain memory, as before;
* a buffer keeps resident only the pages of the chunk cut from it: cutting a chunk shorter than what
  was written into the buffer before gives the pages past it back (``MADV_DONTNEED``), so a small chunk
  (a flush, a rotated file's last one) does not pin a big buffer while the channel counts its bytes;
* of the buffers whose chunk is gone, one is kept for the next chunk and the others are unmapped;
  none is kept while a chunker writes into pages not yet faulted in;
* a source bounding its memory counts a chunker's buffer at its resident size
  (``RecordChunker.held_bytes``), not at the bytes it holds so far.

A buffer is free when nothing but the pool refers to its mapping: every view of it (the chunk's
``memoryview`` and any slice or export of it, in any thread) holds a reference to the mapping, so
CPython's reference count says exactly when the last one is gone.
"""

from __future__ import annotations

import mmap
import sys
import threading
import weakref

PAGE = mmap.PAGESIZE
#: A chunker's buffer moves into a pooled one once it holds this many bytes (smaller ones come and go
#: on the heap, which the allocator policy keeps resident: logflume/allocator.py).
REUSE_FROM = 4 << 20
#: Room past ``chunk_size`` in a pooled buffer: a chunk is cut once the buffer holds more than
#: ``chunk_size``, so the bytes of the last read (a tail's block, 1 MiB by default) must fit after it.
SLACK = 4 << 20
#: Pages past a chunk's end that are given back at the cut only when they are at least this much (fewer
#: are not worth the system call, and the next chunk is likely to write them again).
GIVE_BACK_FROM = 1 << 20


def _page_up(n: int) -> int:
    return -(-n // PAGE) * PAGE


class PooledBuffer:
    """One anonymous mapping a chunk is built in; ``written`` is how far it has been written (resident)."""

    __slots__ = ("mem", "written", "writer")

    def __init__(self, size: int) -> None:
        self.mem = mmap.mmap(-1, size)
        self.written = 0
        self.writer: weakref.ref[object] | None = None  # who builds a chunk in it (until the cut, or its end)

    def __len__(self) -> int:
        return len(self.mem)

    def free(self) -> bool:
        """No chunker writes into it and nothing but this object refers to the mapping (no view is alive)."""
        if self.writer is not None and self.writer() is not None:
            return False
        return sys.getrefcount(self.mem) <= 2  # the attribute and the call's argument

    def wrote(self, end: int) -> None:
        if end > self.written:
            self.written = end

    def cut_at(self, end: int) -> None:
        """The chunk is ``mem[:end]``, its writer is done: the pages past it that were written before are given back
        (before the buffer can be seen free: another chunker may take it at once)."""
        keep = _page_up(end)
        if self.written - keep >= GIVE_BACK_FROM:
            self.mem.madvise(mmap.MADV_DONTNEED, keep, self.written - keep)
            self.written = keep
        self.writer = None


class ChunkBuffers:
    """The pool: ``take`` a buffer to build a chunk in; it comes back by itself once its chunk is gone."""

    def __init__(self, max_buffers: int = 4) -> None:
        self.max_buffers = max_buffers
        self._buffers: list[PooledBuffer] = []
        self._lock = threading.Lock()
        self.reused = 0  # buffers lent again (for tests)

    def take(self, size: int, writer: object) -> PooledBuffer | None:
        """A buffer of at least ``size`` bytes: a free one (the most written, so the fewest pages to fault in),
        else a new one while fewer than ``max_buffers`` exist, else None (build the chunk in plain memory).

        It is ``writer``'s until :meth:`PooledBuffer.cut_at` or until ``writer`` is gone."""
        with self._lock:
            fits = [b for b in self._buffers if len(b) >= size and b.free()]
            got = max(fits, key=lambda b: b.written) if fits else None
            self._forget_free(keep=0 if got is not None else 1, spare=got)
            if got is not None:
                self.reused += 1
            elif len(self._buffers) < self.max_buffers:
                got = PooledBuffer(size)
                self._buffers.append(got)
            else:
                return None
            got.writer = weakref.ref(writer)
            return got

    def sweep(self, keep: int = 1) -> None:
        """Unmap the free buffers but ``keep``: one is kept when a chunk is cut (for the next chunk), none
        while a chunker writes into pages not yet faulted in (its growth must not add to a free buffer's)."""
        with self._lock:
            self._forget_free(keep)

    @property
    def count(self) -> int:
        return len(self._buffers)

    def _forget_free(self, keep: int, spare: PooledBuffer | None = None) -> None:
        free = sorted((b for b in self._buffers if b is not spare and b.free()), key=lambda b: b.written,
                      reverse=True)
        for b in free[keep:]:
            self._buffers.remove(b)
            b.mem.close()


#: The process's pool, shared by every RecordChunker that is not given its own.
CHUNK_BUFFERS = ChunkBuffers()
