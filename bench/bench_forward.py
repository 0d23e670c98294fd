"""Agent -> collector forwarding throughput, against a plain loopback socket copy of the same bytes, in one run.

A real collector process (``python -m logflume collector``, store ``null``:
the bench measures the wire, not a disk) is fed by the agent's
``CollectorSink.deliver`` in this process, exactly as the agent's sink runner
calls it.  The baseline is a child process that reads a plain TCP socket with
``recv_into`` into a reusable buffer while this process writes the very same
chunk buffers with ``sendmsg``: the best a socket copy of those bytes can do.

Cases: 64 MiB chunks (one per call), many small chunks (4 KiB, 1000 per
call, as the runner batches them), and both again with zstd / lz4 bodies on
log-like data, to show whether compression pays on this link.

    .venv/bin/python bench/bench_forward.py [--big-total 512MiB] [--small-total 64MiB] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from logflume.chunk import Chunk  # noqa: E402
from logflume.component import Context  # noqa: E402
from logflume.settings import parse_settings, parse_size  # noqa: E402
from sinks.to_collector import CollectorSink  # noqa: E402

MIB = 1 << 20

RECEIVER = r"""
import socket, sys
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
print(srv.getsockname()[1], flush=True)
buf = bytearray(4 << 20); view = memoryview(buf)
while True:
    conn, _ = srv.accept()
    total = 0
    while True:
        n = conn.recv_into(view)
        if not n:
            break
        total += n
    conn.sendall(total.to_bytes(8, "big")); conn.close()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_like(size: int) -> bytes:
    """Compressible data that looks like access logs (not one repeated line)."""
    import random

    rnd = random.Random(7)
    lines = []
    n = 0
    while n < size:
        ip = f"10.{rnd.randrange(256)}.{rnd.randrange(256)}.{rnd.randrange(256)}"
        when = f"25/Nov/2026:03:{rnd.randrange(60):02d}:{rnd.randrange(60):02d} +0000"
        status = rnd.choice((200, 200, 200, 304, 404, 500))
        line = (f'{ip} - - [{when}] "GET /api/v1/items/{rnd.randrange(10**6)} HTTP/1.1" {status} '
                f'{rnd.randrange(10**5)} "-" "curl/8.{rnd.randrange(9)}"\n')
        lines.append(line)
        n += len(line)
    return "".join(lines).encode()[:size]


