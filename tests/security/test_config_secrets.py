"""Secrets in configs: `check` and the daemons' logs never show them; weak ones are warned about or refused."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from logflume import secrets
from logflume.errors import ConfigError
from logflume.secrets import RedactingFilter, is_secret_key, redact, redact_url
from tests.conftest import REPO, free_port, wait_for

URL_PASSWORD = "url-pw-7Hq2LxPz"
OPTION_PASSWORD = "opt-pw-Zk29LmQa"
NESTED_SECRET = "nested-Yt71PqRw"
TOKEN = "tok-Rb93KdLs0vXe8WqA"


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "logflume", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=60, env=env)


def collector_yaml(tmp_path: Path, listen: str = "127.0.0.1:0", tokens: str = f"[{TOKEN}]",
                   sftp_port: int = 1, tls: str = "") -> str:
    return (
        "collector:\n"
        f"  listen: {listen}\n"
        f"  data_dir: {tmp_path / 'data'}\n"
        f"  tokens: {tokens}\n"
        "  token_sources: ['*']\n"
        f"{tls}"
        "store:\n"
        "  type: buffer\n"
        "  primary:\n"
        "    type: seqfile\n"
        f"    url: sftp://logs:{URL_PASSWORD}@127.0.0.1:{sftp_port}/data\n"
        "    timeout: 2s\n"
        "    storage_options:\n"
        f"      password: {OPTION_PASSWORD}\n"
        "      key_filename: /etc/logflume/sftp_key\n"
        f"      client_kwargs: {{aws_secret_access_key: {NESTED_SECRET}, region_name: eu-1}}\n"
        f"  secondary: {{dir: {tmp_path / 'data' / 'secondary'}}}\n"
    )


def assert_no_secret(text: str) -> None:
    for secret in (URL_PASSWORD, OPTION_PASSWORD, NESTED_SECRET, TOKEN):
        assert secret not in text, f"{secret} shown in:\n{text}"


def test_check_redacts_tokens_storage_options_and_url_passwords(tmp_path):
    cfg = tmp_path / "collector.yaml"
    cfg.write_text(collector_yaml(tmp_path))
    res = run_cli("check", "-c", str(cfg))
    assert res.returncode == 0, res.stderr
    assert_no_secret(res.stdout + res.stderr)
    assert "sftp://logs:***@127.0.0.1:1/data" in res.stdout
    assert "key_filename: /etc/logflume/sftp_key" in res.stdout  # where a key is kept is not the key
    assert "region_name: eu-1" in res.stdout
    assert res.stdout.count("<redacted>") >= 3  # token, password, nested secret


def agent_with_sink(tmp_path: Path, sink: str) -> Path:
    """An agent config (tail -> memory channel -> ``sink``, a YAML flow mapping with ``channel: mem``)."""
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(
        f"agent: {{name: a1, data_dir: {tmp_path / 'state'}}}\n"
        "sources: {logs: {type: tail, paths: [/nonexistent/*.log], channels: [mem]}}\n"
        "channels: {mem: {type: memory}}\n"
        f"sinks: {sink}\n"
    )
    return cfg


def test_agent_check_redacts_sink_url_password(tmp_path):
    cfg = agent_with_sink(tmp_path, f"{{out: {{type: file, channel: mem, url: 'sftp://u:{URL_PASSWORD}@127.0.0.1:1/x'}}}}")
    res = run_cli("check", "-c", str(cfg))
    assert res.returncode == 0, res.stderr
    assert_no_secret(res.stdout + res.stderr)
    assert "sftp://u:***@127.0.0.1:1/x" in res.stdout


def test_collector_logs_hide_url_and_option_passwords(tmp_path, logflume_proc):
    """The primary is down at start: the warning names the store, with its password hidden."""
    cfg = tmp_path / "collector.yaml"
    cfg.write_text(collector_yaml(tmp_path, sftp_port=free_port()))
    proc = logflume_proc(["collector", "-c", cfg], name="collector")
    wait_for(lambda: "primary not available" in proc.log() or not proc.alive(), timeout=60,
             message="the collector to report its primary down")
    log = proc.log()
    assert "primary not available" in log, log
    assert_no_secret(log)
    assert "sftp://logs:***@127.0.0.1" in log
    assert proc.terminate() == 0


def test_placeholder_token_warned_on_loopback(tmp_path):
    cfg = tmp_path / "collector.yaml"
    cfg.write_text(collector_yaml(tmp_path, tokens='["${LOGFLUME_TOKEN:-change-me}"]'))
    env = {k: v for k, v in __import__("os").environ.items() if k != "LOGFLUME_TOKEN"}
    res = run_cli("check", "-c", str(cfg), env=env)
    assert res.returncode == 0, res.stderr
    assert "warning: collector.tokens[0]: secret is a well-known placeholder" in res.stderr
    assert "warning: collector: a token is configured without tls: it travels in clear" in res.stderr
    assert "change-me" not in res.stdout + res.stderr


def test_check_warns_of_tokens_in_clear_on_scribe_and_flume(tmp_path):
    """The daemon's startup warning, given by ``check`` too (it was only logged at start)."""
    cfg = tmp_path / "collector.yaml"
    cfg.write_text(collector_yaml(tmp_path, tls="  scribe: 127.0.0.1:0\n  flume: 127.0.0.1:0\n"))
    res = run_cli("check", "-c", str(cfg))
    assert res.returncode == 0, res.stderr
    assert "warning: collector: tokens travel in clear on scribe and flume (no tls)" in res.stderr
    assert_no_secret(res.stdout + res.stderr)


