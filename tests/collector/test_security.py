"""A real collector process: TLS, mutual TLS, tokens, and hostile connections that must not hurt other agents."""

from __future__ import annotations

import os
import socket
import time

import pytest

from logflume.wire.protocol import pack_prefix
from tests.collector.conftest import agent_config, collector_config, exec_source, numbers, stop_all, wait_all
from tests.conftest import wait_for
from tests.wire.certs import make_pki

pytestmark = pytest.mark.timeout(180)


def test_mutual_tls_and_tokens(tmp_path, start_collector, start_agent):
    pki = make_pki(tmp_path / "pki")
    n = 5_000
    cfg, port, store = collector_config(
        tmp_path, "c", identities={"good-agent": {"token": "t0ken", "certificate": "agent", "sources": ["good"]}},
        tls={"cert": pki.server_cert, "key": pki.server_key, "client_ca": pki.ca, "require_client_cert": True},
    )
    col = start_collector(cfg)
    addr = [f"127.0.0.1:{port}"]
    good_tls = {"ca": pki.ca, "cert": pki.client_cert, "key": pki.client_key}
    good = start_agent(agent_config(tmp_path, "good", {"collectors": addr, "token": "t0ken", "tls": good_tls},
                                    sources={"gen": exec_source(n)}), name="good")
    bad_token = start_agent(agent_config(tmp_path, "badtoken", {"collectors": addr, "token": "guess", "tls": good_tls},
                                         sources={"gen": exec_source(10)}), name="badtoken")
    no_cert = start_agent(agent_config(tmp_path, "nocert", {"collectors": addr, "token": "t0ken",
                                                            "tls": {"ca": pki.ca}},
                                       sources={"gen": exec_source(10)}), name="nocert")
    rogue = start_agent(agent_config(tmp_path, "rogue", {"collectors": addr, "token": "t0ken",
                                                         "tls": {"ca": pki.ca, "cert": pki.rogue_client_cert,
                                                                 "key": pki.rogue_client_key}},
                                     sources={"gen": exec_source(10)}), name="rogue")
    wrong_ca = start_agent(agent_config(tmp_path, "wrongca", {"collectors": addr, "token": "t0ken",
                                                              "tls": {**good_tls, "ca": pki.other_ca}},
                                        sources={"gen": exec_source(10)}), name="wrongca")
    wait_all([store], n, 60, procs=[good, col])
    wait_for(lambda: "refusing badtoken/fwd" in col.log(), 30, message="token refusal logged")
    wait_for(lambda: col.log().count("TLS handshake with") >= 2, 30, message="certificate refusals logged")
    wait_for(lambda: "authentication failed" in bad_token.log(), 30, message="agent logs token refusal")
    wait_for(lambda: "CERTIFICATE_VERIFY_FAILED" in wrong_ca.log(), 30, message="agent logs bad server cert")
    wait_for(lambda: "TLS refused" in no_cert.log() and "CERTIFICATE_REQUIRED" in no_cert.log(), 30,
             message="agent without a client certificate logs its refusal")
    wait_for(lambda: "TLS refused" in rogue.log() and "UNKNOWN_CA" in rogue.log(), 30,
             message="agent with a foreign client certificate logs its refusal")
    clog = col.log()
    assert "authentication failed: unknown token" in clog
    assert "PEER_DID_NOT_RETURN_A_CERTIFICATE" in clog  # no client certificate
    assert "CERTIFICATE_VERIFY_FAILED" in clog  # a client certificate from another CA
    assert set(numbers([store])) == set(range(n))  # only the good agent's records (0..n-1, each agent restarts at 0)
    assert len(numbers([store])) == n
    assert stop_all([good, bad_token, no_cert, rogue, wrong_ca]) == [0] * 5
    assert col.terminate(30) == 0


def test_hostile_connections_do_not_hurt_other_agents(tmp_path, start_collector, start_agent):
    n = 30_000
    cfg, port, store = collector_config(tmp_path, "c", max_frame_size="8MiB", frame_timeout="2s", max_connections=50)
    col = start_collector(cfg)
    agent = start_agent(agent_config(tmp_path, "ag", {"collectors": [f"127.0.0.1:{port}"], "batch_bytes": "1MiB"},
                                     sources={"gen": exec_source(n, pause_every=1000, pause=0.1)}))
    addr = ("127.0.0.1", port)
    socks = []
    try:
        garbage = socket.create_connection(addr, timeout=5)
        garbage.sendall(os.urandom(4096))
        oversized = socket.create_connection(addr, timeout=5)
        oversized.sendall(pack_prefix(64, 1 << 40))
        slow = socket.create_connection(addr, timeout=5)
        socks = [garbage, oversized, slow]
        t0 = time.monotonic()
        slow_closed = False
        for b in b"LFW1\x00\x00\x00\x10":  # one byte a second
            try:
                slow.sendall(bytes([b]))
            except OSError:
                slow_closed = True
                break
            time.sleep(1.0)
        if not slow_closed:
            slow.settimeout(5)
            try:
                slow_closed = slow.recv(1) == b""
            except ConnectionResetError:
                slow_closed = True
        assert slow_closed and time.monotonic() - t0 < 10
        for s in (garbage, oversized):
            s.settimeout(5)
            try:
                assert s.recv(1) == b""
            except ConnectionResetError:
                pass
    finally:
        for s in socks:
            s.close()
    wait_all([store], n, 60, procs=[agent, col])
    log = col.log()
    assert "not a logflume frame" in log
    assert "exceeds max_frame_size" in log
    assert "frame not complete in time" in log
    assert col.alive()
    for p in (agent, col):
        assert p.terminate(30) == 0
