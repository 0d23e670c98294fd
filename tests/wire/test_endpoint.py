"""WireEndpoint with a store that answers later (a Future): the next frame is read while one is stored,
answers go out in frame order and only once stored, and a connection holds at most IN_FLIGHT batches."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future

import pytest

from logflume.chunk import Chunk
from logflume.wire import Status, TcpServer, WireClient, WireEndpoint
from logflume.wire.buffers import BufferPool
from logflume.wire.endpoint import IN_FLIGHT
from tests.conftest import wait_for

pytestmark = pytest.mark.timeout(60)


def chunk(i: int, data: bytes) -> Chunk:
    return Chunk(source="host-a", stream="/var/log/a", datatype="Raw", seq_id=1000 * i + len(data), epoch="e",
                 data=data)


class LaterStore:
    """deliver() hands back a Future the test completes: what a store writer thread does."""

    def __init__(self) -> None:
        self.batches: list[tuple[list[bytes], Future]] = []
        self.lock = threading.Lock()

    def __call__(self, chunks) -> Future:
        fut: Future = Future()
        with self.lock:
            self.batches.append(([bytes(c.data) for c in chunks], fut))
        return fut

    def received(self) -> int:
        with self.lock:
            return len(self.batches)


@pytest.fixture
def later():
    store = LaterStore()
    pool = BufferPool(max_idle_bytes=64 << 20)
    srv = TcpServer(WireEndpoint(store, server_name="c", max_frame_size=1 << 24, idle_timeout=30.0, pool=pool),
                    "127.0.0.1", 0)
    srv.start()
    client = WireClient(*srv.address, timeout=10.0)
    client.connect()
    yield store, client, pool
    for _, fut in store.batches:
        if not fut.done():
            fut.set_result(None)
    client.close()
    srv.stop(timeout=2.0)


def test_next_frame_is_read_while_one_is_stored_and_answers_keep_frame_order(later):
    store, client, _ = later
    client.send([chunk(1, b"first\n")])
    client.send([chunk(2, b"second\n")])
    wait_for(lambda: store.received() == 2, 10, message="second frame read before the first was stored")
    assert [b for b, _ in store.batches] == [[b"first\n"], [b"second\n"]]
    store.batches[1][1].set_result(None)  # the second is stored first ...
    assert not client.conn.wait_readable(0.3)  # ... but its answer waits for the first one's
    store.batches[0][1].set_exception(OSError("disk full"))
    first, second = client.ack(1), client.ack(1)
    assert first.status == Status.ERROR and "disk full" in first.reason
    assert second.ok


def test_an_answer_goes_out_once_stored_even_when_nothing_follows(later):
    store, client, _ = later
    client.send([chunk(1, b"alone\n")])
    wait_for(lambda: store.received() == 1, 10, message="frame read")
    assert not client.conn.wait_readable(0.3)  # not stored yet: no answer
    threading.Timer(0.2, store.batches[0][1].set_result, (None,)).start()
    started = time.monotonic()
    assert client.ack(1).ok
    assert time.monotonic() - started < 5.0


def test_a_connection_holds_at_most_in_flight_batches_and_buffers_come_back(later):
    store, client, pool = later
    n = IN_FLIGHT + 2
    for i in range(n):
        client.send([chunk(i + 1, bytes([65 + i]) * 100_000)])
    wait_for(lambda: store.received() == IN_FLIGHT, 10, message="window filled")
    time.sleep(0.3)
    assert store.received() == IN_FLIGHT  # the rest waits in the socket until an answer frees a place
    for i in range(n):
        wait_for(lambda i=i: store.received() > i, 10, message=f"frame {i} read")
        store.batches[i][1].set_result(None)
        assert client.ack(1).ok
    assert [b[0][0][:1] for b in store.batches] == [bytes([65 + i]) for i in range(n)]
    assert pool.allocated <= IN_FLIGHT  # each buffer went back to the pool once its batch was stored


def test_bodies_of_about_one_size_share_one_receive_buffer():
    """Frames cut from chunks differ by a few bytes; an exact-size buffer fitted none of the longer ones,
    so every such frame made (and faulted in) a new 16 MiB buffer."""
    pool = BufferPool(max_idle_bytes=64 << 20)
    first = pool.get((16 << 20) - 300)
    pool.put(first)
    again = pool.get((16 << 20) - 100)
    assert again is first and pool.allocated == 1
    assert len(pool.get(1000)) == 4096 and len(pool.get((64 << 20) + 17)) <= (64 << 20) * 17 // 16
