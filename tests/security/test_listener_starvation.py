"""M1: silent and half-handshaken sockets must not starve a listener (syslog source, real agent process).

Before: 256 silent sockets from one address took every connection slot (one
thread each) for the whole 5-minute ``idle_timeout``; nobody else got in.
Now one address gets at most ``max_connections_per_peer`` slots, and a
connection that sends nothing (or does not finish its TLS handshake) within
``handshake_timeout`` is closed.
"""

from __future__ import annotations

import socket
import ssl
import time

import pytest

from tests.conftest import free_port, wait_for
from tests.security.listeners import Agent, peak_mib, reset_peak, threads
from tests.wire.certs import make_pki

pytestmark = pytest.mark.timeout(180)

SILENT = 256  # the old default max_connections: enough to take every slot


def closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


def test_silent_sockets_do_not_take_every_slot(tmp_path, logflume_proc):
    port = free_port()
    agent = Agent(logflume_proc, tmp_path, {"type": "syslog", "tcp": f"127.0.0.1:{port}", "flush_interval": "50ms"},
                  port=port)
    agent.wait_listening()
    reset_peak(agent.pid)
    base_threads = threads(agent.pid)
    silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(SILENT)]
    try:
        t0 = time.monotonic()
        # Another sender (another loopback address) still gets in while the silent ones are connected.
        with socket.create_connection(("127.0.0.1", port), timeout=5, source_address=("127.0.0.2", 0)) as legit:
            legit.sendall(b"<13>Jan  1 00:00:00 h app: legit\n")
        wait_for(lambda: any("legit" in r for r in agent.records()), 10, message="the legit message stored")
        served_after = time.monotonic() - t0
        assert threads(agent.pid) - base_threads <= 64 + 2, "one address must not get more than 64 threads"
        # The silent ones are closed once handshake_timeout (10s by default) passed, not after idle_timeout.
        for s in silent:
            s.settimeout(0.1)
        deadline = time.monotonic() + 40
        open_ = list(silent)
        while open_ and time.monotonic() < deadline:
            open_ = [s for s in open_ if not closed_by_peer(s)]
        closed_after = time.monotonic() - t0
        assert not open_, f"{len(open_)} silent sockets still open after {closed_after:.0f}s"
        assert closed_after < 40
        growth = peak_mib(agent.pid)
        print(f"M1: legit served after {served_after:.2f}s, silent closed after {closed_after:.1f}s, "
              f"threads peak <= {base_threads}+64, VmHWM {growth:.0f} MiB")
        assert agent.proc.alive()
        assert "Traceback" not in agent.proc.log()
    finally:
        for s in silent:
            s.close()


def test_tls_handshake_deadline(tmp_path, logflume_proc):
    """A client that opens TLS and stalls mid-handshake is cut at handshake_timeout; a real one is served."""
    pki = make_pki(tmp_path / "pki")
    port = free_port()
    agent = Agent(logflume_proc, tmp_path, {
        "type": "syslog", "tcp": f"127.0.0.1:{port}", "flush_interval": "50ms", "handshake_timeout": "2s",
        "tls": {"cert": pki.server_cert, "key": pki.server_key},
    }, port=port)
    agent.wait_listening()
    stalled = socket.create_connection(("127.0.0.1", port))
    stalled.sendall(b"\x16\x03\x01\x02\x00")  # a TLS record header announcing a ClientHello that never comes
    t0 = time.monotonic()
    stalled.settimeout(15)
    assert closed_by_peer(stalled)
    assert time.monotonic() - t0 < 10
    stalled.close()
    ctx = ssl.create_default_context(cafile=pki.ca)
    with socket.create_connection(("127.0.0.1", port)) as raw, ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
        s.sendall(b"<13>Jan  1 00:00:00 h app: over tls\n")
        s.shutdown(socket.SHUT_WR)
        s.settimeout(10)
        while s.recv(1024):
            pass
    wait_for(lambda: any("over tls" in r for r in agent.records()), 10, message="the TLS message stored")
    assert "TLS handshake with" in agent.proc.log()
    assert "Traceback" not in agent.proc.log()
