"""syslog source: real senders (logger(1), rsyslog, TLS clients), back-pressure, hostile input."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
import time

import pytest

from logflume.chunk import FLAG_TRUNCATED
from logflume.component import Context
from logflume.errors import ConfigError, StartupError
from logflume.topology import build_topology
from tests.conftest import free_port, wait_for
from tests.sources.conftest import rss_bytes
from tests.sources.pipeline import metric, pipeline

pytestmark = pytest.mark.timeout(120)

needs_logger = pytest.mark.skipif(shutil.which("logger") is None, reason="logger(1) (util-linux) not installed")


def syslog(port: int, **extra) -> dict:
    return {"type": "syslog", "tcp": f"127.0.0.1:{port}", "udp": f"127.0.0.1:{port}", "flush_interval": "50ms",
            **extra}


def logger_send(port: int, lines: list[str], *flags: str, tag: str = "myapp") -> None:
    subprocess.run(["logger", "-n", "127.0.0.1", "-P", str(port), "-t", tag, *flags],
                   input=("\n".join(lines) + "\n").encode(), check=True, timeout=30)


@needs_logger
@pytest.mark.parametrize("flags", [
    ("--tcp", "--rfc5424"),
    ("--tcp", "--rfc3164"),
    ("--tcp", "--rfc5424", "--octet-count"),
    ("--tcp", "--rfc3164", "--octet-count"),
    ("--udp", "--rfc5424"),
    ("--udp", "--rfc3164"),
], ids=lambda f: "-".join(x.strip("-") for x in f))
def test_logger_messages_all_arrive(tmp_path, flags):
    port = free_port()
    lines = [f"message number {i} from logger" for i in range(300)]
    with pipeline(tmp_path, syslog(port)) as agent:
        sink = agent.sinks["out"]
        if "--udp" in flags:
            for i in range(0, 300, 50):  # paced: the kernel may drop a UDP burst before we see it
                logger_send(port, lines[i:i + 50], *flags)
                time.sleep(0.05)
        else:
            logger_send(port, lines, *flags)
        wait_for(lambda: len(sink.records()) >= 300, 15, message="300 records")
        time.sleep(0.2)
        records = sink.records("syslog:myapp")
        assert len(records) == 300
        assert {c.stream for c in sink.chunks} == {"syslog:myapp"}
        assert {c.datatype for c in sink.chunks} == {"SysLog"}
        for i, rec in enumerate(records):
            assert rec.startswith(b"<13>")
            assert rec.endswith(f"message number {i} from logger".encode())
        if "--rfc5424" in flags:
            assert records[0][4:6] == b"1 "
        assert metric(agent, "messages_in") == 300
        # seq_id is the end offset, strictly increasing, and covers every byte.
        chunks = sorted(sink.chunks, key=lambda c: c.seq_id)
        assert chunks[0].start == 0
        assert all(a.seq_id == b.start for a, b in zip(chunks, chunks[1:], strict=False))


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_a_source_that_keeps_up_sends_within_caught_up_flush_not_flush_interval(tmp_path, transport):
    """By default a message is sent once the source has read all that was waiting, not a minute later."""
    port = free_port()
    src = {"type": "syslog", transport: f"127.0.0.1:{port}", "flush_interval": "60s"}  # caught_up_flush: default
    with pipeline(tmp_path, src) as agent:
        sink = agent.sinks["out"]
        kind = socket.SOCK_STREAM if transport == "tcp" else socket.SOCK_DGRAM
        with socket.socket(socket.AF_INET, kind) as s:
            s.connect(("127.0.0.1", port))
            s.sendall(b"<13>Dec  7 12:00:00 web1 myapp: one message\n")
            # Far inside the 60 s flush_interval even on a loaded machine; kept open: no EOF flush.
            wait_for(lambda: len(sink.records()) >= 1, 20, message="the message at the sink")
        assert sink.records("syslog:myapp") == [b"<13>Dec  7 12:00:00 web1 myapp: one message"]


def test_octet_counting_keeps_multiline_messages_whole(tmp_path):
    port = free_port()
    with pipeline(tmp_path, syslog(port)) as agent:
        sink = agent.sinks["out"]
        with socket.create_connection(("127.0.0.1", port)) as s:
            for i in range(3):
                msg = f"<14>1 2026-01-01T00:00:00Z h app - - - line one {i}\nline two {i}".encode()
                s.sendall(b"%d %s" % (len(msg), msg))
        wait_for(lambda: len(list(r for c in sink.chunks for r in c.records())) >= 3, 10)
        recs = [bytes(r) for c in sink.chunks for r in c.records()]
        assert recs[1] == b"<14>1 2026-01-01T00:00:00Z h app - - - line one 1\nline two 1\n"


def test_stream_template_by_host_and_severity(tmp_path):
    port = free_port()
    with pipeline(tmp_path, syslog(port, stream="syslog:{host}/{severity}/{transport}")) as agent:
        sink = agent.sinks["out"]
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"<11>1 2026-01-01T00:00:00Z web1 nginx 12 - - a\n"
                      b"<14>Jan  1 00:00:00 db2 postgres[7]: b\n"
                      b"<11>1 2026-01-01T00:00:00Z web1 nginx 12 - - c\n")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.sendto(b"<14>Jan  1 00:00:00 db2 postgres[7]: d", ("127.0.0.1", port))
        wait_for(lambda: len(sink.records()) >= 4, 10)
        streams = {c.stream for c in sink.chunks}
        assert streams == {"syslog:web1/err/tcp", "syslog:db2/info/tcp", "syslog:db2/info/udp"}
        assert [r[-1:] for r in sink.records("syslog:web1/err/tcp")] == [b"a", b"c"]


@pytest.mark.skipif(shutil.which("rsyslogd") is None, reason="rsyslog not installed (apt-get install -y rsyslog)")
@pytest.mark.parametrize("framing", ["traditional", "octet-counted"])
def test_rsyslog_forwards_to_source(tmp_path, framing):
    port, rport = free_port(), free_port()
    work = tmp_path / "rsyslog"
    work.mkdir()
    cfg = tmp_path / "rsyslog.conf"
    cfg.write_text(f"""
