"""A measured model of the two zero-copy directions of issue 20, against the copies made today.

    python -m bench.zerocopy_model [--size-mb 256] [--rounds 5]

Moves a file of ``--size-mb`` MiB (page cache) in 64 MiB chunks from a sender process to a
receiver process over loopback TCP, the way each design would, with nothing else of logflume
around it, and measures wall time and each process's CPU seconds:

- sender ``today``: ``pread`` 1 MiB blocks (kernel -> user), append them to a chunk bytearray
  (user -> user, as the chunker does), find the last newline, ``sendmsg`` the chunk (user -> kernel);
- sender ``ranges`` (direction 1, a channel of file ranges): map the range, find the last newline
  in the mapping (reads the page cache, copies nothing), ``os.sendfile`` the range (no user copy);
- receiver ``today``: ``recv_into`` a 64 MiB buffer (kernel -> user), ``write`` it to the sink file
  (user -> kernel);
- receiver ``splice`` (direction 2): ``os.splice`` socket -> pipe -> sink file, 1 MiB at a time
  (the bytes never enter user space).

Each pair runs ``--rounds`` times, interleaved, after ``sync``; medians are reported.  It models
only the copies: the real agent and collector add framing, channel bookkeeping and Python work per
chunk, which is the same in every design.
"""

from __future__ import annotations

import argparse
import mmap
import os
import resource
import socket
import statistics
import sys
import time
from pathlib import Path

from bench.e2e.generator import generate
from bench.e2e.settle import settle

CHUNK = 64 << 20
BLOCK = 1 << 20


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def send_today(sock: socket.socket, fd: int, size: int) -> None:
    pos = 0
    while pos < size:
        chunk = bytearray()
        end = min(pos + CHUNK, size)
        while pos < end:
            data = os.pread(fd, min(BLOCK, end - pos), pos)
            chunk += data
            pos += len(data)
        chunk.rfind(b"\n")  # where the chunker would cut (the model sends whole 64 MiB pieces)
        sock.sendall(chunk)


def send_ranges(sock: socket.socket, fd: int, size: int) -> None:
    pos = 0
    with mmap.mmap(fd, size, prot=mmap.PROT_READ) as m:
        while pos < size:
            end = min(pos + CHUNK, size)
            m.rfind(b"\n", pos, end)  # the cut, found in the page cache without a copy
            while pos < end:
                pos += os.sendfile(sock.fileno(), fd, pos, end - pos)


def recv_today(conn: socket.socket, out: int, size: int) -> None:
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    got = 0
    while got < size:
        want = min(CHUNK, size - got)
        n = 0
        while n < want:
            r = conn.recv_into(view[n:want])
            if not r:
                raise EOFError
            n += r
        w = 0
        while w < n:
            w += os.write(out, view[w:n])
        got += n


def recv_splice(conn: socket.socket, out: int, size: int) -> None:
    r, w = os.pipe()
    try:
        import fcntl

        fcntl.fcntl(w, 1031, BLOCK)  # F_SETPIPE_SZ: a 1 MiB pipe
        got = 0
        while got < size:
            n = os.splice(conn.fileno(), w, min(BLOCK, size - got))
            if n == 0:
                raise EOFError
            left = n
            while left:
                left -= os.splice(r, out, left)
            got += n
    finally:
        os.close(r)
        os.close(w)


SENDERS = {"today": send_today, "ranges": send_ranges}
RECEIVERS = {"today": recv_today, "splice": recv_splice}


def one(src: str, size: int, sender: str, receiver: str, out_path: Path) -> dict[str, float]:
    """Fork a receiver, send from here; return wall seconds and both sides' CPU seconds."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    rpipe, wpipe = os.pipe()
    pid = os.fork()
    if pid == 0:  # receiver
        os.close(rpipe)
        conn, _ = srv.accept()
        c0 = _cpu()
        out = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        RECEIVERS[receiver](conn, out, size)
        os.close(out)
        end = time.monotonic()
        os.write(wpipe, f"{_cpu() - c0} {end}".encode())
        os._exit(0)
    os.close(wpipe)
    srv.close()
    fd = os.open(src, os.O_RDONLY)
    with socket.create_connection(("127.0.0.1", port)) as s:
        t0 = time.monotonic()
        c0 = _cpu()
        SENDERS[sender](s, fd, size)
        send_cpu = _cpu() - c0
        reply = b""
        while chunk := os.read(rpipe, 100):
            reply += chunk
    os.close(fd)
    os.close(rpipe)
    os.waitpid(pid, 0)
    recv_cpu, end = (float(x) for x in reply.split())
    assert os.path.getsize(out_path) == size
    out_path.unlink()
    return {"seconds": end - t0, "send_cpu": send_cpu, "recv_cpu": recv_cpu}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.zerocopy_model", description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--work-dir", default=str(Path(__file__).resolve().parent / "work" / "zerocopy"))
    a = ap.parse_args(argv)
    work = Path(a.work_dir)
    ds = generate(work / "data", a.size_mb << 20, 1, "app")
    src, size = ds.files[0], ds.total_bytes
    with open(src, "rb") as f:  # into page cache
        while f.read(8 << 20):
            pass
    pairs = [(s, r) for s in SENDERS for r in RECEIVERS]
    runs: dict[tuple[str, str], list[dict[str, float]]] = {p: [] for p in pairs}
    loads = []
    for _ in range(a.rounds):
        for p in pairs:
            settle()
            loads.append(os.getloadavg()[0])
            runs[p].append(one(src, size, *p, work / "out.bin"))
    gb = size / 1e9
    print(f"{size >> 20} MiB in 64 MiB chunks, medians of {a.rounds} interleaved rounds, "
          f"load average {min(loads):.1f}-{max(loads):.1f}")
    print("| sender | receiver | MB/s | sender CPU s/GB | receiver CPU s/GB | total CPU s/GB |")
    print("|---|---|---:|---:|---:|---:|")
    for (s, r), rs in runs.items():
        sec = statistics.median(x["seconds"] for x in rs)
        sc = statistics.median(x["send_cpu"] for x in rs) / gb
        rc = statistics.median(x["recv_cpu"] for x in rs) / gb
        print(f"| {s} | {r} | {size / 1e6 / sec:,.0f} | {sc:.2f} | {rc:.2f} | {sc + rc:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
