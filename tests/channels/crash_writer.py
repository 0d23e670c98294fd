"""A child process that works a file channel until it is killed: the subject of the crash tests.

Usage: ``python crash_writer.py DIR SEED FIRST_ID FSYNC [serial|concurrent|fsize:BYTES]``.

``serial`` (default) runs random put and take transactions (some rolled back)
in one thread; ``concurrent`` runs a producer and a consumer thread;
``fsize:BYTES`` sets RLIMIT_FSIZE, ignores SIGXFSZ and puts until a put fails
(a full disk without root), then stops the channel cleanly.  It reports on
stdout, one flushed line each, what it is about to do and what returned:

* ``W P <id>``      about to put chunk <id> (a kill now lands mid-put)
* ``B P <ids>`` / ``E P <ids>``   before / after committing a put transaction
* ``B T <ids>`` / ``E T <ids>``   before / after committing a take transaction
* ``X <message>``   a put failed (``fsize:`` mode)

A line ``E`` exists only if the commit returned, so the parent knows exactly
which transactions are certainly committed and which may be in doubt (one per thread).
"""

from __future__ import annotations

import random
import resource
import signal
import sys
import threading
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


_say_lock = threading.Lock()


def say(line: str) -> None:
    with _say_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def put_transaction(ch: FileChannel, rnd: random.Random, next_id: int, timeout: float | None) -> int:
    """One put transaction of 1-4 chunks (15% rolled back); returns the next unused id."""
    tx = ch.transaction()
    ids = []
    try:
        for _ in range(rnd.randint(1, 4)):
            say(f"W P {next_id}")
            tx.put(make_chunk(next_id), timeout=timeout)
            ids.append(next_id)
            next_id += 1
    except BaseException:
        tx.rollback()
        raise
    if rnd.random() < 0.15:
        tx.rollback()
        return next_id
    say("B P " + ",".join(map(str, ids)))
    tx.commit()
    say("E P " + ",".join(map(str, ids)))
    return next_id


def take_transaction(ch: FileChannel, rnd: random.Random, timeout: float) -> None:
    """Take 1-4 chunks, check their bytes, commit (80%) or roll back."""
    tx = ch.transaction()
    ids = []
    for _ in range(rnd.randint(1, 4)):
        c = tx.take(timeout=timeout if not ids else 0)
        if c is None:
            break
        assert bytes(c.data) == chunk_data(int(c.tags["id"])), "chunk data damaged"
        ids.append(int(c.tags["id"]))
    if not ids or rnd.random() < 0.2:
        tx.rollback()
        return
    say("B T " + ",".join(map(str, ids)))
    tx.commit()
    say("E T " + ",".join(map(str, ids)))


def serial(ch: FileChannel, rnd: random.Random, next_id: int) -> None:
    while True:
        if ch.size_bytes() < (8 << 20) and rnd.random() < 0.6:
            next_id = put_transaction(ch, rnd, next_id, timeout=0)
        else:
            take_transaction(ch, rnd, timeout=0)


def concurrent(ch: FileChannel, rnd: random.Random, next_id: int) -> None:
    """A producer and a consumer thread, as in an agent; commits may share an fsync."""
    consumer_rnd = random.Random(rnd.random())

    def consume() -> None:
        while True:
            take_transaction(ch, consumer_rnd, timeout=0.05)

    threading.Thread(target=consume, daemon=True).start()
    while True:
        next_id = put_transaction(ch, rnd, next_id, timeout=None)


def until_full(ch: FileChannel, rnd: random.Random, next_id: int) -> None:
    while True:
        try:
            next_id = put_transaction(ch, rnd, next_id, timeout=0)
        except Exception as exc:
            say(f"X {type(exc).__name__}: {exc}")
            ch.stop()
            return


def main() -> None:
    directory, seed, next_id, fsync = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    mode = sys.argv[5] if len(sys.argv) > 5 else "serial"
    if mode.startswith("fsize:"):
        limit = int(mode[6:])
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    ch = open_channel(directory, fsync)
    say("READY")
    work = {"serial": serial, "concurrent": concurrent}.get(mode, until_full)
    work(ch, random.Random(seed), next_id)


if __name__ == "__main__":
    main()
