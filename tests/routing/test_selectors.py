"""Channel selectors: config errors, Flume's required/optional semantics, and a real agent multiplexing files."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.channels.memory import MemoryChannel
from agent.runner import SelectingOutput
from logflume.chunk import Chunk
from logflume.component import Component
from logflume.errors import ChannelClosed, ConfigError
from logflume.selector import ChannelSelector, parse_selector
from logflume.settings import parse_settings
from logflume.topology import load_topology
from tests.conftest import free_port, wait_for
from tests.routing.helpers import metric, write_yaml

pytestmark = pytest.mark.timeout(120)


def memory(name: str) -> MemoryChannel:
    ch = MemoryChannel(name, parse_settings(MemoryChannel.schema(), {}, name, None))
    ch.start()
    return ch


def chunk(stream: str, datatype: str = "Raw", **tags: str) -> Chunk:
    return Chunk("h", stream, datatype, 2, "e", b"x\n", tags=tags)


def test_multiplexing_first_match_wins_else_default():
    values = parse_selector({"type": "multiplexing", "default": ["main"], "routes": [
        {"match": {"tags": {"level": "ERR*"}}, "channels": ["alerts"], "optional": ["copy"]},
        {"match": {"datatype": "Nginx*", "stream": "/var/log/*"}, "channels": ["web", "main"]},
        {"match": {"stream": "*.audit"}, "optional": ["copy"]},
    ]}, ["main", "alerts", "web", "copy"], "s.selector", None)
    sel = ChannelSelector(values, ["main", "alerts", "web", "copy"])
    assert sel.select(chunk("/var/log/a", "NginxAccess", level="ERROR")) == (("alerts",), ("copy",))
    assert sel.select(chunk("/var/log/a", "NginxAccess")) == (("web", "main"), ())
    assert sel.select(chunk("/srv/a", "NginxAccess")) == (("main",), ())
    assert sel.select(chunk("x.audit")) == (("main",), ("copy",)), "a route with only optional channels: default"


def test_required_failure_fails_the_put_optional_failure_is_counted():
    main, copy = memory("main"), memory("copy")
    values = parse_selector({"type": "replicating", "optional": ["copy"]}, ["main", "copy"], "s", None)
    src = Component("src", parse_settings({}, {}, "s", None))
    out = SelectingOutput(ChannelSelector(values, ["main", "copy"]), {"main": main, "copy": copy}, src)
    copy.close()
    out.deliver([chunk("a")])
    assert main.size_chunks() == 1 and out.dropped._value.get() == 1
    main.close()
    with pytest.raises(ChannelClosed):
        out.deliver([chunk("b")])


@pytest.mark.parametrize("selector, path, expected", [
    ({"type": "multiplexing", "routes": []}, "sources.s.selector.default", "missing"),
    ({"type": "multiplexing", "default": ["nope"]}, "sources.s.selector.default[0]", "not one of this source"),
    ({"type": "multiplexing", "default": ["a"], "routes": [{"match": {}, "channels": ["z"]}]},
     "sources.s.selector.routes[0].channels[0]", "not one of this source"),
    ({"type": "multiplexing", "default": ["a"], "routes": [{"match": {"colour": "x"}, "channels": ["a"]}]},
     "sources.s.selector.routes[0].match.colour", "unknown key"),
    ({"type": "replicating", "optional": ["a", "b"]}, "sources.s.selector.optional", "every channel is optional"),
    ({"type": "replicating", "default": ["a"]}, "sources.s.selector.default", "only a multiplexing selector"),
    ({"type": "roundrobin"}, "sources.s.selector.type", "expected one of replicating, multiplexing"),
    ("multiplexing", "sources.s.selector", "expected a mapping"),
])
def test_selector_config_errors_name_the_key(tmp_path, selector, path, expected):
    cfg = write_yaml(tmp_path / "a.yaml", {
        "agent": {"name": "h", "data_dir": str(tmp_path / "d")},
        "sources": {"s": {"type": "tests.core.plugins:CountingSource", "channels": ["a", "b"], "selector": selector}},
        "channels": {"a": {"type": "memory"}, "b": {"type": "memory"}},
        "sinks": {"x": {"type": "null", "channel": "a"}, "y": {"type": "null", "channel": "b"}}})
    with pytest.raises(ConfigError) as info:
        load_topology(str(cfg))
    assert info.value.path == path, str(info.value)
    assert expected in str(info.value)


def read_dir(d: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(d.glob("*.log")))


def test_a_real_agent_multiplexes_files_and_an_optional_channel_never_blocks_it(tmp_path, logflume_proc):
    logs = tmp_path / "logs"
    logs.mkdir()
    app, audit = logs / "app.log", logs / "audit.log"
    app.write_bytes(b"".join(f"app {i}\n".encode() for i in range(2000)))
    audit.write_bytes(b"".join(f"audit {i}\n".encode() for i in range(500)))
    metrics = free_port()
    dead = free_port()  # nothing listens: the optional channel's sink never drains it
    cfg = write_yaml(tmp_path / "agent.yaml", {
        "agent": {"name": "a1", "data_dir": str(tmp_path / "adata"), "metrics": f"127.0.0.1:{metrics}",
                  "shutdown_timeout": "1s"},
        "sources": {"files": {"type": "tail", "paths": [str(logs / "*.log")], "chunk_size": "2KiB",
                              "flush_interval": "100ms", "channels": ["main", "audit", "copy"],
                              "selector": {"type": "multiplexing", "default": ["main"], "routes": [
                                  {"match": {"stream": "*/audit.log"}, "channels": ["audit"], "optional": ["copy"]}]}}},
        "channels": {"main": {"type": "memory"}, "audit": {"type": "memory"}, "copy": {"type": "memory",
                                                                                       "capacity": "1KiB"}},
        "sinks": {"m": {"type": "file", "url": str(tmp_path / "out-main"), "channel": "main", "roll_interval": "1s"},
                  "a": {"type": "file", "url": str(tmp_path / "out-audit"), "channel": "audit", "roll_interval": "1s"},
                  "c": {"type": "collector", "channel": "copy", "collectors": [f"127.0.0.1:{dead}"],
                        "retry_max": "1s"}},
    })
    agent = logflume_proc(["agent", "-c", cfg], name="agent")
    wait_for(lambda: metric(metrics, "logflume_chunks_out_total", component="a") >= 1
             and metric(metrics, "logflume_bytes_out_total", component="m") >= app.stat().st_size
             and metric(metrics, "logflume_bytes_out_total", component="a") >= audit.stat().st_size
             or not agent.alive(), 60, interval=0.3, message="both files delivered")
    assert agent.alive(), agent.log()[-3000:]
    dropped = metric(metrics, "logflume_optional_dropped_total", component="files")
    agent.terminate(60)
    assert read_dir(tmp_path / "out-main") == app.read_bytes()
    assert read_dir(tmp_path / "out-audit") == audit.read_bytes()
    assert dropped >= 1, "the full optional channel dropped (and counted) chunks instead of blocking the source"
    assert "optional channel copy did not take" in agent.log()
