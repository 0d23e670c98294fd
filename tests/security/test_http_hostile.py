"""M3: the http source against hostile clients (real agent process on loopback).

Before: the body was read before the token was checked, 500 half-sent
requests made 505 threads, there was no TLS and every reset connection
printed a traceback.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import struct
import time

import pytest

from tests.conftest import free_port, wait_for
from tests.security.listeners import Agent, peak_mib, reset_peak, threads
from tests.wire.certs import make_pki

pytestmark = pytest.mark.timeout(180)

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
AUTH_LINE = f"Authorization: Bearer {TOKEN}\r\n".encode()


def http_agent(logflume_proc, tmp_path, **extra) -> Agent:
    port = free_port()
    agent = Agent(logflume_proc, tmp_path, {"type": "http", "listen": f"127.0.0.1:{port}", "tokens": [TOKEN],
                                            **extra}, port=port)
    agent.wait_listening()
    return agent


def post(port: int, path: str, body: bytes, headers: dict, source_ip: str = "127.0.0.1") -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source_ip, 0))
    try:
        conn.request("POST", path, body=body, headers=headers)
        return conn.getresponse().status
    finally:
        conn.close()


def test_token_is_checked_before_the_body(tmp_path, logflume_proc):
    agent = http_agent(logflume_proc, tmp_path)
    reset_peak(agent.pid)
    base = peak_mib(agent.pid)
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", agent.port)) as s:
        # Headers announcing a body at max_body_size, no token, and not one byte of the body.
        s.sendall(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 10485760\r\n\r\n")
        s.settimeout(10)
        reply = s.recv(200)
    assert reply.startswith(b"HTTP/1.1 401"), reply
    assert time.monotonic() - t0 < 5
    # Expect: 100-continue is not answered with Continue for a client without the token.
    with socket.create_connection(("127.0.0.1", agent.port)) as s:
        s.sendall(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        s.settimeout(10)
        assert s.recv(200).startswith(b"HTTP/1.1 401")
    assert peak_mib(agent.pid) - base < 20
    assert post(agent.port, "/ok", b'{"a": 1}\n', AUTH) == 200
    wait_for(lambda: agent.records() == ['{"a": 1}'], 10, message="the authorized record")


def test_half_sent_requests_are_capped(tmp_path, logflume_proc):
    """500 connections with half a request each: a bounded number of threads, others still served."""
    agent = http_agent(logflume_proc, tmp_path)
    reset_peak(agent.pid)
    base_threads = threads(agent.pid)
    t0 = time.monotonic()
    half = []
    for _ in range(500):
        s = socket.socket()
        s.connect(("127.0.0.1", agent.port))
        s.sendall(b"POST /x HTTP/1.1\r\nHost: a\r\nAuthorization: Bear")
        half.append(s)
    try:
        time.sleep(0.5)  # let the agent accept what it will
        peak_threads = max(threads(agent.pid) for _ in range(5))
        assert peak_threads - base_threads <= 64 + 2, f"{peak_threads} threads"
        assert post(agent.port, "/legit", b'{"b": 2}\n', AUTH, source_ip="127.0.0.2") == 200
        served = time.monotonic() - t0
        wait_for(lambda: agent.records() == ['{"b": 2}'], 10, message="the legit record")
        assert peak_mib(agent.pid) < 120
        print(f"M3: {len(half)} half-sent requests -> {peak_threads} threads (was {base_threads}), "
              f"legit served after {served:.2f}s, VmHWM {peak_mib(agent.pid):.0f} MiB")
    finally:
        for s in half:
            s.close()
    assert agent.proc.alive()


def test_reset_connections_log_no_traceback(tmp_path, logflume_proc):
    agent = http_agent(logflume_proc, tmp_path, read_timeout="2s")
    for _ in range(20):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
        s.connect(("127.0.0.1", agent.port))
        s.sendall(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n" + AUTH_LINE + b"\r\n{")
        time.sleep(0.02)
        s.close()
    assert post(agent.port, "/after", b'{"c": 3}\n', AUTH) == 200
    wait_for(lambda: agent.records() == ['{"c": 3}'], 10, message="the record after the resets")
    assert agent.proc.terminate() == 0
    assert "Traceback" not in agent.proc.log(), agent.proc.log()[-3000:]


def test_https(tmp_path, logflume_proc):
    pki = make_pki(tmp_path / "pki")
    agent = http_agent(logflume_proc, tmp_path, tls={"cert": pki.server_cert, "key": pki.server_key})
    ctx = ssl.create_default_context(cafile=pki.ca)
    conn = http.client.HTTPSConnection("127.0.0.1", agent.port, timeout=10, context=ctx)
    conn.request("POST", "/tls", body=b'{"d": 4}\n', headers=AUTH)
    assert conn.getresponse().status == 200
    conn.close()
    wait_for(lambda: agent.records() == ['{"d": 4}'], 10, message="the record sent over TLS")
    # Plain HTTP on the TLS port gets nothing that looks like an answer.
    with socket.create_connection(("127.0.0.1", agent.port)) as s:
        s.sendall(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 9\r\n" + AUTH_LINE + b'\r\n{"e": 5}\n')
        s.settimeout(10)
        try:
            assert not s.recv(100).startswith(b"HTTP/1.1 200")
        except OSError:
            pass
    assert agent.records() == ['{"d": 4}']


def test_trickled_and_oversized_headers_are_cut(tmp_path, logflume_proc):
    """Headers sent a byte at a time are cut at read_timeout; more than 64 KiB of headers closes the connection."""
    agent = http_agent(logflume_proc, tmp_path, read_timeout="2s")
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", agent.port)) as s:
        s.settimeout(0.3)
        closed = False
        for i in range(200):  # 0.3 s per byte: each read makes progress, only the request deadline stops it
            try:
                s.sendall(b"POST /x HTTP/1.1\r\nX-Pad: "[i:i + 1] or b"a")
                if s.recv(100) == b"":
                    closed = True
                    break
            except TimeoutError:
                continue
            except OSError:
                closed = True
                break
        assert closed, "a trickling client kept its connection"
    assert time.monotonic() - t0 < 15
    reset_peak(agent.pid)
    base = peak_mib(agent.pid)
    with socket.create_connection(("127.0.0.1", agent.port)) as s:
        s.settimeout(10)
        try:
            s.sendall(b"POST /x HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 60000 + b"\r\n" + b"X-Pad2: " + b"b" * 60000
                      + b"\r\n")
            reply = s.recv(100)
        except (ConnectionResetError, BrokenPipeError):
            reply = b""
        assert not reply.startswith(b"HTTP/1.1 2")
        assert reply == b"" or s.recv(100) == b""
    assert peak_mib(agent.pid) - base < 20
    assert post(agent.port, "/ok", b'{"f": 6}\n', AUTH) == 200
    assert "Traceback" not in agent.proc.log()
