"""Benchmark: SequenceFileWriter throughput per compression mode and codec.

Writes ``--size-mb`` of realistic log chunks (4 MiB chunks of ~200-byte lines)
as a sink file in every mode, and the same bytes to a plain file in the same
run, so the MB/s figures can be read as a ratio to raw disk/page-cache speed.
Also prints each codec's compressed size ratio.  Not a test.

    python bench/bench_seqfile_writer.py [--size-mb 256] [--dir /tmp]
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

from logflume.chunk import Chunk  # noqa: E402
from logflume.sequencefile import SequenceFileReader, SequenceFileWriter  # noqa: E402

MODES = [("NONE", None)] + [(c, k) for c in ("RECORD", "BLOCK") for k in ("deflate", "gzip", "lz4", "snappy")]
CHUNK_SIZE = 4 << 20
LEVELS = ("INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR")
PATHS = ("/api/v1/orders", "/api/v1/users/{}", "/static/app.js", "/healthz", "/search?q={}", "/cart/{}/items")


def _line(rng: random.Random, t: int) -> bytes:
    """About 200 bytes of nginx-ish access log with some entropy (ids, IPs, latencies)."""
    ip = f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}"
    path = rng.choice(PATHS).format(rng.randrange(10**6))
    ua = rng.choice(("Mozilla/5.0 (X11; Linux x86_64)", "curl/8.5.0", "Go-http-client/2.0", "okhttp/4.12.0"))
    return (
        f'{ip} - - [25/Nov/2026:03:{t // 60 % 60:02d}:{t % 60:02d} +0000] "GET {path} HTTP/1.1" '
        f"{rng.choice((200, 200, 200, 304, 404, 500))} {rng.randrange(100, 90000)} "
        f'"-" "{ua}" rt={rng.random():.3f} {rng.choice(LEVELS)} req={rng.getrandbits(64):016x}\n'
    ).encode()


def make_chunks(total: int, distinct: int = 8) -> list[Chunk]:
    """``total`` bytes of chunks; ``distinct`` different payloads reused to keep setup fast."""
    rng = random.Random(42)
    payloads = []
    for d in range(distinct):
        lines, size = [], 0
        while size < CHUNK_SIZE - 300:
            line = _line(rng, d * 100_000 + len(lines))
            lines.append(line)
            size += len(line)
        payloads.append(b"".join(lines))
    chunks, written, seq = [], 0, 0
    while written < total:
        data = payloads[len(chunks) % distinct]
        seq += len(data)
        chunks.append(
            Chunk(
                source="web-01",
                stream="/var/log/nginx/access.log",
                datatype="NginxAccess",
                seq_id=seq,
                epoch="dev:ino:fp",
                data=data,
                tags={"env": "prod"},
            )
        )
        written += len(data)
    return chunks


def bench_plain(chunks: list[Chunk], path: Path) -> float:
    start = time.perf_counter()
    with path.open("wb") as f:
        for c in chunks:
            f.write(c.data)
        f.flush()
    return time.perf_counter() - start


def bench_mode(chunks: list[Chunk], path: Path, compression: str, codec: str | None) -> float:
    start = time.perf_counter()
    with path.open("wb") as f, SequenceFileWriter(f, compression=compression, codec=codec) as w:
        for c in chunks:
            w.append_chunk(c)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=256, help="payload bytes per mode (default 256)")
    parser.add_argument("--dir", default=None, help="where to write the scratch files (default: a temp dir)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per mode, fastest counts (default 2)")
    parser.add_argument("--verify", action="store_true", help="read every file back and compare the chunks")
    args = parser.parse_args()

    chunks = make_chunks(args.size_mb << 20)
    total = sum(len(c) for c in chunks)
    mb = total / 1e6
    print(f"{len(chunks)} chunks of {CHUNK_SIZE >> 20} MiB, {total / 2**20:.0f} MiB of log lines per mode")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:

        def best(run: Callable[..., float], *extra: object) -> tuple[float, int]:
            """Fastest of --repeat runs, each into a fresh file (as a sink creates them)."""
            times, size = [], 0
            for i in range(args.repeat):
                path = Path(tmp) / f"run-{i}"
                times.append(run(chunks, path, *extra))
                size = path.stat().st_size
                if args.verify and extra:
                    with path.open("rb") as f:
                        got = SequenceFileReader(f).iter_chunks()
                        assert all(bytes(g.data) == bytes(c.data) for g, c in zip(got, chunks, strict=True))
                os.unlink(path)
            return min(times), size

        base, _ = best(bench_plain)
        print(f"{'mode':<8} {'codec':<8} {'MB/s':>9} {'vs plain':>9} {'size ratio':>11}")
        print(f"{'plain':<8} {'-':<8} {mb / base:9.0f} {1.0:9.2f} {1.0:11.3f}")
        for compression, codec in MODES:
            secs, size = best(bench_mode, compression, codec)
            ratio = size / total
            print(f"{compression:<8} {codec or '-':<8} {mb / secs:9.0f} {base / secs:9.2f} {ratio:11.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
