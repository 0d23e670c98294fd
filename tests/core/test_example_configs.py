"""Every example in configs/ is valid: `logflume check` accepts it and resolves its topology."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from logflume.cli import main

# NAME-tests.yaml files are unit tests of NAME.yaml (`logflume test`), run by tests/core/test_pipeline_tests.py.
CONFIGS = sorted(p for p in (Path(__file__).resolve().parents[2] / "configs").glob("*.yaml")
                 if not p.name.endswith("-tests.yaml"))


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
        assert set(resolved) - {"sinkgroups"} == {"agent", "sources", "channels", "sinks"}
    elif path.name.startswith("hicc"):
        assert set(resolved) == {"hicc"}
    else:
        assert set(resolved) == ({"collector", "store", "routes"} if "routes" in path.name else {"collector", "store"})


@pytest.mark.parametrize(("manifest", "key", "env"), [
    ("agent-daemonset.yaml", "agent.yaml", {"NODE_NAME": "node-1"}),
    ("collector-statefulset.yaml", "collector.yaml", {"HOSTNAME": "collector-0"}),
])
def test_kubernetes_configmap_configs_are_valid(tmp_path, monkeypatch, capsys, manifest, key, env):
    path = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes" / manifest
    docs = list(yaml.safe_load_all(path.read_text()))
    cfg = tmp_path / key
    cfg.write_text(docs[0]["data"][key].replace("/var/lib/logflume", str(tmp_path)))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["check", "-c", str(cfg)]) == 0, capsys.readouterr().err
