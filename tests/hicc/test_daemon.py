"""`logflume hicc`: config errors, loopback-only without TLS and token, the token and TLS, hostile requests."""

from __future__ import annotations

import http.client
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from hicc.config import build_hicc_config
from logflume.errors import ConfigError
from tests.conftest import REPO, free_port, wait_for
from tests.hicc.conftest import answers, write_yaml
from tests.wire.certs import make_pki

pytestmark = pytest.mark.timeout(60)


def hicc_cli(cfg) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "logflume", "hicc", "-c", str(cfg)], cwd=REPO,
                          capture_output=True, text=True, timeout=30)


def test_unknown_key_is_named_with_file_and_path(tmp_path):
    cfg = write_yaml(tmp_path / "hicc.yaml", {"hicc": {"agents": ["127.0.0.1:9464"], "pol_interval": "1s"}})
    res = hicc_cli(cfg)
    assert res.returncode == 2
    assert res.stderr.startswith(f"logflume hicc: cannot start: {cfg}: hicc.pol_interval: unknown key")
    assert "poll_interval" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    res = hicc_cli(write_yaml(tmp_path / "bad.yaml", {"hicc": {"agents": ["nohost"]}}))
    assert res.returncode == 2 and "hicc.agents[0]" in res.stderr


@pytest.mark.parametrize("extra", [{}, {"token": "s3cret-token-for-hicc-0123456789"}])
def test_beyond_loopback_needs_tls_and_token(extra):
    with pytest.raises(ConfigError) as err:
        build_hicc_config({"hicc": {"listen": "0.0.0.0:7480", **extra}}, "h.yaml")
    assert err.value.path == "hicc.listen" and "tls and token" in err.value.message
    assert build_hicc_config({"hicc": {}}).values.listen == ("127.0.0.1", 7480)


def test_port_in_use_is_one_line_and_exit_1(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        cfg = write_yaml(tmp_path / "hicc.yaml", {"hicc": {"listen": f"127.0.0.1:{s.getsockname()[1]}",
                                                           "data_dir": str(tmp_path / "d")}})
        res = hicc_cli(cfg)
    assert res.returncode == 1 and res.stderr.startswith("logflume hicc: cannot start:"), res.stderr


def test_token_and_tls(tmp_path, logflume_proc):
    pki = make_pki(tmp_path / "pki")
    port = free_port()
    token = "hicc-token-0123456789abcdef"
    cfg = write_yaml(tmp_path / "hicc.yaml", {"hicc": {
        "listen": f"127.0.0.1:{port}", "data_dir": str(tmp_path / "d"), "token": token,
        "tls": {"cert": pki.server_cert, "key": pki.server_key}}})
    proc = logflume_proc(["hicc", "-c", cfg], name="hicc")
    ctx = ssl.create_default_context(cafile=pki.ca)
    base = f"https://127.0.0.1:{port}"

    def get(path, headers=None):
        req = urllib.request.Request(base + path, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=5, context=ctx) as resp:
                return resp.status, resp.read().decode(), resp.headers
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(), exc.headers

    def up():
        try:
            return get("/")[0] == 401
        except OSError:
            return False

    wait_for(up, 30, message="hicc over TLS")
    assert get("/streams")[0] == 401
    assert get("/", {"Authorization": "Bearer wrong"})[0] == 401
    assert get("/", {"Authorization": f"Bearer {token}"})[0] == 200
    # ?token= sets an HttpOnly cookie and redirects to the page without the token.
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=5)
    conn.request("GET", f"/streams?token={token}")
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 303 and resp.getheader("Location") == "/streams"
    cookie = resp.getheader("Set-Cookie")
    assert "HttpOnly" in cookie and "Secure" in cookie
    assert get("/streams", {"Cookie": cookie.split(";")[0]})[0] == 200
    # Plain HTTP on the TLS port gets nothing.
    assert not answers(f"http://127.0.0.1:{port}/")
    # A client that opens a connection and sends nothing does not hold the server.
    idle = socket.create_connection(("127.0.0.1", port))
    try:
        t0 = time.monotonic()
        assert get("/", {"Authorization": f"Bearer {token}"})[0] == 200
        assert time.monotonic() - t0 < 5
    finally:
        idle.close()
    assert proc.terminate() == 0
    assert token not in proc.log()
