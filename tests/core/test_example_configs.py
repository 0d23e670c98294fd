"""Every example in configs/ is valid: `logflume check` accepts it and resolves its topology."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from logflume.cli import main

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def test_there_are_examples():
    names = {p.name for p in CONFIGS}
    assert {"agent-tail.yaml", "collector.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_example_config_checks(path, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LOGFLUME_DATA_DIR", str(tmp_path))
    assert main(["check", "-c", str(path)]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    resolved = yaml.safe_load(out)
    assert resolved, "check prints the resolved config as YAML"
    if path.name.startswith("agent"):
        assert "-> channel" in out
        assert set(resolved) == {"agent", "sources", "channels", "sinks"}
    else:
        assert set(resolved) == {"collector", "store"}


def test_kubernetes_agent_config_is_valid(tmp_path, monkeypatch, capsys):
    manifest = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes" / "agent-daemonset.yaml"
    docs = list(yaml.safe_load_all(manifest.read_text()))
    agent_yaml = docs[0]["data"]["agent.yaml"].replace("/var/lib/logflume", str(tmp_path))
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(agent_yaml)
    monkeypatch.setenv("NODE_NAME", "node-1")
    assert main(["check", "-c", str(cfg)]) == 0, capsys.readouterr().err


def test_kubernetes_collector_config_is_valid(tmp_path, monkeypatch, capsys):
    manifest = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes" / "collector-statefulset.yaml"
    docs = list(yaml.safe_load_all(manifest.read_text()))
    text = docs[0]["data"]["collector.yaml"].replace("/var/lib/logflume", str(tmp_path))
    cfg = tmp_path / "collector.yaml"
    cfg.write_text(text)
    monkeypatch.setenv("HOSTNAME", "collector-0")
    assert main(["check", "-c", str(cfg)]) == 0, capsys.readouterr().err
