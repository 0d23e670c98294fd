"""Realistic test logs with a unique sequence number on every line, and a writer that rotates while it writes.

Every line is exactly ``LINE_SIZE`` bytes (newline included) and carries ``seq=NNNNNNNNNNNN``: a
sequence number unique across the whole data set, so completeness can be verified on any
contender's output, even one that rewrites lines (rsyslog and syslog-ng prepend their own header).
The rest of the line looks like an nginx access log, varied so that compression has real work.

Run as ``python -m bench.e2e.generator rotate SRC... --dst FILE`` for the rotation variant: it
appends the pre-generated files to ``FILE`` (at full speed unless ``--rate``) and renames ``FILE`` to
``FILE.N`` every ``--rotate-seconds`` (rename + create, as logrotate does without copytruncate).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

LINE_SIZE = 204
SEQ_DIGITS = 12
SEQ_MARK = b"seq="

_PATHS = [b"/api/v1/items", b"/api/v1/users", b"/static/app.js", b"/login", b"/cart/checkout", b"/search",
          b"/img/logo.png", b"/api/v2/orders", b"/health", b"/feed.xml"]
_AGENTS = [b"Mozilla/5.0 (X11; Linux x86_64)", b"curl/7.88.1", b"Go-http-client/1.1",
           b"Mozilla/5.0 (Macintosh; Intel Mac OS X 13_4)", b"python-requests/2.31"]
_METHODS = [b"GET", b"GET", b"GET", b"POST", b"PUT"]
_STATUS = [b"200", b"200", b"200", b"304", b"404", b"500", b"201"]


def _bodies(count: int, seed: int = 9) -> list[bytes]:
    """Line tails after the sequence number, padded so every line is LINE_SIZE bytes."""
    rnd = random.Random(seed)
    head_len = len(b"2026-11-25T03:04:05.678Z web-00 nginx[1234]: ") + len(SEQ_MARK) + SEQ_DIGITS
    out = []
    for _ in range(count):
        body = b' %d.%d.%d.%d - - "%s %s?id=%d HTTP/1.1" %s %d "-" "%s" rt=%.3f' % (
            rnd.randrange(1, 224), rnd.randrange(256), rnd.randrange(256), rnd.randrange(1, 255),
            rnd.choice(_METHODS), rnd.choice(_PATHS), rnd.randrange(100000), rnd.choice(_STATUS),
            rnd.randrange(100, 90000), rnd.choice(_AGENTS), rnd.random(),
        )
        pad = LINE_SIZE - 1 - head_len - len(body)
        body += b" " + b"".join(rnd.choice([b"k", b"v", b"=", b"x", b"q"]) for _ in range(pad - 1))
        out.append(body + b"\n")
    return out


_BODIES = _bodies(997)


def make_line(seq: int, host: int = 0) -> bytes:
    """The line with sequence number ``seq``: exactly LINE_SIZE bytes, newline-terminated."""
    ms = seq % 1000
    ss = (seq // 1000) % 60
    head = b"2026-11-25T03:%02d:%02d.%03dZ web-%02d nginx[%04d]: seq=%012d" % (
        (seq // 60000) % 60, ss, ms, host % 100, 1000 + seq % 9000, seq)
    return head + _BODIES[seq % len(_BODIES)]


def write_lines(path: Path, first_seq: int, count: int, block_lines: int = 8192) -> None:
    """Write lines ``first_seq .. first_seq+count-1`` to ``path`` (replacing it)."""
    with open(path, "wb", buffering=0) as f:
        seq = first_seq
        end = first_seq + count
        while seq < end:
            n = min(block_lines, end - seq)
            f.write(b"".join([make_line(s) for s in range(seq, seq + n)]))
            seq += n


@dataclass
class Dataset:
    """Generated input files: ``files[i]`` holds lines ``first_seqs[i] .. first_seqs[i]+counts[i]-1``."""

    files: list[str]
    first_seqs: list[int]
    counts: list[int]

    @property
    def total_lines(self) -> int:
        return sum(self.counts)

    @property
    def total_bytes(self) -> int:
        return self.total_lines * LINE_SIZE


def generate(directory: Path, size_bytes: int, files: int = 1, name: str = "app") -> Dataset:
    """Generate about ``size_bytes`` of logs split over ``files`` files; reuse them when already there."""
    directory.mkdir(parents=True, exist_ok=True)
    total = max(files, size_bytes // LINE_SIZE)
    per = [total // files + (1 if i < total % files else 0) for i in range(files)]
    firsts = [sum(per[:i]) for i in range(files)]
    paths = [directory / (f"{name}.log" if files == 1 else f"{name}-{i:02d}.log") for i in range(files)]
    manifest = directory / f"{name}.manifest.json"
    ds = Dataset([str(p) for p in paths], firsts, per)
    if manifest.exists() and json.loads(manifest.read_text()) == asdict(ds) and all(
        p.exists() and p.stat().st_size == c * LINE_SIZE for p, c in zip(paths, per, strict=True)
    ):
        return ds
    for p, first, count in zip(paths, firsts, per, strict=True):
        write_lines(p, first, count)
    manifest.write_text(json.dumps(asdict(ds)))
    return ds


def warm_page_cache(ds: Dataset) -> None:
    """Read the inputs once so every contender starts from page cache (the limit does too)."""
    buf = bytearray(4 << 20)
    for p in ds.files:
        with open(p, "rb", buffering=0) as f:
            while f.readinto(buf):
                pass


def rotate_write(sources: list[str], dst: Path, rotate_seconds: float, rate: float, block: int = 1 << 20) -> int:
    """Append ``sources`` to ``dst`` (at ``rate`` bytes/s, 0: full speed), renaming it to ``dst.N`` and
    creating a new one every ``rotate_seconds``, as logrotate does without copytruncate.

    Cuts only at line boundaries (blocks are multiples of LINE_SIZE).  Returns the number of rotations.
    """
    block -= block % LINE_SIZE
    rotations = 0
    sent = 0
    t0 = opened = time.monotonic()
    out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    buf = bytearray(block)
    view = memoryview(buf)
    try:
        for src in sources:
            with open(src, "rb", buffering=0) as f:
                while True:
                    n = f.readinto(buf)
                    if not n:
                        break
                    os.write(out, view[:n])
                    sent += n
                    now = time.monotonic()
                    if now - opened >= rotate_seconds:
                        os.close(out)
                        rotations += 1
                        os.rename(dst, f"{dst}.{rotations}")
                        out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                        opened = now
                    if rate > 0:
                        ahead = sent / rate - (now - t0)
                        if ahead > 0:
                            time.sleep(ahead)
    finally:
        os.close(out)
    return rotations


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.e2e.generator")
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate", help="write SIZE MiB of numbered lines into DIR")
    g.add_argument("dir")
    g.add_argument("--size-mb", type=int, default=1024)
    g.add_argument("--files", type=int, default=1)
    r = sub.add_parser("rotate", help="append SRC files to --dst at --rate, rotating by rename")
    r.add_argument("src", nargs="+")
    r.add_argument("--dst", required=True)
    r.add_argument("--rotate-seconds", type=float, default=0.25)
    r.add_argument("--rate", type=float, default=0.0, help="bytes/s; 0 = as fast as possible")
    args = ap.parse_args(argv)
    if args.cmd == "generate":
        ds = generate(Path(args.dir), args.size_mb << 20, args.files)
        print(json.dumps(asdict(ds)))
    else:
        n = rotate_write(args.src, Path(args.dst), args.rotate_seconds, args.rate)
        print(json.dumps({"rotations": n}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
