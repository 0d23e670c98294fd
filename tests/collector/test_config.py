"""The collector's YAML schema and the daemon's start-up failures."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from collector.config import build_collector_config, default_store
from logflume.errors import ConfigError
from tests.collector.conftest import STORE, collector_config, write_yaml
from tests.conftest import REPO

pytestmark = pytest.mark.timeout(60)


def build(tmp_path, collector=None, store=None):
    raw = {"collector": {"data_dir": str(tmp_path), **(collector or {})}}
    raw["store"] = store if store is not None else {"type": STORE, "dir": str(tmp_path / "s")}
    return build_collector_config(raw, "c.yaml")


def test_defaults_are_filled(tmp_path):
    cfg = build(tmp_path)
    c = cfg.collector
    assert c.listen == ("127.0.0.1", 7465)  # loopback unless told otherwise
    assert c.max_frame_size == 160 * 1024 * 1024 and c.max_pending_bytes == 512 * 1024 * 1024
    assert c.scribe is None and c.flume is None and c.tls is None and c.tokens == []
    rendered = cfg.render()
    assert rendered["collector"]["max_frame_size"] == "160MiB"
    assert rendered["store"]["type"] == STORE and "channel" not in rendered["store"]


@pytest.mark.parametrize(("collector", "store", "match"), [
    ({"listen": "nowhere"}, None, r"collector\.listen: expected HOST:PORT"),
    ({"max_pending": 3}, None, r"collector\.max_pending: unknown key \(did you mean 'max_pending_bytes'\?\)"),
    ({"tls": {"cert": "c", "key": "k", "require_client_cert": True}}, None, r"collector\.tls\.client_ca: required"),
    ({"tls": {"cert": "c"}}, None, r"collector\.tls\.key: missing required key"),
    ({"listen": "127.0.0.1:9000", "scribe": "127.0.0.1:9000"}, None, r"collector\.scribe: same address"),
    ({"flume_protocol": "compact"}, None, r"collector\.flume_protocol: unknown key"),
    ({}, {"type": "nosuchstore"}, r"store\.type: unknown sink type 'nosuchstore'"),
    ({}, {"dir": "/x"}, r"store\.type: missing required key"),
    ({}, {"type": STORE, "dri": "/x"}, r"store\.dri: unknown key \(did you mean 'dir'\?\)"),
])
def test_bad_config_names_the_key(tmp_path, collector, store, match):
    with pytest.raises(ConfigError, match=match):
        build(tmp_path, collector, store)


def test_unknown_top_level_key(tmp_path):
    with pytest.raises(ConfigError, match="colector: unknown top-level key"):
        build_collector_config({"colector": {}}, "c.yaml")


def test_default_store_is_the_buffer_store():
    assert default_store("/d") == {"type": "buffer", "primary": {"type": "seqfile", "url": "/d/sink"},
                                   "secondary": {"dir": "/d/secondary"}}


def run_daemon(cfg) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "logflume", "collector", "-c", str(cfg)], cwd=REPO,
                          capture_output=True, text=True, timeout=30)


def test_daemon_cannot_start_on_a_taken_port(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        cfg, _, _ = collector_config(tmp_path, "c", port=taken.getsockname()[1])
        proc = run_daemon(cfg)
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if "cannot start" in ln]
    assert len(lines) == 1 and lines[0].startswith("logflume collector: cannot start: logflume: cannot listen on")


def test_daemon_cannot_start_with_a_bad_config(tmp_path):
    cfg = write_yaml(tmp_path / "bad.yaml", {"collector": {"listen": 5}})
    proc = run_daemon(cfg)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("logflume collector: cannot start: ")
    assert "collector.listen: expected HOST:PORT" in proc.stderr


def test_daemon_cannot_start_with_missing_tls_files(tmp_path):
    cfg, _, _ = collector_config(tmp_path, "c", tls={"cert": str(tmp_path / "no.crt"), "key": str(tmp_path / "no.key")})
    proc = run_daemon(cfg)
    assert proc.returncode == 1
    assert "logflume collector: cannot start: cannot load TLS certificate/key" in proc.stderr


TLS = {"cert": "c.pem", "key": "c.key"}


@pytest.mark.parametrize("collector, path, message", [
    ({"tokens": ["a" * 32]}, "collector.token_sources", "required with collector.tokens"),
    ({"identities": {"web": {"sources": ["web"]}}}, "collector.identities.web", "expected a token, a certificate"),
    ({"identities": {"web": {"token": "a" * 32}}}, "collector.identities.web.sources", "missing required key"),
    ({"identities": {"web": {"certificate": "web", "sources": ["web"]}}, "tls": TLS},
     "collector.identities.web.certificate", "needs collector.tls with client_ca"),
    ({"tls": {**TLS, "client_ca": "ca.pem", "require_client_cert": True}}, "collector.tls.require_client_cert",
     "no identity to give a certificate"),
    ({"scribe": "127.0.0.1:1463", "scribe_tls": True}, "collector.scribe_tls", "needs the collector.tls section"),
    ({"listen": "0.0.0.0:7465"}, "collector.listen", "beyond loopback with no credentials"),
])
def test_identity_config_mistakes_name_the_key(tmp_path, collector, path, message):
    with pytest.raises(ConfigError, match=message) as info:
        build(tmp_path, collector)
    assert info.value.path == path


def test_shared_tokens_are_one_identity_with_the_sources_written_down(tmp_path):
    cfg = build(tmp_path, {"listen": "0.0.0.0:7465", "tokens": ["a" * 32], "token_sources": ["web-*"]})
    who = cfg.authenticator.authenticate("a" * 32, [], "10.0.0.1:1")
    assert who.name == "shared-token" and who.may_send("web-01") and not who.may_send("db-01")
    assert build(tmp_path, {"listen": "0.0.0.0:7465", "insecure": True}).authenticator.open
