"""Scribe and Flume clients (Apache Thrift's compiler + official library) shipping into real processes."""

from __future__ import annotations

import pytest

from tests.collector.conftest import agent_config, collector_config, stop_all
from tests.collector.store_plugin import read_store
from tests.conftest import free_port, wait_for
from tests.wire.official import run_client

pytestmark = pytest.mark.timeout(120)


def stored(store) -> dict[tuple[str, tuple], list[bytes]]:
    out: dict[tuple[str, tuple], list[bytes]] = {}
    for c in read_store(store):
        key = (c.stream, tuple(sorted(c.tags.items())))
        out.setdefault(key, []).extend(bytes(r) for r in c.records())
    return out


def test_scribe_and_flume_clients_into_the_collector_store(tmp_path, gen, start_collector):
    sp, fp = free_port(), free_port()
    cfg, _, store = collector_config(tmp_path, "c", scribe=f"127.0.0.1:{sp}", flume=f"127.0.0.1:{fp}")
    col = start_collector(cfg)
    scribe_calls = [[["web", f"hit {i}\n"] for i in range(100)] + [["db", "query\n"]]]
    assert run_client(gen, "scribe", ("127.0.0.1", sp), scribe_calls, strict=False) == ["OK"]
    flume_calls = [[[{"host": "h1"}, f"event {i}"] for i in range(50)]]
    assert run_client(gen, "flume", ("127.0.0.1", fp), flume_calls, protocol="compact") == ["OK"]
    # acked means durable: the records are in the store already
    got = stored(store)
    assert got[("web", ())] == [f"hit {i}\n".encode() for i in range(100)]
    assert got[("db", ())] == [b"query\n"]
    assert got[("flume", (("host", "h1"),))] == [f"event {i}".encode() for i in range(50)]
    assert all(c.source == "c" for c in read_store(store))
    assert col.terminate(30) == 0


def test_two_tier_scribe_and_flume_sources_in_an_agent(tmp_path, gen, start_collector, start_agent):
    cfg, port, store = collector_config(tmp_path, "c")
    col = start_collector(cfg)
    sp, fp = free_port(), free_port()
    agent = start_agent(agent_config(
        tmp_path, "edge", {"collectors": [f"127.0.0.1:{port}"]},
        sources={
            "scribe": {"type": "scribe", "listen": f"127.0.0.1:{sp}", "datatype": "ScribeLog"},
            "flume": {"type": "flume", "listen": f"127.0.0.1:{fp}", "stream": "app",
                      "tags": {"dc": "eu"}},
        },
    ))
    wait_for(lambda: "started" in agent.log(), 20, message="agent started")
    scribe_calls = [[["audit", f"line {i}\n"]] for i in range(20)]
    assert run_client(gen, "scribe", ("127.0.0.1", sp), scribe_calls, strict=True) == ["OK"] * 20
    flume_calls = [[[{"k": "v"}, "b1"], [{"k": "v"}, "b2"]]]
    assert run_client(gen, "flume", ("127.0.0.1", fp), flume_calls, protocol="binary") == ["OK"]

    def arrived():
        got = stored(store)
        return (got.get(("audit", ())) == [f"line {i}\n".encode() for i in range(20)]
                and got.get(("app", (("dc", "eu"), ("k", "v")))) == [b"b1", b"b2"])

    wait_for(arrived, 30, interval=0.2, message=f"scribe and flume records at the collector: {stored(store)}")
    chunks = read_store(store)
    assert {c.source for c in chunks} == {"edge"}
    assert {c.datatype for c in chunks if c.stream == "audit"} == {"ScribeLog"}
    assert stop_all([agent, col]) == [0, 0]
