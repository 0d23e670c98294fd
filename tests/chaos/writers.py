"""A writer process: numbered lines appended to several files, rotated by rename and by copytruncate at random.

``python -m tests.chaos.writers --dir D --prefix w1 --files 3 --seed N --ledger OUT.json [--positions P]``
runs until SIGTERM, then writes its ledger: the last line number of every
file, and the copytruncate windows.

Copytruncate is done as logrotate does it (copy, then truncate in place), but
a careful operator's way: writing to that file pauses and the writer waits
(up to ``--ct-wait`` seconds) until the agent's position file says everything
was committed.  Lines the agent had not committed when the file was truncated
(when the agent was down for longer than the wait) are the copytruncate
window: no shipper can read them any more.  They are recorded, and reported
apart from losses.  Rename rotation has no such window (the tail source
follows the renamed file by identity), so the glob must also match the
rotated names (``*.log*``); copies are named so that it does not match them.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import time
from pathlib import Path

from agent.sources.tailing.identity import FileIdentity
from tests.chaos.lines import make_line


class LogFile:
    """One numbered-line file and its current generation (lines since the last rotation)."""

    def __init__(self, directory: Path, file_id: str) -> None:
        self.dir = directory
        self.id = file_id
        self.path = directory / f"{file_id}.log"
        self.seq = 0
        self.rotations = 0
        self.fd = -1
        self.size = 0
        self.starts: list[tuple[int, int]] = []  # (byte offset, seq) of this generation's lines
        self.open()

    def open(self) -> None:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)  # read: committed_offset
        self.size = os.fstat(self.fd).st_size
        self.starts = []

    def write(self, rng: random.Random) -> None:
        self.seq += 1
        line = make_line(self.id, self.seq, rng)
        self.starts.append((self.size, self.seq))
        view = memoryview(line)
        while view:
            view = view[os.write(self.fd, view):]
        self.size += len(line)

    def rotate_rename(self) -> None:
        self.rotations += 1
        os.close(self.fd)
        os.rename(self.path, self.dir / f"{self.id}.log.{self.rotations}")
        self.open()

    def copytruncate(self, positions: Path | None, wait: float) -> tuple[int, int] | None:
        """Copy then truncate; returns the (first, last) seq the agent had not committed, if any."""
        self.rotations += 1
        committed = committed_offset(positions, self.fd) if positions else self.size
        deadline = time.monotonic() + wait
        while committed < self.size and time.monotonic() < deadline:
            time.sleep(0.05)
            committed = committed_offset(positions, self.fd) if positions else self.size
        shutil.copyfile(self.path, self.dir / f"ct-{self.id}-{self.rotations}.copy")
        os.ftruncate(self.fd, 0)
        at_risk = [seq for off, seq in self.starts if off >= committed]
        self.size = 0
        self.starts = []
        return (at_risk[0], at_risk[-1]) if at_risk else None


def committed_offset(positions: Path, fd: int) -> int:
    """What the agent's tail source committed of the open file ``fd`` as it is now (0 if unknown).

    An entry counts only when its identity (inode and fingerprint of the first
    bytes) matches the file's current content: after a truncate the agent may
    not have looked yet, and the old generation's offset says nothing about the
    lines of the new one (trusting it lost a line in a 30-minute run).
    """
    try:
        doc = json.loads(positions.read_bytes())
    except (OSError, ValueError):
        return 0
    best = 0
    for entry in doc.get("files", []):
        ident = FileIdentity(entry.get("dev", -1), entry.get("ino", -1), entry.get("fp_len", 0), entry.get("fp", ""))
        try:
            same = ident.matches(fd)
        except OSError:
            same = False
        if same:
            best = max(best, int(entry.get("offset", 0)))
    return best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.chaos.writers")
    p.add_argument("--dir", required=True, type=Path)
    p.add_argument("--prefix", required=True)
    p.add_argument("--files", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rate", type=float, default=30.0, help="lines per second per file")
    p.add_argument("--rotate-every", type=float, default=15.0, help="mean seconds between rotations of a file")
    p.add_argument("--positions", type=Path, default=None, help="the agent's positions.json (copytruncate waits)")
    p.add_argument("--ct-wait", type=float, default=8.0)
    p.add_argument("--ledger", required=True, type=Path)
    args = p.parse_args(argv)

    stop = False

    def on_term(_signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    rng = random.Random(f"{args.seed}:{args.prefix}")
    args.dir.mkdir(parents=True, exist_ok=True)
    files = [LogFile(args.dir, f"{args.prefix}-f{i}") for i in range(args.files)]
    next_rotate = [time.monotonic() + rng.expovariate(1 / args.rotate_every) for _ in files]
    windows: list[list] = []
    counts = {"rename": 0, "copytruncate": 0}
    owed = [0.0] * len(files)
    last = time.monotonic()
    while not stop:
        time.sleep(0.01)
        now = time.monotonic()
        dt, last = now - last, now
        for i, f in enumerate(files):
            owed[i] += dt * args.rate * rng.uniform(0.5, 1.5)
            while owed[i] >= 1 and not stop:
                owed[i] -= 1
                f.write(rng)
            if now >= next_rotate[i] and not stop:
                if rng.random() < 0.5:
                    f.rotate_rename()
                    counts["rename"] += 1
                else:
                    window = f.copytruncate(args.positions, args.ct_wait)
                    counts["copytruncate"] += 1
                    if window:
                        windows.append([f.id, *window])
                next_rotate[i] = time.monotonic() + rng.expovariate(1 / args.rotate_every)
                last = time.monotonic()  # the wait is not owed as a burst of lines
    for f in files:
        os.fsync(f.fd)
        os.close(f.fd)
    ledger = {"files": {f.id: f.seq for f in files}, "windows": windows, "rotations": counts,
              "bytes": sum(f.size for f in files)}
    tmp = args.ledger.with_suffix(".tmp")
    tmp.write_text(json.dumps(ledger))
    os.replace(tmp, args.ledger)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
