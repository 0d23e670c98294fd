"""Channel: the transactional buffer between sources and sinks.

Contract (Flume's): a source has produced a chunk if and only if the chunk was
committed to its channel; a sink has consumed a chunk if and only if the next
hop accepted it and the sink then committed its take.  A rollback returns
taken chunks to the head of the channel, in their original order.  A full
channel blocks ``put`` (back-pressure) instead of dropping anything.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import ClassVar

from logflume.chunk import Chunk
from logflume.component import Component
from logflume.errors import ChannelClosed, ChannelFull
from logflume.settings import Setting, Size


class ByteBudget:
    """A channel's capacity in bytes: ``reserve`` blocks while it is used up (back-pressure).

    Shares the channel's condition variable, so a channel can change ``used``
    together with its queue under one lock.  A chunk bigger than the whole
    capacity is admitted once nothing else is held, otherwise it could never enter.
    """

    def __init__(self, cond: threading.Condition, capacity: int, name: str, closed: Callable[[], bool]) -> None:
        self.cond = cond
        self.capacity = capacity
        self.name = name
        self.closed = closed
        self.used = 0

    def reserve(self, n: int, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.cond:
            while not self.closed() and self.used > 0 and self.used + n > self.capacity:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise ChannelFull(f"channel {self.name} full ({self.used} of {self.capacity} bytes)")
                self.cond.wait(remaining if remaining is not None else 1.0)
            if self.closed():
                raise ChannelClosed(self.name)
            self.used += n

    def release(self, n: int) -> None:
        with self.cond:
            self.used -= n
            self.cond.notify_all()


class Transaction:
    """One unit of work against a channel; use as a context manager.

    ``with channel.transaction() as tx:`` commits when the block ends normally
    and rolls back when it raises.
    """

    def put(self, chunk: Chunk, timeout: float | None = None) -> None:
        """Stage a chunk; blocks while the channel is full (raises ChannelFull after ``timeout``)."""
        raise NotImplementedError

    def take(self, timeout: float | None = 0.0) -> Chunk | None:
        """Take the head chunk, waiting up to ``timeout`` (None = forever); None if nothing came."""
        raise NotImplementedError

    def commit(self) -> None:
        raise NotImplementedError

    def rollback(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Transaction:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.rollback()


class Channel(Component):
    kind: ClassVar[str] = "channel"
    #: True when committed chunks survive a crash of the process (the file channel).
    durable: ClassVar[bool] = False
    settings: ClassVar[dict[str, Setting]] = {
        # One default chunk: with the chunk a source is building, the agent holds 2 x chunk_size.
        "capacity": Setting(Size(min=1), "64MiB", "Bytes the channel holds before put blocks (back-pressure)"),
    }

    def transaction(self) -> Transaction:
        raise NotImplementedError

    def size_bytes(self) -> int:
        """Bytes committed and not yet taken-and-committed (fill level)."""
        raise NotImplementedError

    def size_chunks(self) -> int:
        raise NotImplementedError

    def close(self) -> None:
        """Wake every waiter with ChannelClosed; durable channels flush their state."""
        self.stop()
