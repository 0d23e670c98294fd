"""M4: the forward source against hostile clients (real agent process on loopback).

Before: no ``shared_key``, no TLS, a 64 MiB default message size, and a
4 MiB message of empty events raised the agent's memory by about 490 MB.

The handshake client below follows the Forward protocol v1 spec (fluent-logger
for Python does not implement ``shared_key``): HELO -> PING -> PONG, each side
proving the key with ``sha512_hex(salt + hostname + nonce + shared_key)``.
"""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import time

import msgpack
import pytest
from fluent import sender

from tests.conftest import free_port, wait_for
from tests.security.listeners import Agent, peak_mib, reset_peak
from tests.wire.certs import make_pki

pytestmark = pytest.mark.timeout(180)

KEY = "forward-shared-key"


def forward_agent(logflume_proc, tmp_path, **extra) -> Agent:
    port = free_port()
    agent = Agent(logflume_proc, tmp_path, {"type": "forward", "listen": f"127.0.0.1:{port}",
                                            "flush_interval": "50ms", **extra}, port=port)
    agent.wait_listening()
    return agent


def digest(salt: bytes, hostname: str, nonce: bytes, key: str) -> str:
    return hashlib.sha512(salt + hostname.encode() + nonce + key.encode()).hexdigest()


def handshake(sock: socket.socket, key: str, hostname: str = "client-1") -> list:
    """The client side of the spec's handshake; returns the PONG (and checks the server's proof)."""
    sock.settimeout(10)
    unpacker = msgpack.Unpacker(raw=False)

    def read():
        for obj in unpacker:
            return obj
        while True:
            data = sock.recv(4096)
            if not data:
                raise ConnectionError("closed during handshake")
            unpacker.feed(data)
            for obj in unpacker:
                return obj

    helo = read()
    assert helo[0] == "HELO" and len(helo[1]["nonce"]) >= 16, helo
    nonce = helo[1]["nonce"]
    salt = os.urandom(16)
    sock.sendall(msgpack.packb(["PING", hostname, salt, digest(salt, hostname, nonce, key), "", ""],
                               use_bin_type=True))
    pong = read()
    assert pong[0] == "PONG"
    if pong[1]:
        assert pong[4] == digest(salt, pong[3], nonce, key), "the server must prove the key too"
    return pong


def send_with_ack(sock: socket.socket, tag: str, records: list[dict]) -> dict:
    entries = [[int(time.time()), r] for r in records]
    sock.sendall(msgpack.packb([tag, entries, {"chunk": "c1"}], use_bin_type=True))
    reply = msgpack.Unpacker(raw=False)
    while True:
        data = sock.recv(4096)
        assert data, "closed before the ack"
        reply.feed(data)
        for obj in reply:
            return obj


def test_shared_key_handshake(tmp_path, logflume_proc):
    agent = forward_agent(logflume_proc, tmp_path, shared_key=KEY)
    with socket.create_connection(("127.0.0.1", agent.port)) as s:
        pong = handshake(s, KEY)
        assert pong[1] is True, pong
        assert send_with_ack(s, "auth.ok", [{"n": 1}, {"n": 2}]) == {"ack": "c1"}
    wait_for(lambda: len(agent.records()) == 2, 10, message="the authenticated events")
    # A wrong key: PONG false with the reason, then the connection is closed; nothing is stored.
    with socket.create_connection(("127.0.0.1", agent.port)) as s:
        pong = handshake(s, "wrong-key")
        assert pong[1] is False and "shared_key" in pong[2]
        s.settimeout(10)
        assert s.recv(10) == b""
    # A client that skips the handshake (fluent-logger) is refused before anything is stored.
    client = sender.FluentSender("noauth", host="127.0.0.1", port=agent.port, timeout=5)
    client.emit("x", {"stolen": True})
    client.close()
    # A client that never answers HELO is cut at handshake_timeout.
    with socket.create_connection(("127.0.0.1", agent.port)) as s:
        s.settimeout(30)
        t0 = time.monotonic()
        while s.recv(4096):
            pass
        assert time.monotonic() - t0 < 25
    time.sleep(0.5)
    assert len(agent.records()) == 2
    assert all("stolen" not in r for r in agent.records())
    assert "Traceback" not in agent.proc.log()


def test_tls_with_shared_key(tmp_path, logflume_proc):
    pki = make_pki(tmp_path / "pki")
    agent = forward_agent(logflume_proc, tmp_path, shared_key=KEY,
                          tls={"cert": pki.server_cert, "key": pki.server_key})
    ctx = ssl.create_default_context(cafile=pki.ca)
    with socket.create_connection(("127.0.0.1", agent.port)) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
        assert handshake(s, KEY)[1] is True
        assert send_with_ack(s, "tls.ok", [{"over": "tls"}]) == {"ack": "c1"}
    wait_for(lambda: [r for r in agent.records() if '"over":"tls"' in r], 10, message="the event sent over TLS")
    assert len(agent.records()) == 1


def empty_events_message(size: int, packed: bool) -> bytes:
    """A Forward message of about ``size`` bytes of empty events ``[0, {}]`` (3 bytes each)."""
    n = size // 3
    if packed:
        return msgpack.packb(["bomb", b"\x92\x00\x80" * n])
    return b"\x92" + msgpack.packb("bomb") + b"\xdd" + n.to_bytes(4, "big") + b"\x92\x00\x80" * n


@pytest.mark.parametrize("packed", [False, True], ids=["forward-mode", "packed-forward"])
def test_message_of_empty_events_is_refused_in_bounded_memory(tmp_path, logflume_proc, packed):
    agent = forward_agent(logflume_proc, tmp_path)
    reset_peak(agent.pid)
    base = peak_mib(agent.pid)
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", agent.port)) as s:
        try:
            s.sendall(empty_events_message(4 << 20, packed))
            s.settimeout(30)
            assert s.recv(10) == b"", "the source must drop the connection"
        except (ConnectionResetError, BrokenPipeError):
            pass
    took = time.monotonic() - t0
    growth = peak_mib(agent.pid) - base
    print(f"M4 ({'packed' if packed else 'forward'} mode): refused after {took:.2f}s, "
          f"VmHWM +{growth:.0f} MiB (peak {peak_mib(agent.pid):.0f} MiB)")
    assert growth < 100, f"peak memory rose by {growth:.0f} MiB"
    assert took < 20
    wait_for(lambda: "more than" in agent.proc.log(), 10, message="the refusal logged")
    # Still serving.
    client = sender.FluentSender("after", host="127.0.0.1", port=agent.port)
    assert client.emit("x", {"fine": True})
    client.close()
    wait_for(lambda: any("fine" in r for r in agent.records()), 10, message="a normal event after the attack")


def test_default_max_message_size_is_small(tmp_path, logflume_proc):
    """A 16 MiB message is refused with the defaults (Fluent Bit buffers 6 MB; the old default took 64 MiB)."""
    agent = forward_agent(logflume_proc, tmp_path)
    reset_peak(agent.pid)
    base = peak_mib(agent.pid)
    with socket.create_connection(("127.0.0.1", agent.port)) as s:
        try:
            s.sendall(msgpack.packb(["big", int(time.time()), {"blob": b"x" * (16 << 20)}]))
            s.settimeout(30)
            assert s.recv(10) == b""
        except (ConnectionResetError, BrokenPipeError):
            pass
    assert peak_mib(agent.pid) - base < 40
    time.sleep(0.5)
    assert agent.records() == []
