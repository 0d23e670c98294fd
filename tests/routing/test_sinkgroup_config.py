"""Sink groups and routing in config: errors name the key, `check` prints the resolved routing; penalties."""

from __future__ import annotations

import pytest

from logflume.errors import ConfigError
from logflume.sinkgroup import SinkGroup
from logflume.topology import load_topology
from tests.routing.helpers import write_yaml


def config(tmp_path, groups, sinks=None, **source):
    return write_yaml(tmp_path / "a.yaml", {
        "agent": {"name": "h", "data_dir": str(tmp_path / "d")},
        "sources": {"s": {"type": "tests.core.plugins:CountingSource", "channels": ["a", "b"], **source}},
        "channels": {"a": {"type": "memory"}, "b": {"type": "memory"}},
        "sinks": sinks or {"x": {"type": "null", "channel": "a"}, "y": {"type": "null", "channel": "a"},
                           "z": {"type": "null", "channel": "b"}},
        "sinkgroups": groups})


@pytest.mark.parametrize("groups, path, expected", [
    ({"g": {"sinks": ["x", "nope"], "processor": "failover"}}, "sinkgroups.g.sinks[1]", "no sink named 'nope'"),
    ({"g": {"sinks": ["x", "z"], "processor": "failover"}}, "sinkgroups.g.sinks", "different channels"),
    ({"g": {"sinks": ["x", "y"], "processor": "failover"}, "h": {"sinks": ["y", "x"], "processor": "failover"}},
     "sinkgroups.h.sinks[0]", "already in group 'g'"),
    ({"x": {"sinks": ["y", "z"], "processor": "failover"}}, "sinkgroups.x", "a sink is named 'x' too"),
    ({"g": {"sinks": ["x", "y"], "processor": "failover", "priority": {"q": 1}}}, "sinkgroups.g", "priority names"),
    ({"g": {"sinks": ["x", "y"], "processor": "failover", "channel": "a"}}, "sinkgroups.g.channel", "no channel key"),
    ({"g": {"sinks": ["x", "y"], "processor": "fastest"}}, "sinkgroups.g.processor", "expected one of"),
    ({"g": {"sinks": ["x", "y"]}}, "sinkgroups.g.processor", "missing required key"),
    ({"g": {"sinks": ["x"], "processor": "failover"}}, "sinkgroups.g.sinks", "at least 2"),
])
def test_sink_group_errors_name_the_key(tmp_path, groups, path, expected):
    with pytest.raises(ConfigError) as info:
        load_topology(str(config(tmp_path, groups)))
    assert info.value.path == path, str(info.value)
    assert expected in str(info.value)


def test_check_prints_the_resolved_routing(tmp_path):
    topo = load_topology(str(config(
        tmp_path, {"g": {"sinks": ["x", "y"], "processor": "load_balance", "selector": "random"}},
        interceptors=[{"type": "host", "value": "n1"}, {"type": "mask", "pattern": r"\d{16}"}],
        selector={"type": "multiplexing", "default": ["a"],
                  "routes": [{"match": {"tags": {"level": "ERROR"}}, "channels": ["b"], "optional": ["a"]}]})))
    assert topo.flows()[-4:] == [
        "source s intercepts: host -> mask",
        "source s selects: tag level=ERROR -> b (optional: a)",
        "source s selects: otherwise -> a",
        "sink group g: load_balance (random) over x, y, backoff up to 30s",
    ]
    rendered = topo.render()
    assert set(rendered["sinks"]) == {"x", "y", "z"} and rendered["sinkgroups"]["g"]["channel"] == "a"
    assert rendered["sources"]["s"]["selector"]["default"] == ["a"]


class Flaky:
    counts_output = False  # as a Sink's: the group counts what it acked

    def __init__(self, name: str, fail: bool) -> None:
        self.name, self.fail, self.calls = name, fail, 0

        class M:
            class C:
                def inc(self, n=1):
                    pass
            chunks_out = bytes_out = C()
        self.metrics = M()

    def deliver(self, chunks):
        self.calls += 1
        if self.fail:
            raise OSError("down")


def group(tmp_path, **raw):
    topo = load_topology(str(config(tmp_path, {"g": {"sinks": ["x", "y"], **raw}})))
    g: SinkGroup = topo.sinks["g"].component
    a, b = Flaky("x", True), Flaky("y", False)
    g.attach([a, b])
    return g, a, b


def test_failover_penalty_doubles_and_a_recovered_sink_is_first_again(tmp_path, monkeypatch):
    g, a, b = group(tmp_path, processor="failover", penalty="3s")
    clock = [100.0]
    monkeypatch.setattr("logflume.sinkgroup.time.monotonic", lambda: clock[0])
    g.deliver([])
    assert (a.calls, b.calls) == (1, 1)
    g.deliver([])                          # x is penalized (1 s): straight to y
    assert (a.calls, b.calls) == (1, 2)
    clock[0] += 1.01
    g.deliver([])                          # tried again, fails: 2 s now
    assert (a.calls, b.calls) == (2, 3) and g.members[0].until == pytest.approx(clock[0] + 2)
    clock[0] += 2.01
    g.deliver([])
    assert g.members[0].until == pytest.approx(clock[0] + 3), "capped by penalty"
    a.fail = False
    clock[0] += 3.01
    g.deliver([])
    assert (a.calls, b.calls) == (4, 4) and g.members[0].failures == 0


def test_load_balance_round_robin_and_every_sink_failing_fails_the_batch(tmp_path):
    g, a, b = group(tmp_path, processor="load_balance", backoff=False)
    a.fail = False
    for _ in range(4):
        g.deliver([])
    assert (a.calls, b.calls) == (2, 2)
    a.fail = b.fail = True
    with pytest.raises(RuntimeError, match="every sink of group g failed"):
        g.deliver([])
