"""Put+take throughput of the memory and file channels, against a plain file, measured in one run.

One producer thread puts chunks (one per transaction, like a source
delivering) while one consumer thread takes them (one per transaction, the
worst case for commits).  Baselines with the same bytes and the same chunk
sizes: a plain file written sequentially and read back into fresh buffers,
once with one fsync at the end and once with an fdatasync after every chunk.
The memory channel and ``fsync: interval`` are compared with the first,
``fsync: every_commit`` with the second (each chunk is committed twice: put and take).

    .venv/bin/python bench/bench_channels.py [--dir DIR] [--big-total 512MiB] [--small-total 64MiB] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.channels.file import FileChannel  # noqa: E402
from agent.channels.memory import MemoryChannel  # noqa: E402
from logflume.chunk import Chunk  # noqa: E402
from logflume.component import Context  # noqa: E402
from logflume.settings import parse_settings, parse_size  # noqa: E402

MIB = 1 << 20


def chunks(payload: memoryview, size: int, total: int) -> list[Chunk]:
    out = []
    for i in range(total // size):
        start = (i * size) % (len(payload) - size + 1)
        out.append(Chunk("bench", "s", "Raw", (i + 1) * size, "e", payload[start:start + size]))
    return out


def run_channel(ch, items: list[Chunk]) -> float:
    """Seconds to push every chunk through ``ch`` with a concurrent producer and consumer."""
    errors: list[BaseException] = []
    taken = [0]

    def produce():
        try:
            for c in items:
                with ch.transaction() as tx:
                    tx.put(c)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def consume():
        try:
            while taken[0] < len(items):
                with ch.transaction() as tx:
                    c = tx.take(timeout=1.0)
                    if c is not None:
                        assert len(c.data) == len(items[taken[0]].data)
                        taken[0] += 1
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=produce), threading.Thread(target=consume)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - t0


def run_plain_file(path: Path, items: list[Chunk], sync_each: bool) -> float:
    """Seconds to write the chunks to one file and read them back into fresh buffers."""
    t0 = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for c in items:
            view = memoryview(c.data)
            while view:
                view = view[os.write(fd, view):]
            if sync_each:
                os.fdatasync(fd)
        os.fdatasync(fd)
    finally:
        os.close(fd)
    fd = os.open(path, os.O_RDONLY)
    try:
        off = 0
        for c in items:
            buf = bytearray(len(c.data))
            got = os.preadv(fd, [buf], off) if buf else 0
            assert got == len(buf)
            off += got
    finally:
        os.close(fd)
    os.unlink(path)
    return time.perf_counter() - t0


def best_of(best: dict[str, float]):
    def record(what: str, secs: float) -> None:
        best[what] = min(secs, best.get(what, secs))

    return record


def make_channel(cls, base: Path, name: str, **raw):
    cfg = parse_settings(cls.schema(), {"capacity": "256MiB", **raw}, f"channels.{name}", None)
    ch = cls(name, cfg, Context(data_dir=base))
    ch.start()
    return ch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default=None, help="Directory on the disk to measure (default: a temp dir)")
    ap.add_argument("--big-total", default="512MiB", help="Bytes moved with 64 MiB chunks")
    ap.add_argument("--small-total", default="64MiB", help="Bytes moved with 64 KiB chunks")
    ap.add_argument("--repeat", type=int, default=3, help="Runs of each case; the best is shown")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-channels-", dir=args.dir))
    payload = memoryview(os.urandom(64 * MIB + 64 * 1024))
    try:
        for size, total in ((64 * MIB, parse_size(args.big_total)), (64 * 1024, parse_size(args.small_total))):
            items = chunks(payload, size, total)
            moved = len(items) * size / MIB
            label = f"{size // 1024} KiB" if size < MIB else f"{size // MIB} MiB"
            print(f"\n{len(items)} chunks of {label} ({moved:.0f} MiB), put+take one chunk per transaction")
            best: dict[str, float] = {}
            record = best_of(best)
            for rep in range(args.repeat):  # interleaved, best of N: page-cache and disk noise hit all alike
                record("plain", run_plain_file(base / "plain", items, sync_each=False))
                record("plain_sync", run_plain_file(base / "plain-sync", items, sync_each=True))
                mem = make_channel(MemoryChannel, base, f"mem-{rep}")
                record("memory", run_channel(mem, items))
                mem.stop()
                for fsync in ("interval", "every_commit"):
                    name = f"file-{fsync}-{size}-{rep}"
                    ch = make_channel(FileChannel, base, name, fsync=fsync)
                    record(fsync, run_channel(ch, items))
                    ch.stop()
                    shutil.rmtree(base / "channel" / name, ignore_errors=True)
            rows = [
                ("plain file write+read, 1 fsync", best["plain"], None),
                ("plain file write+read, fsync/chunk", best["plain_sync"], None),
                ("memory channel", best["memory"], best["plain"]),
                ("file channel fsync=interval", best["interval"], best["plain"]),
                ("file channel fsync=every_commit", best["every_commit"], best["plain_sync"]),
            ]
            for what, secs, baseline in rows:
                ratio = f"  {baseline / secs:5.2f}x its baseline" if baseline else ""
                print(f"  {what:40s} {moved / secs:9.1f} MiB/s  {len(items) / secs:9.0f} chunks/s{ratio}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
