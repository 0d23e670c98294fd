"""What one periodic scan of the tail source costs when its directory holds many rotated generations.

Every scan (``scan_interval``, 10 s by default) runs the globs and then looks
for remembered generations that left them (``TailSource._find_moved``): one
``scandir`` of each directory that holds them; a file at a known inode is
opened only when it is longer than what was read, and files the agent does not
know are compared by content only while some generation's bytes can be only
in a copy.  This bench times that against its floor, measured in the same run:
``glob`` of the source's pattern plus one ``scandir`` of the directory (what any
scan must do at least).

Cases, each with ``N`` rotated files (``app.log.1`` .. ``app.log.N``, read to
their end and remembered, outside the glob ``app.log``):

- ``steady``: nothing to search by content (the usual state);
- ``searching``: one generation's inode is gone (moved by copy, or deleted),
  and ``N / 10`` files in the directory are unknown to the agent: they are
  opened and their first bytes compared, at each of the next three scans.

    .venv/bin/python bench/bench_tail_scan.py [--files 100,1000,10000] [--repeat 5] [--dir DIR]
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.sources.tail.checkpoint import Position  # noqa: E402
from agent.sources.tail.generations import Generations  # noqa: E402
from agent.sources.tail.identity import FileIdentity, read_head  # noqa: E402
from agent.sources.tail.scan import COPY_SEARCHES  # noqa: E402
from logflume.component import Context  # noqa: E402
from logflume.metrics import Metrics  # noqa: E402
from logflume.topology import build_topology  # noqa: E402


def line_block(i: int) -> bytes:
    return b"".join(b"%08d %06d generation of app.log, rotated away\n" % (i, n) for n in range(40))


def make_dir(work: Path, n: int, unknown: int) -> tuple[Path, list[Position]]:
    """``app.log`` plus ``n`` rotated generations (remembered, read to their end) and ``unknown`` others."""
    logs = work / f"logs-{n}"
    logs.mkdir()
    (logs / "app.log").write_bytes(line_block(0))
    positions = []
    for i in range(1, n + 1):
        path = logs / f"app.log.{i}"
        path.write_bytes(line_block(i))
        fd = os.open(path, os.O_RDONLY)
        try:
            st = os.fstat(fd)
            ident = FileIdentity.of_head(st, read_head(fd))
        finally:
            os.close(fd)
        positions.append(Position(dev=st.st_dev, ino=st.st_ino, fp_len=ident.fp_len, fp=ident.fp,
                                  epoch=ident.epoch(), stream=str(logs / "app.log"), path=str(path),
                                  offset=st.st_size, seq_id=st.st_size, truncations=0, last_seen=time.time()))
    for i in range(unknown):
        (logs / f"other-{i}.txt").write_bytes(line_block(10_000_000 + i))
    return logs, positions


def source_for(logs: Path, work: Path):
    raw = {
        "sources": {"t": {"type": "tail", "paths": [str(logs / "app.log")], "channels": ["ch"]}},
        "channels": {"ch": {"type": "memory"}},
        "sinks": {"out": {"type": "null", "channel": "ch"}},
    }
    ctx = Context(agent_name="bench", data_dir=work / f"data-{time.time_ns()}", metrics=Metrics())
    spec = build_topology(raw, None, ctx).sources["t"]
    return spec.cls("t", spec.values, ctx)


def time_floor(logs: Path, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        glob.glob(str(logs / "app.log"))
        list(os.scandir(logs))
        best = min(best, time.perf_counter() - t0)
    return best


def time_scans(logs: Path, positions: list[Position], work: Path, repeat: int, lost: bool) -> tuple[float, int]:
    """Best seconds per scan, and files opened by the scans, for a fresh source remembering ``positions``."""
    src = source_for(logs, work)
    remembered = list(positions)
    if lost:  # a generation whose inode is gone and whose copy is nowhere: searched for, never found
        gone = remembered[0]
        remembered.append(Position(**{**gone.__dict__, "ino": 1, "epoch": "gone:1", "fp": "0" * 32, "offset": 100}))
    src.remembered = Generations(remembered)
    src._copy_searches = {}
    src._scan(time.monotonic())  # the first scan follows app.log
    opened = 0
    real_open = os.open

    def counting_open(*args, **kwargs):
        nonlocal opened
        opened += 1
        return real_open(*args, **kwargs)

    best = float("inf")
    os.open = counting_open
    try:
        for _ in range(repeat):
            if lost:
                src._copy_searches = {}  # search again: time the scans that do
            t0 = time.perf_counter()
            src._scan(time.monotonic())
            best = min(best, time.perf_counter() - t0)
    finally:
        os.open = real_open
        for tf in list(src.files.values()):
            src._close(tf)
    return best, opened // repeat


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", default="100,1000,10000", help="rotated files per case (default 100,1000,10000)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--dir", default=None, help="where the files go (default: a temp dir)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-tail-scan-", dir=args.dir))
    print(f"load average before: {os.getloadavg()[0]:.2f}; best of {args.repeat}; "
          f"a lost generation is searched for at {COPY_SEARCHES} scans")
    print(f"{'rotated files':>13} | {'floor ms':>9} | {'steady ms':>9} {'x floor':>7} {'opens':>5} | "
          f"{'searching ms':>12} {'x floor':>7} {'opens':>5}")
    try:
        for n in (int(x) for x in args.files.split(",")):
            logs, positions = make_dir(work, n, n // 10)
            floor = time_floor(logs, args.repeat)
            steady, steady_opens = time_scans(logs, positions, work, args.repeat, lost=False)
            search, search_opens = time_scans(logs, positions, work, args.repeat, lost=True)
            print(f"{n:>13} | {floor * 1e3:9.2f} | {steady * 1e3:9.2f} {steady / floor:7.1f} {steady_opens:5d} | "
                  f"{search * 1e3:12.2f} {search / floor:7.1f} {search_opens:5d}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
