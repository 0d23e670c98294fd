"""Channel transactions: commit, rollback order, capacity back-pressure."""

from __future__ import annotations

import threading
import time

import pytest

from agent.channels.memory import MemoryChannel
from logflume.chunk import Chunk
from logflume.component import Context
from logflume.errors import ChannelClosed, ChannelFull
from logflume.settings import parse_settings


def chunk(i: int, size: int = 10) -> Chunk:
    return Chunk("h", "s", "Raw", (i + 1) * size, "e", bytes([i % 256]) * size)


def channel(capacity: str = "100", tmp_path=None) -> MemoryChannel:
    cfg = parse_settings(MemoryChannel.schema(), {"capacity": capacity}, "channels.m", None)
    ch = MemoryChannel("m", cfg, Context(data_dir=tmp_path) if tmp_path else Context())
    ch.start()
    return ch


def test_put_invisible_until_commit_and_fifo_order():
    ch = channel()
    tx = ch.transaction()
    tx.put(chunk(0))
    tx.put(chunk(1))
    assert ch.transaction().take() is None
    tx.commit()
    with ch.transaction() as t2:
        assert [t2.take().seq_id, t2.take().seq_id] == [10, 20]
    assert ch.size_chunks() == 0


def test_rollback_returns_taken_chunks_to_head_in_order():
    ch = channel("1000")
    with ch.transaction() as tx:
        for i in range(5):
            tx.put(chunk(i))
    t = ch.transaction()
    taken = [t.take().seq_id for _ in range(3)]
    assert taken == [10, 20, 30]
    t.rollback()
    with ch.transaction() as t2:
        again = [t2.take().seq_id for _ in range(5)]
    assert again == [10, 20, 30, 40, 50]


def test_rolled_back_put_releases_capacity():
    ch = channel("20")
    t = ch.transaction()
    t.put(chunk(0))
    t.put(chunk(1))
    t.rollback()
    with ch.transaction() as t2:
        t2.put(chunk(2), timeout=0.1)
        t2.put(chunk(3), timeout=0.1)
    assert ch.size_bytes() == 20


def test_full_channel_blocks_producer_until_a_take_commits():
    ch = channel("30")
    with ch.transaction() as tx:
        for i in range(3):
            tx.put(chunk(i))
    released = threading.Event()

    def producer():
        with ch.transaction() as tx:
            tx.put(chunk(3))
        released.set()

    t = threading.Thread(target=producer)
    t.start()
    time.sleep(0.3)
    assert not released.is_set(), "producer must block while the channel is full"
    with ch.transaction() as tx:
        assert tx.take() is not None
        # an uncommitted take still holds the capacity
        time.sleep(0.1)
        assert not released.is_set()
    assert released.wait(2), "a committed take must release the blocked producer"
    t.join()
    assert ch.size_chunks() == 3


def test_put_timeout_raises_channel_full():
    ch = channel("10")
    with ch.transaction() as tx:
        tx.put(chunk(0))
    with pytest.raises(ChannelFull):
        ch.transaction().put(chunk(1), timeout=0.1)


def test_oversized_chunk_admitted_when_empty():
    ch = channel("5")
    with ch.transaction() as tx:
        tx.put(chunk(0, size=50), timeout=0.1)
    assert ch.size_bytes() == 50


def test_close_wakes_waiters():
    ch = channel("10")
    errors = []

    def taker():
        try:
            ch.transaction().take(timeout=None)
        except ChannelClosed as exc:
            errors.append(exc)

    t = threading.Thread(target=taker)
    t.start()
    time.sleep(0.1)
    ch.close()
    t.join(2)
    assert errors and not t.is_alive()


def test_exception_in_with_block_rolls_back():
    ch = channel()
    with ch.transaction() as tx:
        tx.put(chunk(0))
    with pytest.raises(RuntimeError):
        with ch.transaction() as tx:
            tx.take()
            raise RuntimeError("sink failed")
    assert ch.size_chunks() == 1
