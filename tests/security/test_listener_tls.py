"""Mutual TLS on the shared listener: syslog over RFC 5425-style TLS with client certificates, and the
identity the server hands its endpoints (peer address, verified certificate name)."""

from __future__ import annotations

import socket
import ssl
import threading

import pytest

from logflume.wire.connection import Connection
from logflume.wire.server import TcpServer
from logflume.wire.tls import client_context, server_context
from tests.conftest import free_port, wait_for
from tests.security.listeners import Agent
from tests.wire.certs import make_pki

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def send_tls(port: int, ctx: ssl.SSLContext, data: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port)) as raw, ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        s.settimeout(10)
        while s.recv(1024):
            pass


def test_syslog_mutual_tls(tmp_path, logflume_proc, pki):
    port = free_port()
    agent = Agent(logflume_proc, tmp_path, {
        "type": "syslog", "tcp": f"127.0.0.1:{port}", "flush_interval": "50ms", "stream": "syslog:{transport}",
        "tls": {"cert": pki.server_cert, "key": pki.server_key, "client_ca": pki.ca, "require_client_cert": True},
    }, port=port)
    agent.wait_listening()
    send_tls(port, client_context(pki.ca, pki.client_cert, pki.client_key), b"<13>Jan  1 00:00:00 h app: signed\n")
    wait_for(lambda: any("signed" in r for r in agent.records()), 10, message="the message from the signed client")
    for ctx in (client_context(pki.ca), client_context(pki.ca, pki.rogue_client_cert, pki.rogue_client_key)):
        try:
            send_tls(port, ctx, b"<13>Jan  1 00:00:00 h app: forged\n")
        except (ssl.SSLError, OSError):
            pass  # TLS 1.3 reports the refusal on the first read
    wait_for(lambda: agent.proc.log().count("TLS handshake with") >= 2, 10, message="both refusals logged")
    assert all("forged" not in r for r in agent.records())
    assert "Traceback" not in agent.proc.log()


class Recorder:
    name = "probe"

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []

    def serve(self, conn: Connection, stopping: threading.Event) -> None:
        self.seen.append((conn.peer_host, conn.client_name))
        conn.sendall(b"ok", timeout=5)


def test_endpoint_sees_peer_and_certificate_name(pki):
    rec = Recorder()
    ctx = server_context(pki.server_cert, pki.server_key, client_ca=pki.ca, require_client_cert=True)
    server = TcpServer(rec, "127.0.0.1", 0, ssl_context=ctx, max_connections=4)
    server.start()
    try:
        client = client_context(pki.ca, pki.client_cert, pki.client_key)
        with socket.create_connection(server.address) as raw, \
                client.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            s.sendall(b"hi")
            s.settimeout(10)
            assert s.recv(2) == b"ok"
        assert rec.seen == [("127.0.0.1", "agent")]
    finally:
        server.stop(1.0)


def test_per_peer_and_total_caps(pki):
    """Past max_connections_per_peer one address is refused, another still gets in; past max_connections all are."""
    rec = Recorder()
    server = TcpServer(rec, "127.0.0.1", 0, max_connections=3, max_connections_per_peer=2, handshake_timeout=30)
    server.start()
    held = []
    try:
        held = [socket.create_connection(server.address) for _ in range(2)]
        wait_for(lambda: server.connections == 2, 5, message="two connections held")
        extra = socket.create_connection(server.address)
        extra.settimeout(5)
        assert extra.recv(1) == b""  # same address: refused at once
        extra.close()
        other = socket.create_connection(server.address, source_address=("127.0.0.2", 0))
        held.append(other)
        wait_for(lambda: server.connections == 3, 5, message="another address admitted")
        full = socket.create_connection(server.address, source_address=("127.0.0.3", 0))
        full.settimeout(5)
        assert full.recv(1) == b""  # max_connections reached
        full.close()
        assert server.refused == 2
    finally:
        for s in held:
            s.close()
        server.stop(1.0)
