"""A child process that works a file channel until it is killed: the subject of the crash tests.

Usage: ``python crash_writer.py DIR SEED FIRST_ID FSYNC [FSIZE_LIMIT]``.

It runs random put and take transactions (some rolled back) and reports on
stdout, one flushed line each, what it is about to do and what returned:

* ``W P <id>``      about to put chunk <id> (a kill now lands mid-put)
* ``B P <ids>`` / ``E P <ids>``   before / after committing a put transaction
* ``B T <ids>`` / ``E T <ids>``   before / after committing a take transaction
* ``X <message>``   a put failed (used with FSIZE_LIMIT to provoke a full disk)

A line ``E`` exists only if the commit returned, so the parent knows exactly
which transactions are certainly committed and which one may be in doubt.
With FSIZE_LIMIT the process ignores SIGXFSZ and stops after the first failed put.
"""

from __future__ import annotations

import random
import resource
import signal
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from agent.channels.file import FileChannel  # noqa: E402
from logflume.chunk import Chunk  # noqa: E402
from logflume.component import Context  # noqa: E402
from logflume.settings import parse_settings  # noqa: E402


def chunk_size(chunk_id: int) -> int:
    rnd = random.Random(chunk_id)
    return rnd.choice((0, 1, 100, 4096)) if rnd.random() < 0.2 else (
        rnd.randint(1 << 20, 3 << 20) if rnd.random() < 0.1 else rnd.randint(1, 64 << 10))


def chunk_data(chunk_id: int) -> bytes:
    n = chunk_size(chunk_id)
    return (chunk_id.to_bytes(8, "little") * (n // 8 + 1))[:n]


def make_chunk(chunk_id: int) -> Chunk:
    return Chunk("host", f"stream-{chunk_id % 3}", "Raw", chunk_id, "epoch", chunk_data(chunk_id),
                 tags={"id": str(chunk_id)})


def open_channel(directory: str, fsync: str, **extra) -> FileChannel:
    raw = {"dir": directory, "segment_size": "2MiB", "fsync": fsync, "fsync_interval": "50ms",
           "checkpoint_interval": "100ms", "capacity": "64MiB", **extra}
    cfg = parse_settings(FileChannel.schema(), raw, "channels.crash", None)
    ch = FileChannel("crash", cfg, Context(data_dir=Path(directory)))
    ch.start()
    return ch


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main() -> None:
    directory, seed, next_id, fsync = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    fsize_limit = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    if fsize_limit:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize_limit, fsize_limit))
    rnd = random.Random(seed)
    ch = open_channel(directory, fsync)
    say("READY")
    while True:
        if fsize_limit or ch.size_bytes() < (8 << 20) and rnd.random() < 0.6:
            tx = ch.transaction()
            ids = []
            try:
                for _ in range(rnd.randint(1, 4)):
                    say(f"W P {next_id}")
                    tx.put(make_chunk(next_id), timeout=0)
                    ids.append(next_id)
                    next_id += 1
            except Exception as exc:
                tx.rollback()
                say(f"X {type(exc).__name__}: {exc}")
                if fsize_limit:
                    ch.stop()
                    return
                continue
            if rnd.random() < 0.15:
                tx.rollback()
                continue
            say("B P " + ",".join(map(str, ids)))
            tx.commit()
            say("E P " + ",".join(map(str, ids)))
        else:
            tx = ch.transaction()
            ids = []
            for _ in range(rnd.randint(1, 4)):
                c = tx.take()
                if c is None:
                    break
                assert bytes(c.data) == chunk_data(int(c.tags["id"])), "chunk data damaged"
                ids.append(int(c.tags["id"]))
            if not ids or rnd.random() < 0.2:
                tx.rollback()
                continue
            say("B T " + ",".join(map(str, ids)))
            tx.commit()
            say("E T " + ",".join(map(str, ids)))


if __name__ == "__main__":
    main()
