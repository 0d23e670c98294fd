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
from typing import Any, ClassVar

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


def wait_for_head(cond: threading.Condition, has_head: Callable[[], bool], closed: Callable[[], bool], name: str,
                  timeout: float | None) -> bool:
    """Wait, holding ``cond``, until a chunk is at the head (True) or ``timeout`` passes (False; None: forever).

    A take on a closed, empty channel raises ChannelClosed: the sink stops instead of waiting for ever.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while not has_head():
        if closed():
            raise ChannelClosed(name)
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            return False
        cond.wait(remaining if remaining is not None else 1.0)
    return True


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


class StagedTransaction(Transaction):
    """The bookkeeping every channel's transaction does alike: what it put and took, used once, counted on commit.

    A channel says only how a put is staged, a take is made, a commit applied
    and each undone (the ``_`` hooks); ``puts``/``takes`` hold what its hooks
    returned.  A commit that fails rolls back, so nothing stays reserved or taken.
    """

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.puts: list[Any] = []
        self.put_bytes = 0
        self.takes: list[Any] = []
        self.take_bytes = 0
        self.done = False

    def put(self, chunk: Chunk, timeout: float | None = None) -> None:
        self._check()
        self.puts.append(self._stage(chunk, timeout))
        self.put_bytes += len(chunk)

    def take(self, timeout: float | None = 0.0) -> Chunk | None:
        self._check()
        got = self._take(timeout)
        if got is None:
            return None
        handle, chunk = got
        self.takes.append(handle)
        self.take_bytes += len(chunk)
        return chunk

    def commit(self) -> None:
        self._check()
        if self.puts or self.takes:
            try:
                self._apply()
            except BaseException:
                self.rollback()
                raise
        self.done = True
        metrics = self.channel.metrics
        if self.puts:
            metrics.chunks_in.inc(len(self.puts))
            metrics.bytes_in.inc(self.put_bytes)
        if self.takes:
            metrics.chunks_out.inc(len(self.takes))
            metrics.bytes_out.inc(self.take_bytes)
        if self.puts or self.takes:
            self._committed()

    def rollback(self) -> None:
        if self.done:
            return
        self.done = True
        if self.puts:
            self._unstage()
        if self.takes:
            self._untake()

    def _check(self) -> None:
        if self.done:
            raise RuntimeError("transaction already committed or rolled back")

    # -- the channel's part --------------------------------------------------------------------

    def _stage(self, chunk: Chunk, timeout: float | None) -> Any:
        """Reserve room for ``chunk`` (blocking while full) and stage it; returns what ``puts`` keeps."""
        raise NotImplementedError

    def _take(self, timeout: float | None) -> tuple[Any, Chunk] | None:
        """Take the head chunk: (what ``takes`` keeps, the chunk), or None if none came within ``timeout``."""
        raise NotImplementedError

    def _apply(self) -> None:
        """Make the puts visible and the takes consumed, at once."""
        raise NotImplementedError

    def _committed(self) -> None:
        """After a commit was applied and counted (a durable channel's fsync)."""

    def _unstage(self) -> None:
        """Release what the puts reserved."""
        raise NotImplementedError

    def _untake(self) -> None:
        """Return the takes to the head of the channel, in their order."""
        raise NotImplementedError


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
