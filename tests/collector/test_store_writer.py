"""StoreWriter: one thread calls the store; admission by pending bytes; group commit; errors reach every waiter."""

from __future__ import annotations

import threading
import time

import pytest

from collector.receiver import StoreWriter
from logflume.chunk import Chunk
from logflume.errors import TryLater
from logflume.sink import Sink

pytestmark = pytest.mark.timeout(30)


class SlowStore(Sink):
    """Records each deliver call and the thread it ran on; sleeps to let a queue build up."""

    def __init__(self, delay: float = 0.0, fail: Exception | None = None) -> None:
        self.calls: list[int] = []
        self.threads: set[str] = set()
        self.delay = delay
        self.fail = fail

    def deliver(self, chunks):
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        self.calls.append(len(chunks))


def chunk(n: int) -> Chunk:
    return Chunk("a", "s", "Raw", n, "e", b"x" * n)


def test_reserve_admits_when_empty_and_refuses_when_full():
    w = StoreWriter(SlowStore(), max_pending_bytes=100)
    with w.reserve(1000):  # bigger than the limit, but nothing is pending: admitted
        assert w.pending_bytes == 1000
        with pytest.raises(TryLater, match="store behind: 1000 bytes pending") as info:
            with w.reserve(1):
                pass
        assert info.value.delay > 0
    assert w.pending_bytes == 0
    with w.reserve(60), w.reserve(40):
        assert w.pending_bytes == 100
    assert w.try_laters == 1


def test_one_peer_holds_at_most_its_share():
    w = StoreWriter(SlowStore(), max_pending_bytes=1000, max_pending_bytes_per_peer=300)
    with w.reserve(500, "stalled"):  # its first batch is always admitted, even above its share
        with pytest.raises(TryLater, match="500 bytes of this sender already pending"):
            with w.reserve(1, "stalled"):
                pass
        with w.reserve(300, "agent"), w.reserve(200, "other"):  # others still get in
            assert w.pending_bytes == 1000
    assert w.pending_bytes == 0 and not w._pending_by_peer


def test_concurrent_batches_are_group_committed_by_one_thread():
    store = SlowStore(delay=0.2)
    w = StoreWriter(store, max_pending_bytes=1 << 30)
    w.start()
    threads = [threading.Thread(target=w.deliver, args=([chunk(10), chunk(10)],)) for _ in range(6)]
    for t in threads:
        t.start()
        time.sleep(0.01)
    for t in threads:
        t.join(10)
    w.stop()
    assert sum(store.calls) == 12
    assert len(store.calls) < 6  # batches that waited were written together
    assert store.threads == {"store-writer"}
    assert w.pending_bytes == 0


def test_store_errors_reach_every_waiter():
    w = StoreWriter(SlowStore(delay=0.1, fail=OSError("disk gone")), max_pending_bytes=1 << 30)
    w.start()
    errors: list[BaseException] = []

    def send():
        try:
            w.deliver([chunk(5)])
        except OSError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=send) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    w.stop()
    assert len(errors) == 4 and all("disk gone" in str(e) for e in errors)
    assert w.pending_bytes == 0


def test_no_view_of_a_receive_buffer_outlives_its_store():
    """The endpoint reuses a receive buffer only when no view of it is left once the batch is stored; a
    leftover reference in the writer's grouping loop kept the last grouped batch's buffer viewed until the
    next batch came, so the pool made a new buffer (and faulted it in) every time."""
    from logflume.wire.buffers import _exported

    gate, entered = threading.Event(), threading.Event()

    class Gated(SlowStore):
        def deliver(self, chunks):
            entered.set()
            gate.wait(10)
            super().deliver(chunks)

    w = StoreWriter(Gated(), max_pending_bytes=1 << 20)
    w.start()
    buffers = [bytearray(b"y" * 100) for _ in range(3)]
    futures = [w.submit([Chunk("a", "s", "Raw", 100, "e", memoryview(buffers[0]))])]
    assert entered.wait(10)  # the first is being stored: the next two queue up and are grouped
    futures += [w.submit([Chunk("a", "s", "Raw", 100, "e", memoryview(b))]) for b in buffers[1:]]
    gate.set()
    for f in futures:
        f.result(10)
    assert w.store.calls == [1, 2]
    assert not any(_exported(b) for b in buffers)
    w.stop()
