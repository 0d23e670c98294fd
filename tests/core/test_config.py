"""Config errors name the file, the key path and what was expected."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from logflume.config import load_yaml, parse_yaml
from logflume.errors import ConfigError
from logflume.settings import parse_duration, parse_size
from logflume.topology import build_topology, load_topology

REPO = Path(__file__).resolve().parents[2]

GOOD = """
agent:
  name: test-host
  data_dir: {data}
sources:
  numbers:
    type: tests.core.plugins:CountingSource
    channels: [mem]
    count: 5
channels:
  mem:
    type: memory
    capacity: 1MiB
sinks:
  out:
    type: null
    channel: mem
"""


def topo_from(text: str, tmp_path: Path):
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(text.replace("{data}", str(tmp_path / "data")))
    return load_topology(str(cfg)), str(cfg)


def error_of(text: str, tmp_path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        topo_from(text, tmp_path)
    return info.value


def test_good_config_fills_defaults(tmp_path):
    topo, _ = topo_from(GOOD, tmp_path)
    rendered = topo.render()
    assert rendered["channels"]["mem"]["capacity"] == "1MiB"
    assert rendered["sinks"]["out"]["batch_bytes"] == "8MiB"
    assert rendered["sinks"]["out"]["retry_max"] == "30s"
    assert rendered["sources"]["numbers"]["channels"] == ["mem"]
    assert topo.flows() == ["tests.core.plugins:CountingSource:numbers -> channel memory:mem -> null:out"]


@pytest.mark.parametrize(
    ("mutation", "path", "expected"),
    [
        (("capacity: 1MiB", "capacity: lots"), "channels.mem.capacity", "expected a size"),
        (("capacity: 1MiB", "capacity: 1MiB\n    capcity: 2"), "channels.mem.capcity", "did you mean 'capacity'"),
        (("count: 5", "count: five"), "sources.numbers.count", "expected an integer"),
        (("channels: [mem]", "channels: [nope]"), "sources.numbers.channels[0]", "no channel named 'nope'"),
        (("channel: mem", "channel: other"), "sinks.out.channel", "no channel named 'other'"),
        (("type: null", "type: nosuchsink"), "sinks.out.type", "unknown sink type 'nosuchsink'"),
        (("type: memory", "type: nosuch.module:Thing"), "channels.mem.type", "cannot load channel plugin"),
        (("type: memory", "type: logflume.chunk:Chunk"), "channels.mem.type", "is not a subclass"),
        # found by the config fuzzer: an empty or relative module crashed importlib with ValueError/TypeError
        (("type: memory", "type: ':memory'"), "channels.mem.type", "expected a built-in channel type or package"),
        (("type: memory", "type: 'x:'"), "channels.mem.type", "expected a built-in channel type or package"),
        (("type: memory", "type: .rel:Cls"), "channels.mem.type", "expected a built-in channel type or package"),
        (("name: test-host", "name: test-host\n  bogus: 1"), "agent.bogus", "unknown key"),
        (("count: 5", "count: 5\n    tags: [a, b]"), "sources.numbers.tags", "expected a mapping"),
    ],
)
def test_config_errors_name_file_path_and_expectation(tmp_path, mutation, path, expected):
    old, new = mutation
    assert old in GOOD
    err = error_of(GOOD.replace(old, new, 1), tmp_path)
    assert err.path == path
    assert expected in err.message
    assert str(err).startswith(str(tmp_path / "agent.yaml") + ": " + path + ": ")


def test_channel_without_sink_is_an_error(tmp_path):
    text = GOOD.replace("channels:\n  mem:", "channels:\n  spare:\n    type: memory\n  mem:")
    err = error_of(text, tmp_path)
    assert err.path == "channels.spare" and "no sink takes from this channel" in err.message


def test_loop_between_sink_and_source_is_refused(tmp_path):
    out = tmp_path / "out.jsonl"
    text = GOOD.replace("count: 5", f"count: 5\n    reads_from: ['file:{tmp_path}/*.jsonl']").replace(
        "type: null", f"type: logflume.testing.recording_sink:RecordingSink\n    path: {out}"
    )
    err = error_of(text, tmp_path)
    assert "loop in the pipeline" in err.message
    assert "sinks.out" in err.message and "sources.numbers" in err.message


def test_invalid_yaml_reports_line(tmp_path):
    err = error_of("sources:\n  a: [unclosed\n", tmp_path)
    assert "invalid YAML at line" in err.message


def test_duplicate_keys_are_refused(tmp_path):
    err = error_of(GOOD.replace("count: 5", "count: 5\n    count: 6"), tmp_path)
    assert "duplicate key 'count'" in err.message


def test_missing_file_and_unreadable_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_yaml(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="cannot read"):
        load_yaml(tmp_path)


def test_env_interpolation(monkeypatch, tmp_path):
    monkeypatch.setenv("LF_CAP", "2MiB")
    monkeypatch.delenv("LF_UNSET", raising=False)
    text = GOOD.replace("capacity: 1MiB", "capacity: ${LF_CAP}")
    text = text.replace("name: test-host", "name: ${LF_UNSET:-fallback}")
    topo, _ = topo_from(text, tmp_path)
    assert topo.channels["mem"].values.capacity == 2 * 1024 * 1024
    assert topo.agent.name == "fallback"
    err = error_of(GOOD.replace("name: test-host", "name: ${LF_UNSET}"), tmp_path)
    assert err.path == "agent.name" and "LF_UNSET is not set" in err.message
    assert parse_yaml("a: $${HOME}")["a"] == "${HOME}"


def test_sizes_and_durations():
    assert parse_size("64MiB") == 64 * 1024 * 1024
    assert parse_size("10MB") == 10_000_000
    assert parse_size(4096) == 4096
    assert parse_duration("250ms") == 0.25
    assert parse_duration("1h30m") == 5400
    assert parse_duration(3) == 3.0
    for bad in ("5 parsecs", "-1", "ms"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    with pytest.raises(ValueError):
        parse_size("12 apples")


def test_no_sources_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="no sources defined"):
        build_topology({"sinks": {}}, "x.yaml")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "logflume", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=60)


def test_check_prints_topology_and_defaults(tmp_path):
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(GOOD.replace("{data}", str(tmp_path)))
    res = run_cli("check", "-c", str(cfg))
    assert res.returncode == 0, res.stderr
    assert "-> channel memory:mem -> null:out" in res.stdout
    assert "batch_timeout: 0s" in res.stdout and "retry_max: 30s" in res.stdout


def test_check_bad_config_exits_nonzero_with_one_line(tmp_path):
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(GOOD.replace("capacity: 1MiB", "capacity: huge").replace("{data}", str(tmp_path)))
    res = run_cli("check", "-c", str(cfg))
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "channels.mem.capacity" in lines[0] and str(cfg) in lines[0]


def test_agent_that_cannot_start_says_why(tmp_path):
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("x")
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(GOOD.replace("{data}", str(blocker / "sub")))
    res = run_cli("agent", "-c", str(cfg))
    assert res.returncode == 1
    assert "cannot start" in res.stderr and "data_dir" in res.stderr


def test_version_and_help():
    assert run_cli("version").stdout.startswith("logflume ")
    res = run_cli("--help")
    assert res.returncode == 0 and "quickstart" in res.stdout


def test_check_redacts_secrets(tmp_path):
    cfg = tmp_path / "collector.yaml"
    cfg.write_text(f"collector:\n  listen: 127.0.0.1:7465\n  data_dir: {tmp_path}\n  tokens: [hunter2]\n"
                   "  token_sources: ['*']\n")
    res = run_cli("check", "-c", str(cfg))
    assert res.returncode == 0, res.stderr
    assert "hunter2" not in res.stdout and "<redacted>" in res.stdout


def test_complex_mapping_keys_are_config_errors():
    with pytest.raises(ConfigError, match="mapping key must be a plain value"):
        parse_yaml("? {a: 1}\n: x\n", "f.yaml")
    with pytest.raises(ConfigError, match="mapping key must be a plain value"):
        parse_yaml("sources:\n  ? [1, 2]\n  : {}\n", "f.yaml")