def test_placeholder_token_refused_beyond_loopback(tmp_path):
    cfg = tmp_path / "collector.yaml"
    cfg.write_text(collector_yaml(tmp_path, listen="0.0.0.0:7465", tokens="[changeme]"))
    res = run_cli("check", "-c", str(cfg))
    assert res.returncode == 2, res.stdout
    assert "collector.tokens[0]: secret is a well-known placeholder" in res.stderr
    assert "beyond loopback" in res.stderr and "openssl rand" in res.stderr
    assert "changeme" not in res.stderr


def test_identity_tokens_are_checked_too(tmp_path):
    cfg = tmp_path / "collector.yaml"
    cfg.write_text(collector_yaml(tmp_path, tokens="[]").replace(
        "  token_sources: ['*']\n", "  identities: {web: {token: change-me, sources: [web-*]}}\n"))
    res = run_cli("check", "-c", str(cfg))
    assert res.returncode == 0, res.stderr
    assert "warning: collector.identities.web.token: secret is a well-known placeholder" in res.stderr


def test_short_token_without_tls_warned_in_agent_and_daemon_log(tmp_path, logflume_proc):
    cfg = agent_with_sink(tmp_path, f"{{up: {{type: collector, channel: mem, collectors: ['127.0.0.1:{free_port()}'],"
                                    " token: abc12345}}")
    res = run_cli("check", "-c", str(cfg))
    assert res.returncode == 0, res.stderr
    assert "warning: sinks.up.token: secret is shorter than 16 characters (8)" in res.stderr
    assert "warning: sinks.up: a token is configured without tls" in res.stderr
    proc = logflume_proc(["agent", "-c", cfg], name="agent")
    # "started" too: SIGTERM before the agent installed its handlers (right after the warning, on a loaded
    # machine) kills it with the default action, exit -15.
    wait_for(lambda: ("shorter than 16" in proc.log() and " started: " in proc.log()) or not proc.alive(),
             timeout=60, message="the startup warning and the agent started")
    assert "WARNING" in proc.log() and "abc12345" not in proc.log()
    assert proc.terminate() == 0


def test_log_filter_hides_remembered_secrets_in_messages_and_tracebacks():
    secrets.remember("remembered-Qw81ZxCv")
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(RedactingFilter())
    log = logging.getLogger("test.redaction")
    log.addHandler(handler)
    try:
        log.warning("connecting to %s with %s", "ftp://me:pw1@h/x", "remembered-Qw81ZxCv")
        try:
            raise OSError("auth failed for remembered-Qw81ZxCv at sftp://me:pw2@h")
        except OSError:
            log.exception("store down")
    finally:
        log.removeHandler(handler)
    text = out.getvalue()
    assert "remembered-Qw81ZxCv" not in text and "pw1" not in text and "pw2" not in text
    assert text.count("<redacted>") >= 2 and "ftp://me:***@h/x" in text and "sftp://me:***@h" in text


@pytest.mark.parametrize(("key", "secret"), [
    ("password", True), ("passphrase", True), ("token", True), ("sas_token", True), ("secretAccessKey", True),
    ("AWS_SECRET_ACCESS_KEY", True), ("key", True), ("pkey", True), ("client_key", True),
    ("connection_string", True), ("credentials", True), ("tokens", True),
    ("key_filename", False), ("auth_timeout", False), ("host_key_fingerprint", False), ("known_hosts", False),
    ("username", False), ("region_name", False), ("look_for_keys", False), ("timeout", False),
])
def test_secret_key_rule(key, secret):
    assert is_secret_key(key) is secret


def test_redact_keeps_structure():
    got = redact({"password": "x", "nested": [{"token": "y", "url": "s3://a:b@c/d"}], "anon": True, "port": 22})
    assert got == {"password": "<redacted>", "nested": [{"token": "<redacted>", "url": "s3://a:***@c/d"}],
                   "anon": True, "port": 22}
    assert redact_url("sftp://user@host/x") == "sftp://user@host/x"


def test_check_secret_decisions():
    assert secrets.check_secret("a" * 32, file="f", path="k", bind=("0.0.0.0", 1)) is None
    assert "placeholder" in secrets.check_secret("Change-Me", file="f", path="k", bind=("127.0.0.1", 1))
    assert "empty" in secrets.check_secret("", file="f", path="k", bind=None)
    with pytest.raises(ConfigError, match="k: secret is shorter than 16"):
        secrets.check_secret("short", file="f", path="k", bind=("::", 1))
    with pytest.raises(ConfigError):
        secrets.check_secret("password", file="f", path="k", bind=("collector.example", 1))


def test_tap_token_is_checked_against_the_status_endpoints_address():
    from logflume.topology import build_topology

    def agent(metrics: str, token: str) -> list[str]:
        return build_topology({
            "agent": {"name": "a", "metrics": metrics, "tap_token": token},
            "sources": {"in": {"type": "stdin", "channels": ["m"]}}, "channels": {"m": {"type": "memory"}},
            "sinks": {"out": {"type": "null", "channel": "m"}}}).warnings

    strong = "9c1e5b7a" * 5
    assert agent("127.0.0.1:9100", strong) == []
    assert any("agent.tap_token: secret" in w for w in agent("127.0.0.1:9100", "changeme"))
    with pytest.raises(ConfigError, match=r"agent\.tap_token.*beyond loopback"):
        agent("0.0.0.0:9100", "changeme")
    assert any("speaks plain HTTP beyond loopback" in w for w in agent("0.0.0.0:9100", strong))
