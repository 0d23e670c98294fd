"""MemoryChannel: a bounded in-memory queue of chunks, transactional, with back-pressure.

Not durable: chunks committed to it are lost if the agent process dies.  That
is the trade for speed; use the ``file`` channel when every byte must survive
a crash (see docs/channels.md).
"""

from __future__ import annotations

import threading
from collections import deque
from typing import ClassVar

from logflume.channel import ByteBudget, Channel, StagedTransaction, Transaction, wait_for_head
from logflume.chunk import Chunk


class MemoryChannel(Channel):
    durable: ClassVar[bool] = False

    def configure(self) -> None:
        # (commit number, chunk): a rollback puts its chunks back in commit order among the others returned.
        self._queue: deque[tuple[int, Chunk]] = deque()
        self._committed = 0
        self._cond = threading.Condition()
        # capacity covers bytes queued + reserved by open puts + taken and not yet committed
        self._budget = ByteBudget(self._cond, self.config.capacity, self.name, lambda: self._closed)
        self._queued_bytes = 0
        self._closed = False
        self._fill = self.metrics.gauge("channel_fill_bytes", "Bytes held by the channel")
        self._fill_chunks = self.metrics.gauge("channel_fill_chunks", "Chunks held by the channel")
        self.metrics.gauge("channel_capacity_bytes", "Channel capacity in bytes").set(self.config.capacity)

    def start(self) -> None:
        with self._cond:
            self._closed = False

    def stop(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def transaction(self) -> Transaction:
        return _MemoryTransaction(self)

    def size_bytes(self) -> int:
        with self._cond:
            return self._queued_bytes

    def size_chunks(self) -> int:
        with self._cond:
            return len(self._queue)

    # -- used by transactions, under self._cond --------------------------------------------

    def _publish(self, chunks: list[Chunk]) -> None:
        with self._cond:
            for c in chunks:
                self._committed += 1
                self._queue.append((self._committed, c))
            self._queued_bytes += sum(len(c) for c in chunks)
            self._update()
            self._cond.notify_all()

    def _take(self, timeout: float | None) -> _Taken | None:
        with self._cond:
            if not wait_for_head(self._cond, lambda: bool(self._queue), lambda: self._closed, self.name, timeout):
                return None
            n, chunk = self._queue.popleft()
            self._queued_bytes -= len(chunk)
            self._update()
            return _Taken(n, chunk)

    def _return_to_head(self, taken: list[_Taken]) -> None:
        with self._cond:
            # Everything taken came off the head, so only chunks returned by earlier rollbacks
            # can sit before a returned one: merge with those.
            last = max(t.n for t in taken)
            back = [(t.n, t.chunk) for t in taken]
            while self._queue and self._queue[0][0] < last:
                back.append(self._queue.popleft())
            self._queue.extendleft(reversed(sorted(back, key=lambda item: item[0])))
            self._queued_bytes += sum(len(t.chunk) for t in taken)
            self._update()
            self._cond.notify_all()

    def _update(self) -> None:
        self._fill.set(self._queued_bytes)
        self._fill_chunks.set(len(self._queue))


class _Taken:
    """A taken chunk and its commit number (where a rollback puts it back)."""

    __slots__ = ("chunk", "n")

    def __init__(self, n: int, chunk: Chunk) -> None:
        self.n, self.chunk = n, chunk


class _MemoryTransaction(StagedTransaction):
    channel: MemoryChannel

    def _stage(self, chunk: Chunk, timeout: float | None) -> Chunk:
        self.channel._budget.reserve(len(chunk), timeout)
        return chunk

    def _take(self, timeout: float | None) -> tuple[_Taken, Chunk] | None:
        taken = self.channel._take(timeout)
        return None if taken is None else (taken, taken.chunk)

    def _apply(self) -> None:
        if self.puts:
            self.channel._publish(self.puts)
        if self.takes:
            self.channel._budget.release(self.take_bytes)

    def _unstage(self) -> None:
        self.channel._budget.release(self.put_bytes)

    def _untake(self) -> None:
        self.channel._return_to_head(self.takes)
