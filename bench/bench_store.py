"""Benchmark: the collector's store writers, in MB/s of chunk bytes, against a plain file in the same run.

Each mode delivers the same chunks (4 MiB chunks of ~200-byte access-log lines, in
8 MiB batches, as a collector hands them over) through ``SeqFileSink`` with
``sync: every_batch`` (flush + fsync before each ack); the baseline writes the
same bytes to a plain file with the same fsync after each batch.  Also measured:
the ``buffer`` store with its primary up (overhead over the bare sink) and with
its primary down (writes into the secondary).  The size ratio is file bytes
over chunk bytes.  Not a test.

    python bench/bench_store.py [--size-mb 128] [--dir /tmp] [--repeat 3] [--sftp]

``--sftp`` adds the same writer over SFTP to an OpenSSH sshd on loopback (as root,
with the openssh-server package; the server is started and stopped by the bench).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from collector.store import BufferStore  # noqa: E402
from logflume.chunk import Chunk  # noqa: E402
from logflume.component import Context  # noqa: E402
from logflume.settings import parse_settings  # noqa: E402
from sinks.seqfile import SeqFileSink  # noqa: E402

MODES = [("NONE", None)] + [(c, k) for c in ("RECORD", "BLOCK") for k in ("deflate", "gzip", "lz4", "snappy")]
CHUNK = 4 << 20
BATCH = 2  # chunks per deliver: 8 MiB, the agent sink's default batch_bytes


def make_chunks(total: int, distinct: int = 6) -> list[Chunk]:
    """``total`` bytes of access-log chunks (``distinct`` payloads reused to keep setup fast)."""
    rng = random.Random(7)
    payloads = []
    for d in range(distinct):
        lines, size = [], 0
        while size < CHUNK - 300:
            ip = f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}"
            line = (f'{ip} - - [25/Nov/2026:03:{d:02d}:{len(lines) % 60:02d} +0000] "GET /api/v1/items/'
                    f'{rng.randrange(10**6)} HTTP/1.1" {rng.choice((200, 200, 304, 404, 500))} '
                    f'{rng.randrange(100, 90000)} "-" "curl/8.5.0" rt={rng.random():.3f} '
                    f"req={rng.getrandbits(64):016x}\n").encode()
            lines.append(line)
            size += len(line)
        payloads.append(b"".join(lines))
    chunks, seq = [], 0
    while seq < total:
        data = payloads[len(chunks) % distinct]
        seq += len(data)
        chunks.append(Chunk("web-01", "/var/log/nginx/access.log", "NginxAccess", seq, "e1", data,
                            tags={"env": "prod"}))
    return chunks


def batches(chunks: list[Chunk]) -> list[list[Chunk]]:
    return [chunks[i:i + BATCH] for i in range(0, len(chunks), BATCH)]


def run_plain(chunks: list[Chunk], root: Path) -> tuple[float, int]:
    path = root / "plain.log"
    start = time.perf_counter()
    with open(path, "wb") as f:
        for batch in batches(chunks):
            for c in batch:
                f.write(c.data)
            f.flush()
            os.fsync(f.fileno())
    return time.perf_counter() - start, path.stat().st_size


def _files_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and p.suffix in (".seq", ".inprogress"))


def run_sink(chunks: list[Chunk], root: Path, compression: str, codec: str | None) -> tuple[float, int]:
    raw = {"url": str(root / "store"), "compression": compression}
    if codec:
        raw["codec"] = codec
    ctx = Context(agent_name="bench", data_dir=root / "state")
    sink = SeqFileSink("bench", parse_settings(SeqFileSink.schema(), raw, "bench", None), ctx)
    sink.start()
    start = time.perf_counter()
    for batch in batches(chunks):
        sink.deliver(batch)
    sink.stop()
    return time.perf_counter() - start, _files_bytes(root / "store")


def run_buffer(chunks: list[Chunk], root: Path, primary_up: bool) -> tuple[float, int]:
    primary = str(root / "primary") if primary_up else "sftp://nobody@127.0.0.1:1/nowhere"
    raw = {"primary": {"url": primary, "timeout": "1s"}, "secondary": {"dir": str(root / "secondary")},
           "retry_interval": "1h"}
    ctx = Context(agent_name="bench", data_dir=root / "state")
    store = BufferStore("bench", parse_settings(BufferStore.schema(), raw, "bench", None), ctx)
    store.start()
    assert store.primary_up is primary_up
    start = time.perf_counter()
    for batch in batches(chunks):
        store.deliver(batch)
    store.stop()
    return time.perf_counter() - start, _files_bytes(root)


def run_sftp(chunks: list[Chunk], root: Path, compression: str, codec: str | None) -> tuple[float, int]:
    """SeqFileSink to a throwaway OpenSSH sshd on loopback (needs the openssh-server package)."""
    from tests.store.conftest import Sshd

    (root / "sshd").mkdir()
    server = Sshd(root / "sshd")
    server.start()
    try:
        raw = {"url": server.url(root / "store"), "storage_options": server.storage_options(),
               "compression": compression}
        if codec:
            raw["codec"] = codec
        ctx = Context(agent_name="bench", data_dir=root / "state")
        sink = SeqFileSink("bench", parse_settings(SeqFileSink.schema(), raw, "bench", None), ctx)
        sink.start()
        start = time.perf_counter()
        for batch in batches(chunks):
            sink.deliver(batch)
        sink.stop()
        return time.perf_counter() - start, _files_bytes(root / "store")
    finally:
        server.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=128, help="chunk bytes per mode (default 128)")
    parser.add_argument("--dir", default=None, help="where to write (default: a temp dir; use the real disk)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per mode, fastest counts (default 3)")
    parser.add_argument("--sftp", action="store_true", help="also write over SFTP to a loopback sshd")
    args = parser.parse_args()

    chunks = make_chunks(args.size_mb << 20)
    total = sum(len(c) for c in chunks)
    mb = total / 1e6
    print(f"{len(chunks)} chunks of {CHUNK >> 20} MiB in {BATCH}-chunk batches, fsync per batch, "
          f"{total / 2**20:.0f} MiB per mode")

    def timed(run: Callable[..., tuple[float, int]], *extra: object) -> tuple[float, int]:
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            return run(chunks, Path(tmp), *extra)

    def versus_plain(run: Callable[..., tuple[float, int]], *extra: object) -> tuple[float, float, int]:
        """Best of --repeat runs of the writer and of the plain baseline, taken in turns (disk speed drifts)."""
        plain, mine, size = [], [], 0
        for _ in range(args.repeat):
            plain.append(timed(run_plain)[0])
            secs, size = timed(run, *extra)
            mine.append(secs)
        return min(plain), min(mine), size

    rows = [(f"seqfile {c}" + (f" {k}" if k else ""), run_sink, (c, k)) for c, k in MODES]
    rows += [("buffer, primary up", run_buffer, (True,)), ("buffer, to secondary", run_buffer, (False,))]
    if args.sftp:
        rows += [("sftp NONE", run_sftp, ("NONE", None)), ("sftp BLOCK lz4", run_sftp, ("BLOCK", "lz4"))]
    print(f"{'writer':<24} {'MB/s':>8} {'plain MB/s':>11} {'vs plain':>9} {'size ratio':>11}")
    for label, run, extra in rows:
        base, secs, size = versus_plain(run, *extra)
        print(f"{label:<24} {mb / secs:8.0f} {mb / base:11.0f} {base / secs:9.2f} {size / total:11.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
