"""A writer process: numbered lines appended to several files and rotated, as one chaos case needs.

``python -m tests.chaos.writers --dir D --prefix w1 --files 3 --seed N --ledger OUT.json [--positions P]``
runs until SIGTERM, then writes its ledger: the last line number of every
file, and the copytruncate windows.

``--rotate`` picks how files are rotated: ``mixed`` (at random by rename to
``x.log.N``, N counting up, or by copytruncate), ``rename`` (logrotate's
numbering: ``x.log.1`` -> ``x.log.2`` ..., ``x.log`` -> ``x.log.1``, a new
``x.log``; half of the moves of ``x.log`` copy and unlink, as ``mv`` to
another filesystem does) or ``copytruncate``.  ``--copies`` names the copytruncate copies: ``apart``
(``ct-x-N.copy``, which no ``*.log*`` glob matches) or ``followed``
(``x.log.N``, which ``*.log*`` matches, so the agent reads the copies too).

Copytruncate is done as logrotate does it (copy, then truncate in place, with
no write in between).  With ``--positions`` it is done a careful operator's
way: writing to that file pauses and the writer waits (up to ``--ct-wait``
seconds) until the agent's position file says everything was committed.
Lines the agent had not committed when the file was truncated (when the agent
was down for longer than the wait) are the copytruncate window: they are
only in a copy that no glob follows.  They are recorded, and reported apart
from losses.  In ``rename`` mode ``--positions`` makes the writer wait before
a rename until the agent knows the file (see ``LogFile.wait_until_known``).
Without ``--positions`` the writer does not wait and records no
window: that is for copies that are followed, where no line may be missing.
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

from agent.sources.tail.identity import FileIdentity
from tests.chaos.lines import make_line


class LogFile:
    """One numbered-line file and its current generation (lines since the last rotation)."""

    def __init__(self, directory: Path, file_id: str, copies: str = "apart", first_write: int = 0) -> None:
        self.dir = directory
        self.id = file_id
        self.copies = copies
        self.first_write = first_write
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

    def write(self, rng: random.Random) -> int:
        """Append the next line; the first write to an empty file holds ``first_write`` bytes or more.

        One write of at least 1 KiB means every reader that looks at the new file
        fingerprints the same first bytes (the twin case needs both agents to agree).
        Returns how many lines were written.
        """
        line = b""
        n = 0
        while n == 0 or (self.size == 0 and len(line) < self.first_write):
            self.seq += 1
            self.starts.append((self.size + len(line), self.seq))
            line += make_line(self.id, self.seq, rng)
            n += 1
        view = memoryview(line)
        while view:
            view = view[os.write(self.fd, view):]
        self.size += len(line)
        return n

    def wait_until_known(self, positions: Path, wait: float) -> tuple[int, int] | None:
        """Before a rename out of the globs: wait (up to ``wait`` s) until the agent's position file names
        this generation; returns its (first, last) seq if it never did.

        A generation born and moved out of the globs while the agent was down is at no watched
        path whenever the agent looks: no shipper can find it.  Those lines are a window, like
        copytruncate's, reported apart from losses; the case tests the generations the agent knew.
        """
        deadline = time.monotonic() + wait
        while not _offsets(positions, self.fd):
            if time.monotonic() >= deadline:
                return (self.starts[0][1], self.starts[-1][1]) if self.starts else None
            time.sleep(0.05)
        return None

    def rotate_rename(self, shift: bool = False, by_copy: bool = False) -> None:
        """``x.log`` -> ``x.log.N`` (N counting up), or with ``shift`` logrotate's way: every ``x.log.K``
        becomes ``x.log.K+1`` (oldest first), then ``x.log`` becomes ``x.log.1``.

        ``by_copy`` moves the file as ``mv`` does across filesystems (logrotate's ``olddir`` there):
        copy to the new name (a new inode with the same bytes), then unlink the old name.
        """
        self.rotations += 1
        os.close(self.fd)
        if shift:
            for k in range(self.rotations - 1, 0, -1):
                os.rename(self.dir / f"{self.id}.log.{k}", self.dir / f"{self.id}.log.{k + 1}")
            target = self.dir / f"{self.id}.log.1"
        else:
            target = self.dir / f"{self.id}.log.{self.rotations}"
        if by_copy:
            shutil.copyfile(self.path, target)
            os.unlink(self.path)
        else:
            os.rename(self.path, target)
        self.open()

    def copytruncate(self, positions: Path | None, wait: float) -> tuple[int, int] | None:
        """Copy then truncate; returns the (first, last) seq the agent had not committed, if any."""
        self.rotations += 1
        committed = committed_offset(positions, self.fd) if positions else self.size
        deadline = time.monotonic() + wait
        while committed < self.size and time.monotonic() < deadline:
            time.sleep(0.05)
            committed = committed_offset(positions, self.fd) if positions else self.size
        copy = f"{self.id}.log.{self.rotations}" if self.copies == "followed" else f"ct-{self.id}-{self.rotations}.copy"
        shutil.copyfile(self.path, self.dir / copy)
        os.ftruncate(self.fd, 0)
        at_risk = [seq for off, seq in self.starts if off >= committed]
        self.size = 0
        self.starts = []
        return (at_risk[0], at_risk[-1]) if at_risk else None


def _offsets(positions: Path, fd: int) -> list[int]:
    """Committed offsets of the position entries whose identity (inode and fingerprint of the first bytes)
    matches the open file ``fd`` as it is now."""
    try:
        doc = json.loads(positions.read_bytes())
    except (OSError, ValueError):
        return []
    out = []
    for entry in doc.get("files", []):
        ident = FileIdentity(entry.get("dev", -1), entry.get("ino", -1), entry.get("fp_len", 0), entry.get("fp", ""))
        try:
            same = ident.matches(fd)
        except OSError:
            same = False
        if same:
            out.append(int(entry.get("offset", 0)))
    return out


def committed_offset(positions: Path, fd: int) -> int:
    """What the agent's tail source committed of the open file ``fd`` as it is now (0 if unknown).

    An entry counts only when its identity matches the file's current content: after a truncate
    the agent may not have looked yet, and the old generation's offset says nothing about the
    lines of the new one (trusting it lost a line in a 30-minute run).
    """
    return max(_offsets(positions, fd), default=0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.chaos.writers")
    p.add_argument("--dir", required=True, type=Path)
    p.add_argument("--prefix", required=True)
    p.add_argument("--files", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rate", type=float, default=30.0, help="lines per second per file")
    p.add_argument("--rotate", choices=("mixed", "rename", "copytruncate"), default="mixed",
                   help="mixed: by rename or copytruncate at random (default)")
    p.add_argument("--copies", choices=("apart", "followed"), default="apart",
                   help="copytruncate copies named ct-ID-N.copy (apart) or ID.log.N (followed)")
    p.add_argument("--rotate-every", type=float, default=15.0, help="mean seconds between rotations of a file")
    p.add_argument("--first-write", type=int, default=0, help="bytes (whole lines) of a new file's first write")
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
    files = [LogFile(args.dir, f"{args.prefix}-f{i}", args.copies, args.first_write) for i in range(args.files)]

    def gap() -> float:
        # mixed keeps the exponential gaps of the original runs; one-way cases rotate steadily,
        # so a SIGSTOP of a few seconds always spans several rotations
        if args.rotate == "mixed":
            return rng.expovariate(1 / args.rotate_every)
        return rng.uniform(0.5, 1.5) * args.rotate_every

    next_rotate = [time.monotonic() + gap() for _ in files]
    windows: list[list] = []
    counts = {"rename": 0, "copytruncate": 0, "moved_by_copy": 0}
    owed = [0.0] * len(files)
    last = time.monotonic()
    while not stop:
        time.sleep(0.01)
        now = time.monotonic()
        dt, last = now - last, now
        for i, f in enumerate(files):
            owed[i] += dt * args.rate * rng.uniform(0.5, 1.5)
            while owed[i] >= 1 and not stop:
                owed[i] -= f.write(rng)
            if now >= next_rotate[i] and not stop:
                by_rename = rng.random() < 0.5 if args.rotate == "mixed" else args.rotate == "rename"
                if by_rename:
                    if args.rotate == "rename" and args.positions:
                        window = f.wait_until_known(args.positions, args.ct_wait)
                        if window:
                            windows.append([f.id, *window])
                    moved = args.rotate == "rename" and rng.random() < 0.5
                    f.rotate_rename(shift=args.rotate == "rename", by_copy=moved)
                    counts["rename"] += 1
                    counts["moved_by_copy"] += moved
                else:
                    window = f.copytruncate(args.positions, args.ct_wait)
                    counts["copytruncate"] += 1
                    if window:
                        windows.append([f.id, *window])
                next_rotate[i] = time.monotonic() + gap()
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
