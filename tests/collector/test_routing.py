"""Collector routing through a real collector: chunks land in their route's store, the rest in the default."""

from __future__ import annotations

import pytest
import yaml

from tests.collector.conftest import STORE, collector_config
from tests.collector.test_compat import stored
from tests.conftest import free_port
from tests.wire.official import run_client

pytestmark = pytest.mark.timeout(120)


def test_two_routes_and_default(tmp_path, gen, start_collector):
    sp = free_port()
    cfg, _, default = collector_config(tmp_path, "c", scribe=f"127.0.0.1:{sp}")
    raw = yaml.safe_load(cfg.read_text())
    raw["routes"] = {
        "audit": {"match": {"stream": "audit.*"}, "store": {"type": STORE, "dir": str(tmp_path / "audit")}},
        "web": {"match": {"stream": "web*"}, "store": {"type": STORE, "dir": str(tmp_path / "web")}},
    }
    cfg.write_text(yaml.safe_dump(raw))
    col = start_collector(cfg)
    calls = [[["audit.login", "a1\n"], ["web", "w1\n"], ["db", "d1\n"], ["audit.login", "a2\n"]]]
    assert run_client(gen, "scribe", ("127.0.0.1", sp), calls, strict=True) == ["OK"]
    assert stored(tmp_path / "audit") == {("audit.login", ()): [b"a1\n", b"a2\n"]}
    assert stored(tmp_path / "web") == {("web", ()): [b"w1\n"]}
    assert stored(default) == {("db", ()): [b"d1\n"]}
    assert col.terminate(30) == 0


def test_check_prints_the_resolved_routes_in_match_order(tmp_path, monkeypatch, capsys):
    from pathlib import Path

    from logflume.cli import main

    monkeypatch.setenv("LOGFLUME_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HOSTNAME", "c1")
    example = Path(__file__).resolve().parents[2] / "configs" / "collector-routes.yaml"
    assert main(["check", "-c", str(example)]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.startswith("#   ")]
    assert lines == [
        f"#   audit: stream=audit.* -> buffer ({tmp_path}/audit/audit/{{date}} as c1, "
        f"secondary {tmp_path}/secondary-audit)",
        f"#   payments: tags.namespace=payments-* -> buffer ({tmp_path}/payments/{{date}}/{{hour}} as c1, "
        f"secondary {tmp_path}/secondary-payments)",
        f"#   apps: stream=/var/log/apps/* -> buffer ({tmp_path}/apps/{{datatype}}/{{date}} as c1, "
        f"secondary {tmp_path}/secondary-apps)",
        f"#   default: everything else -> buffer ({tmp_path}/sink/{{date}} as c1, secondary {tmp_path}/secondary)",
    ]
    resolved = yaml.safe_load(out)
    assert list(resolved["routes"]) == ["audit", "payments", "apps"]
    assert resolved["routes"]["audit"]["store"]["primary"]["codec"] == "gzip"  # every default filled in
    assert resolved["routes"]["payments"]["store"]["primary"]["path"] == "{date}/{hour}"
    assert resolved["routes"]["apps"]["store"]["primary"]["max_open_files"] == 32
