"""M1: a header announcing a big body, then silence, must not hold the collector's admission capacity.

An admitted body must keep arriving (``progress_timeout``, 10 s by default) or the
connection and its reservation are dropped, and one peer may hold at most
``max_pending_bytes_per_peer`` of the capacity.  Before the fix four such headers
(128 MiB each) held all 512 MiB for the whole frame deadline (minutes): every other
agent was answered TRY_LATER throughout.
"""

from __future__ import annotations

import time

import pytest

from logflume.chunk import Chunk
from logflume.wire.client import WireClient
from logflume.wire.idl import Status
from tests.fuzz.collector_proc import CollectorProcess, Cost
from tests.security.wire_peer import connect, deliver, header, ping, reply

pytestmark = pytest.mark.timeout(180)

BODY = 128 << 20  # four of them fill the default max_pending_bytes (512 MiB)


@pytest.fixture
def collector(tmp_path):
    coll = CollectorProcess(tmp_path, max_frame_size="160MiB")  # max_pending_bytes: the default 512 MiB
    coll.start()
    yield coll
    if coll.alive():
        coll.stop()


def test_silent_announced_bodies_do_not_starve_other_agents(collector):
    port = collector.ports["logflume"]
    agent = WireClient("127.0.0.1", port, timeout=10, sender="web-01/fwd")
    stalled = []
    with Cost(collector) as cost:
        for i in range(5):
            s = connect(port)
            s.sendall(ping())
            assert reply(s).status == Status.OK
            s.sendall(deliver([header(length=BODY, wire_length=BODY, stream=f"/stall{i}")], BODY))
            stalled.append(s)  # ... and never send the body
        time.sleep(0.5)  # let the collector admit what it will
        t0 = time.monotonic()
        ok_after = None
        while time.monotonic() - t0 < 25:
            ack = agent.deliver([Chunk("web-01", "/app.log", "Raw", 6, "e1", b"hello\n")])
            if ack.status == Status.OK:
                ok_after = time.monotonic() - t0
                break
            time.sleep(max(ack.delay, 0.1))
        agent.close()
    print(f"5 silent 128 MiB announcements: agent served after {ok_after}; {cost}")
    assert ok_after is not None and ok_after < 18, f"agent starved for 25 s: {cost}"
    assert cost.peak_growth_mib < 256 + 32, cost  # at most one peer's share of admission
    closed = 0
    deadline = time.monotonic() + 30
    for s in stalled:  # no progress for progress_timeout: dropped
        s.settimeout(max(deadline - time.monotonic(), 0.1))
        try:
            while s.recv(65536):
                pass
            closed += 1
        except OSError:
            closed += 1 if time.monotonic() < deadline else 0
        s.close()
    assert closed == 5
