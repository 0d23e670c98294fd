"""Events per second through the syslog (TCP), forward and http sources, 200-byte messages.

Each case runs an in-process agent pipeline (source -> memory channel -> null
sink) and a sender in a separate process that pushes pre-built bytes over
loopback TCP.  The clock runs from the sender's first byte until the null sink
has taken every event.  The baseline, measured in the same run, is the same
sender pushing the same bytes to a plain Python reader that only
``recv_into``s and discards: the ratio says how much of the raw loopback rate
the source keeps while framing, parsing, chunking and committing.

    .venv/bin/python bench/bench_sources.py [--events 200000]
"""

from __future__ import annotations

import argparse
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import msgpack

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from agent.agent import Agent  # noqa: E402
from bench.e2e.small_events import http_request  # noqa: E402
from logflume.component import Context  # noqa: E402
from logflume.metrics import Metrics  # noqa: E402
from logflume.topology import build_topology  # noqa: E402

MESSAGE_SIZE = 200
SENDER = """
import socket, sys
data = open(sys.argv[3], "rb").read()
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
view = memoryview(data)
for i in range(0, len(data), 1 << 20):
    s.sendall(view[i:i + (1 << 20)])
s.shutdown(socket.SHUT_WR)
s.recv(1)
s.close()
"""
#: Events per Forward message and per HTTP POST (sent by bench.e2e.small_events' lean client).
BATCH_LINES = 1000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def syslog_payload(n: int) -> bytes:
    head = b"<13>1 2026-01-01T00:00:00.000Z web1 nginx 4242 - - "
    body_len = MESSAGE_SIZE - len(head) - 1
    return b"".join(head + b"%0*d" % (body_len, i) + b"\n" for i in range(n))


def forward_payload(n: int) -> bytes:
    one = msgpack.packb(["app.web", 1767225600, {"message": "x" * 160, "n": 0}])
    pad = MESSAGE_SIZE - len(one)
    return b"".join(msgpack.packb(["app.web", 1767225600, {"message": "x" * (160 + pad), "n": 0}])
                    for _ in range(n))


def packed_forward_payload(n: int) -> bytes:
    """PackedForward messages of BATCH_LINES events with EventTime stamps, as Fluent Bit's forward output sends."""
    stamp = msgpack.ExtType(0, struct.pack(">II", 1767225600, 5))
    one = msgpack.packb([stamp, {"message": "x" * 160, "n": 0}], use_bin_type=True)
    event = msgpack.packb([stamp, {"message": "x" * (160 + MESSAGE_SIZE - len(one)), "n": 0}], use_bin_type=True)
    out = []
    for i in range(0, n, BATCH_LINES):
        out.append(msgpack.packb(["app.web", event * min(BATCH_LINES, n - i)], use_bin_type=True))
    return b"".join(out)


def ndjson_payload(n: int) -> bytes:
    """POSTs of BATCH_LINES NDJSON lines, ready to send."""
    one = b'{"message":"%s","n":%d}\n'
    pad = MESSAGE_SIZE - len(one % (b"", 0))
    lines = [one % (b"x" * (pad - len(str(i))), i) for i in range(n)]
    return b"".join(http_request(b"".join(lines[i:i + BATCH_LINES])) for i in range(0, n, BATCH_LINES))


def send(port: int, payload_file: str, http: bool = False) -> subprocess.Popen:
    if http:  # a POST at a time, each after the last one's answer
        return subprocess.Popen([sys.executable, "-m", "bench.e2e.small_events", "send-http", str(port), payload_file],
                                cwd=REPO)
    return subprocess.Popen([sys.executable, "-c", SENDER, "127.0.0.1", str(port), payload_file])


def baseline(payload_file: str, size: int) -> float:
    """Seconds for the raw loopback transfer of the same bytes into a discarding reader."""
    port = free_port()
    srv = socket.socket()
    srv.bind(("127.0.0.1", port))
    srv.listen(1)
    done = threading.Event()
    got = [0]

    def reader():
        conn, _ = srv.accept()
        buf = bytearray(1 << 18)
        while True:
            n = conn.recv_into(buf)
            if not n:
                break
            got[0] += n
        conn.close()
        done.set()

    t = threading.Thread(target=reader)
    t.start()
    t0 = time.perf_counter()
    proc = send(port, payload_file)
    done.wait(300)
    elapsed = time.perf_counter() - t0
    proc.wait(30)
    srv.close()
    assert got[0] == size, (got[0], size)
    return elapsed


def through_source(source: dict, payload_file: str, events: int, counter: str) -> float:
    port = free_port()
    source = {**source, "channels": ["ch"]}
    key = "tcp" if source["type"] == "syslog" else "listen"
    http = source["type"] == "http"
    source[key] = f"127.0.0.1:{port}"
    raw = {"sources": {"src": source}, "channels": {"ch": {"type": "memory", "capacity": "64MiB"}},
           "sinks": {"out": {"type": "null", "channel": "ch"}}}
    with tempfile.TemporaryDirectory() as tmp:
        ctx = Context(agent_name="bench", data_dir=Path(tmp), metrics=Metrics())
        agent = Agent(build_topology(raw, None, ctx))
        agent.start()
        try:
            m = ctx.metrics
            t0 = time.perf_counter()
            proc = send(port, payload_file, http)
            deadline = time.monotonic() + 600
            while m.value(counter + "_total", kind="source", component="src") < events:
                if time.monotonic() > deadline:
                    raise RuntimeError("timed out")
                time.sleep(0.005)
            while (m.value("bytes_in_total", kind="sink", component="out")
                   < m.value("bytes_out_total", kind="source", component="src")
                   or agent.channels["ch"].size_chunks()):
                time.sleep(0.005)
            elapsed = time.perf_counter() - t0
            proc.wait(30)
        finally:
            agent.stop(timeout=10)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()
    n = args.events
    cases = [
        ("syslog tcp (LF framing)", syslog_payload(n),
         {"type": "syslog", "flush_interval": "100ms"}, "messages_in"),
        ("forward (message mode)", forward_payload(n),
         {"type": "forward", "flush_interval": "100ms"}, "events_in"),
        ("forward (PackedForward)", packed_forward_payload(n),
         {"type": "forward", "flush_interval": "100ms"}, "events_in"),
        ("http (NDJSON, 1,000 a POST)", ndjson_payload(n), {"type": "http"}, "records_in"),
    ]
    print(f"{n} events of {MESSAGE_SIZE} bytes each; sender in its own process; {os.cpu_count()} CPUs")
    print(f"{'case':28} {'source ev/s':>12} {'raw loopback ev/s':>18} {'ratio':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, payload, source, counter in cases:
            path = os.path.join(tmp, "payload")
            Path(path).write_bytes(payload)
            base = baseline(path, len(payload))
            took = through_source(source, path, n, counter)
            print(f"{name:28} {n / took:12,.0f} {n / base:18,.0f} {base / took:7.3f}")


if __name__ == "__main__":
    main()
