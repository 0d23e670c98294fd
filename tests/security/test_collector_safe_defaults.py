"""Safe defaults: a collector listens on loopback unless told otherwise, refuses to listen beyond it
with no credentials (unless ``insecure: true``), warns when tokens travel in clear, and never writes a
client-supplied name raw into its log.
"""

from __future__ import annotations

import pytest
import yaml

from logflume.wire.client import RefusedError, WireClient
from tests.conftest import free_port, wait_for

pytestmark = pytest.mark.timeout(120)

TOKEN = "9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d"


def config(tmp_path, **collector) -> str:
    path = tmp_path / "collector.yaml"
    path.write_text(yaml.safe_dump({"collector": {"name": "c1", "data_dir": str(tmp_path / "data"), **collector}}))
    return str(path)


def test_the_default_listen_address_is_loopback(tmp_path, logflume_proc):
    check = logflume_proc(["check", "-c", config(tmp_path)], name="check")
    assert check.wait(60) == 0, check.log()
    assert "listen: 127.0.0.1:7465" in check.log()


@pytest.mark.parametrize("key", ["listen", "scribe", "flume"])
def test_an_open_listener_beyond_loopback_refuses_to_start(tmp_path, logflume_proc, key):
    settings = {"listen": f"127.0.0.1:{free_port()}", key: f"0.0.0.0:{free_port()}"}
    coll = logflume_proc(["collector", "-c", config(tmp_path, **settings)], name="collector")
    code = coll.wait(60)
    lines = coll.log().strip().splitlines()
    assert code == 2, coll.log()
    assert len(lines) == 1 and f"collector.{key}: binds 0.0.0.0:" in lines[0] and "insecure: true" in lines[0]


def test_insecure_true_is_the_explicit_way_out(tmp_path, logflume_proc):
    check = logflume_proc(["check", "-c", config(tmp_path, listen="0.0.0.0:7465", insecure=True)], name="check")
    assert check.wait(60) == 0, check.log()


def test_tokens_in_clear_are_warned_about_and_sender_names_are_logged_sanitized(tmp_path, logflume_proc):
    port = free_port()
    cfg = config(tmp_path, listen=f"127.0.0.1:{port}", scribe=f"127.0.0.1:{free_port()}",
                 identities={"a": {"token": TOKEN, "sources": ["a"]}})
    coll = logflume_proc(["collector", "-c", cfg], name="collector")
    wait_for(lambda: "ready:" in coll.log() or not coll.alive(), 30, message="collector ready")
    assert "a token is configured without tls: it travels in clear" in coll.log()
    assert "tokens travel in clear on scribe" in coll.log()
    client = WireClient("127.0.0.1", port, token="wrong-token-of-32-characters-xx", sender="x\nFAKE ERROR line\x1b[2J")
    with pytest.raises(RefusedError, match="unknown token"):
        client.connect()
    wait_for(lambda: "unknown token" in coll.log(), 30, message="refusal logged")
    assert "x\\x0aFAKE ERROR line\\x1b[2J" in coll.log()
    assert "\nFAKE ERROR" not in coll.log()
    coll.terminate(30)
