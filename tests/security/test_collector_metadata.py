"""Issue 13, "collectors refuse such metadata at the door": a chunk whose metadata jobs cannot use
(``Chunk.metadata_error``) is refused with its reason, and a legitimate agent can neither produce
one (its config is checked) nor loop on one (its sink quarantines it, durably, and goes on).

Before the fix a chunk with ``timestamp = 2**62`` or a 300-character datatype was acked and
stored, and later stopped ``logflume archive`` for good.
"""

from __future__ import annotations

import dataclasses

import pytest

from logflume.chunk import Chunk
from logflume.component import Context
from logflume.settings import parse_settings
from logflume.wire.client import WireClient
from logflume.wire.idl import Status
from sinks.to_collector import CollectorSink
from tests.collector.conftest import agent_config, exec_source
from tests.fuzz.collector_proc import CollectorProcess, Cost, stored_chunks

pytestmark = pytest.mark.timeout(180)


def chunk(stream: str, **kw) -> Chunk:
    return Chunk(source="web-01", stream=stream, datatype=kw.pop("datatype", "Raw"), seq_id=6, epoch="e1",
                 data=b"hello\n", **kw)


@pytest.fixture
def collector(tmp_path):
    (tmp_path / "c").mkdir()
    coll = CollectorProcess(tmp_path / "c")
    coll.start()
    yield coll
    if coll.alive():
        coll.stop()


@pytest.mark.parametrize("bad, reason", [
    ({"timestamp": 2 ** 62}, "timestamp 4611686018427387904 is outside"),
    ({"datatype": "D" * 300}, "datatype must be 1-128 characters"),
], ids=["timestamp 2^62", "300-character datatype"])
def test_poison_metadata_is_refused_at_the_door(collector, bad, reason):
    client = WireClient("127.0.0.1", collector.ports["logflume"], sender="web-01/fwd")
    with Cost(collector) as cost:
        ack = client.deliver([chunk("/good.log"), chunk("/poison.log", **bad)])
    client.close()
    print(f"poison metadata {list(bad)}: {ack.status} {ack.reason!r}; {cost}")
    assert ack.status == Status.REFUSED and ack.chunk == 1, ack
    assert f"chunk 1: metadata refused: {reason}" in ack.reason
    assert cost.peak_growth_mib < 16 and cost.seconds < 10, cost
    assert collector.stop() == 0
    assert stored_chunks(collector.store) == []  # the batch is refused whole: nothing half-stored


@dataclasses.dataclass(slots=True)
class Unchecked(Chunk):
    """A chunk that passes the agent's own check (as from an agent with older bounds than the collector)."""

    def metadata_error(self) -> str | None:
        return None


def test_the_sink_quarantines_what_can_never_be_delivered_and_goes_on(tmp_path, collector, caplog):
    values = parse_settings(CollectorSink.schema(), {"channel": "c", "collectors": [
        f"127.0.0.1:{collector.ports['logflume']}"]}, "sinks.fwd", "agent.yaml")
    sink = CollectorSink("fwd", values, Context(agent_name="web-01", data_dir=tmp_path / "agent"))
    sink.start()
    own_check = chunk("/caught-by-the-agent.log", timestamp=2 ** 62)
    at_the_door = Unchecked(**{f.name: getattr(chunk("/refused-by-the-collector.log", datatype="D" * 300), f.name)
                               for f in dataclasses.fields(Chunk)})
    sink.deliver([chunk("/good.log"), own_check, at_the_door])  # returns: the channel is not blocked
    sink.stop()
    kept = sorted((tmp_path / "agent" / "quarantine" / "fwd").glob("*.chunk"))
    assert len(kept) == 2
    texts = b"".join(p.read_bytes() for p in kept)
    assert b"/caught-by-the-agent.log" in texts and b"/refused-by-the-collector.log" in texts
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in kept)
    assert caplog.text.count("cannot be delivered") == 2 and "metadata refused" in caplog.text
    assert collector.stop() == 0
    assert [c.stream for c in stored_chunks(collector.store)] == ["/good.log"]


def test_an_agent_config_that_would_make_such_chunks_is_refused(tmp_path, logflume_proc):
    src = exec_source(1)
    cfg = agent_config(tmp_path, "web-01", {"collectors": ["127.0.0.1:1"]},
                       sources={"gen": {**src, "datatype": "D" * 300, "tags": {"bad key": "v"}}})
    check = logflume_proc(["check", "-c", cfg], name="check")
    assert check.wait(60) != 0
    assert "sources.gen.datatype: expected a datatype collectors accept" in check.log()


def test_an_agent_name_collectors_would_refuse_is_a_config_error(tmp_path, logflume_proc):
    cfg = agent_config(tmp_path, "web-01", {"collectors": ["127.0.0.1:1"]}, sources={"gen": exec_source(1)})
    cfg.write_text(cfg.read_text().replace("name: web-01", "name: web/01"))
    check = logflume_proc(["check", "-c", cfg], name="check")
    assert check.wait(60) != 0
    assert "agent.name: expected a source name collectors accept" in check.log()
