"""H1: a few KiB of zstd announcing gigabytes is refused before anything is inflated or admitted.

Before the fix one 33 KB frame of four chunks, each declaring 256 MiB, was inflated
(admission had only counted the compressed bytes), acked OK and stored: the
collector's peak RSS rose by about 1 GiB.
"""

from __future__ import annotations

import pytest
import zstandard

from logflume.wire.idl import Compression, Status
from tests.fuzz.collector_proc import CollectorProcess, Cost, stored_chunks
from tests.security.wire_peer import connect, deliver, header, ping, reply

pytestmark = pytest.mark.timeout(180)

#: Peak RSS an attack may add (the refusal reads a few KiB; the Python heap moves a little).
MAX_GROWTH_MIB = 32
MAX_SECONDS = 10


def bomb(declared: int) -> bytes:
    """A zstd frame whose header says ``declared`` bytes, and which does inflate to that many zeros."""
    return zstandard.ZstdCompressor(level=3).compress(bytes(declared))


@pytest.fixture(scope="module")
def collector(tmp_path_factory):
    coll = CollectorProcess(tmp_path_factory.mktemp("bomb"), max_frame_size="160MiB")  # the default limit
    coll.start()
    yield coll
    if coll.alive():
        coll.stop()


@pytest.mark.parametrize("count, declared", [(4, 256 << 20), (4, 150 << 20)],
                         ids=["each chunk above the frame limit", "each below it, together above"])
def test_compression_bomb_is_refused_before_inflating(collector, count, declared):
    body = bomb(declared)
    frame = deliver([header(length=declared, wire_length=len(body), codec=Compression.ZSTD, stream=f"/bomb{i}")
                     for i in range(count)], len(body) * count)
    with Cost(collector) as cost, connect(collector.ports["logflume"]) as s:
        s.sendall(ping())
        assert reply(s).status == Status.OK
        s.sendall(frame + body * count)
        ack = reply(s)
    print(f"{count} x {declared >> 20} MiB zstd bomb ({len(frame) + len(body) * count} bytes): {cost}")
    assert ack is None or ack.status != Status.OK, f"bomb acked: {ack}"
    assert cost.peak_growth_mib < MAX_GROWTH_MIB, f"collector inflated the bomb: {cost}"
    assert cost.seconds < MAX_SECONDS, cost
    assert collector.alive()
    assert "exceeds max_frame_size" in collector.log() or "once decompressed" in collector.log()


def test_nothing_of_the_bombs_was_stored(collector):
    """Runs last: the store holds none of the bombs' bytes."""
    assert collector.stop() == 0
    assert [c for c in stored_chunks(collector.store) if c.stream.startswith("/bomb")] == []