global(workDirectory="{work}")
module(load="imtcp")
input(type="imtcp" address="127.0.0.1" port="{rport}")
action(type="omfwd" target="127.0.0.1" port="{port}" protocol="tcp" TCP_Framing="{framing}"
       template="RSYSLOG_SyslogProtocol23Format")
""")
    with pipeline(tmp_path, syslog(port)) as agent:
        sink = agent.sinks["out"]
        proc = subprocess.Popen(["rsyslogd", "-n", "-f", str(cfg), "-i", str(tmp_path / "rsyslog.pid")],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            def listening():
                try:
                    socket.create_connection(("127.0.0.1", rport), timeout=0.5).close()
                    return True
                except OSError:
                    return False
            wait_for(listening, 15, message="rsyslogd listening")
            lines = [f"relayed message {i}" for i in range(200)]
            logger_send(rport, lines, "--tcp", "--rfc5424", tag="relayed")
            wait_for(lambda: len(sink.records("syslog:relayed")) >= 200, 20, message="200 relayed records")
            recs = sink.records("syslog:relayed")
            assert len(recs) == 200
            assert [r.rsplit(b" ", 1)[-1] for r in recs] == [str(i).encode() for i in range(200)]
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def test_tls(tmp_path, tls_cert):
    cert, key = tls_cert
    port = free_port()
    src = {"type": "syslog", "tcp": f"127.0.0.1:{port}", "tls": {"cert": str(cert), "key": str(key)},
           "flush_interval": "50ms", "stream": "syslog:{transport}"}
    with pipeline(tmp_path, src) as agent:
        sink = agent.sinks["out"]
        ctx = ssl.create_default_context(cafile=str(cert))
        with socket.create_connection(("127.0.0.1", port)) as raw, \
                ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            for i in range(100):
                msg = f"<13>1 2026-01-01T00:00:00Z h app - - - secret {i}".encode()
                s.sendall(b"%d %s" % (len(msg), msg))
            # Half-close and read to EOF: closing with unread TLS session tickets would reset the connection
            # and make the kernel discard what the source has not read yet.
            s.shutdown(socket.SHUT_WR)
            s.settimeout(10)
            while s.recv(1024):
                pass
        # A plain-text client on the TLS port is refused without harming the source.
        with socket.create_connection(("127.0.0.1", port)) as plain:
            plain.sendall(b"<13>not tls\n")
            plain.settimeout(5)
            try:
                plain.recv(100)
            except OSError:
                pass
        wait_for(lambda: len(sink.records()) >= 100, 10)
        assert sink.records("syslog:tls")[-1].endswith(b"secret 99")
        assert len(sink.records()) == 100


def test_tcp_backpressure_stops_reading_and_loses_nothing(tmp_path):
    """A full channel stops the socket reads: the sender blocks; once the sink drains, every message arrives."""
    port = free_port()
    gate = tmp_path / "gate"
    src = syslog(port, chunk_size="4KiB", max_message_size="1KiB")
    msg_count = 100_000
    payload = b"".join(b"<13>1 2026-01-01T00:00:00Z h app - - - %0179d\n" % i for i in range(msg_count))
    assert len(payload) == msg_count * 219
    with pipeline(tmp_path, src, capacity="64KiB", gate=gate) as agent:
        sink = agent.sinks["out"]
        s = socket.create_connection(("127.0.0.1", port))
        s.setblocking(False)
        sent, stalled_since = 0, None
        while sent < len(payload):
            try:
                sent += s.send(payload[sent:sent + 65536])
                stalled_since = None
            except BlockingIOError:
                stalled_since = stalled_since or time.monotonic()
                if time.monotonic() - stalled_since > 1.5:
                    break
                time.sleep(0.01)
        # The sender is stuck well before the end: kernel buffers plus a 64 KiB channel hold far less than 22 MB.
        assert sent < len(payload) // 2, f"sender was never slowed down ({sent} bytes accepted)"
        assert agent.channels["ch"].size_bytes() <= 64 * 1024
        assert not sink.chunks
        gate.touch()
        s.setblocking(True)
        s.settimeout(60)
        s.sendall(payload[sent:])
        s.close()
        wait_for(lambda: len(sink.records()) >= msg_count, 60, message=f"{msg_count} records")
        recs = sink.records()
        assert len(recs) == msg_count
        assert recs[-1].endswith(b"%0179d" % (msg_count - 1))
        assert len(set(recs)) == msg_count


def test_udp_drops_are_counted_not_silent(tmp_path, caplog):
    port = free_port()
    gate = tmp_path / "gate"
    src = {"type": "syslog", "udp": f"127.0.0.1:{port}", "flush_interval": "20ms", "chunk_size": "4KiB",
           "max_message_size": "1KiB", "udp_queue_size": "64KiB"}
    with pipeline(tmp_path, src, capacity="16KiB", gate=gate) as agent:
        sink = agent.sinks["out"]
        sent = 3000
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            for i in range(sent):
                u.sendto(b"<13>Jan  1 00:00:00 h app: %0180d" % i, ("127.0.0.1", port))
                if i % 20 == 19:
                    time.sleep(0.002)
        wait_for(lambda: metric(agent, "dropped_messages") > 0, 10, message="drops counted")
        gate.touch()

        def settled():
            return len(sink.records()) + metric(agent, "dropped_messages") >= sent

        wait_for(settled, 20, message="received + dropped == sent")
        time.sleep(0.3)
        received = len(sink.records())
        dropped = metric(agent, "dropped_messages")
        assert received + dropped == sent
        assert metric(agent, "dropped_bytes") == dropped * len(b"<13>Jan  1 00:00:00 h app: ") + dropped * 180
        assert received > 0 and dropped > 0
        assert "dropped" in caplog.text and "UDP message(s)" in caplog.text


def test_oversized_messages_truncated_and_flagged(tmp_path):
    port = free_port()
    with pipeline(tmp_path, syslog(port, max_message_size="1KiB")) as agent:
        sink = agent.sinks["out"]
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"<13>long " + b"a" * 5000 + b"\n<13>after lf\n")
            big = b"<13>long " + b"b" * 5000
            s.sendall(b"%d %s" % (len(big), big) + b"12 <13>after oc")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.sendto(b"<13>udp " + b"c" * 5000, ("127.0.0.1", port))
        wait_for(lambda: len(sink.records()) >= 5, 10)
        recs = sink.records()
        assert sorted(len(r) for r in recs if b"long" in r or b"udp" in r) == [1024, 1024, 1024]
        assert b"<13>after lf" in recs and b"<13>after oc" in recs
        assert metric(agent, "truncated_messages") == 3
        assert any(FLAG_TRUNCATED in c.flags for c in sink.chunks)


def test_hostile_input_leaves_source_running_with_bounded_memory(tmp_path):
    port = free_port()
    with pipeline(tmp_path, syslog(port, max_message_size="4KiB")) as agent:
        sink = agent.sinks["out"]
        before = rss_bytes()
        # 1. An endless line without a delimiter: 64 MiB streamed, memory must not follow.
        with socket.create_connection(("127.0.0.1", port)) as s:
            block = b"z" * (1 << 20)
            for _ in range(64):
                s.sendall(block)
            grown = rss_bytes() - before
            s.sendall(b"\n<13>after endless\n")
        assert grown < 32 << 20, f"memory grew by {grown >> 20} MiB on an endless line"
        # 2. A huge octet-count prefix (swallows the rest of that connection, costs nothing).
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"9999999999 <13>" + b"q" * 100_000)
        # 3. Digits too long to be a length, and binary garbage.
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"99999999999999999999999 not a length\n" + bytes(range(256)) * 100 + b"\n")
        # 4. A slow sender trickling bytes does not hold up a normal one.
        slow = socket.create_connection(("127.0.0.1", port))
        stop = threading.Event()

        def trickle():
            for b in b"<13>slow message\n":
                if stop.wait(0.05):
                    return
                slow.sendall(bytes([b]))

        t = threading.Thread(target=trickle)
        t.start()
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"<13>quick message\n")
        wait_for(lambda: b"<13>quick message" in sink.records(), 5, message="quick message past the slow sender")
        t.join(10)
        slow.close()
        stop.set()
        wait_for(lambda: b"<13>slow message" in sink.records(), 5)
        wait_for(lambda: b"<13>after endless" in sink.records(), 5)
        recs = sink.records()
        assert b"99999999999999999999999 not a length" in recs
        assert any(len(r) == 4096 and r.startswith(b"zzz") for r in recs)
        assert any(r.startswith(b"<13>qqq") and len(r) == 4096 for r in recs)
        assert agent.sources["src"]._tcp.connections == 0
        # Still serving.
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"<13>still alive\n")
        wait_for(lambda: b"<13>still alive" in sink.records(), 5)


def test_max_connections(tmp_path):
    port = free_port()
    with pipeline(tmp_path, syslog(port, max_connections=2)) as agent:
        sink = agent.sinks["out"]
        a = socket.create_connection(("127.0.0.1", port))
        b = socket.create_connection(("127.0.0.1", port))
        wait_for(lambda: agent.sources["src"]._tcp.connections == 2, 5)
        c = socket.create_connection(("127.0.0.1", port))
        c.settimeout(5)
        assert c.recv(10) == b""  # closed by the source
        wait_for(lambda: metric(agent, "rejected_connections") == 1, 5)
        a.sendall(b"<13>from a\n")
        a.close()
        b.close()
        c.close()
        wait_for(lambda: sink.records() == [b"<13>from a"], 5)


def test_numbering_continues_across_restart(tmp_path):
    port = free_port()
    data = tmp_path / "state"
    firsts = []
    for run in range(2):
        with pipeline(tmp_path, syslog(port), data_dir=data) as agent:
            sink = agent.sinks["out"]
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(b"<13>1 - h app - - - run %d\n" % run * 10)
            wait_for(lambda sink=sink: len(sink.records()) >= 10, 10)
            firsts.append(sink.chunks)
    epochs = {c.epoch for chunks in firsts for c in chunks}
    assert len(epochs) == 1, "a restart with its state kept must continue the same numbering"
    assert min(c.start for c in firsts[1]) >= max(c.seq_id for c in firsts[0])


@pytest.mark.parametrize(("extra", "path", "words"), [
    ({"tcp": None, "udp": None}, "sources.src", "at least one of tcp"),
    ({"stream": "syslog:{appname}"}, "sources.src.stream", "unknown field {appname}"),
    ({"max_message_size": "2MiB"}, "sources.src.max_message_size", "smaller than chunk_size"),
    ({"tcp": None, "udp": "127.0.0.1:1", "tls": {"cert": "/c.pem"}}, "sources.src.tcp", "tls needs a tcp listener"),
    ({"tcp": "0.0.0.0:1"}, "sources.src.tcp", "without authentication: set tls with client_ca"),
    ({"tcp": None, "udp": "0.0.0.0:1"}, "sources.src.udp", "without authentication"),
    ({"tcp": "nonsense"}, "sources.src.tcp", "HOST:PORT"),
])
def test_config_errors(tmp_path, extra, path, words):
    raw = {"sources": {"src": {**syslog(1), **extra, "channels": ["ch"]}},
           "channels": {"ch": {"type": "memory"}}, "sinks": {"out": {"type": "null", "channel": "ch"}}}
    with pytest.raises(ConfigError) as exc:
        build_topology(raw, "agent.yaml", Context(data_dir=tmp_path))
    assert exc.value.path == path
    assert words in str(exc.value)


def test_port_in_use_is_a_startup_error(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(StartupError, match=f"src: cannot listen on 127.0.0.1:{port}"):
            with pipeline(tmp_path, {"type": "syslog", "tcp": f"127.0.0.1:{port}"}):
                pass
