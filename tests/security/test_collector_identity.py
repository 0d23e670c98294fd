"""H2: a sender speaks only for itself. Each agent authenticates as an identity that may send only
the sources the collector's config lists; the identity is recorded as the chunks' ``sender``.

Before the fix every token holder could send any ``source``: a 100-byte chunk claiming
another host's stream and range [0, 1 MiB) was stored (and made archive drop the
victim's real lines as "duplicates").
"""

from __future__ import annotations

import json

import pytest

from logflume.chunk import Chunk
from logflume.wire.client import WireClient
from logflume.wire.idl import Status
from tests.collector.conftest import agent_config, exec_source
from tests.conftest import wait_for
from tests.fuzz.collector_proc import CollectorProcess, Cost, stored_chunks

pytestmark = pytest.mark.timeout(180)

WEB01 = "7d2f4a9c1e6b3d8f0a2c5e7b9d1f4a6c"
WEB02 = "0b3e6a9d2c5f8b1e4a7d0c3f6b9e2a5d"
CREDENTIALS = (f"  identities:\n"
               f"    web-01: {{token: {WEB01}, sources: [web-01]}}\n"
               f"    web-02: {{token: {WEB02}, sources: [web-02]}}\n")


def claim(source: str, data: bytes, end: int) -> Chunk:
    return Chunk(source=source, stream="/var/log/app.log", datatype="Raw", seq_id=end, epoch="dev:ino:fp", data=data)


@pytest.fixture
def collector(tmp_path):
    (tmp_path / "c").mkdir()
    coll = CollectorProcess(tmp_path / "c", extra=CREDENTIALS)
    coll.start()
    yield coll
    if coll.alive():
        coll.stop()


def test_a_sender_cannot_speak_for_another_source(collector):
    port = collector.ports["logflume"]
    victim = WireClient("127.0.0.1", port, token=WEB01, sender="web-01/fwd")
    assert victim.deliver([claim("web-01", b"real line\n" * 10, 100)]).ok
    victim.close()
    forger = WireClient("127.0.0.1", port, token=WEB02, sender="web-02/fwd")
    with Cost(collector) as cost:
        ack = forger.deliver([claim("web-01", b"forged\n" * 14 + b"xx", 1 << 20)])  # 100 bytes claiming [0, 1 MiB)
    forger.close()
    print(f"forged source: {ack.status} {ack.reason!r}; {cost}")
    assert ack.status == Status.REFUSED, ack
    assert "identity 'web-02' may not send source 'web-01'" in ack.reason
    assert cost.peak_growth_mib < 16 and cost.seconds < 10, cost
    assert "may not send source 'web-01'" in collector.log()
    assert collector.stop() == 0
    stored = stored_chunks(collector.store)
    assert [c.seq_id for c in stored if c.source == "web-01"] == [100]  # only the victim's own chunk
    key = json.loads(stored[0].metadata_json())
    assert key["sender"] == "web-01"  # archive conflict reports can name who sent what


def test_an_agent_logs_why_its_source_is_refused(tmp_path, collector, logflume_proc):
    port = collector.ports["logflume"]
    sink = {"collectors": [f"127.0.0.1:{port}"], "token": WEB02}
    cfg = agent_config(tmp_path, "web-01", sink, sources={"gen": exec_source(10)})  # web-01 using web-02's token
    agent = logflume_proc(["agent", "-c", cfg], name="agent")
    wait_for(lambda: "may not send source 'web-01'" in agent.log(), 60, message="agent logs the refusal reason")
    assert "refused the batch" in agent.log()
    agent.kill()
    assert collector.stop() == 0
    assert [c for c in stored_chunks(collector.store) if c.source == "web-01"] == []
