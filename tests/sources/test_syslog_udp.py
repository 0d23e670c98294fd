"""The syslog source's UDP socket: a large receive buffer by default, so a burst is not lost in the kernel."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time

import pytest

from tests.conftest import free_port, wait_for
from tests.sources.pipeline import metric, pipeline

pytestmark = pytest.mark.timeout(120)

needs_ss = pytest.mark.skipif(shutil.which("ss") is None, reason="ss(8) (iproute2) not installed")


def kernel_rcvbuf(port: int) -> int:
    """The receive buffer the kernel holds for the UDP socket bound to ``port``, as ss(8) reports it."""
    out = subprocess.run(["ss", "-uamnH", "sport", "=", f":{port}"], capture_output=True, text=True,
                         check=True, timeout=10).stdout
    m = re.search(r"skmem:\(r\d+,rb(\d+),", out)
    assert m, f"no UDP socket on port {port} in ss output: {out!r}"
    return int(m.group(1))


def sysctl(name: str) -> int:
    with open("/proc/sys/net/core/" + name) as fh:
        return int(fh.read())


def expected_grant(asked: int) -> int:
    """Linux caps a SO_RCVBUF request at net.core.rmem_max and doubles it."""
    return 2 * min(asked, sysctl("rmem_max"))


@needs_ss
@pytest.mark.parametrize(("setting", "asked"), [({}, 8 << 20), ({"udp_receive_buffer": "1MiB"}, 1 << 20),
                                                ({"udp_receive_buffer": None}, None)],
                         ids=["default", "1MiB", "null"])
def test_receive_buffer_is_applied(tmp_path, setting, asked):
    port = free_port()
    with pipeline(tmp_path, {"type": "syslog", "udp": f"127.0.0.1:{port}", **setting}) as agent:
        want = sysctl("rmem_default") if asked is None else expected_grant(asked)
        assert kernel_rcvbuf(port) == want
        assert agent.context.metrics.value("udp_receive_buffer_bytes", kind="source", component="src") == want


def test_burst_on_loopback_loses_nothing_at_the_default(tmp_path):
    """2,000 RFC 5424 datagrams sent back to back (the kernel's default buffer held ~800 of them).

    Fewer where net.core.rmem_max caps the grant: each small datagram takes up to ~2 KiB of the
    buffer (the kernel counts its bookkeeping), so the burst is sized to what the grant holds.
    """
    port = free_port()
    sent = min(2000, expected_grant(8 << 20) // 2048)
    src = {"type": "syslog", "udp": f"127.0.0.1:{port}", "flush_interval": "50ms"}
    with pipeline(tmp_path, src) as agent:
        sink = agent.sinks["out"]
        payloads = [b"<14>1 2026-12-05T19:00:00.000Z host burst - - - burst message %06d padded to a usual size"
                    b" of a log line, neither tiny nor large" % i for i in range(sent)]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.connect(("127.0.0.1", port))
            for p in payloads:
                u.send(p)
        wait_for(lambda: len(sink.records()) >= sent, 30, message=f"{sent} records")
        records = sink.records("syslog:burst")
        assert records == payloads
        assert metric(agent, "messages_in") == sent
        assert metric(agent, "dropped_messages") == 0


def _recv_datagrams():
    from agent.sources.syslog import framing

    if framing.recv_datagrams is None:
        pytest.skip("agent/sources/syslog/_scan.c is not built")
    return framing.recv_datagrams


@pytest.mark.parametrize("family, host", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_recv_datagrams_takes_waiting_datagrams_in_runs_of_one_sender(family, host):
    """One recvmmsg: at most a slot count, whole datagrams (up to 64 KiB), runs per sender as recvfrom names it."""
    recv = _recv_datagrams()
    try:
        rx = socket.socket(family, socket.SOCK_DGRAM)
        rx.bind((host, 0))
    except OSError:
        pytest.skip(f"no {host} on this machine")
    with rx, socket.socket(family, socket.SOCK_DGRAM) as a, socket.socket(family, socket.SOCK_DGRAM) as b:
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        a.bind((host, 0))
        b.bind((host, 0))
        port = rx.getsockname()[1]
        sent = [(a, b"a1"), (a, b"a2"), (b, b"b1"), (a, b""), (a, b"x" * 60000)] + [(b, b"n%d" % i) for i in range(70)]
        by_a = {data: s is a for s, data in sent}
        for s, data in sent:
            s.sendto(data, (host, port))
        rx.setblocking(False)
        peer_a = a.getsockname()[0]
        scratch = bytearray(4 * 65535)
        got = []
        while len(got) < len(sent):
            runs = recv(rx.fileno(), scratch, 65535, 10_000)  # waits for the next datagram, up to 10 s
            assert runs, "datagrams sent were not received"
            assert sum(len(ds) for _, ds in runs) <= 4  # no more than the scratch's slots
            got += [(peer, d) for peer, ds in runs for d in ds]
            assert all(len({by_a[d] for d in ds}) == 1 for _, ds in runs)  # a run is one sender's
        assert [d for _, d in got] == [data for _, data in sent]
        assert {peer for peer, _ in got} == {peer_a} == {b.getsockname()[0]}  # both senders on one host
        t0 = time.monotonic()
        assert recv(rx.fileno(), scratch, 65535, 200) == []  # nothing waiting: [] after the timeout
        assert 0.15 < time.monotonic() - t0 < 5
        with pytest.raises(ValueError):
            recv(rx.fileno(), bytearray(10), 65535, 0)
