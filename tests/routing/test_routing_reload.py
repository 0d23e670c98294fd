"""A reload replaces what routing changes touch: the source for its chain or selector, a group for its sinks."""

from __future__ import annotations

from agent.reload import plan_reload
from logflume.topology import build_topology


def topo(tmp_path, pattern="DEBUG", penalty="30s", member_batch="8MiB", default=("a",)):
    return build_topology({
        "agent": {"name": "h", "data_dir": str(tmp_path / "d")},
        "sources": {"s": {"type": "tests.core.plugins:CountingSource", "channels": ["a", "b"],
                          "interceptors": [{"type": "regex_filter", "pattern": pattern}],
                          "selector": {"type": "multiplexing", "default": list(default)}},
                    "t": {"type": "tests.core.plugins:CountingSource", "channels": ["a"]}},
        "channels": {"a": {"type": "memory"}, "b": {"type": "memory"}},
        "sinks": {"x": {"type": "null", "channel": "a", "batch_bytes": member_batch},
                  "y": {"type": "null", "channel": "a"}, "z": {"type": "null", "channel": "b"}},
        "sinkgroups": {"g": {"sinks": ["x", "y"], "processor": "failover", "penalty": penalty}},
    }, None)


def test_routing_changes_replace_only_what_they_touch(tmp_path):
    base = topo(tmp_path)
    assert plan_reload(base, topo(tmp_path)).empty
    plan = plan_reload(base, topo(tmp_path, pattern="TRACE"))
    assert (plan.stop_sources, plan.stop_sinks, plan.stop_channels) == (["s"], [], [])
    assert plan_reload(base, topo(tmp_path, default=("b",))).stop_sources == ["s"]
    plan = plan_reload(base, topo(tmp_path, penalty="5s"))
    assert (plan.stop_sources, plan.stop_sinks) == ([], ["g"])
    plan = plan_reload(base, topo(tmp_path, member_batch="1MiB"))
    assert plan.stop_sinks == ["g"], "a member's change replaces its group"
