"""Safe defaults: a network source bound beyond loopback without authentication refuses to start.

Every source listens on loopback by default.  The configs below name
``0.0.0.0`` but never bind it: the agent refuses them while loading the
config, before any socket is opened (and ``logflume check`` accepts them only
with authentication or ``insecure: true``).
"""

from __future__ import annotations

import pytest
import yaml

from tests.wire.certs import make_pki

pytestmark = pytest.mark.timeout(120)

EXPOSED = [
    ({"type": "http", "listen": "0.0.0.0:8080"}, "sources.src.listen", "set tokens",
     {"tokens": ["6f1c0e9a4b7d2e58c3a1f0b9d8e7c6a5"]}),
    ({"type": "forward", "listen": "0.0.0.0:24224"}, "sources.src.listen", "set shared_key",
     {"shared_key": "9b8a7c6d5e4f30112233445566778899"}),
    ({"type": "syslog", "tcp": "0.0.0.0:514"}, "sources.src.tcp", "set tls with client_ca and require_client_cert",
     "mtls"),
    ({"type": "syslog", "udp": "0.0.0.0:514"}, "sources.src.udp", "UDP cannot authenticate", None),
    ({"type": "scribe", "listen": "0.0.0.0:1463"}, "sources.src.listen", "require_client_cert", "mtls"),
    ({"type": "flume", "listen": "0.0.0.0:4141"}, "sources.src.listen", "require_client_cert", "mtls"),
]


def write(tmp_path, source: dict):
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(yaml.safe_dump({
        "agent": {"name": "a", "data_dir": str(tmp_path / "data")},
        "sources": {"src": {**source, "channels": ["mem"]}},
        "channels": {"mem": {"type": "memory"}},
        "sinks": {"out": {"type": "null", "channel": "mem"}},
    }))
    return cfg


@pytest.mark.parametrize(("source", "key", "words", "auth"), EXPOSED,
                         ids=[f"{s['type']}-{k.rsplit('.', 1)[1]}" for s, k, _, _ in EXPOSED])
def test_exposed_listener_without_auth_refuses_to_start(tmp_path, logflume_proc, source, key, words, auth):
    cfg = write(tmp_path, source)
    proc = logflume_proc(["agent", "-c", cfg], name="agent")
    assert proc.wait(60) != 0
    lines = [line for line in proc.log().splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert f"{key}: listens on 0.0.0.0, beyond loopback, without authentication" in lines[0]
    assert words in lines[0] and "insecure: true" in lines[0]

    # insecure: true is the explicit way to accept anyone; authentication is the other.
    assert logflume_proc(["check", "-c", write(tmp_path, {**source, "insecure": True})], name="check").wait(60) == 0
    if auth is None:
        return
    if auth == "mtls":
        pki = make_pki(tmp_path / "pki")
        auth = {"tls": {"cert": pki.server_cert, "key": pki.server_key, "client_ca": pki.ca,
                        "require_client_cert": True}}
    check = logflume_proc(["check", "-c", write(tmp_path, {**source, **auth})], name="check")
    assert check.wait(60) == 0, check.log()


@pytest.mark.parametrize("kind", ["http", "forward", "scribe", "flume"])
def test_default_listen_is_loopback(kind):
    from logflume.registry import resolve

    cls = resolve("source", kind)
    assert cls.settings["listen"].default.startswith("127.0.0.1:")
