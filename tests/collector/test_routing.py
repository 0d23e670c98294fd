"""Collector routing through a real collector: chunks land in their route's store, the rest in the default."""

from __future__ import annotations

import pytest
import yaml

from tests.collector.conftest import STORE, collector_config
from tests.collector.test_compat import stored
from tests.conftest import free_port
from tests.wire.official import generate, run_client

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def gen(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("gen-py"))


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