def make_chunks(payload: bytes, size: int, total: int) -> list[Chunk]:
    view = memoryview(payload)
    out = []
    for i in range(total // size):
        start = (i * size) % (len(payload) - size + 1)
        out.append(Chunk("bench", "s", "Raw", (i + 1) * size, "e", view[start:start + size]))
    return out


def batches(chunks: list[Chunk], batch_bytes: int, batch_chunks: int) -> list[list[Chunk]]:
    """Group as the sink runner does: until batch_bytes or batch_chunks (a big chunk goes alone)."""
    out, run, size = [], [], 0
    for c in chunks:
        run.append(c)
        size += len(c)
        if size >= batch_bytes or len(run) >= batch_chunks:
            out.append(run)
            run, size = [], 0
    if run:
        out.append(run)
    return out


def plain_copy(port: int, groups: list[list[Chunk]]) -> float:
    """Seconds to push the same buffers through a plain socket (sendmsg, up to 1024 buffers per call)."""
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for group in groups:
            views = [memoryview(c.data) for c in group]
            for i in range(0, len(views), 1024):
                part = views[i:i + 1024]
                want = sum(len(v) for v in part)
                sent = s.sendmsg(part)
                if sent < want:  # finish a partial gather with sendall of the rest
                    for v in part:
                        if sent >= len(v):
                            sent -= len(v)
                        else:
                            s.sendall(v[sent:])
                            sent = 0
        s.shutdown(socket.SHUT_WR)
        got = int.from_bytes(s.recv(8), "big")
    dt = time.perf_counter() - t0
    expect = sum(len(c) for g in groups for c in g)
    assert got == expect, (got, expect)
    return dt


def forward(port: int, groups: list[list[Chunk]], compression: str) -> float:
    raw = {"channel": "c", "collectors": [f"127.0.0.1:{port}"], "compression": compression}
    sink = CollectorSink("bench", parse_settings(CollectorSink.schema(), raw, "sinks.bench", None),
                         Context(agent_name="bench", data_dir=Path(tempfile.gettempdir())))
    sink.start()
    sink.deliver(groups[0][:1])  # connect + handshake outside the clock
    t0 = time.perf_counter()
    for group in groups:
        sink.deliver(group)
    dt = time.perf_counter() - t0
    sink.stop()
    return dt


def best(fn, repeat: int) -> float:
    return min(fn() for _ in range(repeat))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--big-total", default="512MiB")
    ap.add_argument("--small-total", default="64MiB")
    ap.add_argument("--small-size", default="4KiB")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    big_total, small_total = parse_size(args.big_total), parse_size(args.small_total)
    small_size = parse_size(args.small_size)

    work = Path(tempfile.mkdtemp(prefix="bench-forward-"))
    port = free_port()
    cfg = work / "collector.yaml"
    cfg.write_text(f"collector:\n  name: bench\n  listen: 127.0.0.1:{port}\n  data_dir: {work}\n"
                   f"  max_frame_size: 160MiB\n  max_pending_bytes: 1GiB\n  log_level: WARNING\n"
                   f"store:\n  type: \"null\"\n")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    collector = subprocess.Popen([sys.executable, "-m", "logflume", "collector", "-c", str(cfg)], cwd=REPO, env=env)
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER], stdout=subprocess.PIPE, text=True)
    try:
        plain_port = int(receiver.stdout.readline())
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or collector.poll() is not None:
                    raise SystemExit("collector did not start") from None
                time.sleep(0.1)

        random_big = os.urandom(MIB) * 64 + os.urandom(MIB)
        logs_big = log_like(65 * MIB)
        cases = [
            ("64MiB chunks, random", make_chunks(random_big, 64 * MIB, big_total), "none"),
            (f"{args.small_size} chunks, random", make_chunks(random_big, small_size, small_total), "none"),
            ("64MiB chunks, logs", make_chunks(logs_big, 64 * MIB, big_total // 2), "none"),
            ("64MiB chunks, logs", make_chunks(logs_big, 64 * MIB, big_total // 2), "zstd"),
            ("64MiB chunks, logs", make_chunks(logs_big, 64 * MIB, big_total // 2), "lz4"),
            (f"{args.small_size} chunks, logs", make_chunks(logs_big, small_size, small_total), "zstd"),
            (f"{args.small_size} chunks, logs", make_chunks(logs_big, small_size, small_total), "lz4"),
        ]
        print(f"agent -> collector over loopback (best of {args.repeat}); baseline: plain socket copy of the same "
              f"buffers in this run\n")
        print(f"{'case':<26} {'compression':<12} {'MB':>7} {'forward MB/s':>13} {'plain MB/s':>11} {'ratio':>7}"
              f" {'chunks/s':>10}")
        for name, chunks, comp in cases:
            groups = batches(chunks, 8 * MIB, 1000)
            total = sum(len(c) for c in chunks)
            t_plain = best(lambda g=groups: plain_copy(plain_port, g), args.repeat)
            t_fwd = best(lambda g=groups, c=comp: forward(port, g, c), args.repeat)
            mbs_f, mbs_p = total / t_fwd / 1e6, total / t_plain / 1e6
            if comp != "none":
                from logflume.wire.protocol import compress

                sample = chunks[: max(1, len(chunks) // 8)]
                ratio = sum(len(c) for c in sample) / sum(len(compress(c.data, comp)) for c in sample)
                comp = f"{comp} {ratio:.1f}x"
            print(f"{name:<26} {comp:<12} {total / 1e6:>7.0f} {mbs_f:>13.0f} {mbs_p:>11.0f} {mbs_f / mbs_p:>7.2f}"
                  f" {len(chunks) / t_fwd:>10.0f}")
    finally:
        for p in (collector, receiver):
            p.terminate()
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
