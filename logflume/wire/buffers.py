"""BufferPool: receive buffers shared by all connections of a server, reused across frames.

Chunk bodies are read with ``recv_into`` straight into these buffers, so a
64 MiB body lands in memory once.  Reusing buffers avoids faulting in fresh
memory for every frame (measured 4-5x slower on these machines), and sharing
them across connections bounds memory by what is admitted at once, not by
the number of connected agents.  A buffer still referenced when it comes
back (a consumer kept a view of it) is dropped rather than overwritten.
"""

from __future__ import annotations

import threading


def rounded(n: int) -> int:
    """``n`` rounded up by at most 1/16 (and to a whole page): bodies of about one size then share a buffer."""
    step = max(4096, 1 << max(n.bit_length() - 5, 0))
    return -(-n // step) * step


def _exported(buf: bytearray) -> bool:
    """True while a memoryview of ``buf`` is alive (a bytearray cannot resize then)."""
    try:
        buf.append(0)
    except BufferError:
        return True
    del buf[-1]
    return False


class BufferPool:
    def __init__(self, max_idle_bytes: int) -> None:
        self.max_idle_bytes = max_idle_bytes
        self._free: list[bytearray] = []
        self._lock = threading.Lock()
        self.allocated = 0  # buffers made (for tests and metrics)

    def get(self, n: int) -> bytearray:
        """A buffer of at least ``n`` bytes: the smallest idle one that fits, else a new one."""
        with self._lock:
            fits = [b for b in self._free if len(b) >= n]
            if fits:
                buf = min(fits, key=len)
                self._free.remove(buf)
                return buf
        self.allocated += 1
        return bytearray(rounded(n))

    def put(self, buf: bytearray) -> None:
        """Return a buffer; kept for reuse if nobody holds a view of it and the idle cap allows."""
        if _exported(buf) or len(buf) > self.max_idle_bytes:
            return
        with self._lock:
            self._free.append(buf)
            self._free.sort(key=len, reverse=True)
            total = sum(len(b) for b in self._free)
            while self._free and total > self.max_idle_bytes:
                total -= len(self._free.pop())  # drop the smallest first: big ones are the costly ones
