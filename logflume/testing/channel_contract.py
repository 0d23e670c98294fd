"""The channel contract as a test suite every channel must pass, built-in or third party.

Subclass :class:`ChannelContract` in a test module (the class name must start
with ``Test`` for pytest to collect it) and implement :meth:`make_channel`::

    from logflume.testing.channel_contract import ChannelContract

    class TestMyChannel(ChannelContract):
        def make_channel(self, capacity: str) -> Channel:
            ch = MyChannel("c", parse_settings(MyChannel.schema(), {"capacity": capacity}, "channels.c", None),
                           Context(data_dir=self.tmp_path))
            ch.start()
            return ch

Each test gets a fresh ``self.tmp_path``; channels made are stopped after the
test.  What is checked is what ``logflume/channel.py`` promises: puts are
invisible until commit, takes come in commit order, a rollback returns taken
chunks to the head in their order, a full channel blocks ``put`` (and raises
``ChannelFull`` after its timeout) until a take commits, a chunk bigger than
the capacity enters an empty channel, ``close`` wakes every waiter with
``ChannelClosed``, and concurrent producers and consumers lose and duplicate
nothing.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pytest

from logflume.channel import Channel
from logflume.chunk import Chunk
from logflume.errors import ChannelClosed, ChannelFull

__all__ = ["ChannelContract", "chunk", "ids", "put", "take_all"]


def chunk(i: int, size: int = 10) -> Chunk:
    """Chunk number ``i``: ``size`` bytes of ``i % 256``, ``seq_id`` (i+1)*size, tag ``i``."""
    return Chunk("h", "s", "Raw", (i + 1) * size, "e", bytes([i % 256]) * size, tags={"i": str(i)})


def ids(chunks: list[Chunk]) -> list[int]:
    return [int(c.tags["i"]) for c in chunks]


def put(ch: Channel, *numbers: int, size: int = 10) -> None:
    """Commit chunks ``numbers`` in one transaction."""
    with ch.transaction() as tx:
        for i in numbers:
            tx.put(chunk(i, size))


def take_all(ch: Channel, commit: bool = False) -> list[Chunk]:
    """Everything takeable now, in one transaction (rolled back unless ``commit``)."""
    tx = ch.transaction()
    out = []
    while (c := tx.take()) is not None:
        out.append(c)
    if commit:
        tx.commit()
    else:
        tx.rollback()
    return out


class ChannelContract:
    """The contract tests; a subclass says how to make its channel."""

    tmp_path: Path
    #: The channels this test made, in order (for subclasses that check more after a contract test).
    made: list[Channel]

    def make_channel(self, capacity: str) -> Channel:
        """A started channel holding ``capacity`` bytes (a size such as ``"30"`` or ``"4KiB"``)."""
        raise NotImplementedError

    @pytest.fixture(autouse=True)
    def _channels(self, tmp_path):
        self.tmp_path = tmp_path
        self.made: list[Channel] = []
        made = self.made
        make = self.make_channel

        def tracked(capacity: str = "64MiB") -> Channel:
            ch = make(capacity)
            made.append(ch)
            return ch

        self.channel = tracked  # type: ignore[method-assign]
        yield
        for ch in made:
            ch.stop()

    def channel(self, capacity: str = "64MiB") -> Channel:  # replaced per test by _channels
        raise NotImplementedError

    # -- transactions -------------------------------------------------------------------------

    def test_put_invisible_until_commit_then_fifo(self):
        ch = self.channel()
        tx = ch.transaction()
        tx.put(chunk(0))
        tx.put(chunk(1))
        assert ch.transaction().take() is None
        assert ch.size_chunks() == 0
        tx.commit()
        assert (ch.size_chunks(), ch.size_bytes()) == (2, 20)
        with ch.transaction() as t2:
            a, b = t2.take(), t2.take()
            assert t2.take() is None
        assert (a.seq_id, b.seq_id) == (10, 20)
        assert bytes(a.data) == b"\0" * 10 and a.tags == {"i": "0"} and a.source == "h"
        assert ch.size_chunks() == 0

    def test_take_order_is_commit_order_across_interleaved_transactions(self):
        ch = self.channel()
        t1, t2 = ch.transaction(), ch.transaction()
        t1.put(chunk(1))
        t2.put(chunk(2))
        t1.put(chunk(3))
        t2.commit()
        t1.commit()
        assert ids(take_all(ch)) == [2, 1, 3]

    def test_rollback_returns_taken_chunks_to_head_in_order(self):
        ch = self.channel("1000")
        put(ch, *range(5))
        t = ch.transaction()
        assert ids([t.take() for _ in range(3)]) == [0, 1, 2]
        t.rollback()
        assert ids(take_all(ch)) == [0, 1, 2, 3, 4]

    def test_rollbacks_in_any_order_restore_commit_order(self):
        ch = self.channel()
        put(ch, *range(4))
        a, b = ch.transaction(), ch.transaction()
        assert ids([a.take()]) == [0]
        assert ids([b.take(), b.take()]) == [1, 2]
        a.rollback()
        b.rollback()
        assert ids(take_all(ch)) == [0, 1, 2, 3]

    def test_rolled_back_put_is_gone_and_releases_capacity(self):
        ch = self.channel("20")
        t = ch.transaction()
        t.put(chunk(0))
        t.put(chunk(1))
        t.rollback()
        with ch.transaction() as t2:
            t2.put(chunk(2), timeout=0.1)
            t2.put(chunk(3), timeout=0.1)
        assert ch.size_bytes() == 20
        assert ids(take_all(ch)) == [2, 3]

    def test_exception_in_with_block_rolls_back(self):
        ch = self.channel()
        put(ch, 0)
        with pytest.raises(RuntimeError):
            with ch.transaction() as tx:
                tx.take()
                raise RuntimeError("sink failed")
        assert ch.size_chunks() == 1

    def test_transaction_cannot_be_reused(self):
        ch = self.channel()
        tx = ch.transaction()
        tx.put(chunk(0))
        tx.commit()
        with pytest.raises(RuntimeError):
            tx.put(chunk(1))

    # -- capacity -----------------------------------------------------------------------------

    def test_full_channel_blocks_producer_until_a_take_commits(self):
        ch = self.channel("30")
        put(ch, 0, 1, 2)
        released = threading.Event()

        def producer():
            with ch.transaction() as tx:
                tx.put(chunk(3))
            released.set()

        t = threading.Thread(target=producer, daemon=True)
        t.start()
        time.sleep(0.3)
        assert not released.is_set(), "producer must block while the channel is full"
        with ch.transaction() as tx:
            assert tx.take() is not None
            time.sleep(0.1)
            assert not released.is_set(), "an uncommitted take still holds its capacity"
        assert released.wait(10), "a committed take must release the blocked producer"
        t.join(10)
        assert ch.size_chunks() == 3
        assert ids(take_all(ch)) == [1, 2, 3]

    def test_put_timeout_raises_channel_full(self):
        ch = self.channel("10")
        put(ch, 0)
        with pytest.raises(ChannelFull):
            ch.transaction().put(chunk(1), timeout=0.1)

    def test_oversized_chunk_admitted_only_when_empty(self):
        ch = self.channel("5")
        put(ch, 0, size=50)
        assert ch.size_bytes() == 50
        with pytest.raises(ChannelFull):
            ch.transaction().put(chunk(1, 50), timeout=0.1)

    # -- closing and concurrency --------------------------------------------------------------

    def test_close_wakes_waiting_taker_and_putter(self):
        ch = self.channel("10")
        put(ch, 0)
        empty = self.channel("10")
        errors = []

        def waiting_put():
            try:
                ch.transaction().put(chunk(1), timeout=None)
            except ChannelClosed as exc:
                errors.append(exc)

        def waiting_take():
            try:
                empty.transaction().take(timeout=None)
            except ChannelClosed as exc:
                errors.append(exc)

        threads = [threading.Thread(target=waiting_put), threading.Thread(target=waiting_take)]
        for t in threads:
            t.start()
        time.sleep(0.2)
        ch.close()
        empty.close()
        for t in threads:
            t.join(10)
        assert len(errors) == 2 and not any(t.is_alive() for t in threads)

    def test_concurrent_producers_and_consumers_lose_and_duplicate_nothing(self):
        ch = self.channel("4KiB")
        n_per, producers = 300, 3
        got: list[int] = []
        lock = threading.Lock()

        def produce(p):
            for k in range(n_per):
                with ch.transaction() as tx:
                    tx.put(chunk(p * n_per + k, 100), timeout=30)

        def consume():
            while True:
                tx = ch.transaction()
                c = tx.take(timeout=2)
                if c is None:
                    tx.rollback()
                    return
                if random.random() < 0.2:
                    tx.rollback()
                    continue
                tx.commit()
                with lock:
                    got.append(int(c.tags["i"]))

        threads = [threading.Thread(target=produce, args=(p,)) for p in range(producers)]
        threads += [threading.Thread(target=consume) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(got) == list(range(n_per * producers))
