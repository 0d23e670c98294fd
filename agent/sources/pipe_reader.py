"""Reading a pipe (stdin, a child's stdout) into chunks: shared by the stdin and exec sources.

The pipe is read in large blocks with a timeout (selectors), so chunks are
cut by size as data arrives and by ``flush_interval`` when the writer is
quiet.  Every chunk is delivered (committed to the channel) before more is
read: a full channel stops the reading, and the writer blocks on its pipe.
"""

from __future__ import annotations

import os
import selectors
import time
from collections.abc import Callable

from agent.chunker import RecordChunker


def pump_pipe(
    fd: int,
    chunker: RecordChunker,
    deliver: Callable[[list], None],
    stopping: Callable[[], bool],
    block_size: int = 1 << 20,
) -> int:
    """Read ``fd`` until EOF or ``stopping()``; returns bytes read. Delivers the tail at EOF."""
    total = 0
    sel = selectors.DefaultSelector()
    sel.register(fd, selectors.EVENT_READ)
    try:
        while not stopping():
            ready = sel.select(timeout=0.1)
            now = time.monotonic()
            if ready:
                data = os.read(fd, block_size)
                if not data:
                    deliver(chunker.finish())
                    return total
                total += len(data)
                chunks = chunker.feed(data, now)
                if chunks:
                    deliver(chunks)
            due = chunker.poll(time.monotonic())
            if due:
                deliver(due)
        deliver(chunker.finish())
        return total
    finally:
        sel.close()
