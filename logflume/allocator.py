"""How glibc serves the big buffers of chunks: the process's allocation policy, set once at start.

**Default: a fixed mmap threshold of 4 MiB**, so that every buffer of 4 MiB or more (chunks, records
being framed, channel segments read back) is its own mapping and goes back to the system when freed.
glibc's own rule raises the threshold each time such a mapping is freed, up to 32 MiB; after that a
partial chunk (a rotated file's last one, a chunk cut by ``flush_interval``) comes from the heap, where
a freed block below the top cannot be returned. Measured 2026-12-07 (``python -m bench --variants
rotate --only logflume --sync off``, file renamed every 0.25 s, alternating rounds): the agent's peak
RSS was 173-247 MiB with glibc's rule, past its 2 x chunk_size + 64 MiB = 192 MiB in 7 rows of 21, and
173-175 MiB in all 34 rows with the threshold fixed, at the same throughput within noise
(docs/benchmarks.md).
Setting the threshold also stops glibc's dynamic trim threshold, so the policy sets that too: 16 MiB of
free memory at the top of the heap is kept, where a tail's 1 MiB read blocks come and go (trimmed at
glibc's fixed 128 KiB, every read faulted its pages in again). ``MALLOC_MMAP_THRESHOLD_`` in the
environment is the operator's choice and is left alone; ``LOGFLUME_MALLOPT=off`` keeps glibc's rule.
Measured 2026-12-07 (``python -m bench --variants single,multi,rotate --channels memory,file --sync on``,
alternating rounds): one file into the memory channel 550-613 -> 659-709 MB/s and 2.0-2.2 -> 1.7-1.8
CPU s/GB, the agent's peak RSS 169-177 -> 178-182 MiB (docs/benchmarks.md, "Read blocks kept").

**Opt-in: ``LOGFLUME_MALLOPT=reuse`` (or ``1``) raises the thresholds instead** so that the heap recycles chunk
buffers: the tail read path alone doubles (``bench/bench_tail.py``: 1895 MiB/s against 894 MiB/s here)
and end to end (``python -m bench``, 10 files, alternating runs) it gave 742-767 MB/s and 0.9 CPU s/GB
against 692-701 MB/s and 1.3-1.4, but the agent's peak RSS went from 174 MiB to 235 MiB, past the
bound the agent promises. (Measured before chunks of 8 MiB or more were built in pooled buffers,
logflume/chunkbuffers.py, which reuses their pages within that bound under any policy.)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
BOUNDED_MMAP_THRESHOLD = 4 << 20
#: Free memory at the top of the heap kept for the next allocation: the reads of a tail (1 MiB blocks, a
#: 4 MiB slice at once) come and go there, and trimming it at glibc's 128 KiB faulted their pages in again.
BOUNDED_TRIM_THRESHOLD = 16 << 20


def configure_allocator() -> str | None:
    """Apply the policy ``LOGFLUME_MALLOPT`` names (``bounded``, the default; ``reuse``; ``off``); returns
    the policy applied, or None when nothing was set (off, not glibc, or ``MALLOC_MMAP_THRESHOLD_`` given)."""
    policy = os.environ.get("LOGFLUME_MALLOPT", "bounded").strip().lower()
    if policy == "off" or not sys.platform.startswith("linux"):
        return None
    reuse = policy in ("reuse", "1", "on", "true", "yes")  # anything else: bounded
    if not reuse and "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    if reuse:
        applied = bool(mallopt(M_MMAP_THRESHOLD, 1 << 30)) and bool(mallopt(M_TRIM_THRESHOLD, 256 << 20))
        return "reuse" if applied else None
    if not mallopt(M_MMAP_THRESHOLD, BOUNDED_MMAP_THRESHOLD):
        return None
    mallopt(M_TRIM_THRESHOLD, BOUNDED_TRIM_THRESHOLD)
    return "bounded"
