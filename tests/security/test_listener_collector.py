"""M1 against the collector: silent sockets must not hold its connection slots for the 5-minute idle_timeout.

Before: 64 silent sockets took every slot of a collector with
``max_connections: 64`` for the whole ``idle_timeout`` (5 min); agents were
refused throughout.  Now the shared server closes a connection that sends
nothing within ``handshake_timeout`` (10 s), so an agent gets in soon after.
"""

from __future__ import annotations

import socket
import time

import pytest

from logflume.chunk import Chunk
from logflume.wire import WireClient
from tests.conftest import free_port, wait_for
from tests.security.listeners import can_connect, peak_mib, reset_peak, threads

pytestmark = pytest.mark.timeout(180)


def delivered(port: int) -> bool:
    client = WireClient("127.0.0.1", port, sender="agent-1", timeout=5)
    try:
        chunk = Chunk(source="agent-1", stream="s", datatype="Raw", seq_id=3, epoch="e", data=b"hi\n")
        return client.deliver([chunk]).ok
    except Exception:  # noqa: BLE001 - refused or reset while the slots are taken: try again
        return False
    finally:
        client.close()


def start_collector(tmp_path, logflume_proc, limits: str):
    """A collector process on a free port with the given ``limits`` lines; returns (process, port)."""
    port = free_port()
    cfg = tmp_path / "collector.yaml"
    cfg.write_text(f"collector:\n  name: c\n  listen: 127.0.0.1:{port}\n  data_dir: {tmp_path / 'data'}\n" + limits)
    proc = logflume_proc(["collector", "-c", cfg], name="collector")
    wait_for(lambda: can_connect(port) or not proc.alive(), 30, message="collector listening")
    assert proc.alive(), proc.log()[-3000:]
    return proc, port


def still_open(socks: list[socket.socket]) -> list[socket.socket]:
    """The sockets the collector has not closed (a read gets data or times out within 50 ms)."""
    still = []
    for s in socks:
        s.settimeout(0.05)
        try:
            if s.recv(1) != b"":
                still.append(s)
        except TimeoutError:
            still.append(s)
        except OSError:
            pass
    return still


def test_silent_sockets_release_collector_slots(tmp_path, logflume_proc):
    proc, port = start_collector(tmp_path, logflume_proc, "  max_connections: 64\n")
    reset_peak(proc.pid)
    t0 = time.monotonic()
    silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(64)]
    try:
        for s in silent:
            s.settimeout(0.05)
        wait_for(lambda: delivered(port), 40, interval=0.5, message="an agent served while silent sockets wait")
        served = time.monotonic() - t0
        assert served < 40
        open_ = list(silent)
        while open_ and time.monotonic() - t0 < 40:
            open_ = still_open(open_)
        assert not open_, f"{len(open_)} silent sockets still open"
        print(f"M1 collector: agent served after {served:.1f}s, threads now {threads(proc.pid)}, "
              f"VmHWM {peak_mib(proc.pid):.0f} MiB")
        assert "Traceback" not in proc.log()
    finally:
        for s in silent:
            s.close()


def test_one_address_cannot_take_every_slot(tmp_path, logflume_proc):
    """``max_connections_per_peer``: silent sockets from 127.0.0.2 past the cap are closed at once, and an agent
    on 127.0.0.1 is served at once (not after the 10 s handshake deadline frees the slots)."""
    proc, port = start_collector(tmp_path, logflume_proc, "  max_connections: 16\n  max_connections_per_peer: 4\n")
    silent = [socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.2", 0)) for _ in range(16)]
    try:
        t0 = time.monotonic()
        open_ = list(silent)
        while len(open_) > 4 and time.monotonic() - t0 < 8:  # the handshake deadline (10 s) must not count
            open_ = still_open(open_)
        assert len(open_) == 4, f"{len(open_)} of 16 still open: expected max_connections_per_peer (4)"
        assert delivered(port), "another address is served while one holds its share"
        assert time.monotonic() - t0 < 9, "served before the handshake deadline freed anything"
    finally:
        for s in silent:
            s.close()
    assert proc.terminate() == 0
