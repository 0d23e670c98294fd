"""Let glibc reuse the memory of big chunk buffers instead of mapping fresh pages for each.

glibc serves every allocation above ``M_MMAP_THRESHOLD`` (at most 32 MiB by
its own dynamic rule) with a new mmap, so each 64 MiB chunk costs 16,384 page
faults and zeroing, and the munmap on free returns it all.  Measured here:
40 rounds of a 64 MiB buffer read and copied took 8.4 s with the default and
1.7 s with the threshold raised, because the heap then recycles the pages.
``M_TRIM_THRESHOLD`` bounds how much freed memory the heap may keep.  The
trade is resident memory: freed chunk buffers stay in the heap for reuse.

It is opt-in (``LOGFLUME_MALLOPT=1``): the tail read path alone doubles
(``bench/bench_tail.py``: 1895 MiB/s against 894 MiB/s here) and end to end
(``python -m bench``, 10 files, alternating runs) it gave 742-767 MB/s and
0.9 CPU s/GB against 692-701 MB/s and 1.3-1.4, but the agent's peak RSS went
from 174 MiB to 235 MiB, past the 2 x chunk_size + 64 MiB the agent promises.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


def reuse_large_buffers(mmap_threshold: int = 1 << 30, trim_threshold: int = 256 << 20) -> bool:
    """Raise glibc's mmap and trim thresholds when ``LOGFLUME_MALLOPT=1``; True if applied (no-op off glibc)."""
    if not sys.platform.startswith("linux") or os.environ.get("LOGFLUME_MALLOPT", "0") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(M_TRIM_THRESHOLD, trim_threshold))
